"""Choosing a power mode from predictions under a power cap and an optional deadline.

Feasibility is judged on *upper* predictions: each prediction raised by ``margin_z``
standard deviations of its uncertainty, so an uncertain predictor picks safer modes - or,
calibrated, by a log margin per target (``margin_log``) taken from held-out residuals by split
conformal prediction (:func:`conformal_margin`), so the rate of constraint violations is the
one asked for rather than whatever z gives. Choices stay among the modes inside the knob
ranges the predictor was fitted on (``Prediction.supported``), so a predictor transferred
from modes in one region never acts on its extrapolation to another. Among
feasible modes the objective picks the least energy (time x power) or the least time. When
nothing is feasible the result is a typed :class:`Infeasible` that names the binding
constraint and carries the closest alternative, never an exception: a power cap below every
mode is a normal answer, not a crash.

:class:`ModeTable` caches the per-mode arrays so a client can choose every round in well
under a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from powertrain.errors import check_choice, check_range
from powertrain.predictor.model import Prediction

OBJECTIVES = ("energy", "time")
#: Minibatch-times a mode switch costs before the work runs at the new mode's pace (clocks and
#: power settle, caches refill): predictors model the steady state only, so a choice for
#: ``n`` minibatches plans for ``n + TRANSIENT_MINIBATCHES``.
TRANSIENT_MINIBATCHES = 2


@dataclass(frozen=True)
class Choice:
    """A chosen mode with its predicted time, power and energy (per minibatch and for the work)."""

    index: int
    mode: Mapping[str, float]
    time_ms: float
    power_w: float
    energy_j: float  # for ``minibatches`` minibatches
    time_ms_upper: float
    power_w_upper: float
    minibatches: int
    objective: str

    @property
    def work_time_ms(self) -> float:
        """Predicted time of all the minibatches."""
        return self.time_ms * self.minibatches

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = asdict(self)
        d["mode"] = dict(self.mode)
        d["feasible"] = True
        return d


@dataclass(frozen=True)
class Infeasible:
    """No mode meets the constraints; ``closest`` is the best fallback and ``reason`` says why."""

    reason: str
    violated: str  # "power_cap" or "deadline"
    closest: Choice | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"feasible": False, "reason": self.reason, "violated": self.violated,
                "closest": None if self.closest is None else self.closest.to_dict()}


Result = Choice | Infeasible


class ModeTable:
    """Predictions for a fixed set of modes, cached as arrays for repeated constrained choices."""

    def __init__(self, modes: pd.DataFrame, prediction: Prediction,
                 knobs: tuple[str, ...] | None = None) -> None:
        if len(modes) != len(prediction.time_ms):
            raise ValueError(f"{len(modes)} modes but {len(prediction.time_ms)} predictions")
        self.knobs = tuple(knobs) if knobs is not None else tuple(
            c for c in modes.columns if not str(c).startswith("pred_"))
        self.modes = modes.reset_index(drop=True)
        self._values = self.modes.loc[:, list(self.knobs)].to_numpy(float)
        self.time_ms = np.asarray(prediction.time_ms, float)
        self.power_w = np.asarray(prediction.power_w, float)
        self.time_log_sd = np.asarray(prediction.time_log_sd, float)
        self.power_log_sd = np.asarray(prediction.power_log_sd, float)
        self.energy_mj = self.time_ms * self.power_w  # per minibatch: ms x W = mJ
        # the modes the predictor has seen data around; choices stay among them (when any)
        sup = prediction.supported
        self.allowed = (np.asarray(sup, bool) if sup is not None and np.any(sup)
                        else np.ones(len(self.time_ms), bool))
        self._upper_cache: dict[object, tuple[np.ndarray, np.ndarray]] = {}
        self._index: dict[tuple[float, ...], int] | None = None

    def upper(self, margin_z: float, margin_log: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Time and power raised by ``margin_z`` standard deviations, or - when given - by the
        log margins ``(time, power)`` (cached per margin)."""
        key: object = margin_z if margin_log is None else ("log", *margin_log)
        if key not in self._upper_cache:
            if margin_log is None:
                self._upper_cache[key] = (self.time_ms * np.exp(margin_z * self.time_log_sd),
                                          self.power_w * np.exp(margin_z * self.power_log_sd))
            else:
                self._upper_cache[key] = (self.time_ms * math.exp(margin_log[0]),
                                          self.power_w * math.exp(margin_log[1]))
        return self._upper_cache[key]

    def index_of(self, mode: Mapping[str, float]) -> int:
        """Row of ``mode`` in the table, or -1 (exact knob values, as validated modes are)."""
        if self._index is None:
            self._index = {tuple(row): i for i, row in enumerate(self._values.tolist())}
        return self._index.get(tuple(float(mode[k]) for k in self.knobs), -1)

    def mode(self, index: int) -> dict[str, float]:
        """The knob values of mode ``index``."""
        return dict(zip(self.knobs, (float(v) for v in self._values[index]), strict=True))

    def choice(self, index: int, margin_z: float, minibatches: int, objective: str,
               margin_log: tuple[float, float] | None = None) -> Choice:
        """A :class:`Choice` for mode ``index``."""
        t_up, p_up = self.upper(margin_z, margin_log)
        return Choice(
            index=int(index), mode=self.mode(index), time_ms=float(self.time_ms[index]),
            power_w=float(self.power_w[index]),
            energy_j=float(self.energy_mj[index]) * minibatches / 1000.0,
            time_ms_upper=float(t_up[index]), power_w_upper=float(p_up[index]),
            minibatches=int(minibatches), objective=objective,
        )

    def choose(self, *, power_cap_w: float, deadline_ms: float | None = None, objective: str = "energy",
               margin_z: float = 2.0, minibatches: int = 1,
               margin_log: tuple[float, float] | None = None) -> Result:
        """The best feasible mode, or :class:`Infeasible` with the closest alternative.

        ``margin_log`` (time, power), when given, replaces ``margin_z``: calibrated margins."""
        check_choice("objective", objective, OBJECTIVES)
        check_range("power_cap_w", power_cap_w, low=0, low_inclusive=False)
        check_range("margin_z", margin_z, low=0)
        if margin_log is not None:
            check_range("margin_log time", margin_log[0], low=-1, high=5)
            check_range("margin_log power", margin_log[1], low=-1, high=5)
        check_range("minibatches", minibatches, low=1)
        if deadline_ms is not None:
            check_range("deadline_ms", deadline_ms, low=0, low_inclusive=False)
        t_up, p_up = self.upper(margin_z, margin_log)
        under_cap = (p_up <= power_cap_w) & self.allowed
        if not under_cap.any():
            i = _argmin_masked(p_up, self.allowed)
            return Infeasible(
                reason=(f"power cap {power_cap_w:g} W is below every mode's predicted power; the "
                        f"lowest is {p_up[i]:.2f} W (with margin z={margin_z:g})"),
                violated="power_cap", closest=self.choice(i, margin_z, minibatches, objective, margin_log))
        feasible = under_cap
        if deadline_ms is not None:
            feasible = under_cap & (t_up * minibatches <= deadline_ms)
            if not feasible.any():
                i = _argmin_masked(t_up, under_cap)
                return Infeasible(
                    reason=(f"no mode under {power_cap_w:g} W finishes {minibatches} minibatch(es) in "
                            f"{deadline_ms:g} ms; the fastest needs {t_up[i] * minibatches:.0f} ms"),
                    violated="deadline", closest=self.choice(i, margin_z, minibatches, objective, margin_log))
        primary, secondary = ((self.energy_mj, self.time_ms) if objective == "energy"
                              else (self.time_ms, self.energy_mj))
        i = _argmin_masked(primary, feasible, secondary)
        return self.choice(i, margin_z, minibatches, objective, margin_log)


