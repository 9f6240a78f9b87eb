"""Board power: INA3221 rails, a thread-safe power meter, and a background sampler.

* :class:`Ina3221` finds the rails of the INA3221 monitors (hwmon layout of JetPack 5+,
  ``in*_input`` mV x ``curr*_input`` mA; the JetPack 4 iio layout too) and reads them. Rail
  labels differ per board (AGX Orin: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO;
  Orin Nano/NX: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC; Xavier: GPU, CPU, SOC, CV, VDDRQ, SYS5V).
* :func:`board_total_mw` is the board total as jetson-stats computes it: the module input
  rail (``VDD_IN``/``POM_5V_IN``) where there is one, else the sum of the rails.
* :class:`PowerMeter` keeps a time series of board power and integrates it exactly as a
  piecewise-linear trace; :meth:`PowerMeter.mean_power_w` averages a measurement window.
* :class:`PolledSampler` polls a reader at a fixed rate (default 20 Hz) on a daemon thread.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.errors import DeviceError, check_range

logger = logging.getLogger(__name__)

#: Rails that are the module's input power; when present they are the board total.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
HWMON_GLOBS = ("/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*",)
IIO_GLOBS = ("/sys/bus/i2c/drivers/ina3221x/*/iio:device*",)

#: Reads every rail once; returns {rail name: power in mW}.
RailReader = Callable[[], Mapping[str, float]]


def board_total_mw(rails_mw: Mapping[str, float]) -> float:
    """Board power as jetson-stats reports it: the input rail if present, else the sum of rails."""
    for name in INPUT_RAILS:
        if name in rails_mw:
            return float(rails_mw[name])
    return float(sum(v for k, v in rails_mw.items() if "NC" not in k.split("_")))


@dataclass(frozen=True)
class Rail:
    """One monitored rail: its label and the files to read (kernel paths)."""

    name: str
    voltage_path: str  # mV
    current_path: str  # mA
    power_path: str | None = None  # mW, iio layout only


class Ina3221:
    """The INA3221 rails of a board, read through sysfs."""

    def __init__(self, fs: Sysfs, rails: Sequence[Rail]) -> None:
        if not rails:
            raise DeviceError("no INA3221 rails to read")
        self.fs = fs
        self.rails = tuple(rails)

    @classmethod
    def discover(cls, fs: Sysfs) -> Ina3221 | None:
        """The rails found under the hwmon (JetPack 5+) or iio (JetPack 4) layout, or None."""
        rails: list[Rail] = []
        for pattern in HWMON_GLOBS:
            for directory in fs.glob(pattern):
                for channel in (1, 2, 3):
                    label = fs.try_read(f"{directory}/in{channel}_label")
                    volt = f"{directory}/in{channel}_input"
                    if not label or "NC" in label.split("_") or not fs.exists(volt):
                        continue
                    rails.append(Rail(label, volt, f"{directory}/curr{channel}_input"))
        if not rails:
            for pattern in IIO_GLOBS:
                for directory in fs.glob(pattern):
                    for channel in (0, 1, 2):
                        label = fs.try_read(f"{directory}/rail_name_{channel}")
                        if not label or "NC" in label.split("_"):
                            continue
                        power = f"{directory}/in_power{channel}_input"
                        rails.append(Rail(label, f"{directory}/in_voltage{channel}_input",
                                          f"{directory}/in_current{channel}_input",
                                          power if fs.exists(power) else None))
        return cls(fs, rails) if rails else None

    @property
    def rail_names(self) -> tuple[str, ...]:
        """Rail labels in discovery order."""
        return tuple(r.name for r in self.rails)

    def read_rails_mw(self) -> dict[str, float]:
        """Every rail's power now: mV x mA / 1000 (or the iio ``in_power`` file). Units: mW."""
        out: dict[str, float] = {}
        for rail in self.rails:
            if rail.power_path is not None:
                out[rail.name] = float(self.fs.read_int(rail.power_path))
            else:
                millivolts = self.fs.read_int(rail.voltage_path)
                out[rail.name] = millivolts * self.fs.read_int(rail.current_path) / 1000.0
        return out


@dataclass(frozen=True)
class PowerSample:
    """Board power at one instant: total in W and the rails in mW."""

    t_s: float
    power_w: float
    rails_mw: Mapping[str, float]


