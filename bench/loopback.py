"""A loopback Flower deployment for the benches: one SuperLink and N SuperNodes with simulated
Orin Nanos (unit and partition i), as the README's quickstart starts them.

The SuperLink runs with ``--disable-runtime-dependency-installation`` (the app runs in the
checkout's own venv); the connection ``loopback`` is written to a private ``FLWR_HOME``; the
context is entered once every SuperNode has registered, and every process it started is
stopped by PID when it exits.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from powerfleet.sim.processes import ProcessGroup, free_port

CONNECTION = "loopback"


@dataclass(frozen=True)
class Loopback:
    """A running loopback deployment: its processes and the environment ``flwr`` needs."""

    procs: ProcessGroup
    env: dict[str, str]

    def supernode_log(self, i: int) -> str:
        """What SuperNode ``i`` printed so far."""
        return self.procs.log(f"supernode-{i}")


@contextmanager
def loopback(bin_dir: Path, workdir: Path, env: Mapping[str, str], nodes: int = 3,
             timeout_s: float = 120.0) -> Iterator[Loopback]:
    """Start the deployment with the executables in ``bin_dir`` (a venv's ``bin``), logs and
    state under ``workdir``; ``env`` is the environment every process gets."""
    home = workdir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    full_env = {**env, "FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1"}
    procs = ProcessGroup(workdir / "logs", full_env)
    try:
        procs.start("superlink", [str(bin_dir / "flower-superlink"), "--insecure",
                                  "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                                  "--port", str(port), "--database", str(home / "superlink.db")])
        deadline = time.monotonic() + timeout_s
        while subprocess.run([str(bin_dir / "flwr"), "ls", CONNECTION], env=full_env,
                             capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SuperLink did not answer: {procs.log('superlink')[-2000:]}")
            time.sleep(0.2)
        for i in range(nodes):
            node_config = f'device="sim:orin-nano?unit={i}" partition-id={i} num-partitions={nodes}'
            procs.start(f"supernode-{i}", [str(bin_dir / "flower-supernode"), "--insecure", "--superlink",
                                           f"127.0.0.1:{port}", "--port", str(free_port()),
                                           "--node-config", node_config])
        while not all("SuperNode ID:" in procs.log(f"supernode-{i}") for i in range(nodes)):
            if time.monotonic() > deadline:
                raise RuntimeError("the SuperNodes did not register")
            time.sleep(0.2)
        yield Loopback(procs, full_env)
    finally:
        procs.stop_all()
