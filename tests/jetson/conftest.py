"""Fixtures: a fake board per recorded board, and a JetsonDevice on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from powertrain.devices.jetson import JetsonDevice
from tests.jetson.fake_tree import BOARDS, FakeBoard, build_tree


@pytest.fixture(params=sorted(BOARDS))
def board(request: pytest.FixtureRequest, tmp_path: Path) -> FakeBoard:
    """Each recorded board as a fake tree (BPMP debugfs and the nvpmodel cap both present)."""
    return build_tree(tmp_path / "root", BOARDS[request.param])


@pytest.fixture()
def device(board: FakeBoard) -> Iterator[JetsonDevice]:
    """A JetsonDevice on ``board`` without a power thread (tests drive sampling)."""
    dev = JetsonDevice(fs=board.fs, power="none")
    yield dev
    dev.close()
