"""Start real Flower processes in tests and stop every one of them (and their children) by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from powerfleet.sim.processes import ProcessGroup, alive, descendants, free_port

__all__ = ["BIN", "PrivateRedis", "Procs", "alive", "descendants", "free_port"]

BIN = Path(sys.executable).parent


class Procs(ProcessGroup):
    """Processes started by a test (logs in its temp dir, a private FLWR_HOME), stopped by PID."""

    def __init__(self, logs: Path) -> None:
        super().__init__(logs, {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                                "FLWR_HOME": str(logs / "flwr-home")})


class PrivateRedis:
    """A throw-away redis-server on a loopback port, started and killed by PID."""

    def __init__(self, port: int, workdir: Path, persist: bool = False) -> None:
        self.port = port
        self.workdir = workdir
        self.persist = persist  # append-only file in workdir: a restart keeps the data
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is needed (make test installs it)"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client: redis.Redis[bytes] = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
