"""A user's own task, in a file outside the package, through the command line and through
Flower's deployment engine; and every kind of bad task refused with one line, before anything
is stored or made.

The task file is ``tests/fleet/user_tasks.py.txt`` copied into a temporary directory (it is not
importable as part of this repository). Its predictors are keyed by the task's fingerprint;
a different model gets a pair of its own, the same task in another process reuses its pair.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.store import open_store
from powerfleet.protocol.tasks import fingerprint, load_task
from tests.jetson.fake_tree import BOARDS, build_tree
from tests.procs import BIN, Procs, alive, free_port

ROOT = Path(__file__).resolve().parents[2]
#: Short bootstraps and rounds: a tiny MLP, few profiled modes and minibatches.
QUICK = {"transfer-samples": 9, "profile-minibatches": 5, "local-minibatches": 20, "min-minibatches": 5}


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    """The user's task file, somewhere outside the repository."""
    path = tmp_path / "elsewhere" / "user_tasks.py"
    path.parent.mkdir()
    shutil.copy(ROOT / "tests/fleet/user_tasks.py.txt", path)
    return path


def powerfleet(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "powerfleet", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def pairs(url: str) -> set[tuple[str, str]]:
    store = open_store(url)
    try:
        return {(m.device_type, m.workload) for m in store.list_pairs()}
    finally:
        store.close()


@pytest.mark.flower
@pytest.mark.slow
def test_a_user_task_runs_in_simulate_and_on_three_supernodes(user_file: Path, store_url: str, tmp_path: Path,
                                                              procs: Procs) -> None:
    blobs, wide = f"{user_file}:Blobs", f"{user_file}:WideBlobs"
    keys = {ref: fingerprint(load_task(ref)) for ref in (blobs, wide)}
    assert keys[blobs].startswith("user-blobs+") and keys[wide].startswith("user-blobs-wide+")
    assert keys[blobs] != keys[wide]

    # 1. powerfleet simulate --task path.py:Class (Flower simulation engine, real training)
    fleet = tmp_path / "three.toml"
    fleet.write_text('name = "three"\n[[group]]\ndevice = "sim:orin-agx"\ncount = 3\n')
    flags = [f"--{k}={v}" for k, v in QUICK.items()]
    out = tmp_path / "simulate"
    proc = powerfleet("simulate", "--fleet", str(fleet), "--task", blobs, "--rounds", "1", "--store", store_url,
                      "--out", str(out), *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workload"] == keys[blobs] and summary["bootstrap_rounds"] >= 1
    assert summary["final_accuracy"] > 0.5  # four blobs: chance is 0.25; it really trained
    assert ("orin-agx", keys[blobs]) in pairs(store_url)
    listed = powerfleet("store", "ls", "--store", store_url)
    assert listed.returncode == 0 and f"user-blobs (task {keys[blobs].split('+')[1]})" in listed.stdout
    shown = powerfleet("store", "show", "orin-agx", keys[blobs], "--store", store_url)
    assert shown.returncode == 0 and keys[blobs].split("+")[1] in shown.stdout, shown.stderr

    # 2. The deployment engine: a loopback SuperLink and 3 SuperNodes, flwr run from the repository
    port = free_port()
    home = Path(procs.env["FLWR_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    procs.env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    link = procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure",
                                     "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                                     "--port", str(port), "--database", str(home / "superlink.db")])
    for i in range(3):
        procs.start(f"supernode-{i}", [
            str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}", "--port",
            str(free_port()), "--node-config", f'device="sim:orin-agx?unit={i}" partition-id={i} num-partitions=3'])
    flwr = str(BIN / "flwr")
    deadline = time.monotonic() + 60
    while subprocess.run([flwr, "ls", "loopback"], env=procs.env, capture_output=True).returncode:
        assert time.monotonic() < deadline and link.poll() is None, procs.log("superlink")
        time.sleep(1)

    def flwr_run(reference: str, out: Path, extra: str = "", nodes: int = 3,
                 wait_s: int = 90) -> subprocess.CompletedProcess[str]:
        config = " ".join([f'task="{reference}"', f'store="{store_url}"', f'out-dir="{out}"', "num-server-rounds=1",
                           f"min-available-nodes={nodes}", f"node-wait-timeout-s={wait_s}",
                           *(f"{k}={v}" for k, v in QUICK.items()), extra])
        return subprocess.run([flwr, "run", str(ROOT), "loopback", "--stream", "--run-config", config],
                              env=procs.env, cwd=ROOT, capture_output=True, text=True, timeout=900)

    # the same task in other processes: the same fingerprint, its pair reused (no bootstrap)
    run = flwr_run(blobs, tmp_path / "deployed-blobs")
    deployed = json.loads((tmp_path / "deployed-blobs" / "summary.json").read_text())
    assert deployed["workload"] == keys[blobs], run.stdout[-3000:]
    assert deployed["bootstrap_rounds"] == 0 and deployed["client_rounds"] == 3
    assert deployed["final_accuracy"] > 0.5
    # a different model: a pair of its own (the analytic engine: the pair logic is the same, and a
    # third Flower run would cost this test another minute)
    wide_out = tmp_path / "analytic-wide"
    proc = powerfleet("simulate", "--engine", "analytic", "--fleet", str(fleet), "--task", wide, "--rounds", "1",
                      "--store", store_url, "--out", str(wide_out), *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = json.loads((wide_out / "summary.json").read_text())
    assert other["workload"] == keys[wide] and other["bootstrap_rounds"] >= 1
    stored = pairs(store_url)
    assert {("orin-agx", keys[blobs]), ("orin-agx", keys[wide])} <= stored

    # 3. cost-as on a real board: a fourth SuperNode on a (fake) Jetson refuses it; the run fails
    #    at once with one line naming it, and nothing is made or stored
    board = build_tree(tmp_path / "board", BOARDS["orin-nano"])
    procs.start("jetson", [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                           "--port", str(free_port()), "--node-config",
                           f'device="jetson:auto?root={board.root}&power=none&unit=9" partition-id=3 '
                           "num-partitions=4"])
    refused_out = tmp_path / "cost-as-real"
    # (a long node wait: only the refusal, not the timeout, can end this run in time)
    run = flwr_run(blobs, refused_out, 'cost-as="resnet18-imagenet"', nodes=4, wait_s=3600)
    log = run.stdout + run.stderr
    lines = [ln for ln in log.splitlines() if "powerfleet: " in ln]
    assert lines and "refused the run" in lines[-1] and "cost-as='resnet18-imagenet'" in lines[-1], log[-3000:]
    assert "real board" in lines[-1] and "Traceback" not in lines[-1]
    assert not (refused_out / "summary.json").exists() and pairs(store_url) == stored

    pids = procs.stop_all()
    assert not [p for p in pids if alive(p)]


# ---------------------------------------------------------------- bad input through the CLI
#: One of each kind the issue names, run as a user runs it (a process each): reference -> the line
BAD = {
    "broken-file": "does not import: SyntaxError",
    "NoTestData": "NoTestData does not implement test_data",
    "WrongShape": "a batch's inputs have shape (8,); input_shape says (9,)",
    "NanLoss": "task user-nan: training loss is nan",
    "dataset": "dataset hf:no-such/dataset",
}
#: More ways a reference fails to load, checked in-process (the same code path, no start-up cost).
BAD_IN_PROCESS = {
    "NotATask": "NotATask is not a powerfleet Task",
    "Missing": "has no Missing",
    "missing-file": "nowhere.py not found",
    "no_such_module:Task": "module no_such_module does not import",
}


def _references(user_file: Path) -> dict[str, str]:
    broken = user_file.parent / "broken.py"
    broken.write_text("from powerfleet.protocol.tasks import Task\nclass Task2(Task:\n")
    named = {"missing-file": f"{user_file.parent / 'nowhere.py'}:Blobs", "broken-file": f"{broken}:Task2",
             "no_such_module:Task": "no_such_module:Task",
             "dataset": "powerfleet.tasks.vision:ResNet18?dataset=hf:no-such/dataset&image_px=32&width=0.125&workers=0"}
    return {key: named.get(key, f"{user_file}:{key}") for key in (*BAD, *BAD_IN_PROCESS)}


@pytest.mark.slow
def test_bad_tasks_are_one_line_and_store_nothing(user_file: Path, tmp_path: Path) -> None:
    """Each refused by ``powerfleet simulate`` with one line naming it, exit 2 and no
    traceback; no store file, no report directory."""
    references = _references(user_file)
    fleet = tmp_path / "one.toml"
    fleet.write_text('[[group]]\ndevice = "sim:orin-nano"\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    running = {}
    for key in BAD:  # in parallel: each is mostly interpreter start-up
        running[key] = subprocess.Popen(
            [sys.executable, "-m", "powerfleet", "simulate", "--fleet", str(fleet), "--task", references[key],
             "--store", f"file://{tmp_path / key / 'store.sqlite'}", "--out", str(tmp_path / key / "out")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    for key, needle in BAD.items():
        stdout, stderr = running[key].communicate(timeout=300)
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert running[key].returncode == 2 and "Traceback" not in stderr, (key, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (key, stderr)
        assert stdout == "" and not (tmp_path / key).exists(), key  # nothing stored, nothing made


@pytest.mark.parametrize("key", list(BAD_IN_PROCESS))
def test_references_that_do_not_load_are_one_line(cli, user_file: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                  key: str) -> None:
    fleet = tmp_path / "one.toml"
    fleet.write_text('[[group]]\ndevice = "sim:orin-nano"\n')
    run = tmp_path / "run"
    code, out, err = cli("simulate", "--fleet", str(fleet), "--task", _references(user_file)[key],
                         "--store", f"file://{run / 'store.sqlite'}", "--out", str(run / "out"))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and BAD_IN_PROCESS[key] in lines[0], err
    assert not run.exists()
