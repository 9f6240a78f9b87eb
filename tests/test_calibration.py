"""Calibration suite: the simulated boards stay as rough as real ones and on the published points.

Fails when the simulator drifts: an anchor leaves its tolerance band, the roughness vanishes
or grows into wholesale non-monotonicity, different callers stop seeing the same board, or
the boards become easy enough for a ridge on 50 modes. Tables: ``bench/results/simulator.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from powerfleet.sim.analytic import _steady as analytic_steady
from powertrain.boards import get_board, get_space
from powertrain.devices import NoiseModel, SimulatedJetson
from powertrain.devices.calibration import Anchor, anchors, roughness_of, wrong_way_steps
from powertrain.devices.physics import UnitVariation, evaluate
from powertrain.predictor.baselines import ridge_check
from powertrain.profiler import profile
from powertrain.workloads import get_workload, workload_names

ANCHORS = anchors()


@pytest.mark.parametrize("anchor", ANCHORS, ids=[a.name for a in ANCHORS])
def test_anchor_within_tolerance(anchor: Anchor) -> None:
    value = anchor.simulate(False)  # the nominal board: what the constants set
    assert anchor.low <= value <= anchor.high, (
        f"{anchor.name}: simulated {value:.3f} {anchor.unit} outside [{anchor.low:.3f}, {anchor.high:.3f}] "
        f"(published {anchor.published}, {anchor.source})")
    rough = anchor.simulate(True)  # one rough unit strays from it by its roughness only
    assert abs(np.log(rough / value)) < 0.2


@pytest.mark.parametrize("workload", ["resnet18-imagenet", "lstm-wikitext", "kws-dscnn-speechcommands"])
def test_roughness_is_present_and_of_the_stated_size(workload: str) -> None:
    rough, smooth = roughness_of("orin-agx", workload, unit=1, grid="powertrain")
    log_t = np.log(rough.time_ms / smooth.time_ms)
    log_p = np.log(rough.power_w / smooth.power_w)
    assert 0.04 <= log_t.std() <= 0.08, log_t.std()  # "of the order of 5 % on time"
    assert 0.012 <= log_p.std() <= 0.035, log_p.std()  # "... and 2 % on power"
    assert np.abs(log_t).max() < 0.35  # bounded: no mode is off by more than ~40 %


def test_roughness_is_persistent_and_mostly_shared_by_units() -> None:
    modes = get_space("orin-agx").modes("powertrain").sample(300, random_state=4)
    a = SimulatedJetson("orin-agx", unit=3, seed=1).true_performance("mobilenetv3-gld23k", modes)
    b = SimulatedJetson("orin-agx", unit=3, seed=2).true_performance("mobilenetv3-gld23k", modes)
    pd.testing.assert_frame_equal(a, b)  # a property of the board, not of the session
    other = SimulatedJetson("orin-agx", unit=4).true_performance("mobilenetv3-gld23k", modes)
    smooth = SimulatedJetson("orin-agx", unit=3, rough=False).true_performance("mobilenetv3-gld23k", modes)
    unit_gap = np.log(other.time_ms / a.time_ms)
    rough_gap = np.log(a.time_ms / smooth.time_ms)
    assert 0 < unit_gap.std() < 0.5 * rough_gap.std()  # identical boards differ a little


def test_measurements_see_the_roughness() -> None:
    """A profile follows the rough board, not the smooth model: the roughness is learnable signal."""
    modes = get_space("orin-agx").modes("powertrain").sample(200, random_state=2)
    measured = profile(SimulatedJetson("orin-agx", unit=1, seed=8), "resnet18-imagenet", modes).frame
    rough = SimulatedJetson("orin-agx", unit=1).true_performance("resnet18-imagenet", modes)
    smooth = SimulatedJetson("orin-agx", unit=1, rough=False).true_performance("resnet18-imagenet", modes)
    seen = np.log(measured.time_ms.to_numpy() / smooth.time_ms.to_numpy())
    real = np.log(rough.time_ms.to_numpy() / smooth.time_ms.to_numpy())
    assert np.corrcoef(seen, real)[0, 1] > 0.8


def test_every_engine_sees_the_same_board() -> None:
    """run(), true_performance() and the analytic engine's vectorised physics agree per unit."""
    space = get_space("orin-agx")
    modes = space.modes("powertrain").sample(40, random_state=1)
    units = [2, 7, 11]
    wl = get_workload("yolov8n-coco")
    stacked = UnitVariation.stacked([UnitVariation.for_unit("orin-agx", u) for u in units])
    for i, u in enumerate(units):
        truth = SimulatedJetson("orin-agx", unit=u).true_performance(wl.name, modes)
        arr = modes.loc[:, list(space.knob_names)].to_numpy(float)
        t_s, p_w = analytic_steady(get_board("orin-agx").physics, wl, arr, np.ones(len(arr)),
                                   stacked.repeat(i, len(arr)))
        assert np.allclose(t_s * 1000.0, truth.time_ms, rtol=1e-9)
        assert np.allclose(p_w, truth.power_w, rtol=2e-3)  # 3 vs 5 leakage-temperature iterations
    dev = SimulatedJetson("orin-agx", unit=7, noise=NoiseModel.off(), throttle=False)
    mode = {k: float(modes.iloc[5][k]) for k in space.knob_names}
    dev.apply_mode(mode)
    dev.run(wl.name, 5)
    steady = dev.run(wl.name, 5).mean_time_ms
    truth = dev.true_performance(wl.name, pd.DataFrame([mode]))
    assert steady == pytest.approx(float(truth.time_ms.iloc[0]), rel=1e-9)
    ev = evaluate(get_board("orin-agx").physics, wl, *(np.array([mode[k]]) for k in space.knob_names),
                  unit=UnitVariation.for_unit("orin-agx", 7))
    assert steady == pytest.approx(float(ev.time_s[0]) * 1000.0, rel=1e-9)


