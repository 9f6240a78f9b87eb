"""Profiling: measure minibatch time and board power of a workload over a set of modes.

For each mode the profiler applies it, discards a warm-up (at least ``warmup_minibatches``
and at least ``warmup_s`` seconds on the device clock, as PowerTrain discards its
stabilisation period), then measures ``minibatches`` minibatches as one window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from powertrain.devices.base import Device, StepFn
from powertrain.errors import check_range
from powertrain.profile_io import POWER_COL, TIME_COL
from powertrain.workloads import Workload, resolve_workload

ProgressFn = Callable[[int, int], None]


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
