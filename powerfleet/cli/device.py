"""``powerfleet device info|set|power``: inspect and control the board you are sitting at."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from powerfleet.cli._common import bounded, err, out
from powertrain.devices import Device, make_device, parse_device_spec
from powertrain.errors import InvalidParameterError, ModeError, format_allowed
from powertrain.space import Mode

device_app = typer.Typer(help="Inspect and control this board (jetson:auto) or a simulated one.",
                         no_args_is_help=True)

DeviceOpt = Annotated[str, typer.Option(
    "--device", help="Device spec, e.g. jetson:auto, jetson:orin-agx?unit=3.")]
RootOpt = Annotated[Path | None, typer.Option(
    "--sysfs-root", help="Directory that stands for / (a recorded tree); "
                         "default $POWERFLEET_SYSFS_ROOT or /.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    """Add the ``device`` command group to ``app``."""
    app.add_typer(device_app, name="device")


def open_device(spec: str, sysfs_root: Path | None, **jetson_options: str) -> Device:
    """Build the device of ``spec``; ``--sysfs-root`` and ``jetson_options`` apply to jetson specs."""
    backend, device_type, options = parse_device_spec(spec)
    if backend == "jetson":
        if sysfs_root is not None:
            options["root"] = str(sysfs_root)
        for key, value in jetson_options.items():
            options.setdefault(key, value)
    elif sysfs_root is not None:
        raise InvalidParameterError(f"--sysfs-root applies to jetson: devices only; got {spec!r}")
    query = urlencode(options)
    return make_device(f"{backend}:{device_type}" + (f"?{query}" if query else ""))


def _fmt_mode(mode: Any) -> str:
    return " ".join(f"{k}={'?' if v is None else f'{v:g}'}" for k, v in mode.items())


@device_app.command("info")
def info_cmd(device: DeviceOpt = "jetson:auto", sysfs_root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Show what the board is, its tables, control paths, power rails and current mode."""
    with open_device(device, sysfs_root) as dev:
        info = dev.info()
        tables = {k.name: {"count": len(k.values), "low": k.low, "high": k.high} for k in dev.space.knobs}
        if as_json:
            payload = {"device_type": info.device_type, "unit": info.unit, "backend": info.backend,
                       "space": info.space, "mode_count": info.mode_count, "presets": list(info.presets),
                       "tables": tables, "details": dict(info.details)}
            out.print(json.dumps(payload, indent=2, default=str), markup=False)
            return
        details = dict(info.details)
        out.print(f"device: {info.device_type} ({info.backend}, unit {info.unit})", markup=False)
        if "model" in details:
            out.print(f"model: {details['model']} ({details.get('module') or 'module unknown'}, "
                      f"{details.get('soc')}, L4T {details.get('l4t_release') or 'unknown'})", markup=False)
            clusters = " | ".join(f"{c[0]}-{c[-1]}" for c in details["clusters"])
            out.print(f"cpus: {details['cpus']} (clusters {clusters})", markup=False)
            out.print(f"gpu devfreq: {details['gpu_devfreq']}", markup=False)
            out.print(f"emc control: {details['emc_control']}", markup=False)
            rails = ", ".join(details["rails"])
            out.print(f"power source: {details['power_source']}" + (f" ({rails})" if rails else ""),
                      markup=False)
        for name, t in tables.items():
            out.print(f"{name}: {t['count']} values, {t['low']:g}..{t['high']:g}", markup=False)
        out.print(f"modes: {info.mode_count}; presets: {', '.join(info.presets)}", markup=False)
        if "mode_now" in details:
            pinned = " (pinned)" if details.get("pinned") else " (caps; DVFS between min and max)"
            out.print(f"mode now: {_fmt_mode(details['mode_now'])}{pinned}", markup=False)
        else:
            out.print(f"mode now: {_fmt_mode(dev.current_mode())}", markup=False)
        for warning in details.get("table_warnings", []):
            err.print(f"warning: {warning}", markup=False)


