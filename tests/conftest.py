"""Shared fixtures: the Redis URL, CLI runner, temp dirs."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.store import open_store
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.predictor import PowerTrainPredictor
from tests.procs import PrivateRedis, Procs, alive, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(optionalhook=True)  # only pytest-xdist knows this hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``pytest -n 2`` (``make test``): the tests that start Flower processes run one after
    another on one worker - each already loads both cores in bursts, and several write under
    ``runs/`` - while every other test is balanced over both workers. (The controller sees only
    test ids, so the ``flower`` marks are read from the test files' text.)"""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    flower = flower_tests()

    class FlowerApart(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "flower" if is_flower(nodeid, flower) else nodeid

    return FlowerApart(config, log)


def flower_tests() -> set[str]:
    """Test files (``pytestmark`` with ``flower``) and ``file::test`` functions marked ``flower``."""
    marked: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT))
        if re.search(r"^pytestmark = .*pytest\.mark\.flower", text, re.M):
            marked.add(rel)
        marked.update(f"{rel}::{name}" for name in
                      re.findall(r"^@pytest\.mark\.flower\n(?:@.*\n)*def (test_\w+)", text, re.M))
    return marked


def is_flower(nodeid: str, flower: set[str]) -> bool:
    """Whether test ``nodeid`` is one of ``flower`` (:func:`flower_tests`), parameters aside."""
    path, _, name = nodeid.partition("::")
    return path in flower or f"{path}::{name.split('[', 1)[0]}" in flower


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


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store file holding a small orin-agx/resnet18 reference (fitted once)."""
    path = tmp_path_factory.mktemp("store") / "reference.sqlite"
    truth = SimulatedJetson("orin-agx").true_performance("resnet18-imagenet", get_space("orin-agx").modes("powertrain"))
    ref = PowerTrainPredictor(fit_steps=300, members=2, transfer_steps=80).fit(
        truth, device_type="orin-agx", workload="resnet18-imagenet")
    store = open_store(f"file://{path}")
    store.put(ref.to_state(), space=get_space("orin-agx"))
    store.close()
    return path
