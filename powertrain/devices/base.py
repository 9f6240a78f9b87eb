"""The ``Device`` interface: one board whose power mode can be set and whose training runs
can be timed and metered.

Implementations: :class:`~powertrain.devices.simulated.SimulatedJetson` (a physical model on
a virtual clock) and the real sysfs backend. Callers never branch on the implementation;
they get a device from :func:`powertrain.devices.make_device`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from powertrain.space import Mode, ModeSpace
from powertrain.workloads import Workload

#: A training step callback: called once per minibatch with the minibatch index. Real
#: backends time this work; simulated ones run it (so real training happens) and model time.
StepFn = Callable[[int], None]


@dataclass(frozen=True)
class RunResult:
    """What one measurement window of ``n`` minibatches produced."""

    workload: str
    mode: Mode
    minibatch_time_ms: np.ndarray
    mean_power_w: float
    energy_j: float
    start_s: float
    duration_s: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_minibatches(self) -> int:
        """Number of minibatches in the window."""
        return int(self.minibatch_time_ms.size)

    @property
    def mean_time_ms(self) -> float:
        """Mean per-minibatch time over the window."""
        return float(np.mean(self.minibatch_time_ms)) if self.minibatch_time_ms.size else 0.0


@dataclass(frozen=True)
class GroundTruth:
    """Noise-free steady-state time and power of some modes, and how noisy a measurement is.

    Only a simulated board knows this; the oracle policy and power-cap judgements use it.
    """

    frame: pd.DataFrame  # knob columns, time_ms, power_w; one row per mode
    time_sigma: float  # relative 1-sigma noise of one measured window's time
    power_sigma: float  # ... of its mean power


@dataclass(frozen=True)
class DeviceInfo:
    """A description of a device for logs, the CLI and the coordinator's node query."""

    device_type: str
    unit: int
    backend: str
    space: str
    knobs: tuple[str, ...]
    presets: tuple[str, ...]
    mode_count: int
    details: Mapping[str, Any] = field(default_factory=dict)


class Device(abc.ABC):
    """A board with a power-mode space, a mode setter, a training runner and an energy meter.

    A backend passes its mode space and unit id to ``__init__``; the device type is the
    space's name (it keys predictors in the store).
    """

    #: Whether time and power are modelled (a simulated board) rather than measured; only a
    #: simulated board may be charged another workload's cost (``cost-as``).
    simulated: bool = False

    def __init__(self, space: ModeSpace, unit: int) -> None:
        self._space = space
        self._unit = int(unit)

    @property
    def device_type(self) -> str:
        """Device type name, e.g. ``orin-agx``; keys predictors in the store."""
        return self._space.name

    @property
    def unit(self) -> int:
        """Identifier of this physical unit among boards of its type."""
        return self._unit

    @property
    def space(self) -> ModeSpace:
        """The modes this board accepts."""
        return self._space

    @abc.abstractmethod
    def apply_mode(self, mode: Mapping[str, float]) -> Mode:
        """Set the board to ``mode`` (validated against :attr:`space`) and return it as applied.

        Raises ModeError for a mode outside the space and DeviceError if the board refuses;
        on failure the previous mode stays in force.
        """

    def apply_preset(self, name: str) -> Mode:
        """Set a named vendor preset (nvpmodel entry) and return its mode."""
        return self.apply_mode(self.space.preset(name).mode)

    @abc.abstractmethod
    def current_mode(self) -> Mode:
        """The mode in force, read back from the board."""

    @abc.abstractmethod
    def run(self, workload: Workload | str, n_minibatches: int, step: StepFn | None = None) -> RunResult:
        """Train ``n_minibatches`` of ``workload`` (a catalog name or a :class:`Workload`) in the
        current mode; one measurement window.

        Returns per-minibatch times and the mean board power over the window. ``step`` is the
        real training step to execute per minibatch (None: the backend's own runner).
        """

    @abc.abstractmethod
    def energy_j(self) -> float:
        """Cumulative board energy since the device object was created (J)."""

    @abc.abstractmethod
    def now_s(self) -> float:
        """The device's clock in seconds (virtual for simulated boards)."""

    @abc.abstractmethod
    def idle(self, duration_s: float) -> None:
        """Let the board sit idle for ``duration_s`` (advances a virtual clock; meters energy)."""

    # ------------------------------------------------------------------ optional capabilities
    def idle_power_w(self) -> float | None:
        """Idle power in the lowest mode (W): the floor any power cap must clear; None if unknown."""
        return None

    def ground_truth(self, workload: Workload | str, modes: pd.DataFrame, *,
                     preset: str | None = None) -> GroundTruth | None:
        """Noise-free steady state of ``modes`` (applied as ``preset``, with its TPC gating, if
        given); None on a board that can only be measured, as every real one."""
        return None

    def info(self) -> DeviceInfo:
        """Describe this device."""
        return DeviceInfo(
            device_type=self.device_type,
            unit=self.unit,
            backend=type(self).__name__,
            space=self.space.name,
            knobs=self.space.knob_names,
            presets=tuple(self.space.presets),
            mode_count=self.space.size,
        )

    def snapshot(self) -> dict[str, float | int | str | bool]:
        """State the device carries between processes (flat scalars; empty by default).

        A simulated board's clock, temperature, counters and noise generator live in memory,
        so a node that runs each round in a fresh process saves them with this and
        :meth:`restore`; a real board keeps its state in hardware and returns nothing.
        """
        return {}

    def restore(self, snapshot: Mapping[str, float | int | str | bool]) -> None:  # noqa: B027
        """Resume from a :meth:`snapshot` (default: nothing to restore)."""

    def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release the board (real backends restore its original settings)."""

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
