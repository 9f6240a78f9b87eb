"""The fault-injection suite at the store level (``bench/faults.py``), a few faults per kind:
Redis killed and restarted (empty and persistent), index and bytes tampered on both
backends, crafted bundles imported; one interrupted run and one pair of concurrent runs. The
benchmark runs the same code with 50+ per kind."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.redis
BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_faults", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_faults"] = module
    spec.loader.exec_module(module)
    return module


faults = _bench()


@pytest.mark.parametrize("kind", [k for k in faults.KINDS if k not in faults.RUN_KINDS])
def test_fault_kind_loses_nothing(kind: str, tmp_path: Path) -> None:
    bench = faults.Bench(np.random.default_rng(11), tmp_path)
    row = faults.KINDS[kind][1](bench, 6)
    assert row.faults == 6 and row.rounds == 6, row
    assert row.clean, (row, row.notes)  # no lost round, artifact or traceback; every round did its work


@pytest.mark.slow
@pytest.mark.parametrize("kind", faults.RUN_KINDS)
def test_whole_run_fault_kind_loses_nothing(kind: str, tmp_path: Path) -> None:
    """One fault of each whole-run kind (real processes, ~30 s each; the bench runs 50+): a run
    sent SIGTERM as soon as it has started (seed 3), two runs at once on the embedded file (fault 0
    uses the file)."""
    bench = faults.Bench(np.random.default_rng(3), tmp_path)
    row = faults.KINDS[kind][1](bench, 1)
    assert row.faults == 1, (row, row.notes)
    assert row.clean, (row, row.notes)


def test_the_table_lists_every_row_and_a_total(tmp_path: Path) -> None:
    rows = [faults.FaultRow("a", "x", faults=3, rounds=3, completed=3),
            faults.FaultRow("b", "y", faults=2, rounds=2, completed=1, lost=1, tracebacks=1)]
    text = faults.table(rows)
    assert "| a | 3 | 3/3 | 0 |" in text and "| **total** | 5 | 4/5 | 1 |" in text
    assert not rows[1].clean and rows[0].clean
    faults.write(rows, 3, 0, tmp_path / "faults.md")
    assert "## Kinds and notes" in (tmp_path / "faults.md").read_text()
