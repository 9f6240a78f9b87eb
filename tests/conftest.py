"""Shared fixtures: the Redis URL, CLI runner, temp dirs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import PrivateRedis, Procs, alive, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the suite runs against (``make test`` makes sure it answers)."""
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the CLI in-process: returns (exit_code, stdout, stderr)."""
    from powerfleet.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def python_exe() -> str:
    """The interpreter running the tests (the project venv)."""
    return sys.executable


@pytest.fixture()
def procs(tmp_path: Path) -> Iterator[Procs]:
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        pids = manager.stop_all()
        assert not [p for p in pids if alive(p)], "processes left running"


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.kill()
