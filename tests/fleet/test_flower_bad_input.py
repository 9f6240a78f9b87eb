"""Bad input through Flower: ``flwr run . loopback --run-config ...`` from the repository root
against a loopback SuperLink (no runtime dependency installation) with no SuperNode.

Each case ends in one error line and no traceback, with a non-zero exit (a key Flower's
SuperLink refuses) or a failed run status (what the ServerApp refuses; ``flwr run --stream``
exits 0 whatever the run's status, so the status is read with ``flwr ls``). A failed run leaves
no report directory. The runs share the SuperLink and run concurrently.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from powerfleet.sim.processes import wait_http_ok
from tests.procs import BIN, Procs, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.flower, pytest.mark.slow]

#: run config -> the one error line the ServerApp ends the run with
FAILED_RUNS = {
    'num-server-rounds="many"': "powerfleet: run config num-server-rounds='many' must be an integer",
    'store="redis://127.0.0.1:1/0"': "powerfleet: Redis store redis://127.0.0.1:1/0 does not answer",
    "node-wait-timeout-s=3.0": "powerfleet: only 0 node(s) connected within node-wait-timeout-s=3; "
                               "min-available-nodes=1",
}


def test_bad_run_config_through_flwr_run(tmp_path: Path, procs: Procs) -> None:
    port = free_port()
    home = Path(procs.env["FLWR_HOME"])
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    procs.env.update({"POWERFLEET_RUNS_DIR": str(tmp_path / "runs"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                      "FLWR_DISABLE_UPDATE_CHECK": "1"})
    procs.env.pop("POWERFLEET_STORE", None)
    link = procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure",
                                     "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                                     "--port", str(port), "--database", str(tmp_path / "superlink.db")])
    assert wait_http_ok(f"http://127.0.0.1:{port}/health", 90, link), procs.log("superlink")
    cases = {"colour=1": None, **FAILED_RUNS}
    runs = {config: procs.start(f"run-{i}", [str(BIN / "flwr"), "run", ".", "loopback", "--stream",
                                             "--run-config", config], cwd=ROOT)
            for i, config in enumerate(cases)}
    for proc in runs.values():
        proc.wait(timeout=300)
    outputs = {config: procs.log(f"run-{i}") for i, config in enumerate(cases)}
    for output in outputs.values():
        assert "Traceback" not in output, output
    # an unknown key: Flower's SuperLink refuses the run (it names the key in its own log only)
    assert runs["colour=1"].returncode != 0
    assert "Invalid run configuration" in outputs["colour=1"]
    assert "Key 'colour' is not present" in procs.log("superlink")
    listed = subprocess.run([str(BIN / "flwr"), "ls", "loopback", "--format", "json"], capture_output=True,
                            text=True, env=procs.env, timeout=120, check=True)
    status = {str(r["run-id"]): r["status"] for r in json.loads(listed.stdout)["runs"]}
    assert len(status) == len(FAILED_RUNS)
    for config, line in FAILED_RUNS.items():
        output = outputs[config]
        run_id = re.search(r"Successfully started run (\d+)", output)
        assert run_id, output
        assert status[run_id.group(1)] == "finished:failed", (config, status)
        errors = [ln for ln in output.splitlines() if "powerfleet:" in ln]
        assert len(errors) == 1 and errors[0].startswith(line), output  # once, on a line of its own
    runs_dir = tmp_path / "runs"
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # no report directory from a failed run
