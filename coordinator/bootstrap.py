"""Bootstrapping a (device type, workload) pair inside FL rounds, within the deadline.

A pair the store cannot serve is built from modes its own boards profile, and that profiling
is the round's training work: every board of the type gets an ordered list of modes and
profiles as many as fit the round's deadline (``client/runtime.py``,
``powertrain.profiler.profile_within``), measuring each only until its mean is known well
enough. The lists come from a *provisional* predictor - the build's source predictor (the
reference, or the workload on another board) evaluated on this board type's modes, scaled
by the two boards' published GPU sizes and rescaled, round by round, to what the boards
measured so far - and hold only modes a fleet
could choose (:func:`powertrain.sampling.decision_region`: under the cap with a margin, fast
enough for the round's work under a deadline 1.5 times the run's, near the time/energy
front), spread out farthest-first from the mode
the fleet is about to choose. Modes not reached are dealt again next round. When the pair
has its ``k`` modes - or the region is exhausted, or enough rounds have passed - the store
transfers the source to them (:func:`coordinator.store.builder.complete`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from coordinator.store import builder
from powerfleet.protocol.messages import NodeInfo
from powertrain.boards import board_names, get_board, get_space
from powertrain.optimize import TRANSIENT_MINIBATCHES
from powertrain.predictor import PowerTrainPredictor
from powertrain.sampling import decision_region, farthest_first_order

#: Log-sd of the provisional predictor before a board of the type was measured: the source is
#: another board or workload, so times may be off by about 2x and power by about 30 %.
PRIOR_TIME_LOG_SD = 0.7
PRIOR_POWER_LOG_SD = 0.3
#: Share of a step's time that scales with GPU size, as an exponent of the CUDA-core ratio.
BOARD_RATIO_EXPONENT = 0.8
#: Upper power of a mode to profile: this many provisional standard deviations above it.
POWER_Z = 2.0
#: Energy within this share of the front counts as near it (wider while predictions are rough).
MIN_NEAR_FRONT = 0.10
#: Plausible choices: minibatch times up to this many times what the full work in the deadline
#: needs, or this many times the fastest mode under the cap. (At 1.5 the profiling boards ran
#: modes ~1.4x slower than the one later chosen: their updates carried ~29 of 50 minibatches.)
DEADLINE_SLACK = 1.15
FASTEST_SLACK = 1.5
#: A board profiles for as long as its normal work would take at the expected choice, but at
#: least this share of the deadline.
BUDGET_FLOOR = 0.3
#: Before any measurement, a cap the source rates no mode under gets this lowest-power share.
UNMEASURED_LOW_POWER_SHARE = 0.05
#: Most modes one board is offered per round (it profiles as many as fit).
MAX_MODES_PER_NODE = 40
#: Rounds after which a pair is built from what it has (at least MIN_BUILD_MODES modes).
MAX_BOOTSTRAP_ROUNDS = 6
MIN_BUILD_MODES = 5


@dataclass
class Calibration:
    """Provisional predictions of every mode of the type (ms, W) and their log-sd."""

    time_ms: np.ndarray
    power_w: np.ndarray
    time_log_sd: float
    power_log_sd: float
    measured: int  # distinct modes it was calibrated on


@dataclass(frozen=True)
class ProfileShare:
    """One board's bootstrap work in a round: modes in priority order, their provisional time
    and upper power, and how long it may profile (what its normal work would take, at most
    the deadline), so a bootstrap round costs about what a normal one does."""

    modes: pd.DataFrame
    time_ms: list[float]
    power_w: list[float]
    budget_s: float


@dataclass
class Bootstrap:
    """A device type whose predictor is being built from profiles collected in rounds."""

    plan: builder.BuildPlan
    modes: pd.DataFrame  # the type's full mode space
    source_time_ms: np.ndarray  # the source predictor on ``modes``
    source_power_w: np.ndarray
    collected: list[pd.DataFrame] = field(default_factory=list)
    rounds: int = 0  # bootstrap rounds attempted
    exhausted: bool = False  # no mode the fleet could choose is left unprofiled

    @classmethod
    def start(cls, plan: builder.BuildPlan) -> Bootstrap:
        """A bootstrap for ``plan`` (a plan that needs boards: it has a source)."""
        if plan.source is None:
            raise ValueError(f"bootstrap of {plan.device_type}/{plan.workload} needs a source predictor")
        modes = get_space(plan.device_type).modes("full")
        pred = PowerTrainPredictor.from_state(plan.source.state).predict(modes)
        scale = board_time_ratio(plan.source.state.device_type, plan.device_type)
        return cls(plan, modes, np.asarray(pred.time_ms, float) * scale, np.asarray(pred.power_w, float))

    @property
    def knobs(self) -> tuple[str, ...]:
        """The type's knob names."""
        return tuple(str(c) for c in self.modes.columns)

    @property
    def wanted(self) -> int:
        """Distinct modes the build wants from the boards (k minus what the store already has)."""
        return max(len(self.plan.modes), 1)

    def have(self) -> pd.DataFrame:
        """Every profiled row so far."""
        return pd.concat(self.collected, ignore_index=True) if self.collected else pd.DataFrame()

    def distinct(self) -> int:
        """Distinct modes profiled so far."""
        have = self.have()
        return len(have.loc[:, list(self.knobs)].drop_duplicates()) if len(have) else 0

    def add(self, profiled: pd.DataFrame) -> None:
        """Record a round's profiles (rows with the knob columns, time_ms and power_w)."""
        self.rounds += 1
        if len(profiled):
            self.collected.append(profiled)

    def ready(self) -> bool:
        """Enough to build: the wanted modes, or all the region offers, or what a few rounds got."""
        have = self.distinct()
        if have >= self.wanted:
            return True
        return have >= MIN_BUILD_MODES and (self.exhausted or self.rounds >= MAX_BOOTSTRAP_ROUNDS)

    # ------------------------------------------------------------------ provisional predictions
    def calibration(self) -> Calibration:
        """The source's predictions rescaled to this type's measurements: per target, log(measured)
        = a + b log(source), b shrunk towards 1; the spread of the residuals (never below what
        a handful of points can promise) is the log-sd. Before any measurement: the source as
        is, with the prior log-sd."""
        have = self.have()
        if not len(have):
            return Calibration(self.source_time_ms, self.source_power_w, PRIOR_TIME_LOG_SD, PRIOR_POWER_LOG_SD, 0)
        means = have.groupby(list(self.knobs), as_index=False)[["time_ms", "power_w"]].mean()
        where = self.modes.reset_index().merge(means, on=list(self.knobs), how="inner")
        rows = where["index"].to_numpy(int)
        out: list[tuple[np.ndarray, float]] = []
        for source, column, prior in ((self.source_time_ms, "time_ms", PRIOR_TIME_LOG_SD),
                                      (self.source_power_w, "power_w", PRIOR_POWER_LOG_SD)):
            out.append(_rescale(np.log(source), rows, np.log(where[column].to_numpy(float)), prior))
        (t_log, t_sd), (p_log, p_sd) = out
        return Calibration(np.exp(t_log), np.exp(p_log), t_sd, p_sd, len(rows))

    # ------------------------------------------------------------------ this round's lists
    def assign(self, nodes: Sequence[NodeInfo], caps_w: Mapping[int, float], *, deadline_s: float,
               local_minibatches: int, objective: str,
               seed: int) -> dict[int, ProfileShare]:
        """Each node's ordered modes to profile this round with their estimated minibatch times
        and board power (nodes with nothing left to profile get no entry). Before the type was
        ever measured, each list starts at the lowest-power mode of its faster half, so the
        first measurement is safe and quick and calibrates the rest."""
        cal = self.calibration()
        done = self.have()
        fresh = np.ones(len(self.modes), bool)
        if len(done):
            seen = done.loc[:, list(self.knobs)].drop_duplicates()
            hit = self.modes.reset_index().merge(seen, on=list(self.knobs), how="inner")["index"].to_numpy(int)
            fresh[hit] = False
        power_up = cal.power_w * math.exp(POWER_Z * cal.power_log_sd)
        near = min(max(MIN_NEAR_FRONT, 2.0 * cal.time_log_sd), 1.0)
        out: dict[int, ProfileShare] = {}
        offered = False
        by_cap: dict[float, list[NodeInfo]] = {}
        for n in nodes:
            by_cap.setdefault(caps_w[n.node_id], []).append(n)
        for cap, group in sorted(by_cap.items()):
            # plausible choices: the full work within DEADLINE_SLACK deadlines, or - for a board that
            # cannot do it - close to its fastest mode under the cap; both as far as predictions go
            under = power_up <= cap
            fastest = float(cal.time_ms[under].min()) if under.any() else math.inf
            max_time_ms = max(DEADLINE_SLACK * deadline_s * 1000.0 / local_minibatches, FASTEST_SLACK * fastest)
            region = decision_region(cal.time_ms, power_up, power_cap_w=cap, max_time_ms=max_time_ms,
                                     near_front=near) & fresh
            if not region.any() and cal.measured == 0 and fresh.any():
                # the source (another board's power) puts nothing under this cap: measure the modes
                # it rates lowest, and let what they draw rescale it (profiling stops a mode over the cap)
                region = fresh & (power_up <= np.quantile(power_up[fresh], UNMEASURED_LOW_POWER_SHARE))
            idx = np.nonzero(region)[0]
            if not len(idx):
                continue
            offered = True
            start = _expected_choice(cal, idx, deadline_s, local_minibatches, objective)
            work_s = float(cal.time_ms[start]) * (local_minibatches + TRANSIENT_MINIBATCHES) / 1000.0
            budget_s = min(deadline_s, max(BUDGET_FLOOR * deadline_s, work_s))
            pool = self.modes.iloc[idx].reset_index(drop=True)
            take = min(len(idx), MAX_MODES_PER_NODE * len(group))
            order = idx[farthest_first_order(pool, self.knobs, int(np.searchsorted(idx, start)), take, seed=seed)]
            for j, node in enumerate(group):
                mine = order[j::len(group)]
                if not len(mine):
                    continue
                if cal.measured == 0:  # first the least power among the faster half: safe and quick
                    fast = cal.time_ms[mine] <= np.median(cal.time_ms[mine])
                    first = int(np.argmin(np.where(fast, power_up[mine], np.inf)))
                    mine = np.r_[mine[first], np.delete(mine, first)]
                out[node.node_id] = ProfileShare(self.modes.iloc[mine].reset_index(drop=True),
                                                 [float(v) for v in cal.time_ms[mine]],
                                                 [float(v) for v in power_up[mine]], budget_s)
        self.exhausted = not offered
        return out


