"""Devices: the ``Device`` interface, its backends, and the factory that picks one.

``make_device("sim:orin-nano?seed=3&unit=2")`` builds a simulated Orin Nano (options: seed,
unit, throttle, fan, ambient_c, noise=0 for exact readings, rough=0 for the smooth nominal
model); other backends register a builder in :data:`BACKENDS` under their scheme name. Code
above this package sees only :class:`Device`.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from powertrain.devices.base import Device, DeviceInfo, GroundTruth, RunResult, StepFn
from powertrain.devices.options import check_options, parse_bool, parse_float, parse_int
from powertrain.devices.simulated import NoiseModel, SimulatedJetson
from powertrain.errors import InvalidParameterError, UnknownNameError

Builder = Callable[[str, dict[str, str]], Device]


_SIM_OPTIONS = ("seed", "unit", "throttle", "fan", "ambient_c", "noise", "rough")


def _build_sim(device_type: str, options: dict[str, str]) -> Device:
    check_options("sim", options, _SIM_OPTIONS)
    noise = None
    if "noise" in options and not parse_bool("noise", options["noise"]):
        noise = NoiseModel.off()
    return SimulatedJetson(
        device_type,
        seed=parse_int("seed", options.get("seed", "0")),
        unit=parse_int("unit", options.get("unit", "0")),
        throttle=parse_bool("throttle", options.get("throttle", "1")),
        fan=options.get("fan", "max"),
        ambient_c=parse_float("ambient_c", options.get("ambient_c", "25")),
        noise=noise,
        rough=parse_bool("rough", options.get("rough", "1")),
    )


def _build_jetson(device_type: str, options: dict[str, str]) -> Device:
    # Imported on use: the module touches no hardware, but sim-only users need not load it.
    from powertrain.devices.jetson import build_jetson

    return build_jetson(device_type, options)


#: Backend scheme -> builder(device_type, options). Real backends add themselves here.
BACKENDS: dict[str, Builder] = {"sim": _build_sim, "jetson": _build_jetson}


def parse_device_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``backend:type?k=v&...`` into its parts (no validation of the type)."""
    text = spec.strip()
    if ":" not in text:
        raise InvalidParameterError(
            f"device {spec!r} needs a backend prefix; e.g. sim:orin-agx (backends: "
            f"{', '.join(BACKENDS)})"
        )
    backend, rest = text.split(":", 1)
    device_type, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        options[key] = value
    return backend, device_type, options


def make_device(spec: str) -> Device:
    """Build a device from a spec string such as ``sim:orin-agx?seed=3&unit=2``."""
    backend, device_type, options = parse_device_spec(spec)
    if backend not in BACKENDS:
        raise UnknownNameError(
            f"device backend {backend!r} is not known; valid backends: {', '.join(BACKENDS)}"
        )
    return BACKENDS[backend](device_type, options)


__all__ = [
    "BACKENDS",
    "Device",
    "DeviceInfo",
    "GroundTruth",
    "NoiseModel",
    "RunResult",
    "SimulatedJetson",
    "StepFn",
    "make_device",
    "parse_device_spec",
]