def trace_energy_j(times_s: Sequence[float], powers_w: Sequence[float], start_s: float,
                   end_s: float) -> float:
    """Energy of a piecewise-linear power trace between ``start_s`` and ``end_s``. Units: J.

    Outside the sampled span the trace is held at its first/last value.
    """
    if end_s <= start_s or not times_s:
        return 0.0
    t, p = list(times_s), list(powers_w)
    if start_s < t[0]:
        t.insert(0, start_s)
        p.insert(0, p[0])
    if end_s > t[-1]:
        t.append(end_s)
        p.append(p[-1])

    def at(x: float) -> float:
        i = max(0, min(bisect.bisect_right(t, x) - 1, len(t) - 2))
        if t[i + 1] == t[i]:
            return p[i + 1]
        return p[i] + (p[i + 1] - p[i]) * (x - t[i]) / (t[i + 1] - t[i])

    points = [(start_s, at(start_s))]
    points += [(ti, pi) for ti, pi in zip(t, p, strict=True) if start_s < ti < end_s]
    points.append((end_s, at(end_s)))
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2.0 for a, b in itertools.pairwise(points))


def window_mean_power_w(times_s: Sequence[float], powers_w: Sequence[float], start_s: float,
                        end_s: float) -> float:
    """Time-weighted mean power of a piecewise-linear trace over a window. Units: W."""
    if end_s <= start_s:
        raise DeviceError(f"measurement window must have positive length; got {start_s}..{end_s}")
    if not times_s:
        raise DeviceError("no power samples in the measurement window")
    return trace_energy_j(times_s, powers_w, start_s, end_s) / (end_s - start_s)


class PowerMeter:
    """A bounded, thread-safe series of board-power samples and its running energy."""

    def __init__(self, history_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        check_range("history_s", history_s, low=0, low_inclusive=False)
        self.history_s = float(history_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._samples: deque[PowerSample] = deque()
        self._energy_j = 0.0

    def add(self, power_w: float, rails_mw: Mapping[str, float] | None = None,
            t_s: float | None = None) -> None:
        """Record one sample (time defaults to now); samples must arrive in time order."""
        with self._lock:
            t = self.clock() if t_s is None else float(t_s)  # under the lock: samples stay ordered
            if self._samples:
                last = self._samples[-1]
                if t < last.t_s:
                    return  # a late sample from a slower source: drop, keep the trace monotonic
                self._energy_j += (t - last.t_s) * (last.power_w + power_w) / 2.0
            self._samples.append(PowerSample(t, float(power_w), dict(rails_mw or {})))
            while len(self._samples) > 2 and self._samples[1].t_s < t - self.history_s:
                self._samples.popleft()

    @property
    def n_samples(self) -> int:
        """Samples currently held."""
        return len(self._samples)

    def energy_j(self) -> float:
        """Energy integrated from the first sample to the last. Units: J."""
        return self._energy_j

    def latest(self) -> PowerSample | None:
        """The newest sample."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def samples(self, start_s: float = float("-inf"), end_s: float = float("inf")) -> list[PowerSample]:
        """Samples with ``start_s <= t <= end_s``."""
        with self._lock:
            return [s for s in self._samples if start_s <= s.t_s <= end_s]

    def mean_power_w(self, start_s: float, end_s: float) -> float:
        """Time-weighted mean board power over ``[start_s, end_s]``. Units: W."""
        with self._lock:
            data = list(self._samples)
        if data and start_s < data[0].t_s - 1.0:
            logger.warning("power window starts %.1f s before the oldest sample held", data[0].t_s - start_s)
        return window_mean_power_w([s.t_s for s in data], [s.power_w for s in data], start_s, end_s)

    def mean_rails_mw(self, start_s: float, end_s: float) -> dict[str, float]:
        """Time-weighted mean of each rail over the window. Units: mW."""
        with self._lock:
            data = list(self._samples)
        names = {n for s in data for n in s.rails_mw}
        return {n: window_mean_power_w([s.t_s for s in data if n in s.rails_mw],
                                       [s.rails_mw[n] for s in data if n in s.rails_mw], start_s, end_s)
                for n in sorted(names)}


class PolledSampler:
    """Polls ``read`` at ``rate_hz`` on a daemon thread and feeds the meter (rails in mW)."""

    def __init__(self, meter: PowerMeter, read: RailReader, rate_hz: float = 20.0) -> None:
        check_range("power_hz", rate_hz, low=0, low_inclusive=False, high=1000)
        self.meter = meter
        self.read = read
        self.period_s = 1.0 / float(rate_hz)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def sample_now(self) -> PowerSample | None:
        """Take one sample synchronously (window edges are sampled exactly, not just polled)."""
        try:
            rails = self.read()
        except DeviceError as exc:
            self.errors += 1
            if self.errors in (1, 100):
                logger.warning("power sample failed: %s", exc)
            return None
        self.meter.add(board_total_mw(rails) / 1000.0, rails)
        return self.meter.latest()

    def start(self) -> None:
        """Start polling (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.sample_now()
        self._thread = threading.Thread(target=self._loop, name="powerfleet-power", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += self.period_s
            self.sample_now()
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (slow reads): skip ahead rather than burst
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def stop(self) -> None:
        """Stop polling and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