@pytest.mark.parametrize("workload", ["resnet18-imagenet", "bert-base-squad", "lstm-wikitext",
                                      "kws-dscnn-speechcommands"])
def test_wrong_way_steps_are_local_and_small(workload: str) -> None:
    rough, smooth = roughness_of("orin-agx", workload, unit=0, grid="full")
    knobs = get_space("orin-agx").knob_names
    rough_steps = wrong_way_steps(rough, knobs, "time_ms").set_index("knob")
    smooth_steps = wrong_way_steps(smooth, knobs, "time_ms").set_index("knob")
    assert (smooth_steps.wrong_way_pct == 0).all()  # the mechanisms are monotone
    assert rough_steps.wrong_way_pct.max() > 0  # the board is not
    assert (rough_steps.p95_pct < 20).all() and (rough_steps.max_pct < 35).all(), rough_steps
    # not wholesale: wherever a knob matters (the smooth model gains > 40 % over its range),
    # the rough board still runs faster at the top of that range
    lines = 0
    for knob in knobs:
        others = [k for k in knobs if k != knob]
        ends = {name: frame.sort_values(knob).groupby(others)["time_ms"].agg(["first", "last"])
                for name, frame in (("rough", rough), ("smooth", smooth))}
        matters = ends["smooth"]["last"] < 0.6 * ends["smooth"]["first"]
        lines += int(matters.sum())
        assert (ends["rough"]["last"][matters] < ends["rough"]["first"][matters]).all(), knob
    assert lines > 1000


@pytest.mark.parametrize("workload", workload_names())
def test_ridge_on_50_modes_is_worse_than_6pct_on_time(workload: str) -> None:
    """The issue's ridge (log knobs, squares and pairwise products) on 50 random profiled modes."""
    check = ridge_check("orin-agx", workload, seeds=3)
    assert check.time_mape_measured > 6.0, check
