"""``powerfleet characterize``: a task's simulated cost derived from one counted training step."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pandas as pd
import typer

from powerfleet.cli._common import out
from powerfleet.protocol.tasks import load_task
from powerfleet.tasks.characterize import DENSE_CLASSES, Characterization, characterize
from powertrain.devices import SimulatedJetson, make_device
from powertrain.errors import InvalidParameterError
from powertrain.workloads import Workload


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("characterize")(characterize_cmd)


def characterize_cmd(
    task: Annotated[str, typer.Option(help="Task reference: package.module:Class or file.py:Class, "
                                            "options after '?', e.g. powerfleet.tasks.vision:ResNet18?width=2.")],
    device: Annotated[str | None, typer.Option(help="Also give the simulated MAXN minibatch time and power "
                                                    "on this simulated device, e.g. sim:orin-agx.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    real_step: Annotated[bool | None, typer.Option(
        "--real-step/--no-real-step",
        help="Run one real CPU step to check the loss (default: when the step is small enough).")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse and store results per task fingerprint.")] = True,
) -> None:
    """Derive a task's workload (FLOPs, bytes, launches, loader and framework work per minibatch)."""
    loaded = load_task(task)
    result = characterize(loaded, reference=task, real_step=real_step, cache=cache)
    sim = simulate_maxn(result.workload, device) if device else None
    if as_json:
        payload: dict[str, Any] = result.to_dict()
        if sim is not None:
            payload["simulated"] = sim
        out.print(json.dumps(payload, indent=1), end="\n")
        return
    out.print(render(result, sim), end="")


def simulate_maxn(workload: Workload, spec: str) -> dict[str, Any]:
    """Noise-free MAXN (else highest-clock) minibatch time and power of ``workload`` on ``spec``."""
    dev = make_device(spec)
    if not isinstance(dev, SimulatedJetson):
        raise InvalidParameterError(f"--device {spec!r} cannot be simulated; use a simulated device such as "
                                    "sim:orin-agx")
    space = dev.space
    preset = "MAXN" if "MAXN" in space.presets else None
    mode = space.preset(preset).mode if preset else space.max_mode()
    tpc = dev.preset_tpc_fraction(preset) if preset else 1.0
    row = dev.true_performance(workload, pd.DataFrame([mode]), tpc_fraction=tpc).iloc[0]
    return {"device": spec, "mode": preset or "max clocks", "time_ms": float(row["time_ms"]),
            "power_w": float(row["power_w"])}


def render(result: Characterization, sim: dict[str, Any] | None) -> str:
    """The human-readable report."""
    w = result.workload
    lines = [f"task {result.reference}",
             f"fingerprint {result.fingerprint}   parameters {result.params / 1e6:.2f} M   "
             f"minibatch {w.batch_size}",
             "",
             f"{'kernel class':<16}{'GFLOP':>11}{'GB':>9}{'launches':>10}"]
    for name, cls in result.classes.items():
        kind = "dense" if name in DENSE_CLASSES else "elementwise"
        lines.append(f"{name:<16}{cls['gflop']:>11.3f}{cls['gb']:>9.3f}{int(cls['kernels']):>10d}  {kind}")
    lines += [
        f"{'dense':<16}{w.dense_gflop:>11.3f}{w.dense_gb:>9.3f}{'':>10}  efficiency {w.dense_efficiency:.2f}",
        f"{'elementwise':<16}{w.elem_gflop:>11.3f}{w.elem_gb:>9.3f}",
        "",
        f"kernel launches   {w.kernels} (forward {result.phase_kernels.get('forward', 0)}, backward "
        f"{result.phase_kernels.get('backward', 0)}, optimizer {result.phase_kernels.get('optimizer', 0)})",
        f"data loader       {w.loader_mcycles:.1f} Mcycles per minibatch (A78AE; {result.loader_ms:.1f} ms here), "
        f"{w.loader_workers} workers",
        f"framework         {w.framework_mcycles:.1f} Mcycles per step ({result.module_calls} module calls)",
        f"loss checked      {'yes, one real CPU step' if result.loss_checked else 'no (meta step only)'}",
    ]
    if sim is not None:
        lines.append(f"simulated         {sim['time_ms']:.1f} ms per minibatch, {sim['power_w']:.1f} W "
                     f"({sim['mode']} on {sim['device']}, noise-free)")
    return "\n".join(lines) + "\n"

