"""How a node picks its power mode for a round.

``powertrain`` uses the shared transferred predictor: the least-energy (or least-time) mode
whose predicted time for the work meets the deadline and whose predicted power stays under
the cap, both with a safety margin; if nothing is feasible it takes the fastest mode under
the cap and trims its work to fit. The baselines model fleets without PowerTrain: ``maxn``
(everything at maximum), ``preset`` (the largest nvpmodel preset whose budget fits the cap),
``best-preset`` (per board, the cheapest preset that meets cap and deadline, chosen with
hindsight from the simulator's ground truth - what a careful operator would pick after
trying them all), ``random`` (any mode), and ``oracle`` (the simulator's ground truth over
every mode, for comparison only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from powerfleet.protocol.enums import ChoiceKind, Policy
from powertrain.devices.base import Device
from powertrain.errors import InvalidParameterError, check_choice
from powertrain.optimize import TRANSIENT_MINIBATCHES, Choice, ModeTable
from powertrain.predictor.model import Prediction
from powertrain.space import Mode
from powertrain.workloads import Workload


@dataclass(frozen=True)
class Plan:
    """A node's decision for one round."""

    mode: Mode
    work: int  # minibatches it will train
    pred_time_ms: float  # per minibatch; 0 when the policy has no prediction
    pred_power_w: float
    kind: ChoiceKind
    choice: str  # why, in words: the binding constraint, or the baseline's rule
    preset: str | None = None  # apply as an nvpmodel preset (with its TPC gating)


def plan(policy: Policy | str, device: Device, *, work: int, deadline_s: float, power_cap_w: float,
         objective: str, margin_z: float, table: ModeTable | None, rng: np.random.Generator,
         workload: Workload | str, margin_log: tuple[float, float] | None = None) -> Plan:
    """Choose the mode and the amount of work for one round (``margin_log``: calibrated
    margins for ``powertrain``, replacing ``margin_z``)."""
    policy = Policy(check_choice("policy", str(policy), list(Policy)))
    space = device.space
    if policy in (Policy.POWERTRAIN, Policy.ORACLE):
        if policy is Policy.ORACLE:
            table = oracle_table(device, workload)
        if table is None:
            raise InvalidParameterError("policy powertrain needs a predictor; none was delivered to this node")
        res = table.choose(power_cap_w=power_cap_w, deadline_ms=deadline_s * 1000.0, objective=objective,
                           margin_z=margin_z, minibatches=work + TRANSIENT_MINIBATCHES,
                           margin_log=margin_log if policy is Policy.POWERTRAIN else None)
        if isinstance(res, Choice):
            return Plan(dict(res.mode), work, res.time_ms, res.power_w, ChoiceKind.FEASIBLE, "feasible")
        c = res.closest
        if c is None:  # ModeTable.choose always offers a fallback; an empty table would not
            raise InvalidParameterError(f"policy {policy}: no mode to fall back to ({res.reason})")
        fit = math.floor(deadline_s * 1000.0 / max(c.time_ms_upper, 1e-9)) - TRANSIENT_MINIBATCHES
        fit = max(1, min(work, fit))
        return Plan(dict(c.mode), fit, c.time_ms, c.power_w, ChoiceKind.TRIMMED,
                    f"trimmed ({res.violated}): {res.reason}")
    prediction = _predict_one(table)
    if policy is Policy.MAXN:
        mode = space.max_mode()
        return Plan(mode, work, *prediction(mode), ChoiceKind.BASELINE, "maxn: every knob at its maximum")
    if policy is Policy.PRESET:
        presets = sorted(space.presets.values(), key=lambda p: (p.budget_w or math.inf))
        fitting = [p for p in presets if (p.budget_w or math.inf) <= power_cap_w]
        chosen = fitting[-1] if fitting else presets[0]
        rule = "largest preset within the cap" if fitting else "no preset fits the cap: the smallest"
        return Plan(dict(chosen.mode), work, *prediction(chosen.mode), ChoiceKind.BASELINE,
                    f"preset {chosen.name}: {rule}", preset=chosen.name)
    if policy is Policy.BEST_PRESET:
        return _best_preset(device, workload, work=work, deadline_s=deadline_s, power_cap_w=power_cap_w,
                            objective=objective, prediction=prediction)
    modes = space.modes("full")
    row = modes.iloc[int(rng.integers(len(modes)))]
    mode = {k: float(row[k]) for k in space.knob_names}
    return Plan(mode, work, *prediction(mode), ChoiceKind.BASELINE, "random mode")


