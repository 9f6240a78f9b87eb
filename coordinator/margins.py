"""Calibrated safety margins: how far above its prediction a node must plan, per device type.

A fixed z (``margin-z``) trusts the ensemble's spread to be calibrated; it is not, and how
wrong it is differs by board and workload. With ``margin = "conformal"`` the margins come
from held-out residuals ``log(measured / predicted)`` instead (split conformal prediction,
:func:`powertrain.optimize.conformal_margin`): first the predictor's own cross-validation
residuals (stored in its artifact), then - as rounds run - the residuals of what the boards
measure at the modes actually chosen, which also carry the optimizer's selection bias (the
chosen mode is the one whose power looks lowest). Time uses ``deadline-miss-target``, power
``cap-violation-target``. A new predictor version starts again from its own residuals.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from powertrain.optimize import ModeTable, conformal_margin
from powertrain.predictor import PredictorState

#: Round residuals kept per device type (the most recent).
MAX_ROUND_RESIDUALS = 400
#: From this many round residuals on, they alone calibrate (the CV residuals spread over every
#: profiled mode; the round ones are where the choices are, selection bias included).
MIN_ROUND_RESIDUALS = 20


@dataclass
class _Residuals:
    cv_time: tuple[float, ...]
    cv_power: tuple[float, ...]
    time: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_ROUND_RESIDUALS))
    power: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_ROUND_RESIDUALS))


class MarginCalibrator:
    """Conformal (time, power) log margins per device type (see the module docstring)."""

    def __init__(self, *, deadline_miss_target: float, cap_violation_target: float) -> None:
        self.alpha_time = deadline_miss_target
        self.alpha_power = cap_violation_target
        self._by_type: dict[str, _Residuals] = {}

    def reset(self, device_type: str, state: PredictorState) -> None:
        """A predictor version was installed for the type: start from its CV residuals."""
        self._by_type[device_type] = _Residuals(state.target("time").cv_log_residuals,
                                                state.target("power").cv_log_residuals)

    def observe(self, device_type: str, table: ModeTable, observed: pd.DataFrame) -> int:
        """Add the residuals of round observations (knob columns, time_ms, power_w) against the
        type's current predictions; returns how many were added."""
        res = self._by_type.get(device_type)
        if res is None or not len(observed):
            return 0
        added = 0
        for row in observed.to_dict("records"):
            i = table.index_of({str(k): float(v) for k, v in row.items() if k in table.knobs})
            if i < 0:
                continue
            res.time.append(math.log(float(row["time_ms"]) / float(table.time_ms[i])))
            res.power.append(math.log(float(row["power_w"]) / float(table.power_w[i])))
            added += 1
        return added

    def margins(self, device_type: str) -> tuple[float, float] | None:
        """(time, power) log margins, or None when the type has no residuals at all."""
        res = self._by_type.get(device_type)
        if res is None:
            return None
        if len(res.time) >= MIN_ROUND_RESIDUALS:  # enough of the residuals that matter: the chosen modes'
            t_res, p_res = np.asarray(res.time), np.asarray(res.power)
        else:
            t_res, p_res = np.r_[res.cv_time, list(res.time)], np.r_[res.cv_power, list(res.power)]
        t = conformal_margin(t_res, self.alpha_time)
        p = conformal_margin(p_res, self.alpha_power)
        if math.isnan(t) or math.isnan(p):
            return None
        return t, p

    def counts(self, device_type: str) -> tuple[int, int]:
        """(cross-validation, round) residuals held for the type."""
        res = self._by_type.get(device_type)
        return (0, 0) if res is None else (len(res.cv_time), len(res.time))
