"""The documentation is executed as written: the README's loopback quickstart and deploy/README's
loopback rehearsal (deploy step 6 literally: no store or out-dir key), each block run by bash
from the repository root.

The only changes are the environment (free ports, a store already holding the reference
predictor for the quickstart) and a few checking commands inserted before each block's final
``kill``: ``flwr log --show`` (the per-round lines must be in Flower's own log store) and, for
the rehearsal, what the ServerApp left in its Redis. Every process a block starts is stopped by
PID, orphans included (the block runs in a session of its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from powerfleet.sim.processes import ProcessGroup, alive, free_port
from tests.procs import BIN

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.flower, pytest.mark.slow]


def block(document: Path, name: str) -> str:
    """The ```bash block after ``<!-- quickstart:<name> -->`` in ``document``."""
    match = re.search(rf"<!-- quickstart:{name} -->\n```bash\n(.*?)```", document.read_text(), re.S)
    assert match, f"{document} has no quickstart:{name} block"
    return match.group(1)


def with_checks(script: str, checks: str) -> str:
    """``script`` with ``checks`` run just before its last line, which stops what it started."""
    lines = script.rstrip("\n").splitlines()
    assert lines[-1].startswith("kill $(jobs -p)"), "the block must end by stopping what it started"
    return "\n".join([*lines[:-1], checks, lines[-1]]) + "\n"


def free_ports(n: int) -> int:
    """A base port with ``n`` consecutive free ports."""
    for _ in range(50):
        base = free_port()
        if base + n < 65000 and all(_is_free(base + i) for i in range(n)):
            return base
    raise AssertionError("no run of free ports")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_block(script: str, env: dict[str, str], tmp_path: Path, timeout_s: float) -> str:
    """Run ``script`` with bash from the repository root; stop everything it started."""
    (tmp_path / "block.sh").write_text(script)
    procs = ProcessGroup(tmp_path / "logs", env)
    try:
        proc = procs.start("block", ["bash", "-e", str(tmp_path / "block.sh")], cwd=ROOT)
        proc.wait(timeout=timeout_s)
        output = procs.log("block")
        assert proc.returncode == 0, output[-4000:]
        return output
    finally:
        pids = procs.stop_all()
        assert not [p for p in pids if alive(p)], "processes left running"


def test_readme_loopback_quickstart(reference_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    shutil.copy(reference_store, store)  # the reference is in the store: the run builds only the Nano pair
    shutil.rmtree(ROOT / "runs/quickstart", ignore_errors=True)
    before = set((ROOT / "runs").glob("*")) if (ROOT / "runs").is_dir() else set()
    port = free_ports(4)
    env = {**os.environ, "PORT": str(port), "POWERFLEET_STORE": f"file://{store}"}
    env.pop("POWERFLEET_RUNS_DIR", None)
    checks = ('run_id=$(flwr ls loopback --format json | python -c \'import json,sys; '
              'print(json.load(sys.stdin)["runs"][0]["run-id"])\')\n'
              'flwr log "$run_id" loopback --show > runs/quickstart/flwr-log.txt\n'
              'echo "run id: $run_id"')
    script = with_checks(block(ROOT / "README.md", "loopback"), checks)
    try:
        output = run_block(script, env, tmp_path, timeout_s=480)
        run_id = re.search(r"run id: (\d+)", output)
        assert run_id, output[-3000:]
        out = ROOT / "runs" / run_id.group(1)  # the default report directory: runs/<run id>
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 3 and summary["client_rounds"] == 9
        assert summary["bootstrap_rounds"] == 1 and summary["profiling_minibatches"] > 0
        assert summary["store"] == f"file://{store}"  # $POWERFLEET_STORE, with no store key given
        clients = pd.read_csv(out / "clients.csv")
        assert set(clients.device_type) == {"orin-nano"} and clients.unit.nunique() == 3
        steady = clients[~clients.bootstrap]
        assert (steady.status == "on-time").all() and (steady.true_power_w <= 25.0).all()
        assert summary["predictors"]["orin-nano"]["version"] == 1
        rounds = pd.read_csv(out / "rounds.csv")  # every round's train replies carry the nodes' evaluation
        assert (rounds.federated_examples > 0).all() and rounds.federated_accuracy.between(0, 1).all()
        assert summary["federated_accuracy_before_last_round"] == pytest.approx(rounds.federated_accuracy.iloc[-1])
        for i in range(3):  # one query, sent as the run starts, then one message per round
            log = (ROOT / f"runs/quickstart/supernode-{i}.log").read_text()
            assert Counter(re.findall(r"Receiving: (\w+) message", log)) == {"query": 1, "train": 3}, log[-2000:]
        for rnd in (1, 2, 3):  # one line per round, in --stream and in Flower's own log store
            assert f"powerfleet round {rnd}/3" in output
            assert f"powerfleet round {rnd}/3" in (ROOT / "runs/quickstart/flwr-log.txt").read_text()
    finally:
        shutil.rmtree(ROOT / "runs/quickstart", ignore_errors=True)
        for path in set((ROOT / "runs").glob("*")) - before:
            shutil.rmtree(path, ignore_errors=True)


def test_deploy_rehearsal_uses_the_compose_redis_and_writes_its_report(tmp_path: Path) -> None:
    assert shutil.which("redis-server"), "redis-server is needed (make test installs it)"
    shutil.rmtree(ROOT / "runs/rehearsal", ignore_errors=True)
    base = free_ports(16)
    env = {**os.environ, "FLEET_PORT": str(base), "OPERATOR_PORT": str(base + 1), "REDIS_PORT": str(base + 2),
           "KEY_BITS": "2048", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key in ("POWERFLEET_STORE", "POWERFLEET_RUNS_DIR", "POWERFLEET_REDIS_PASSWORD_FILE"):
        env.pop(key, None)
    checks = ('run_id=$(flwr ls fleet --format json | python -c \'import json,sys; '
              'print(json.load(sys.stdin)["runs"][0]["run-id"])\')\n'
              'flwr log "$run_id" fleet --show > "$R/flwr-log.txt"\n'
              'REDISCLI_AUTH="$(cat "$R/secrets/redis.password")" redis-cli -p "$REDIS_PORT" --user powerfleet '
              '--no-auth-warning smembers powerfleet:v1:pairs > "$R/pairs.txt"\n'
              'echo "run id: $run_id"')
    script = with_checks(block(ROOT / "deploy/README.md", "rehearsal"), checks)
    try:
        output = run_block(script, env, tmp_path, timeout_s=600)
        run_id = re.search(r"run id: (\d+)", output)
        assert run_id, output[-3000:]
        rehearsal = ROOT / "runs/rehearsal"
        out = rehearsal / "runs" / run_id.group(1)  # $POWERFLEET_RUNS_DIR/<run id>, as compose sets it
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["client_rounds"] == 6
        assert summary["store"] == f"redis://powerfleet@127.0.0.1:{base + 2}/0"  # the compose Redis; password in a file
        assert summary["store_writes_pending"] == 0
        pairs = set((rehearsal / "pairs.txt").read_text().split())
        # the reference pair and the run's task (keyed by its fingerprint) were built into that Redis
        assert {"orin-agx:resnet18-imagenet", f"orin-nano:{summary['workload']}"} <= pairs
        assert summary["workload"].startswith("digits-cnn+")
        clients = pd.read_csv(out / "clients.csv")
        assert sorted(clients.unit.unique()) == [0, 1, 2]
        log = (rehearsal / "flwr-log.txt").read_text()
        assert "powerfleet round 1/2" in log and "powerfleet round 2/2" in log
        password = (rehearsal / "secrets/redis.password").read_text().strip()
        for text in (log, output, (out / "summary.json").read_text()):
            assert password not in text  # the secret never shows
    finally:
        shutil.rmtree(ROOT / "runs/rehearsal", ignore_errors=True)


def test_blocks_run_no_unpinned_process() -> None:
    """The blocks start only processes of this environment or the repository (nothing fetched)."""
    for document, name in ((ROOT / "README.md", "loopback"), (ROOT / "deploy/README.md", "rehearsal")):
        text = block(document, name)
        assert ". .venv/bin/activate" in text.splitlines()[0]
        assert not re.search(r"\b(pip|uv|curl|wget|docker)\b", text), name


def test_flwr_log_finds_nothing_without_a_superlink(tmp_path: Path) -> None:
    """Control for the checks above: `flwr log` fails when no SuperLink answers."""
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = '
                                      f'"127.0.0.1:{free_port()}"\ninsecure = true\n')
    proc = subprocess.run([str(BIN / "flwr"), "log", "1", "x", "--show"], capture_output=True, text=True,
                          env={**os.environ, "FLWR_HOME": str(home)}, timeout=60)
    assert proc.returncode != 0
