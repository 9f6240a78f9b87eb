"""Mode choice on constructed predictors: deadline, cap, trimming, and the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from client import policies
from powertrain.devices import GroundTruth, SimulatedJetson
from powertrain.errors import InvalidParameterError
from powertrain.optimize import TRANSIENT_MINIBATCHES, ModeTable
from powertrain.predictor import Prediction


def exact_table(device: SimulatedJetson, workload: str, sd: float = 0.01) -> ModeTable:
    """A 'predictor' that knows the truth, with a small stated uncertainty."""
    modes = device.space.modes("full")
    truth = device.true_performance(workload, modes)
    n = len(truth)
    return ModeTable(modes, Prediction(truth.time_ms.to_numpy(), truth.power_w.to_numpy(), np.full(n, sd),
                                       np.full(n, sd)), device.space.knob_names)


def test_powertrain_meets_deadline_and_cap_at_least_energy() -> None:
    dev = SimulatedJetson("orin-agx", noise=None)
    table = exact_table(dev, "resnet18-imagenet")
    plan = policies.plan("powertrain", dev, work=50, deadline_s=20.0, power_cap_w=25.0, objective="energy",
                         margin_z=2.0, table=table, rng=np.random.default_rng(0), workload="resnet18-imagenet")
    assert plan.choice == "feasible" and plan.work == 50
    t_up, p_up = table.upper(2.0)
    i = table.index_of(plan.mode)
    allowance = 50 + TRANSIENT_MINIBATCHES
    assert t_up[i] * allowance <= 20_000 and p_up[i] <= 25.0
    feasible = (t_up * allowance <= 20_000) & (p_up <= 25.0)
    assert table.energy_mj[i] == pytest.approx(table.energy_mj[feasible].min())
    fast = policies.plan("powertrain", dev, work=50, deadline_s=20.0, power_cap_w=25.0, objective="time",
                         margin_z=2.0, table=table, rng=np.random.default_rng(0), workload="resnet18-imagenet")
    assert fast.pred_time_ms < plan.pred_time_ms and fast.pred_power_w <= 25.0


def test_trims_work_when_deadline_is_infeasible() -> None:
    dev = SimulatedJetson("orin-nano")
    table = exact_table(dev, "resnet18-imagenet")
    plan = policies.plan("powertrain", dev, work=100, deadline_s=10.0, power_cap_w=30.0, objective="energy",
                         margin_z=1.0, table=table, rng=np.random.default_rng(0), workload="resnet18-imagenet")
    assert plan.choice.startswith("trimmed (deadline)")
    assert 1 <= plan.work < 100
    t_up, _ = table.upper(1.0)
    i = table.index_of(plan.mode)
    assert t_up[i] * (plan.work + TRANSIENT_MINIBATCHES) <= 10_000
    assert t_up[i] == pytest.approx(t_up.min())  # the fastest mode under the (loose) cap


def test_cap_below_every_mode_takes_the_lowest_power_mode() -> None:
    dev = SimulatedJetson("xavier-agx")
    table = exact_table(dev, "bert-base-squad")
    plan = policies.plan("powertrain", dev, work=5, deadline_s=60.0, power_cap_w=3.0, objective="energy",
                         margin_z=0.0, table=table, rng=np.random.default_rng(0), workload="bert-base-squad")
    assert plan.choice.startswith("trimmed (power_cap)")
    assert plan.pred_power_w == pytest.approx(table.power_w.min())


def test_baselines() -> None:
    dev = SimulatedJetson("orin-agx")
    rng = np.random.default_rng(3)
    kw = {"work": 30, "deadline_s": 10.0, "objective": "energy", "margin_z": 2.0, "table": None,
          "workload": "resnet18-imagenet"}
    assert policies.plan("maxn", dev, power_cap_w=25.0, rng=rng, **kw).mode == dev.space.max_mode()  # type: ignore[arg-type]
    preset = policies.plan("preset", dev, power_cap_w=35.0, rng=rng, **kw)  # type: ignore[arg-type]
    assert preset.preset == "MODE_30W" and preset.work == 30
    assert policies.plan("preset", dev, power_cap_w=10.0, rng=rng, **kw).preset == "MODE_15W"  # type: ignore[arg-type]
    a = policies.plan("random", dev, power_cap_w=25.0, rng=np.random.default_rng(1), **kw)  # type: ignore[arg-type]
    b = policies.plan("random", dev, power_cap_w=25.0, rng=np.random.default_rng(1), **kw)  # type: ignore[arg-type]
    assert a.mode == b.mode and dev.space.contains(a.mode)
    with pytest.raises(InvalidParameterError, match="needs a predictor"):
        policies.plan("powertrain", dev, power_cap_w=25.0, rng=rng, **kw)  # type: ignore[arg-type]


def test_oracle_uses_truth_and_needs_a_simulated_board() -> None:
    dev = SimulatedJetson("orin-agx")
    plan = policies.plan("oracle", dev, work=50, deadline_s=20.0, power_cap_w=25.0, objective="energy",
                         margin_z=2.0, table=None, rng=np.random.default_rng(0), workload="resnet18-imagenet")
    truth = dev.true_performance("resnet18-imagenet", pd.DataFrame([plan.mode]))
    assert truth.power_w.iloc[0] <= 25.0 and truth.time_ms.iloc[0] * 52 <= 20_000

    class NoTruth(SimulatedJetson):
        def ground_truth(self, workload: str, modes: pd.DataFrame, *,  # type: ignore[override]
                         preset: str | None = None) -> GroundTruth | None:
            return None  # a board that can only be measured, as a real one

    with pytest.raises(InvalidParameterError, match="oracle needs a simulated device"):
        policies.plan("oracle", NoTruth("orin-agx"), work=5, deadline_s=20.0, power_cap_w=25.0,
                      objective="energy", margin_z=2.0, table=None, rng=np.random.default_rng(0),
                      workload="resnet18-imagenet")


def test_best_preset_is_the_cheapest_preset_meeting_cap_and_deadline() -> None:
    dev = SimulatedJetson("orin-agx", noise=None)
    wl = "resnet18-imagenet"
    kw = {"work": 40, "objective": "energy", "margin_z": 2.0, "table": None, "workload": wl,
          "rng": np.random.default_rng(0)}
    plan = policies.plan("best-preset", dev, deadline_s=20.0, power_cap_w=25.0, **kw)  # type: ignore[arg-type]
    presets = dev.space.presets
    truth = {n: dev.ground_truth(wl, pd.DataFrame([p.mode]), preset=n) for n, p in presets.items()}
    t = {n: float(g.frame.time_ms.iloc[0]) for n, g in truth.items() if g is not None}
    p = {n: float(g.frame.power_w.iloc[0]) for n, g in truth.items() if g is not None}
    ok = [n for n in t if p[n] <= 25.0 and t[n] * (40 + TRANSIENT_MINIBATCHES) <= 20_000]
    assert ok and plan.preset == min(ok, key=lambda n: t[n] * p[n]) and plan.work == 40
    # a deadline no preset under the cap meets: the fastest under the cap, work trimmed
    tight = policies.plan("best-preset", dev, deadline_s=0.5, power_cap_w=25.0, **kw)  # type: ignore[arg-type]
    under = [n for n in t if p[n] <= 25.0]
    assert "work trimmed" in tight.choice and tight.preset == min(under, key=lambda n: t[n])
    assert tight.work < 40