def conformal_margin(residuals_log: Sequence[float] | np.ndarray, alpha: float) -> float:
    """Upper margin (log units) that held-out residuals ``log(measured / predicted)`` exceed
    with probability at most ``alpha``: the split-conformal quantile, the
    ``ceil((n + 1)(1 - alpha))``-th smallest residual. With too few residuals for that level
    it is the largest (a weaker promise). Never below 0; NaN without residuals."""
    check_range("alpha", alpha, low=0, high=1, low_inclusive=False, high_inclusive=False)
    r = np.sort(np.asarray(residuals_log, float))
    r = r[np.isfinite(r)]
    if not len(r):
        return math.nan
    rank = math.ceil((len(r) + 1) * (1.0 - alpha))
    return max(float(r[min(rank, len(r)) - 1]), 0.0)


def _argmin_masked(values: np.ndarray, mask: np.ndarray, tie: np.ndarray | None = None) -> int:
    masked = np.where(mask, values, np.inf)
    best = masked.min()
    candidates = np.nonzero(masked == best)[0]
    if tie is not None and len(candidates) > 1:
        return int(candidates[np.argmin(tie[candidates])])
    return int(candidates[0])


def optimize(modes: pd.DataFrame, prediction: Prediction, *, power_cap_w: float,
             deadline_ms: float | None = None, objective: str = "energy", margin_z: float = 2.0,
             minibatches: int = 1, knobs: tuple[str, ...] | None = None) -> Result:
    """One-shot constrained choice (builds a :class:`ModeTable`; reuse one to choose repeatedly)."""
    return ModeTable(modes, prediction, knobs).choose(
        power_cap_w=power_cap_w, deadline_ms=deadline_ms, objective=objective, margin_z=margin_z,
        minibatches=minibatches)