def board_time_ratio(source_type: str, target_type: str) -> float:
    """How much slower the target board type runs the same mode than the source, from their
    published GPU sizes (CUDA cores): ``(cores_source / cores_target) ** BOARD_RATIO_EXPONENT``
    (part of a step is not GPU-bound); 1 for the same or an unknown type."""
    if source_type == target_type or source_type not in board_names() or target_type not in board_names():
        return 1.0
    cores = get_board(source_type).physics.gpu_cuda_cores / get_board(target_type).physics.gpu_cuda_cores
    return float(cores**BOARD_RATIO_EXPONENT)


def _rescale(source_log: np.ndarray, rows: np.ndarray, measured_log: np.ndarray,
             prior_sd: float) -> tuple[np.ndarray, float]:
    """``source_log`` mapped through a + b (x - mean) fitted on ``rows``; and the log-sd."""
    x = source_log[rows]
    r = measured_log - x
    n = len(rows)
    centre = float(x.mean())
    a = float(r.mean())
    b = 0.0
    if n >= 4 and float(np.var(x)) > 0:  # slope of the residuals, shrunk towards 0 (a pure rescale)
        dx = x - centre
        b = float(np.sum(dx * (r - a)) / (np.sum(dx * dx) + 0.05 * n))
    fitted = a + b * (x - centre)
    dof = max(n - (2 if n >= 4 else 1), 1)
    resid_sd = float(np.sqrt(np.sum((r - fitted) ** 2) / dof)) if n > 1 else prior_sd
    # few points promise little: blend towards the prior as a pseudo-count of 2
    sd = math.sqrt((2.0 * prior_sd**2 + n * resid_sd**2) / (n + 2.0))
    return source_log + a + b * (source_log - centre), sd


def _expected_choice(cal: Calibration, idx: np.ndarray, deadline_s: float,
                     local_minibatches: int, objective: str) -> int:
    """The mode of ``idx`` the fleet would choose now: least energy (or time) fitting the work."""
    t = cal.time_ms[idx]
    fits = t * (local_minibatches + TRANSIENT_MINIBATCHES) <= deadline_s * 1000.0
    pool = np.nonzero(fits)[0] if fits.any() else np.arange(len(idx))
    key = t[pool] * cal.power_w[idx][pool] if objective == "energy" and fits.any() else t[pool]
    return int(idx[pool[int(np.argmin(key))]])