def parse_target(text: str, dev: Device) -> tuple[Mode, str]:
    """A preset name, or ``knob=value`` pairs (missing knobs keep their current value)."""
    text = text.strip()
    if "=" not in text:
        preset = dev.space.preset(text)
        return dict(preset.mode), preset.name
    mode: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or key not in dev.space.knob_names:
            raise ModeError(f"{item!r} is not knob=value; knobs: {', '.join(dev.space.knob_names)}")
        try:
            number = float(value)
        except ValueError:
            raise ModeError(f"{key}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise ModeError(f"{key}={value} is not finite; allowed {key} values: "
                            f"{format_allowed(dev.space.knob(key).values)}")
        mode[key] = number
    if len(mode) < len(dev.space.knob_names):
        mode = {**dev.current_mode(), **mode}
    return mode, "custom mode"


@device_app.command("set")
def set_cmd(
    target: Annotated[str, typer.Argument(help="A preset (MAXN, MODE_15W, 7W) or knob=value pairs, "
                                               "e.g. cpu_cores=4,gpu_mhz=408 (others unchanged).")],
    device: DeviceOpt = "jetson:auto",
    sysfs_root: RootOpt = None,
) -> None:
    """Set a power mode and leave it in force (needs root on a real board)."""
    with open_device(device, sysfs_root, restore="0", power="none") as dev:
        mode, label = parse_target(target, dev)
        before = dev.current_mode()
        applied = dev.apply_mode(mode)
        out.print(f"set {dev.device_type} to {label}: {_fmt_mode(applied)}", markup=False)
        err.print(f"was: {_fmt_mode(before)}", markup=False)
        info = dev.info()
        if label != "custom mode" and info.backend == "jetson":
            err.print("note: clocks and cores only; the preset's TPC power gating needs nvpmodel "
                      "and a reboot", markup=False)
        for warning in info.details.get("table_warnings", []):
            err.print(f"warning: {warning}", markup=False)


@device_app.command("power")
def power_cmd(
    device: DeviceOpt = "jetson:auto",
    sysfs_root: RootOpt = None,
    duration_s: Annotated[float, typer.Option(help="How long to sample.")] = 5.0,
    hz: Annotated[float, typer.Option(help="Samples per second (INA3221).")] = 20.0,
    source: Annotated[str, typer.Option(help="auto, ina3221 or tegrastats.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Sample board power for a while and print the mean per rail and the board total."""
    from powertrain.devices.jetson import JetsonDevice

    bounded("--duration-s", duration_s, 0, 86_400, low_inclusive=False)
    bounded("--hz", hz, 0, 1000, low_inclusive=False)
    with open_device(device, sysfs_root, power=source, power_hz=f"{hz:g}") as dev:
        if not isinstance(dev, JetsonDevice):
            raise InvalidParameterError(f"device power needs a jetson: device; got {device!r}")
        if dev.power_source == "none":
            raise InvalidParameterError("no power source on this board: no INA3221 rails and no tegrastats")
        start_s = dev.now_s()
        dev.power_now()
        time.sleep(duration_s)
        end_s = dev.now_s()
        dev.power_now()
        rails = dev.meter.mean_rails_mw(start_s, end_s)
        total_w = dev.meter.mean_power_w(start_s, end_s)
        n = len(dev.meter.samples(start_s, end_s))
    if as_json:
        out.print(json.dumps({"source": dev.power_source, "duration_s": end_s - start_s, "samples": n,
                              "rails_mw": rails, "total_w": total_w}, indent=2), markup=False)
        return
    for name, value in rails.items():
        out.print(f"{name:<18} {value / 1000:8.3f} W", markup=False)
    out.print(f"{'board total':<18} {total_w:8.3f} W  ({n} samples over {end_s - start_s:.1f} s, "
              f"{dev.power_source})", markup=False)
