"""``flwr run .`` on a fresh copy of the repository completes a local simulation.

The copy holds the tracked and unignored files only (no ``.venv``, no ``runs/``, no caches);
the app runs from this environment on Flower's local simulation runtime - a loopback SuperLink
started as ``flwr`` starts its own local one, plus ``--disable-runtime-dependency-installation``
(so nothing is fetched). Nothing in the run says which boards or fleet: the nodes are Flower's
default two virtual SuperNodes and take their boards from the bundled default fleet. The run
config only shortens the run (rounds and bootstrap size); the report lands in ``runs/<run id>``
beside the SuperLink, as documented.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from powerfleet.sim.processes import wait_http_ok
from tests.procs import BIN, Procs, free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.flower, pytest.mark.slow]


def fresh_copy(dest: Path) -> Path:
    """The repository's tracked and unignored files, as a clone's working tree would hold them."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def test_flwr_run_dot_on_a_fresh_copy_simulates_locally(reference_store: Path, tmp_path: Path,
                                                        procs: Procs) -> None:
    clone = fresh_copy(tmp_path / "clone")
    assert not (clone / ".venv").exists() and (clone / "pyproject.toml").is_file()
    store = tmp_path / "store.sqlite"
    shutil.copy(reference_store, store)  # the reference pair is there; the run bootstraps its own task
    port = free_port()
    home = Path(procs.env["FLWR_HOME"])
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    procs.env.update({"POWERFLEET_STORE": f"file://{store}", "XDG_CACHE_HOME": str(tmp_path / "cache"),
                      "FLWR_DISABLE_UPDATE_CHECK": "1"})
    procs.env.pop("POWERFLEET_RUNS_DIR", None)
    link = procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--simulation",
                                     "--disable-runtime-dependency-installation", "--isolation", "subprocess",
                                     "--host", "127.0.0.1", "--port", str(port),
                                     "--database", str(tmp_path / "superlink.db")], cwd=clone)
    assert wait_http_ok(f"http://127.0.0.1:{port}/health", 90, link), procs.log("superlink")
    run = procs.start("flwr-run", [str(BIN / "flwr"), "run", ".", "--stream", "--run-config",
                                   "num-server-rounds=2 transfer-samples=9 profile-minibatches=5"], cwd=clone)
    run.wait(timeout=900)
    output = procs.log("flwr-run")
    assert run.returncode == 0 and "Traceback" not in output, output[-4000:]
    run_id = re.search(r"Successfully started run (\d+)", output)
    assert run_id, output[-4000:]
    listed = subprocess.run([str(BIN / "flwr"), "ls", "--format", "json"], capture_output=True, text=True,
                            env=procs.env, cwd=clone, timeout=120, check=True)
    assert [r["status"] for r in json.loads(listed.stdout)["runs"]] == ["finished:completed"]
    assert "powerfleet round 1/2" in output and "powerfleet round 2/2" in output
    summary = json.loads((clone / "runs" / run_id.group(1) / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["client_rounds"] >= 2  # Flower's default: two virtual nodes
    assert summary["store"] == f"file://{store}"
    mixed = {"orin-agx", "xavier-agx", "orin-nano"}  # the boards came from the bundled default fleet
    assert set(summary["predictors"]) <= mixed and summary["predictors"]
