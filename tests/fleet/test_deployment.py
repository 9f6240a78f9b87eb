"""The same app on the Deployment Engine: a SuperLink and three SuperNodes on loopback, two
rounds with ``flwr run``. ``--insecure`` is used in this test only (TLS is covered by
``tests/test_deploy_tls.py``). Every process started is stopped by PID."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.fleet.conftest import FAST
from tests.procs import BIN, Procs, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.flower, pytest.mark.slow]


def _wait_port(port: int, timeout_s: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_superlink_three_supernodes_two_rounds(store_url: str, tmp_path: Path, procs: Procs) -> None:
    link = free_port()
    procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                              "--database", str(tmp_path / "superlink.db"), "--host", "127.0.0.1",
                              "--port", str(link)])
    _wait_port(link)
    for i in range(3):
        node_config = f'device="sim:orin-nano?unit={i}" partition-id={i} num-partitions=3'
        procs.start(f"supernode{i}", [str(BIN / "flower-supernode"), "--insecure", "--superlink",
                                      f"127.0.0.1:{link}", "--port", str(free_port()), "--node-config", node_config])
    flwr_home = Path(procs.env["FLWR_HOME"])
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    out = tmp_path / "report"
    overrides = " ".join([
        "num-server-rounds=2", f'store="{store_url}"', f'out-dir="{out}"', "deadline-s=30.0", "power-cap-w=20.0",
        "round-timeout-s=150.0", *(f"{k.replace('_', '-')}={v}" for k, v in FAST.items())])
    time.sleep(3)  # let the SuperNodes register
    run = subprocess.run([str(BIN / "flwr"), "run", str(ROOT), "loopback", "--run-config", overrides, "--stream"],
                         capture_output=True, text=True, env=procs.env, timeout=420, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["client_rounds"] == 6
    assert summary["bootstrap_rounds"] == 1 and summary["profiling_minibatches"] > 0
    clients = pd.read_csv(out / "clients.csv")
    assert set(clients.device_type) == {"orin-nano"} and clients.unit.nunique() == 3
    steady = clients[~clients.bootstrap]
    assert (steady.status == "on-time").all() and (steady.true_power_w <= 20.0).all()
    assert summary["predictors"]["orin-nano"]["version"] == 1
