"""Profiling that pays for itself: deadline-sized bootstrap shares, sequential stopping, the
decision region, calibrated margins and the honest accounting (issue 13)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordinator.bootstrap import BUDGET_FLOOR, Bootstrap, board_time_ratio
from coordinator.margins import MarginCalibrator
from coordinator.records import RoundRecord, breakeven_round
from coordinator.store import builder, open_store
from powerfleet.protocol.messages import NodeInfo
from powertrain.boards import get_space
from powertrain.devices import NoiseModel, SimulatedJetson
from powertrain.optimize import ModeTable, conformal_margin
from powertrain.predictor import PowerTrainPredictor
from powertrain.profiler import SequentialSettings, profile_within
from powertrain.sampling import decision_region, farthest_first_order

WL = "resnet18-imagenet"


def _nodes(dtype: str, n: int) -> list[NodeInfo]:
    return [NodeInfo(node_id=i + 1, device_type=dtype, unit=i, device_spec=f"sim:{dtype}", partition_id=i,
                     predictor_id="", available=True, idle_power_w=4.0) for i in range(n)]


@pytest.fixture()
def nano_boot(reference_store: Path) -> Bootstrap:
    store = open_store(f"file://{reference_store}")
    try:
        plan = builder.plan(store, "orin-nano", WL, builder.BuildSettings(k=20))
    finally:
        store.close()
    assert plan.needs_boards and plan.source is not None
    return Bootstrap.start(plan)


# ---------------------------------------------------------------- sequential profiling
def test_profile_within_keeps_to_its_budget_and_skips_what_cannot_fit() -> None:
    dev = SimulatedJetson("orin-nano", seed=3)
    dev.run(WL, 12)  # warm, as a node is when it joins
    truth_dev = SimulatedJetson("orin-nano", noise=NoiseModel.off())
    modes = get_space("orin-nano").modes("powertrain").sample(12, random_state=2).reset_index(drop=True)
    est = truth_dev.true_performance(WL, modes).time_ms.to_numpy()
    run = profile_within(dev, WL, modes, 20.0, est_time_ms=est)
    assert run.device_seconds <= 20.0 + 1e-6  # never over the budget
    assert 2 <= len(run.frame) < 12 and run.skipped_modes >= 1
    assert run.tried is not None and len(run.tried) >= len(run.frame)  # measured and abandoned modes
    # measured means are close to the truth: sequential stopping only stops once they are known
    truth = truth_dev.true_performance(WL, run.frame.loc[:, list(dev.space.knob_names)])
    err = np.abs(run.frame.time_ms.to_numpy() / truth.time_ms.to_numpy() - 1)
    assert np.median(err) < 0.1, err
    assert (run.frame.windows >= SequentialSettings().min_windows).all()


def test_profile_within_stops_early_when_means_are_known() -> None:
    modes = get_space("orin-agx").modes("powertrain").sample(4, random_state=5).reset_index(drop=True)
    quiet = profile_within(SimulatedJetson("orin-agx", noise=NoiseModel.off()), WL, modes, 600.0)
    cfg = SequentialSettings()
    assert (quiet.frame.windows == cfg.min_windows).all()  # no noise: the minimum number of windows
    strict = SequentialSettings(time_rel_se=1e-6, power_rel_se=1e-6)
    loud = profile_within(SimulatedJetson("orin-agx", seed=1), WL, modes, 600.0, strict)
    assert (loud.frame.windows == cfg.max_windows).all()  # an unreachable precision: the most windows
    assert loud.measured_minibatches > quiet.measured_minibatches


def test_profile_within_guards_the_power_cap() -> None:
    space = get_space("orin-agx")
    dev = SimulatedJetson("orin-agx", noise=NoiseModel.off())
    pool = space.modes("powertrain")
    truth = dev.true_performance(WL, pool)
    low = pool[truth.power_w.to_numpy() < 15].head(1)
    high = pool[truth.power_w.to_numpy() > 30].head(3)
    modes = pd.concat([low, high], ignore_index=True)
    est = dev.true_performance(WL, modes)
    run = profile_within(SimulatedJetson("orin-agx", noise=NoiseModel.off()), WL, modes, 600.0,
                         est_time_ms=est.time_ms.to_numpy(), est_power_w=est.power_w.to_numpy(), power_cap_w=20.0)
    assert len(run.frame) == 1 and run.skipped_modes == 3  # the first measurement confirms the estimates
    # without estimates, a mode over the cap is left after its first window
    blind = profile_within(SimulatedJetson("orin-agx", noise=NoiseModel.off()), WL, high.head(1), 600.0,
                           power_cap_w=20.0)
    assert blind.frame.windows.iloc[0] == 1


# ---------------------------------------------------------------- where the decisions are
def test_decision_region_is_feasible_and_near_the_front() -> None:
    t = np.array([100.0, 120.0, 200.0, 400.0, 90.0, 150.0])
    p = np.array([20.0, 10.0, 6.0, 5.0, 30.0, 19.0])
    mask = decision_region(t, p, power_cap_w=25.0, max_time_ms=300.0, near_front=0.1)
    # 4 is over the cap, 3 too slow, 5 (2.85 J) far above the 1.2 J of a faster mode; the fastest is in
    assert mask.tolist() == [True, True, True, False, False, False]
    assert not decision_region(t, p, power_cap_w=1.0, max_time_ms=300.0, near_front=0.1).any()


def test_farthest_first_order_spreads_every_prefix() -> None:
    pool = get_space("orin-nano").modes("powertrain")
    order = farthest_first_order(pool, tuple(pool.columns), start=7, k=20, seed=1)
    assert order[0] == 7 and len(set(order)) == 20
    assert order == farthest_first_order(pool, tuple(pool.columns), start=7, k=20, seed=1)
    first = pool.iloc[order[:2]]
    assert (first.iloc[0] != first.iloc[1]).sum() >= 2  # the second is far from the first


# ---------------------------------------------------------------- bootstrap shares
def test_bootstrap_shares_fit_the_deadline_and_the_cap(nano_boot: Bootstrap) -> None:
    nodes = _nodes("orin-nano", 3)
    caps = {n.node_id: 10.0 for n in nodes}  # the source (Orin AGX) rates no mode under 10 W
    shares = nano_boot.assign(nodes, caps, deadline_s=20.0, local_minibatches=20, objective="energy", seed=0)
    assert set(shares) == {1, 2, 3}  # so the lowest-rated modes are measured first, not none
    dealt = pd.concat([s.modes for s in shares.values()], ignore_index=True)
    assert len(dealt.drop_duplicates()) == len(dealt)  # no mode dealt twice
    for share in shares.values():
        assert BUDGET_FLOOR * 20.0 <= share.budget_s <= 20.0
    # what the boards measured rescales the source: then every offered mode is under the cap
    truth = SimulatedJetson("orin-nano", noise=NoiseModel.off()).true_performance(WL, dealt.head(4))
    first = dealt.head(4).assign(time_ms=truth.time_ms.to_numpy(), power_w=truth.power_w.to_numpy())
    nano_boot.add(first)
    assert nano_boot.calibration().measured == 4
    again = nano_boot.assign(nodes, caps, deadline_s=20.0, local_minibatches=20, objective="energy", seed=0)
    assert again
    for share in again.values():
        assert max(share.power_w) <= 10.0
        assert BUDGET_FLOOR * 20.0 <= share.budget_s <= 20.0
    redealt = pd.concat([s.modes for s in again.values()], ignore_index=True)
    assert not len(redealt.merge(first.loc[:, list(nano_boot.knobs)]))  # a profiled mode is not dealt again
    # and what they would profile is close to the truth (the rescale learnt the board)
    t = SimulatedJetson("orin-nano", noise=NoiseModel.off()).true_performance(WL, redealt)
    est = np.concatenate([s.time_ms for s in again.values()])
    assert np.median(np.abs(np.log(est / t.time_ms.to_numpy()))) < 0.35


def test_bootstrap_is_ready_with_its_modes_or_after_enough_rounds(nano_boot: Bootstrap) -> None:
    knobs = list(nano_boot.knobs)
    rows = nano_boot.modes.head(5).assign(time_ms=500.0, power_w=8.0)
    nano_boot.add(rows)
    assert not nano_boot.ready()  # 5 of 20, first round
    for _ in range(5):
        nano_boot.add(rows.head(0))
    assert nano_boot.ready()  # 6 rounds with at least 5 modes
    assert nano_boot.distinct() == len(rows.loc[:, knobs].drop_duplicates())


def test_board_time_ratio_follows_gpu_size() -> None:
    assert board_time_ratio("orin-agx", "orin-agx") == 1.0
    assert board_time_ratio("orin-agx", "orin-nano") > 1.5  # 2048 vs 1024 CUDA cores
    assert board_time_ratio("orin-nano", "orin-agx") == pytest.approx(1 / board_time_ratio("orin-agx", "orin-nano"))


# ---------------------------------------------------------------- calibrated margins
def test_conformal_margin_is_the_split_conformal_quantile() -> None:
    r = np.linspace(-0.1, 0.1, 99)  # n = 99: rank ceil(100 * 0.9) = 90
    assert conformal_margin(r, 0.1) == pytest.approx(np.sort(r)[89])
    few = np.array([0.05, 0.01, 0.03])
    assert conformal_margin(few, 0.01) == pytest.approx(0.05)  # too few for the level: the largest
    assert conformal_margin(-np.abs(r) - 0.01, 0.1) == 0.0  # never negative
    assert math.isnan(conformal_margin([], 0.1))
    with pytest.raises(ValueError, match="alpha"):
        conformal_margin(r, 1.5)


def test_margin_calibrator_starts_from_cv_and_learns_from_rounds() -> None:
    space = get_space("orin-nano")
    truth = SimulatedJetson("orin-nano").true_performance(WL, space.modes("powertrain"))
    pred = PowerTrainPredictor(fit_steps=150, members=2).fit(truth.sample(120, random_state=0),
                                                             device_type="orin-nano", workload=WL)
    state = pred.to_state()
    assert len(state.target("time").cv_log_residuals) > 0
    cal = MarginCalibrator(deadline_miss_target=0.02, cap_violation_target=0.01)
    assert cal.margins("orin-nano") is None
    cal.reset("orin-nano", state)
    start = cal.margins("orin-nano")
    assert start is not None and start[0] >= 0 and start[1] >= 0
    modes = space.modes("powertrain")
    table = ModeTable(modes, pred.predict(modes), space.knob_names)
    obs = modes.head(60).copy()
    i = [table.index_of({str(k): float(v) for k, v in r.items()}) for r in obs.to_dict("records")]
    obs["time_ms"] = table.time_ms[i] * 1.3  # the boards run 30 % slower than predicted
    obs["power_w"] = table.power_w[i]
    assert cal.observe("orin-nano", table, obs) == 60
    moved = cal.margins("orin-nano")
    # with enough round residuals they alone calibrate: the chosen modes, not every profiled one
    assert moved is not None and moved[0] == pytest.approx(math.log(1.3)) and moved[1] == pytest.approx(0.0)
    assert cal.counts("orin-nano")[1] == 60
    cal.reset("orin-nano", state)  # a new version starts again from its own residuals
    assert cal.counts("orin-nano")[1] == 0


# ---------------------------------------------------------------- accounting
def _round(i: int, energy: float, maxn: float, idle: float = 0.0) -> RoundRecord:
    return RoundRecord(round=i, bootstrap=False, selected=1, on_time=1, late=0, dropped=0, skipped=0,
                       completed=1, energy_j=energy, idle_energy_j=idle, maxn_energy_j=maxn, mean_power_w=1.0,
                       duration_s=1.0, wall_s=1.0, profiling_minibatches=0, accuracy=math.nan, loss=math.nan,
                       predictor_versions="")


def test_breakeven_round_is_where_cumulative_energy_stays_below_maxn() -> None:
    assert breakeven_round([_round(1, 50, 100), _round(2, 50, 100)]) == 1
    assert breakeven_round([_round(1, 150, 100), _round(2, 40, 100), _round(3, 40, 100)]) == 2
    assert breakeven_round([_round(1, 90, 100, idle=20), _round(2, 90, 100)]) == 2  # idle counts
    assert math.isnan(breakeven_round([_round(1, 150, 100)]))
    assert math.isnan(breakeven_round([_round(1, 50, math.nan)]))  # a real board: unknown
