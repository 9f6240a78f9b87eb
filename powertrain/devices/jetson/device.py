"""``JetsonDevice``: a real Jetson board behind the :class:`~powertrain.devices.base.Device` interface.

Construction detects the module (:mod:`.detect`), reads the board's tables (:mod:`.tables`),
snapshots the original settings and starts the power sampler (INA3221 rails, or tegrastats
as a fallback). :meth:`JetsonDevice.apply_mode` sets a mode through :class:`.control.BoardControl`
(verified, rolled back on failure); :meth:`JetsonDevice.run` trains for real (:mod:`.runner`)
and averages board power over the window; :meth:`JetsonDevice.close` (also on ``with`` exit,
SIGTERM, SIGHUP and interpreter exit) restores the original settings.

Presets are applied as their frequency caps pinned min = max, like custom modes; the TPC
power-gating mask of a preset is not changed, because changing it needs nvpmodel and a reboot.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

import numpy as np

from powertrain.boards import board_names, get_space
from powertrain.devices.base import Device, DeviceInfo, RunResult, StepFn
from powertrain.devices.jetson.control import BoardControl
from powertrain.devices.jetson.detect import BoardIdentity, detect_board
from powertrain.devices.jetson.power import Ina3221, PolledSampler, PowerMeter, PowerSample
from powertrain.devices.jetson.runner import WorkloadRunner, time_calls_ms
from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.devices.jetson.tables import BoardTables, board_space, read_tables
from powertrain.devices.jetson.tegrastats import TegrastatsSampler
from powertrain.errors import DeviceError, check_choice, check_range
from powertrain.space import Mode
from powertrain.workloads import Workload, resolve_workload

logger = logging.getLogger(__name__)

POWER_SOURCES = ("auto", "ina3221", "tegrastats", "none")


class JetsonDevice(Device):
    """A Jetson board controlled through sysfs under ``root`` (``/`` on the board itself)."""

    def __init__(
        self,
        device_type: str = "auto",
        *,
        unit: int = 0,
        root: str | os.PathLike[str] | None = None,
        fs: Sysfs | None = None,
        restore: bool = True,
        power: str = "auto",
        power_hz: float = 20.0,
        torch_device: str = "auto",
        warmup_minibatches: int = 3,
        emc: str = "auto",
        tegrastats: str = "tegrastats",
        model_overrides: Mapping[str, dict[str, int]] | None = None,
    ) -> None:
        check_range("unit", unit, low=0)
        check_choice("power source", power, POWER_SOURCES)
        check_range("power_hz", power_hz, low=0, low_inclusive=False, high=1000)
        self.fs = fs if fs is not None else Sysfs.at(root)
        self.identity: BoardIdentity = detect_board(self.fs)
        self._type = self._resolve_type(device_type)
        builtin_emc = tuple(round(v * 1e6) for v in get_space(self._type).knob("mem_mhz").values)
        self.tables: BoardTables = read_tables(self.fs, emc, builtin_emc)
        space, self.table_warnings = board_space(self._type, self.tables)
        super().__init__(space, unit)
        for warning in self.table_warnings:
            logger.warning("%s", warning)
        self.control = BoardControl(self.fs, self.tables)
        self.original = self.control.read_state()
        self._restore = bool(restore)
        self._changed = False
        self._closed = False
        self._applied: Mode | None = None
        self._torch_device = torch_device
        self._warmup = int(warmup_minibatches)
        self._runners: dict[str, WorkloadRunner] = {}
        self._model_overrides = dict(model_overrides or {})  # workload -> smaller model (smoke tests)
        self.meter = PowerMeter()
        self.power_source = "none"
        self._sampler: PolledSampler | TegrastatsSampler | None = None
        self.ina3221: Ina3221 | None = None
        if power in {"auto", "ina3221"}:
            self.ina3221 = Ina3221.discover(self.fs)
            if self.ina3221 is not None:
                self._sampler = PolledSampler(self.meter, self.ina3221.read_rails_mw, power_hz)
                self.power_source = "ina3221"
            elif power == "ina3221":
                raise DeviceError(f"no INA3221 rails under {self.fs.path('/sys/bus/i2c/drivers')}")
        if self._sampler is None and (power == "tegrastats"
                                      or (power == "auto" and TegrastatsSampler.available(tegrastats))):
            self._sampler = TegrastatsSampler(self.meter, max(10, int(1000 / power_hz)), tegrastats)
            self.power_source = "tegrastats"
        if self._sampler is not None:
            self._sampler.start()

    def _resolve_type(self, requested: str) -> str:
        detected = self.identity.device_type
        if requested in {"", "auto"}:
            if detected is None:
                raise DeviceError(
                    f"cannot tell the device type of {self.identity.model!r}"
                    f"{' (' + self.identity.note + ')' if self.identity.note else ''}; "
                    f"name one: jetson:{'|jetson:'.join(board_names())}"
                )
            return detected
        check_choice("device", requested, board_names())
        if detected is not None and detected != requested:
            raise DeviceError(f"device type {requested!r} does not match this board: "
                              f"{self.identity.model!r} is {detected!r}")
        return requested

    # ------------------------------------------------------------------ Device interface
    def apply_mode(self, mode: Mapping[str, float]) -> Mode:
        """Set ``mode`` through sysfs; verified by read-back, rolled back on any failure."""
        if self._closed:
            raise DeviceError("the device is closed")
        applied = self._space.validate(mode)
        target = self.control.target_for(applied)
        if self._restore:
            _register(self)
        self._changed = True  # even a failed apply may leave something to restore (mixed mode)
        self._applied = None
        self.control.apply(target)
        self._applied = dict(applied)
        return dict(applied)

    def current_mode(self) -> Mode:
        """The mode read back from sysfs (cores online, cpu0's cluster cap, GPU cap, EMC)."""
        raw = self.control.mode_of(self.control.read_state())
        mode: Mode = {}
        for name, value in raw.items():
            if value is None:
                raise DeviceError(f"{name} cannot be read on this board (EMC needs debugfs as root, "
                                  "or nvpmodel's EMC cap node)")
            knob = self._space.knob(name)
            mode[name] = knob.snap(value) if knob.contains(value) else float(value)
        return mode

    def run(self, workload: Workload | str, n_minibatches: int, step: StepFn | None = None) -> RunResult:
        """Train ``n_minibatches`` for real and average board power over the window."""
        wl = resolve_workload(workload)
        check_range("n_minibatches", n_minibatches, low=1)
        runner = None
        if step is None:
            runner = self._runners.get(wl.name)
            if runner is None:
                runner = WorkloadRunner(wl.name, torch_device=self._torch_device,
                                        warmup_minibatches=self._warmup,
                                        overrides=self._model_overrides.get(wl.name))
                self._runners[wl.name] = runner
            runner.build()  # model build and warm-up stay outside the window
        mode = self._mode_for_result()
        self._sample_now()
        start_s = time.monotonic()
        if runner is not None:
            times, timer = runner.time_minibatches_ms(n_minibatches)
        else:
            assert step is not None
            times, timer = time_calls_ms(step, n_minibatches, cuda=_cuda_in_use())
        end_s = time.monotonic()
        self._sample_now()
        duration = end_s - start_s
        power_w = self.meter.mean_power_w(start_s, end_s) if self.power_source != "none" else math.nan
        extra: dict[str, Any] = {"timer": timer, "power_source": self.power_source,
                                 "power_samples": len(self.meter.samples(start_s, end_s))}
        if runner is not None:
            extra["torch_device"] = runner.device
        return RunResult(workload=wl.name, mode=mode, minibatch_time_ms=np.asarray(times, dtype=float),
                         mean_power_w=power_w, energy_j=power_w * duration, start_s=start_s,
                         duration_s=duration, extra=extra)

    def energy_j(self) -> float:
        """Board energy since the sampler started (at construction). Units: J."""
        if self.power_source == "none":
            return math.nan
        self._sample_now()
        return self.meter.energy_j()

    def now_s(self) -> float:
        """Monotonic wall clock."""
        return time.monotonic()

    def idle(self, duration_s: float) -> None:
        """Sleep for ``duration_s`` (the sampler keeps metering)."""
        check_range("duration_s", duration_s, low=0)
        time.sleep(float(duration_s))

    def __enter__(self) -> JetsonDevice:
        return self

    # ------------------------------------------------------------------ extras
    def power_now(self) -> PowerSample | None:
        """A fresh power sample (INA3221) or the latest one (tegrastats)."""
        return self._sample_now()

    def info(self) -> DeviceInfo:
        """Describe the board: identity, tables, control paths, power source and current clocks."""
        base = super().info()
        state = self.control.read_state()
        details: dict[str, Any] = {
            "model": self.identity.model, "module": self.identity.module, "soc": self.identity.soc,
            "l4t_release": self.identity.l4t_release, "note": self.identity.note,
            "sysfs_root": str(self.fs.root), "cpus": len(self.tables.cpus),
            "clusters": [list(c) for c in self.tables.clusters],
            "gpu_devfreq": self.tables.gpu_devfreq_dir, "emc_control": self.tables.emc_method,
            "power_source": self.power_source,
            "rails": list(self.ina3221.rail_names) if self.ina3221 else [],
            "table_warnings": list(self.table_warnings),
            "mode_now": self.control.mode_of(state),
            "pinned": _pinned(state.cpu_khz.values(), state.gpu_hz),
        }
        return DeviceInfo(base.device_type, base.unit, "jetson", base.space, base.knobs, base.presets,
                          base.mode_count, details)

    def close(self) -> None:
        """Stop sampling and, unless built with ``restore=False``, restore the original settings."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._sampler is not None:
                self._sampler.stop()
            if self._restore and self._changed:
                self.control.restore(self.original)
                logger.info("restored the original settings of %s", self.identity.model)
        finally:
            _unregister(self)

    # ------------------------------------------------------------------ internals
    def _sample_now(self) -> PowerSample | None:
        if isinstance(self._sampler, PolledSampler):
            return self._sampler.sample_now()
        return self.meter.latest()

    def _mode_for_result(self) -> Mode:
        if self._applied is not None:
            return dict(self._applied)
        raw = self.control.mode_of(self.control.read_state())
        return {k: float(v) for k, v in raw.items() if v is not None}


def _pinned(cpu: Any, gpu: tuple[int | None, int | None] | None) -> bool:
    ranges = [*cpu, gpu] if gpu is not None else list(cpu)
    return all(lo is not None and lo == hi for lo, hi in ranges)


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


# ---------------------------------------------------------------------- restore on signals/exit
_GUARD_LOCK = threading.RLock()
_ACTIVE: list[JetsonDevice] = []
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_ATEXIT_DONE = False
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


def _register(device: JetsonDevice) -> None:
    """Make sure ``device`` is restored on SIGTERM/SIGHUP and at interpreter exit."""
    global _ATEXIT_DONE
    with _GUARD_LOCK:
        if device not in _ACTIVE:
            _ACTIVE.append(device)
        if not _ATEXIT_DONE:
            atexit.register(restore_all)
            _ATEXIT_DONE = True
        if not _PREVIOUS_HANDLERS and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                _PREVIOUS_HANDLERS[sig] = signal.getsignal(sig)
                signal.signal(sig, _on_signal)


def _unregister(device: JetsonDevice) -> None:
    with _GUARD_LOCK:
        if device in _ACTIVE:
            _ACTIVE.remove(device)
        if not _ACTIVE and _PREVIOUS_HANDLERS and threading.current_thread() is threading.main_thread():
            for sig, handler in _PREVIOUS_HANDLERS.items():
                signal.signal(sig, handler)
            _PREVIOUS_HANDLERS.clear()


def restore_all() -> None:
    """Close (and so restore) every Jetson device that changed its board; errors are logged."""
    with _GUARD_LOCK:
        devices = list(_ACTIVE)
    for device in devices:
        try:
            device.close()
        except Exception as exc:  # keep restoring the others
            logger.error("restoring %s failed: %s", device.identity.model, exc)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    restore_all()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
