"""Profiling: measure minibatch time and board power of a workload over a set of modes.

:func:`profile` applies each mode, discards a warm-up (at least ``warmup_minibatches`` and at
least ``warmup_s`` seconds on the device clock, as PowerTrain discards its stabilisation
period), then measures ``minibatches`` minibatches as one window: the offline way, for a
reference grid.

:func:`profile_within` is the in-round way: modes in priority order, each measured in
windows until its mean is known well enough (sequential stopping), all inside a device-time
budget - a mode whose estimated cost no longer fits is left for later, and one that turns
out slower than estimated is abandoned before it overruns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from powertrain.devices.base import Device, StepFn
from powertrain.errors import check_range
from powertrain.profile_io import POWER_COL, TIME_COL
from powertrain.workloads import Workload, resolve_workload

ProgressFn = Callable[[int, int], None]
#: The first minibatches after a mode switch may take this much longer than the steady ones.
TRANSIENT_FACTOR = 1.7
#: profile_within skips a mode whose calibrated power estimate times this exceeds the cap.
POWER_GUARD = 1.05


@dataclass(frozen=True)
class ProfileSettings:
    """How each mode is measured."""

    minibatches: int = 40
    warmup_minibatches: int = 5
    warmup_s: float = 2.0

    def __post_init__(self) -> None:
        check_range("minibatches", self.minibatches, low=1)
        check_range("warmup_minibatches", self.warmup_minibatches, low=0)
        check_range("warmup_s", self.warmup_s, low=0)


@dataclass(frozen=True)
class ProfileRun:
    """A profile plus what collecting it cost."""

    frame: pd.DataFrame
    measured_minibatches: int
    warmup_minibatches: int
    device_seconds: float
    energy_j: float
    skipped_modes: int = 0  # modes left unmeasured: they did not fit the budget (profile_within)
    #: every mode the board ran, measured or abandoned (profile_within; knob columns)
    tried: pd.DataFrame | None = None

    @property
    def total_minibatches(self) -> int:
        """All minibatches run, warm-up included."""
        return self.measured_minibatches + self.warmup_minibatches


def profile(
    device: Device,
    workload: Workload | str,
    modes: pd.DataFrame | Sequence[Mapping[str, float]],
    settings: ProfileSettings | None = None,
    *,
    progress: ProgressFn | None = None,
    step: StepFn | None = None,
) -> ProfileRun:
    """Profile ``workload`` on ``device`` for every mode; one row per mode in input order.

    ``step`` (optional) is a real training step executed for every minibatch, so profiling
    can double as useful training work.
    """
    cfg = settings or ProfileSettings()
    wl = resolve_workload(workload)  # fail fast on an unknown name
    space = device.space
    if isinstance(modes, pd.DataFrame):
        mode_list = [dict(zip(space.knob_names, row, strict=True))
                     for row in space.validate_frame(modes).loc[:, list(space.knob_names)]
                     .itertuples(index=False, name=None)]
    else:
        mode_list = [space.validate(m) for m in modes]
    rows: list[dict[str, float | str]] = []
    measured = warm = 0
    t0, e0 = device.now_s(), device.energy_j()
    for i, mode in enumerate(mode_list):
        device.apply_mode(mode)
        switched_at = device.now_s()
        done = 0
        while done < cfg.warmup_minibatches or device.now_s() - switched_at < cfg.warmup_s:
            device.run(workload, 1, _offset(step, measured + warm))
            done += 1
            warm += 1
        result = device.run(workload, cfg.minibatches, _offset(step, measured + warm))
        measured += result.n_minibatches
        rows.append({**mode, TIME_COL: result.mean_time_ms, POWER_COL: result.mean_power_w,
                     "device": device.device_type, "workload": wl.name})
        if progress is not None:
            progress(i + 1, len(mode_list))
    frame = pd.DataFrame(rows, columns=[*space.knob_names, TIME_COL, POWER_COL, "device",
                                        "workload"])
    return ProfileRun(frame, measured, warm, device.now_s() - t0, device.energy_j() - e0)


def _offset(step: StepFn | None, base: int) -> StepFn | None:
    if step is None:
        return None

    def shifted(i: int) -> None:
        step(base + i)

    return shifted


@dataclass(frozen=True)
class SequentialSettings:
    """How :func:`profile_within` measures a mode.

    A window lasts at least ``window_s`` of device time (boards read power about once a
    second) and ``min_window_minibatches``; a mode is measured for ``min_windows`` to
    ``max_windows`` windows and at most ``max_minibatches`` minibatches, stopping as soon as
    the standard errors of its mean time and power (over windows, relative; the window
    spread pooled over the modes measured so far) are within ``time_rel_se`` and
    ``power_rel_se``.
    """

    warmup_minibatches: int = 4
    warmup_s: float = 1.0
    window_s: float = 1.0
    min_window_minibatches: int = 1
    min_windows: int = 2
    max_windows: int = 4
    max_minibatches: int = 60
    time_rel_se: float = 0.04
    power_rel_se: float = 0.045

    def __post_init__(self) -> None:
        check_range("warmup_minibatches", self.warmup_minibatches, low=0)
        check_range("warmup_s", self.warmup_s, low=0)
        check_range("window_s", self.window_s, low=0)
        check_range("min_window_minibatches", self.min_window_minibatches, low=1)
        check_range("min_windows", self.min_windows, low=1)
        check_range("max_windows", self.max_windows, low=self.min_windows)
        check_range("max_minibatches", self.max_minibatches, low=self.min_window_minibatches)
        check_range("time_rel_se", self.time_rel_se, low=0, low_inclusive=False)
        check_range("power_rel_se", self.power_rel_se, low=0, low_inclusive=False)

    def window_minibatches(self, time_ms: float) -> int:
        """Minibatches in one window at ``time_ms`` per minibatch."""
        return max(self.min_window_minibatches, math.ceil(self.window_s * 1000.0 / max(time_ms, 1e-6)))

    def least_cost_s(self, time_ms: float) -> float:
        """Device time a mode needs at the least: warm-up and ``min_windows`` windows."""
        per_s = time_ms / 1000.0
        warm = max(self.warmup_minibatches * per_s, self.warmup_s)
        return warm + self.min_windows * self.window_minibatches(time_ms) * per_s


class _WindowNoise:
    """How much one window's mean varies, relative, pooled over every mode measured so far:
    two windows of one mode say little about their spread, a few dozen across modes do."""

    def __init__(self, prior_sd: float) -> None:
        self.prior_sd = prior_sd
        self.sum_sq = 0.0
        self.dof = 0

    def add(self, values: list[float]) -> None:
        """The windows of one finished mode."""
        if len(values) >= 2:
            v = np.log(np.asarray(values, float))
            self.sum_sq += float(np.sum((v - v.mean()) ** 2))
            self.dof += len(v) - 1

    def rel_se(self, values: list[float]) -> float:
        """Relative standard error of the mean of ``values`` (inf with fewer than two): the
        pooled spread (the prior counts as two degrees of freedom), or the mode's own if larger
        (a stall or a drift)."""
        if len(values) < 2:
            return math.inf
        v = np.log(np.asarray(values, float))
        pooled = math.sqrt((2 * self.prior_sd**2 + self.sum_sq) / (2 + self.dof))
        return max(pooled, float(np.std(v, ddof=1))) / math.sqrt(len(v))


def profile_within(
    device: Device,
    workload: Workload | str,
    modes: pd.DataFrame,
    budget_s: float,
    settings: SequentialSettings | None = None,
    *,
    est_time_ms: Sequence[float] | np.ndarray | None = None,
    est_power_w: Sequence[float] | np.ndarray | None = None,
    power_cap_w: float | None = None,
    step: StepFn | None = None,
) -> ProfileRun:
    """Profile ``modes`` in order within ``budget_s`` of device time (see the module docstring).

    ``est_time_ms`` (per mode, optional) are predictions of each mode's minibatch time: a
    mode whose least cost (:meth:`SequentialSettings.least_cost_s`) at its estimate - scaled
    by how far earlier modes of this call came out from their estimates - does not fit the
    remaining budget is skipped. Whatever the estimate, a mode whose measured minibatches
    show it cannot finish its windows in time is abandoned at once. ``power_cap_w``: a mode
    measured above the cap is not measured further (its window is kept: it is a sample), and
    with ``est_power_w`` a mode whose estimate - scaled like the times, by what this call
    measured - comes within ``POWER_GUARD`` of the cap is skipped. The frame has a
    ``windows`` column; rows are the measured modes in the order measured.
    """
    cfg = settings or SequentialSettings()
    wl = resolve_workload(workload)
    space = device.space
    frame_in = space.validate_frame(modes).reset_index(drop=True)
    est = None if est_time_ms is None else np.asarray(est_time_ms, float)
    if est is not None and len(est) != len(frame_in):
        raise ValueError(f"est_time_ms has {len(est)} values for {len(frame_in)} modes")
    est_p = None if est_power_w is None else np.asarray(est_power_w, float)
    if est_p is not None and len(est_p) != len(frame_in):
        raise ValueError(f"est_power_w has {len(est_p)} values for {len(frame_in)} modes")
    power_ratios: list[float] = []  # log(measured / estimated) power of the modes measured so far
    tried: list[dict[str, float]] = []
    rows: list[dict[str, float | str]] = []
    measured = warm = skipped = 0
    log_ratios: list[float] = []  # log(seen / estimated) minibatch time of the modes tried so far
    time_noise, power_noise = _WindowNoise(0.03), _WindowNoise(0.04)
    t0, e0 = device.now_s(), device.energy_j()

    def left_s() -> float:
        return budget_s - (device.now_s() - t0)

    for i, row in enumerate(frame_in.loc[:, list(space.knob_names)].itertuples(index=False, name=None)):
        mode = dict(zip(space.knob_names, (float(v) for v in row), strict=True))
        if (est_p is not None and power_cap_w is not None and power_ratios
                and float(est_p[i]) * math.exp(float(np.mean(power_ratios))) * POWER_GUARD > power_cap_w):
            skipped += 1
            continue
        guess = math.nan
        if est is not None:
            guess = float(est[i]) * math.exp(float(np.mean(log_ratios)) if log_ratios else 0.0)
            if cfg.least_cost_s(guess) > left_s():
                skipped += 1
                continue
        device.apply_mode(mode)
        tried.append(mode)
        switched_at = device.now_s()
        done, last_ms = 0, guess
        while done < cfg.warmup_minibatches or device.now_s() - switched_at < cfg.warmup_s:
            if not math.isnan(last_ms) and TRANSIENT_FACTOR * last_ms / 1000.0 > left_s():
                break
            res = device.run(wl, 1, _offset(step, measured + warm))
            done += 1
            warm += 1
            last_ms = float(res.minibatch_time_ms[-1])
        if est is not None and done:  # the last warm-up minibatch, less the switch transient it may carry
            log_ratios.append(math.log(last_ms / TRANSIENT_FACTOR ** (1.0 / done) / max(float(est[i]), 1e-9)))
        times: list[float] = []
        powers: list[float] = []
        sizes: list[int] = []
        per_ms = last_ms
        while done >= cfg.warmup_minibatches and len(times) < cfg.max_windows:
            n = min(cfg.window_minibatches(per_ms), cfg.max_minibatches - sum(sizes))
            if n < 1 or (not times and cfg.min_windows * n * per_ms / 1000.0 > left_s()):
                break  # this mode cannot get its windows in: leave it
            if n * per_ms / 1000.0 > left_s():
                break
            res = device.run(wl, n, _offset(step, measured + warm))
            measured += res.n_minibatches
            times.append(res.mean_time_ms)
            powers.append(res.mean_power_w)
            sizes.append(res.n_minibatches)
            per_ms = float(np.average(times, weights=sizes))
            if power_cap_w is not None and res.mean_power_w > power_cap_w:
                break
            if (len(times) >= cfg.min_windows and time_noise.rel_se(times) <= cfg.time_rel_se
                    and power_noise.rel_se(powers) <= cfg.power_rel_se):
                break
        time_noise.add(times)
        power_noise.add(powers)
        if not times:
            skipped += 1
            continue
        time_ms = float(np.average(times, weights=sizes))
        power_w = float(np.average(powers, weights=np.asarray(times) * np.asarray(sizes)))
        if est is not None:
            log_ratios[-1] = math.log(time_ms / max(float(est[i]), 1e-9))
        if est_p is not None:
            power_ratios.append(math.log(power_w / max(float(est_p[i]), 1e-9)))
        rows.append({**mode, TIME_COL: time_ms, POWER_COL: power_w, "device": device.device_type,
                     "workload": wl.name, "windows": float(len(times))})
    frame = pd.DataFrame(rows, columns=[*space.knob_names, TIME_COL, POWER_COL, "device", "workload", "windows"])
    return ProfileRun(frame, measured, warm, device.now_s() - t0, device.energy_j() - e0, skipped,
                      pd.DataFrame(tried, columns=list(space.knob_names)))
