"""Processes the simulation starts (a loopback SuperLink, ``flwr run``), each stopped by PID.

Flower's processes start children of their own (``flower-superexec``, ``flwr-serverapp``,
the simulation runtime, Ray workers), some of which leave the parent's session; stopping a
process therefore means stopping its process group and every descendant, first with SIGTERM
and then, after a grace period, with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, session id) for every process."""
    table = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat_file.parent.name)] = (int(fields[1]), fields[0], int(fields[3]))
    return table


def session_members(sid: int) -> list[int]:
    """Every live process of session ``sid`` (orphans whose parent has exited included)."""
    return [pid for pid, (_, state, session) in _proc_table().items() if session == sid and state != "Z"]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children that left its session included)."""
    table = _proc_table()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, _) in table.items():
            if ppid == parent and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    info = _proc_table().get(pid)
    return info is not None and info[1] != "Z"


class ProcessGroup:
    """Processes started in sessions of their own, logging to files; stopped with all descendants."""

    def __init__(self, logs: Path, env: Mapping[str, str] | None = None) -> None:
        self.logs = logs
        self.env = dict(env if env is not None else os.environ)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: Sequence[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` with its output in ``<logs>/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True, cwd=cwd or self.logs)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        """What ``name`` wrote so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self, grace_s: float = 10.0) -> list[int]:
        """SIGTERM every started process, its descendants and its session (each was started in a
        session of its own, which orphans keep), then SIGKILL; returns all PIDs."""
        pids: list[int] = []
        for proc in self.started:
            pids += [proc.pid, *descendants(proc.pid), *session_members(proc.pid)]
        pids = list(dict.fromkeys(pids))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)  # the group it leads, if it leads one
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            for proc in self.started:
                proc.poll()
            time.sleep(0.1)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        return pids


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll ``url`` until it answers 2xx (True), ``proc`` exits or the time is up (False)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=0.5).is_success:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False
