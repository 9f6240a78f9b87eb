"""How a node picks its power mode for a round.

``powertrain`` uses the shared transferred predictor: the least-energy (or least-time) mode
whose predicted time for the work meets the deadline and whose predicted power stays under
the cap, both with a safety margin; if nothing is feasible it takes the fastest mode under
the cap and trims its work to fit. The baselines model fleets without PowerTrain: ``maxn``
(everything at maximum), ``preset`` (the largest nvpmodel preset whose budget fits the cap),
``random`` (any mode), and ``oracle`` (the simulator's ground truth, for comparison only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from powertrain.devices.base import Device
from powertrain.errors import InvalidParameterError, check_choice
from powertrain.optimize import Choice, ModeTable
from powertrain.predictor.model import Prediction
from powertrain.space import Mode

POLICIES = ("powertrain", "maxn", "preset", "random", "oracle")
#: Minibatch-times reserved for the transient after a mode switch (clocks and power settle,
#: caches refill): the predictor models the steady state only.
TRANSIENT_MINIBATCHES = 2
#: The oracle knows the steady-state truth and the measurement noise (1 sigma), not the draw.
ORACLE_TIME_SIGMA = 0.02
ORACLE_POWER_SIGMA = 0.012


@dataclass(frozen=True)
class Plan:
    """A node's decision for one round."""

    mode: Mode
    work: int  # minibatches it will train
    pred_time_ms: float  # per minibatch; 0 when the policy has no prediction
    pred_power_w: float
    choice: str  # why: "feasible", "trimmed: ...", or the baseline's rule
    preset: str | None = None  # apply as an nvpmodel preset (with its TPC gating)


def plan(policy: str, device: Device, *, work: int, deadline_s: float, power_cap_w: float,
         objective: str, margin_z: float, table: ModeTable | None, rng: np.random.Generator,
         workload: str) -> Plan:
    """Choose the mode and the amount of work for one round."""
    check_choice("policy", policy, POLICIES)
    space = device.space
    if policy in ("powertrain", "oracle"):
        if policy == "oracle":
            table = oracle_table(device, workload)
        if table is None:
            raise InvalidParameterError("policy powertrain needs a predictor; none was delivered to this node")
        res = table.choose(power_cap_w=power_cap_w, deadline_ms=deadline_s * 1000.0, objective=objective,
                           margin_z=margin_z, minibatches=work + TRANSIENT_MINIBATCHES)
        if isinstance(res, Choice):
            return Plan(dict(res.mode), work, res.time_ms, res.power_w, "feasible")
        assert res.closest is not None
        c = res.closest
        fit = math.floor(deadline_s * 1000.0 / max(c.time_ms_upper, 1e-9)) - TRANSIENT_MINIBATCHES
        fit = max(1, min(work, fit))
        return Plan(dict(c.mode), fit, c.time_ms, c.power_w, f"trimmed ({res.violated}): {res.reason}")
    prediction = _predict_one(table)
    if policy == "maxn":
        mode = space.max_mode()
        return Plan(mode, work, *prediction(mode), "maxn: every knob at its maximum")
    if policy == "preset":
        presets = sorted(space.presets.values(), key=lambda p: (p.budget_w or math.inf))
        fitting = [p for p in presets if (p.budget_w or math.inf) <= power_cap_w]
        chosen = fitting[-1] if fitting else presets[0]
        rule = "largest preset within the cap" if fitting else "no preset fits the cap: the smallest"
        return Plan(dict(chosen.mode), work, *prediction(chosen.mode), f"preset {chosen.name}: {rule}",
                    preset=chosen.name)
    modes = space.modes("full")
    row = modes.iloc[int(rng.integers(len(modes)))]
    mode = {k: float(row[k]) for k in space.knob_names}
    return Plan(mode, work, *prediction(mode), "random mode")


def _predict_one(table: ModeTable | None) -> Callable[[Mode], tuple[float, float]]:
    def predict(mode: Mode) -> tuple[float, float]:
        if table is None:
            return 0.0, 0.0
        index = table.index_of(mode)
        return (float(table.time_ms[index]), float(table.power_w[index])) if index >= 0 else (0.0, 0.0)

    return predict


def oracle_table(device: Device, workload: str) -> ModeTable:
    """Ground-truth steady state of every mode (simulated boards only)."""
    truth_fn = getattr(device, "true_performance", None)
    if truth_fn is None:
        raise InvalidParameterError(
            f"policy oracle needs a simulated device that knows its ground truth; {device.device_type} "
            f"unit {device.unit} is a {type(device).__name__}")
    modes = device.space.modes("full")
    truth: pd.DataFrame = truth_fn(workload, modes)
    n = len(truth)
    pred = Prediction(truth.time_ms.to_numpy(), truth.power_w.to_numpy(), np.full(n, ORACLE_TIME_SIGMA),
                      np.full(n, ORACLE_POWER_SIGMA))
    return ModeTable(modes, pred, device.space.knob_names)