def _best_preset(device: Device, workload: Workload | str, *, work: int, deadline_s: float, power_cap_w: float,
                 objective: str, prediction: Callable[[Mode], tuple[float, float]]) -> Plan:
    """The cheapest (or fastest) preset whose true power is under the cap and whose true time
    fits the work in the deadline; if none fits, the fastest under the cap with the work
    trimmed; if none is under the cap, the one drawing least."""
    space = device.space
    rows = []
    for p in space.presets.values():
        truth = device.ground_truth(workload, pd.DataFrame([p.mode]), preset=p.name)
        if truth is None:
            raise InvalidParameterError(
                f"policy best-preset chooses with hindsight from the ground truth; {device.device_type} unit "
                f"{device.unit} is a {type(device).__name__}, which has none")
        rows.append((p, float(truth.frame.time_ms.iloc[0]), float(truth.frame.power_w.iloc[0])))
    need = work + TRANSIENT_MINIBATCHES
    under = [r for r in rows if r[2] <= power_cap_w]
    fits = [r for r in under if r[1] * need <= deadline_s * 1000.0]
    if fits:
        key = (lambda r: (r[1] * r[2], r[1])) if objective == "energy" else (lambda r: (r[1], r[1] * r[2]))
        p, _, _ = min(fits, key=key)
        kind, rule, planned = ChoiceKind.BASELINE, "cheapest preset meeting cap and deadline", work
    elif under:
        p, t, _ = min(under, key=lambda r: r[1])
        planned = max(1, min(work, math.floor(deadline_s * 1000.0 / t) - TRANSIENT_MINIBATCHES))
        kind, rule = ChoiceKind.TRIMMED, "no preset fits the work in time: the fastest under the cap, work trimmed"
    else:
        p, _, _ = min(rows, key=lambda r: r[2])
        kind, rule, planned = ChoiceKind.BASELINE, "no preset is under the cap: the one drawing least", work
    return Plan(dict(p.mode), planned, *prediction(p.mode), kind, f"best-preset {p.name}: {rule}", preset=p.name)


def _predict_one(table: ModeTable | None) -> Callable[[Mode], tuple[float, float]]:
    def predict(mode: Mode) -> tuple[float, float]:
        if table is None:
            return 0.0, 0.0
        index = table.index_of(mode)
        return (float(table.time_ms[index]), float(table.power_w[index])) if index >= 0 else (0.0, 0.0)

    return predict


def oracle_table(device: Device, workload: Workload | str) -> ModeTable:
    """Ground-truth steady state of every mode, with the board's measurement noise as the
    uncertainty (the oracle knows the truth and the noise, not the draw; simulated boards only)."""
    modes = device.space.modes("full")
    truth = device.ground_truth(workload, modes)
    if truth is None:
        raise InvalidParameterError(
            f"policy oracle needs a simulated device that knows its ground truth; {device.device_type} "
            f"unit {device.unit} is a {type(device).__name__}")
    n = len(truth.frame)
    pred = Prediction(truth.frame.time_ms.to_numpy(), truth.frame.power_w.to_numpy(), np.full(n, truth.time_sigma),
                      np.full(n, truth.power_sigma))
    return ModeTable(modes, pred, device.space.knob_names)
