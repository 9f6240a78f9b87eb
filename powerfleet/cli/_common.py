"""Shared helpers of the CLI commands: consoles, progress bars, option checks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from powertrain.boards import board_names, get_space
from powertrain.errors import InvalidParameterError, ModeError, check_range, format_allowed
from powertrain.space import VALUE_TOLERANCE, ModeSpace

#: Results go to stdout, progress and diagnostics to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=not sys.stderr.isatty(),
        disable=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, n: int) -> None:
            bar.update(task, completed=done, total=n)

        yield update


def bounded(option: str, value: float, low: float, high: float, *, low_inclusive: bool = True) -> float:
    """``value`` if it is a finite number in the interval, else one line naming the option and the range."""
    return float(check_range(option, value, low=low, high=high, low_inclusive=low_inclusive))


def board_space(device_type: str) -> ModeSpace | None:
    """The mode space of a known board type (None for a generic device type)."""
    return get_space(device_type) if device_type in board_names() else None


def device_name(spec: str) -> str:
    """The device type of ``orin-agx``, ``sim:orin-agx`` or ``sim:orin-agx?unit=2``."""
    return spec.split(":", 1)[-1].split("?", 1)[0]


def check_model_device(model_device: str, device: str, option: str = "--device") -> None:
    """Refuse using a model of one device type with another's modes."""
    if model_device and model_device != device_name(device):
        raise InvalidParameterError(f"{option} {device}: the model is for {model_device}; use a model of "
                                    f"{device_name(device)} (or --device {model_device})")


def check_modes(frame: pd.DataFrame, knobs: tuple[str, ...], space: ModeSpace | None, *, off_grid: bool,
                source: str) -> pd.DataFrame:
    """Refuse knob values a device cannot run: not in its tables (or, with ``--off-grid``, outside
    their range); knobs of a generic device only need to be finite (checked on reading)."""
    if space is None:
        return frame
    for name in knobs:
        if name not in space.knob_names:
            continue
        knob = space.knob(name)
        values = frame[name].to_numpy(dtype=float)
        table = np.asarray(knob.values)
        if off_grid:
            bad = (values < knob.low - VALUE_TOLERANCE) | (values > knob.high + VALUE_TOLERANCE)
            allowed = f"in [{knob.low:g}, {knob.high:g}] (the range of {space.name})"
        else:
            bad = np.abs(values[:, None] - table[None, :]).min(axis=1) > VALUE_TOLERANCE
            allowed = f"one of {space.name}'s values: {format_allowed(knob.values)} (--off-grid allows values between)"
        if bad.any():
            row = int(np.argmax(bad))
            raise ModeError(f"{source}: row {row + 1}: {name}={values[row]:g} is not allowed; {name} must be {allowed}")
    return frame
