"""Pareto front (against brute force) and the constrained mode optimizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powertrain.errors import InvalidParameterError
from powertrain.optimize import Choice, Infeasible, ModeTable, optimize
from powertrain.pareto import pareto_front
from powertrain.predictor import Prediction


def brute_force_front(t: np.ndarray, p: np.ndarray) -> set[int]:
    keep = set()
    for i in range(len(t)):
        dominated = any(
            t[j] <= t[i] and p[j] <= p[i] and (t[j] < t[i] or p[j] < p[i]) for j in range(len(t))
        )
        if not dominated:
            keep.add(i)
    return keep


points = st.lists(
    st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=0, max_size=60
)  # small integer grid: many ties and duplicates


@settings(max_examples=300, deadline=None)
@given(points)
def test_front_matches_brute_force(pts: list[tuple[int, int]]) -> None:
    t = np.array([a for a, _ in pts], dtype=float)
    p = np.array([b for _, b in pts], dtype=float)
    front = pareto_front(t, p)
    assert set(front.tolist()) == brute_force_front(t, p)
    assert np.all(np.diff(t[front]) >= 0)  # sorted by time
    assert np.all(np.diff(p[front]) <= 0)  # power never rises along the front


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 1e4), st.floats(0.1, 100)), min_size=1, max_size=200))
def test_front_on_continuous_values_and_order_invariance(pts: list[tuple[float, float]]) -> None:
    t = np.array([a for a, _ in pts])
    p = np.array([b for _, b in pts])
    front = set(pareto_front(t, p).tolist())
    assert front == brute_force_front(t, p)
    perm = np.random.default_rng(0).permutation(len(t))
    front_perm = {int(perm[i]) for i in pareto_front(t[perm], p[perm])}
    assert front_perm == front


def _table(times: list[float], powers: list[float], sd: float = 0.0) -> ModeTable:
    modes = pd.DataFrame({"knob": np.arange(len(times), dtype=float)})
    n = len(times)
    pred = Prediction(np.array(times), np.array(powers), np.full(n, sd), np.full(n, sd))
    return ModeTable(modes, pred, ("knob",))


def test_optimizer_respects_cap_and_picks_objective() -> None:
    # (time ms, power W): energy per minibatch = t*p
    table = _table([100, 150, 300, 1000], [40, 20, 9, 8])
    fast = table.choose(power_cap_w=25, objective="time")
    assert isinstance(fast, Choice) and fast.index == 1  # mode 0 breaks the cap
    frugal = table.choose(power_cap_w=25, objective="energy")
    assert isinstance(frugal, Choice) and frugal.index == 2  # 2700 mJ < 3000 < 8000
    assert frugal.energy_j == pytest.approx(2.7)


def test_optimizer_respects_deadline_for_the_work() -> None:
    table = _table([100, 150, 300, 1000], [40, 20, 9, 8])
    res = table.choose(power_cap_w=50, deadline_ms=2000, minibatches=10, objective="energy")
    assert isinstance(res, Choice) and res.index == 1  # mode 2 needs 3000 ms for 10 minibatches
    assert res.work_time_ms <= 2000


def test_margin_makes_choices_safer() -> None:
    table = _table([100, 150, 300], [24, 20, 9], sd=0.1)
    assert isinstance(table.choose(power_cap_w=25, objective="time", margin_z=0), Choice)
    res = table.choose(power_cap_w=25, objective="time", margin_z=1.0)
    assert isinstance(res, Choice) and res.index == 1  # 24 W * e^0.1 = 26.5 W > 25 W
    assert res.power_w_upper <= 25


def test_infeasible_cap_is_typed_with_closest() -> None:
    table = _table([100, 150, 300], [40, 20, 9])
    res = table.choose(power_cap_w=5)
    assert isinstance(res, Infeasible) and res.violated == "power_cap"
    assert res.closest is not None and res.closest.index == 2
    assert "5 W" in res.reason


def test_infeasible_deadline_returns_fastest_under_cap() -> None:
    table = _table([100, 150, 300], [40, 20, 9])
    res = table.choose(power_cap_w=25, deadline_ms=50)
    assert isinstance(res, Infeasible) and res.violated == "deadline"
    assert res.closest is not None and res.closest.index == 1


def test_optimizer_parameter_errors() -> None:
    table = _table([100], [10])
    with pytest.raises(InvalidParameterError, match="objective"):
        table.choose(power_cap_w=20, objective="fun")
    with pytest.raises(InvalidParameterError, match="power_cap_w"):
        table.choose(power_cap_w=-1)
    with pytest.raises(InvalidParameterError, match="deadline_ms"):
        table.choose(power_cap_w=20, deadline_ms=0)


def test_one_shot_optimize_matches_table() -> None:
    modes = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    pred = Prediction(np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]), np.zeros(3), np.zeros(3))
    res = optimize(modes, pred, power_cap_w=2.5, objective="time", knobs=("a",))
    assert isinstance(res, Choice) and res.mode == {"a": 2.0}
