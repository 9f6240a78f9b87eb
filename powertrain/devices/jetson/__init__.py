"""The real Jetson backend: sysfs/debugfs mode control, INA3221 power, real training.

Modules, lowest first: :mod:`.sysfs` (paths under a configurable root, error translation),
:mod:`.detect` (which module), :mod:`.tables` (the board's frequency tables and mode space),
:mod:`.control` (apply/verify/roll back/restore a mode), :mod:`.power` (INA3221 rails, meter,
sampler), :mod:`.tegrastats` and :mod:`.clocks_show` (parsers), :mod:`.runner` (torch
training, imported lazily), :mod:`.device` (``JetsonDevice``). Importing this package touches
no hardware and does not import torch, so it is safe on any machine.

Device specs: ``jetson:auto`` (detect), ``jetson:orin-agx?unit=3&root=/tmp/fake``. Options:
``unit``, ``root`` (else ``$POWERFLEET_SYSFS_ROOT``, else ``/``), ``restore`` (restore the
original settings on close; default 1), ``power`` (auto|ina3221|tegrastats|none),
``power_hz`` (sampling rate, default 20), ``torch`` (auto|cuda|cpu), ``warmup`` (dropped
minibatches after building a model, default 3), ``emc`` (auto|bpmp|cap|none).
"""

from __future__ import annotations

import logging

from powertrain.devices.jetson.device import JetsonDevice
from powertrain.devices.jetson.sysfs import ROOT_ENV, Sysfs, resolve_root
from powertrain.devices.options import check_options, parse_bool, parse_float, parse_int

# A library logs, the application decides where to: without logging configured, table-mismatch
# warnings stay out of stderr (the CLI prints them itself; ``JetsonDevice.table_warnings``).
logging.getLogger(__name__).addHandler(logging.NullHandler())

JETSON_OPTIONS = ("unit", "root", "restore", "power", "power_hz", "torch", "warmup", "emc")


def build_jetson(device_type: str, options: dict[str, str]) -> JetsonDevice:
    """Build a :class:`JetsonDevice` from the parts of a ``jetson:`` device spec."""
    check_options("jetson", options, JETSON_OPTIONS)
    return JetsonDevice(
        device_type or "auto",
        unit=parse_int("unit", options.get("unit", "0")),
        root=options.get("root") or None,
        restore=parse_bool("restore", options.get("restore", "1")),
        power=options.get("power", "auto"),
        power_hz=parse_float("power_hz", options.get("power_hz", "20")),
        torch_device=options.get("torch", "auto"),
        warmup_minibatches=parse_int("warmup", options.get("warmup", "3")),
        emc=options.get("emc", "auto"),
    )


__all__ = ["JETSON_OPTIONS", "ROOT_ENV", "JetsonDevice", "Sysfs", "build_jetson", "resolve_root"]
