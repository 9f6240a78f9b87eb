"""``SimulatedJetson``: a Jetson board on a virtual clock, driven by the physical model.

Beyond the steady-state model in :mod:`powertrain.devices.physics` (which already includes the
board's persistent roughness) it adds what a real board shows when measured: a warm-up
transient after every mode change (and a longer cold start), lagging power, per-window and
per-minibatch time noise with rare stalls, small unit-to-unit variation, a thermal RC model
whose temperature raises leakage, (switchable) passive throttling above the trip point, and
power read the way tegrastats/jtop read it: one sample about every second, with jitter, each
catching the board at some point of its training step. A run reports the mean of the samples
that fall in its window; the energy meter integrates the readings (each held until the
next). Nothing sleeps: time advances by modelled durations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from powertrain.boards import BoardPhysics, get_board
from powertrain.boards.spec import Roughness
from powertrain.devices.base import Device, DeviceInfo, GroundTruth, RunResult, StepFn
from powertrain.devices.physics import (
    Evaluation,
    UnitVariation,
    evaluate,
    idle_power_w,
    steady_temperature_c,
    with_overrides,
)
from powertrain.errors import DeviceError, check_choice, check_range
from powertrain.space import Mode
from powertrain.workloads import Workload, resolve_workload


@dataclass(frozen=True)
class NoiseModel:
    """Measurement noise of a simulated board (fractions, 1 sigma, unless a unit is named)."""

    time_window_sigma: float = 0.02  # per measurement window: system state, clocks, caches
    time_window_host_sigma: float = 0.02  # more for host-bound windows (OS jitter, GC), by host share
    time_minibatch_sigma: float = 0.03  # per minibatch jitter (averages out over a window)
    stall_probability: float = 0.005  # per minibatch: GC, page-cache miss, loader hiccup
    stall_factor: tuple[float, float] = (1.5, 3.0)
    power_offset_sigma: float = 0.005  # per window: rail offset and averaging drift
    warmup_amplitude: float = 0.6  # extra time of the first minibatch after a mode change
    warmup_minibatches: float = 1.5  # e-folding length of that transient
    cold_amplitude: float = 3.0  # first minibatches after start (allocator, cuDNN autotune)
    power_lag_s: float = 0.5  # time constant of power settling after a change
    power_sample_period_s: float = 1.0  # tegrastats/jtop interval; 0 = continuous, exact metering
    power_sample_jitter_s: float = 0.2  # each interval deviates by up to this much (uniform)
    power_sample_sigma: float = 0.08  # of the dynamic power: where in the step a sample lands

    @classmethod
    def off(cls) -> NoiseModel:
        """No noise and no transients: exact steady-state values (for tests and oracles)."""
        return cls(time_window_sigma=0.0, time_window_host_sigma=0.0, time_minibatch_sigma=0.0, stall_probability=0.0,
                   stall_factor=(1.0, 1.0), power_offset_sigma=0.0, warmup_amplitude=0.0,
                   warmup_minibatches=1.0, cold_amplitude=0.0, power_lag_s=0.0,
                   power_sample_period_s=0.0, power_sample_jitter_s=0.0, power_sample_sigma=0.0)

    def power_window_sigma(self, window_s: float | np.ndarray = 20.0,
                           dynamic_share: float = 0.6) -> float | np.ndarray:
        """Relative error (1 sigma) of a window's mean power: the rail offset plus the spread of
        its ``window_s / power_sample_period_s`` readings (``dynamic_share`` of the power moves
        within a step). For engines and oracles that draw one number per window."""
        if self.power_sample_period_s <= 0:
            return self.power_offset_sigma
        readings = np.maximum(1.0, np.asarray(window_s, float) / self.power_sample_period_s)
        out = np.hypot(self.power_offset_sigma, dynamic_share * self.power_sample_sigma / np.sqrt(readings))
        return float(out) if out.ndim == 0 else out


_SWITCH_S = 0.05  # time to retarget clocks and online cores
_REBOOT_S = 45.0  # a preset with another TPC mask needs a reboot
_THROTTLE_CHECK_S = 1.0  # thermal zone polling interval (cpu-thermal: 1000 ms)
COLD_MINIBATCHES = 10  # the cold start (allocator, cuDNN autotune) is over after this many minibatches


class SimulatedJetson(Device):
    """A simulated Jetson of type ``device_type``; deterministic for ``(seed, unit)``.

    ``unit`` is the physical board (its manufacturing variation and roughness), ``seed`` the
    measurement noise of this session; ``rough=False`` gives the smooth nominal model.
    """

    simulated = True

    def __init__(
        self,
        device_type: str,
        *,
        unit: int = 0,
        seed: int = 0,
        throttle: bool = True,
        fan: str = "max",
        ambient_c: float = 25.0,
        noise: NoiseModel | None = None,
        rough: bool = True,
    ) -> None:
        spec = get_board(device_type)
        check_range("unit", unit, low=0)
        super().__init__(spec.space, unit)
        self._board: BoardPhysics = spec.physics
        if not rough:  # the smooth nominal model (sensitivity studies, tests of the mechanisms)
            self._board = with_overrides(self._board, roughness=Roughness.off())
        check_choice("fan", fan, ["max", "quiet"])
        check_range("ambient_c", ambient_c, low=-20, high=60)
        self._seed = int(seed)
        self._variation = UnitVariation.for_unit(device_type, self._unit)
        self._rng = np.random.default_rng([int(seed), self._unit, 104729])
        self._throttle_enabled = bool(throttle)
        self._fan = fan
        self._ambient_c = float(ambient_c)
        self._noise = noise if noise is not None else NoiseModel()
        self._mode: Mode = self._space.max_mode()
        self._tpc_fraction = 1.0
        self._since_change = 0
        self._cold = True
        self._cold_minibatches = 0  # minibatches since start or the last reboot
        self._clock_s = 0.0
        self._true_energy_j = 0.0  # what the board physically drew
        self._meter_j = 0.0  # integrated power readings up to _meter_t_s
        self._meter_t_s = 0.0
        self._window: list[float] | None = None  # samples of the run in progress
        self._last_eval: tuple[tuple[object, ...], Evaluation] | None = None
        self._offset = 1.0  # rail offset of the run in progress
        self._throttle_level = 0
        self._next_thermal_check_s = _THROTTLE_CHECK_S
        self._temp_c = self._ambient_c
        self._last_check_temp_c = self._ambient_c
        self._power_w = self._idle_power()
        self._reading_w = self._power_w  # the power reading in force (held until the next sample)
        period = self._noise.power_sample_period_s
        self._next_sample_s = float(self._rng.uniform(0.0, period)) if period > 0 else math.inf
        self._temp_c = float(steady_temperature_c(self._board, self._power_w, self._ambient_c,
                                                  fan, self._variation))

    # ------------------------------------------------------------------ Device interface
    def preset_tpc_fraction(self, name: str) -> float:
        """Share of the GPU's TPCs a preset leaves powered (its TPC_PG_MASK)."""
        active = self._space.preset(name).active_tpcs
        return (active or self._board.gpu_tpcs) / self._board.gpu_tpcs

    @property
    def temperature_c(self) -> float:
        """Current junction temperature (modelled)."""
        return self._temp_c

    @property
    def throttle_level(self) -> int:
        """How many table steps passive throttling currently removes from CPU and GPU clocks."""
        return self._throttle_level

    def apply_mode(self, mode: Mapping[str, float]) -> Mode:
        """Set a custom mode (all TPCs active, as PowerTrain's custom nvpmodel entries)."""
        applied = self._space.validate(mode)
        self._switch(applied, 1.0)
        return dict(applied)

    def apply_preset(self, name: str) -> Mode:
        """Set an nvpmodel preset including its TPC power gating (a mask change reboots)."""
        self._switch(self._space.validate(self._space.preset(name).mode), self.preset_tpc_fraction(name))
        return dict(self._mode)

    def current_mode(self) -> Mode:
        """The mode in force."""
        return dict(self._mode)

    def energy_j(self) -> float:
        """Cumulative energy as the board's power readings report it (J).

        The integral of the sampled readings, each held until the next sample (exact with
        continuous metering); this is what a user integrating tegrastats/jtop gets.
        """
        return self._meter_j + self._reading_w * (self._clock_s - self._meter_t_s)

    def true_energy_j(self) -> float:
        """Cumulative energy the board physically drew (J); simulation only, for scoring."""
        return self._true_energy_j

    def now_s(self) -> float:
        """Virtual clock."""
        return self._clock_s

    def idle(self, duration_s: float) -> None:
        """Sit idle in the current mode for ``duration_s`` of virtual time."""
        check_range("duration_s", duration_s, low=0)
        self._advance_idle(float(duration_s))

    def info(self) -> DeviceInfo:
        """Describe the device, including the simulation settings."""
        base = super().info()
        details = {"seed": self._seed, "rough": self._board.roughness.enabled, "throttle": self._throttle_enabled,
                   "fan": self._fan, "ambient_c": self._ambient_c, "temperature_c": round(self._temp_c, 1)}
        return DeviceInfo(base.device_type, base.unit, "sim", base.space, base.knobs,
                          base.presets, base.mode_count, details)

    def run(self, workload: Workload | str, n_minibatches: int, step: StepFn | None = None) -> RunResult:
        """Run ``n_minibatches`` on the virtual clock (executing ``step`` for each, if given)."""
        wl = resolve_workload(workload)
        check_range("n_minibatches", n_minibatches, low=1)
        nz = self._noise
        start_s, start_true = self._clock_s, self._true_energy_j
        window_sigma = nz.time_window_sigma + nz.time_window_host_sigma * float(
            np.asarray(self._evaluate_current(wl).host_share).ravel()[0])
        window_time = math.exp(self._rng.normal(0.0, window_sigma)) if window_sigma else 1.0
        self._offset = 1.0 + (self._rng.normal(0.0, nz.power_offset_sigma) if nz.power_offset_sigma else 0.0)
        self._window = []
        start_meter = self.energy_j()
        times = np.empty(int(n_minibatches))
        level_evaluated = -1
        ev: Evaluation | None = None
        for i in range(int(n_minibatches)):
            if ev is None or level_evaluated != self._throttle_level:
                ev = self._evaluate_current(wl)
                level_evaluated = self._throttle_level
            warm = 1.0
            if self._cold:  # decays with the minibatches run since start (or a reboot), not since a switch
                warm += nz.cold_amplitude * math.exp(-self._cold_minibatches / 1.0)
            warm += nz.warmup_amplitude * math.exp(-self._since_change / max(nz.warmup_minibatches, 1e-9))
            jitter = 1.0
            if nz.time_minibatch_sigma:
                jitter = math.exp(self._rng.normal(0.0, nz.time_minibatch_sigma))
            if nz.stall_probability and self._rng.random() < nz.stall_probability:
                jitter *= self._rng.uniform(*nz.stall_factor)
            dt = float(ev.time_s[0]) * warm * window_time * jitter
            if step is not None:
                step(i)
            # A slower (warm-up or stalled) minibatch does the same work, so its dynamic power
            # is spread thinner; leakage follows the junction temperature.
            dynamic = float(ev.parts_w["dynamic"][0]) / (warm * jitter)
            target = (float(ev.parts_w["static"][0])
                      + float(ev.parts_w["leakage"][0]) * self._leak_scale() + dynamic)
            self._advance(dt, target, dynamic)
            times[i] = dt * 1000.0
            self._since_change += 1
            self._cold_minibatches += 1
        if self._cold_minibatches > COLD_MINIBATCHES:
            self._cold = False
        samples, self._window, offset = self._window, None, self._offset
        self._offset = 1.0
        duration = self._clock_s - start_s
        if nz.power_sample_period_s > 0:
            # the mean of the readings taken in the window; a window shorter than the sampling
            # interval may hold none, and then the reading in force is all a user has
            mean_power = float(np.mean(samples)) if samples else self._reading_w
        else:
            mean_power = (self.energy_j() - start_meter) / duration
        true_mean = (self._true_energy_j - start_true) / duration
        return RunResult(
            workload=wl.name, mode=dict(self._mode), minibatch_time_ms=times,
            mean_power_w=mean_power, energy_j=mean_power * duration, start_s=start_s, duration_s=duration,
            extra={"temperature_c": self._temp_c, "throttle_level": self._throttle_level,
                   "power_samples": len(samples or []), "true_mean_power_w": true_mean,
                   "power_offset": offset},
        )

    def snapshot(self) -> dict[str, float | int | str | bool]:
        """Clock, energy, thermal and noise state as flat scalars (see ``Device.snapshot``)."""
        snap: dict[str, float | int | str | bool] = {f"mode.{k}": v for k, v in self._mode.items()}
        snap.update({
            "device_type": self.device_type, "unit": self._unit, "seed": self._seed,
            "tpc_fraction": self._tpc_fraction, "since_change": self._since_change, "cold": self._cold,
            "cold_minibatches": self._cold_minibatches,
            "clock_s": self._clock_s, "true_energy_j": self._true_energy_j, "meter_j": self._meter_j,
            "meter_t_s": self._meter_t_s, "reading_w": self._reading_w, "next_sample_s": self._next_sample_s,
            "throttle_level": self._throttle_level,
            "next_thermal_check_s": self._next_thermal_check_s,
            "last_check_temp_c": self._last_check_temp_c, "power_w": self._power_w, "temp_c": self._temp_c,
            "rng": json.dumps(self._rng.bit_generator.state),
        })
        return snap

    def restore(self, snapshot: Mapping[str, float | int | str | bool]) -> None:
        """Resume from :meth:`snapshot`; refuses a snapshot of another board."""
        if not snapshot:
            return
        if snapshot.get("device_type") != self.device_type or int(snapshot.get("unit", -1)) != self._unit:
            raise DeviceError(
                f"snapshot of {snapshot.get('device_type')} unit {snapshot.get('unit')} cannot be restored "
                f"on {self.device_type} unit {self._unit}")
        try:
            knobs = self._space.knob_names
            self._mode = self._space.validate({k: float(snapshot[f"mode.{k}"]) for k in knobs})
            self._tpc_fraction = float(snapshot["tpc_fraction"])
            self._since_change = int(snapshot["since_change"])
            self._cold = bool(snapshot["cold"])
            self._cold_minibatches = int(snapshot.get("cold_minibatches", 0 if self._cold else COLD_MINIBATCHES + 1))
            self._clock_s = float(snapshot["clock_s"])
            self._true_energy_j = float(snapshot["true_energy_j"])
            self._meter_j = float(snapshot["meter_j"])
            self._meter_t_s = float(snapshot["meter_t_s"])
            self._reading_w = float(snapshot["reading_w"])
            self._next_sample_s = float(snapshot["next_sample_s"])
            self._throttle_level = int(snapshot["throttle_level"])
            self._next_thermal_check_s = float(snapshot["next_thermal_check_s"])
            self._last_check_temp_c = float(snapshot["last_check_temp_c"])
            self._power_w = float(snapshot["power_w"])
            self._temp_c = float(snapshot["temp_c"])
            self._rng.bit_generator.state = json.loads(str(snapshot["rng"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise DeviceError(f"simulated device snapshot is incomplete or malformed: {exc}") from None

    def idle_power_w(self) -> float:
        """Idle power in the lowest mode at ambient temperature (the floor any cap must clear)."""
        m = self._space.min_mode()
        return idle_power_w(self._board, m["cpu_cores"], m["cpu_mhz"], m["mem_mhz"], None,
                            temp_c=self._ambient_c, unit=self._variation)

    # ------------------------------------------------------------------ ground truth
    def ground_truth(self, workload: Workload | str, modes: pd.DataFrame, *,
                     preset: str | None = None) -> GroundTruth:
        """Noise-free steady state of ``modes`` and this board's window noise (see ``Device``)."""
        tpc = 1.0 if preset is None else self.preset_tpc_fraction(preset)
        return GroundTruth(self.true_performance(workload, modes, tpc_fraction=tpc),
                           self._noise.time_window_sigma, float(self._noise.power_window_sigma()))

    def true_performance(self, workload: Workload | str, modes: pd.DataFrame | None = None,
                         tpc_fraction: float = 1.0) -> pd.DataFrame:
        """Noise-free steady-state time (ms) and power (W) of ``modes`` on this unit.

        Temperature is the steady state each mode settles to; with throttling enabled, modes
        that would pass the trip point run at the clocks throttling settles them to.
        """
        wl = resolve_workload(workload)
        frame = self._space.modes("full") if modes is None else self._space.validate_frame(modes)
        arr = {k: frame[k].to_numpy(float) for k in self._space.knob_names}
        level = np.zeros(len(frame), dtype=int)
        result = self._steady(wl, arr, level, tpc_fraction)
        if self._throttle_enabled:
            for _ in range(len(self._space.knob("gpu_mhz").values)):
                hot = result[2] > self._board.trip_c
                if not hot.any():
                    break
                level = level + hot.astype(int)
                result = self._steady(wl, arr, level, tpc_fraction)
        out = frame.loc[:, list(self._space.knob_names)].copy()
        out["time_ms"] = result[0] * 1000.0
        out["power_w"] = result[1]
        return out.reset_index(drop=True)

    def _steady(self, wl: Workload, arr: dict[str, np.ndarray], level: np.ndarray,
                tpc: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cpu = self._throttled(arr["cpu_mhz"], "cpu_mhz", level)
        gpu = self._throttled(arr["gpu_mhz"], "gpu_mhz", level)
        temp = np.full(len(cpu), 25.0)
        ev = evaluate(self._board, wl, arr["cpu_cores"], cpu, gpu, arr["mem_mhz"],
                      tpc_fraction=tpc, temp_c=temp, unit=self._variation)
        for _ in range(5):  # leakage-temperature fixed point
            temp = steady_temperature_c(self._board, ev.power_w, self._ambient_c, self._fan,
                                        self._variation)
            ev = evaluate(self._board, wl, arr["cpu_cores"], cpu, gpu, arr["mem_mhz"],
                          tpc_fraction=tpc, temp_c=temp, unit=self._variation)
        return ev.time_s, ev.power_w, temp

    def _throttled(self, values: np.ndarray, knob: str, level: np.ndarray) -> np.ndarray:
        table = np.asarray(self._space.knob(knob).values)
        idx = np.abs(values[:, None] - table[None, :]).argmin(axis=1)
        return np.asarray(table[np.maximum(idx - level, 0)])

    # ------------------------------------------------------------------ internals
    def _switch(self, mode: Mode, tpc_fraction: float) -> None:
        if mode == self._mode and tpc_fraction == self._tpc_fraction:
            return
        reboot = tpc_fraction != self._tpc_fraction
        self._mode = dict(mode)
        self._tpc_fraction = tpc_fraction
        self._since_change = 0
        if reboot:
            self._cold = True
            self._cold_minibatches = 0
        self._advance_idle(_REBOOT_S if reboot else _SWITCH_S)

    def _effective(self) -> dict[str, float]:
        mode = dict(self._mode)
        if self._throttle_level:
            lvl = np.array([self._throttle_level])
            mode["cpu_mhz"] = float(self._throttled(np.array([mode["cpu_mhz"]]), "cpu_mhz", lvl)[0])
            mode["gpu_mhz"] = float(self._throttled(np.array([mode["gpu_mhz"]]), "gpu_mhz", lvl)[0])
        return mode

    def _evaluate_current(self, wl: Workload) -> Evaluation:
        m = self._effective()
        key = (wl.name, m["cpu_cores"], m["cpu_mhz"], m["gpu_mhz"], m["mem_mhz"], self._tpc_fraction)
        if self._last_eval is None or self._last_eval[0] != key:  # steady state is a pure function
            ev = evaluate(self._board, wl, np.array([m["cpu_cores"]]), np.array([m["cpu_mhz"]]),
                          np.array([m["gpu_mhz"]]), np.array([m["mem_mhz"]]),
                          tpc_fraction=self._tpc_fraction, temp_c=25.0, unit=self._variation)
            self._last_eval = (key, ev)
        return self._last_eval[1]

    def _leak_scale(self) -> float:
        return float(2.0 ** ((self._temp_c - 25.0) / self._board.leak_doubling_c))

    def _idle_power(self) -> float:
        m = self._effective()
        return idle_power_w(self._board, m["cpu_cores"], m["cpu_mhz"], m["mem_mhz"], m["gpu_mhz"],
                            tpc_fraction=self._tpc_fraction, temp_c=self._temp_c,
                            unit=self._variation)

    def _settle(self, target_w: float, dt: float) -> float:
        """Mean power over ``dt`` while the reading relaxes from its last value to ``target``."""
        tau = self._noise.power_lag_s
        start = self._power_w
        if tau <= 0 or dt <= 0:
            self._power_w = target_w
            return target_w
        decay = math.exp(-dt / tau)
        self._power_w = target_w + (start - target_w) * decay
        return target_w + (start - target_w) * tau / dt * (1.0 - decay)

    def _advance_idle(self, duration_s: float) -> None:
        remaining = duration_s
        while remaining > 1e-12:
            dt = min(remaining, 5.0)
            self._advance(dt, self._idle_power(), 0.0)
            remaining -= dt

    def _advance(self, dt: float, target_w: float, dynamic_w: float) -> None:
        """Advance the clock by ``dt`` while power relaxes towards ``target_w``; take the power
        samples that fall in the interval and meter them (``dynamic_w`` sets their spread)."""
        t0, start_w = self._clock_s, self._power_w
        mean_p = self._settle(target_w, dt)
        self._true_energy_j += mean_p * dt
        nz = self._noise
        if nz.power_sample_period_s <= 0:  # continuous metering: readings are the exact power
            self._meter_j += mean_p * self._offset * dt
            self._meter_t_s = t0 + dt
            self._reading_w = self._power_w * self._offset
        else:
            tau = nz.power_lag_s
            while self._next_sample_s < t0 + dt:
                at = self._next_sample_s
                settled = target_w if tau <= 0 else target_w + (start_w - target_w) * math.exp(-(at - t0) / tau)
                value = settled * self._offset
                if nz.power_sample_sigma and dynamic_w > 0:
                    value += float(self._rng.normal(0.0, nz.power_sample_sigma * dynamic_w))
                self._meter_j += self._reading_w * (at - self._meter_t_s)
                self._meter_t_s = at
                self._reading_w = value
                if self._window is not None:
                    self._window.append(value)
                jitter = float(self._rng.uniform(-nz.power_sample_jitter_s, nz.power_sample_jitter_s))
                self._next_sample_s = at + max(nz.power_sample_period_s + jitter, 1e-3)
        self._clock_s = t0 + dt
        self._update_thermal(mean_p, dt)

    def _update_thermal(self, power_w: float, dt: float) -> None:
        t_ss = float(steady_temperature_c(self._board, power_w, self._ambient_c, self._fan,
                                          self._variation))
        self._temp_c = t_ss + (self._temp_c - t_ss) * math.exp(-dt / self._board.thermal_tau_s)
        if not self._throttle_enabled:
            return
        while self._clock_s >= self._next_thermal_check_s:
            # Linux step_wise governor: one cooling step per poll while hot and heating,
            # one step back while below the trip and cooling.
            self._next_thermal_check_s += _THROTTLE_CHECK_S
            rising = self._temp_c > self._last_check_temp_c
            if self._temp_c > self._board.trip_c and rising:
                self._throttle_level = min(self._throttle_level + 1,
                                           len(self._space.knob("gpu_mhz").values) - 1)
            elif (self._temp_c < self._board.release_c and not rising
                  and self._throttle_level > 0):
                self._throttle_level -= 1
            self._last_check_temp_c = self._temp_c
