"""``powerfleet modes`` and ``powerfleet profile``: mode tables and profiling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from powerfleet.cli._common import bounded, device_name, err, out, progress_bar
from powertrain.boards import get_space
from powertrain.devices import Device, make_device
from powertrain.errors import InvalidParameterError
from powertrain.outputs import check_output
from powertrain.profile_io import read_profile, write_modes, write_profile
from powertrain.profiler import ProfileSettings, profile
from powertrain.sampling import STRATEGIES, sample_modes
from powertrain.space import ModeSpace
from powertrain.workloads import get_workload


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("modes")(modes_cmd)
    app.command("profile")(profile_cmd)


def modes_cmd(
    device: Annotated[str, typer.Option(help="Device type: orin-agx, xavier-agx, orin-nano.")],
    grid: Annotated[str, typer.Option(help="full, or a profiling grid such as powertrain.")] = "full",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the modes CSV here.")] = None,
    presets: Annotated[bool, typer.Option(help="List the nvpmodel presets instead.")] = False,
) -> None:
    """List the power modes of a device type (or its presets)."""
    if output is not None:
        check_output(output, what="--output")
    space = get_space(device_name(device))
    if presets:
        rows = [{"preset": p.name, "nvpmodel_id": p.nvpmodel_id, "budget_w": p.budget_w,
                 "active_tpcs": p.active_tpcs, **p.mode} for p in space.presets.values()]
        frame = pd.DataFrame(rows)
    else:
        frame = space.modes(grid)
    if output is None:
        out.print(frame.to_csv(index=False, float_format="%.6g"), end="")
    else:
        write_modes(frame, output, what="--output")
        err.print(f"wrote {len(frame)} modes of {space.name} ({grid}) to {output}")


def resolve_modes(space: ModeSpace, modes: str, grid: str | None, strategy: str,
                  seed: int) -> pd.DataFrame:
    """Turn ``--modes`` (k, ``all``, a grid name or a CSV path) into a frame of modes."""
    text = modes.strip()
    if text.isdigit():
        pool_name = grid or ("powertrain" if "powertrain" in space.grids else "full")
        pool = space.modes(pool_name)
        k = int(text)
        if not 1 <= k <= len(pool):
            raise InvalidParameterError(
                f"--modes {k} must be between 1 and {len(pool)} (the size of the "
                f"{pool_name} grid of {space.name})"
            )
        return sample_modes(pool, k, strategy=strategy, seed=seed, knobs=space.knob_names)
    if text in {"all", "full"}:
        return space.modes("full")
    if text in space.grids:
        return space.modes(text)
    path = Path(text)
    if path.suffix.lower() == ".csv" or path.exists():
        frame = read_profile(path, knobs=space.knob_names, require_targets=False)
        return space.validate_frame(frame.loc[:, list(space.knob_names)], source=str(path))
    raise InvalidParameterError(
        f"--modes {modes!r} must be a number of modes to sample, 'all', a grid name "
        f"({', '.join(space.grids) or 'none'}) or a modes CSV file"
    )


def profile_cmd(
    device: Annotated[str, typer.Option(help="Device spec, e.g. sim:orin-agx?seed=3&unit=2.")],
    workload: Annotated[str, typer.Option(help="Workload name from the catalog.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Profile CSV to write.")],
    modes: Annotated[str, typer.Option(help="k to sample, 'all', a grid name, or a modes CSV.")] = "50",
    grid: Annotated[str | None, typer.Option(help="Grid to sample k modes from.")] = None,
    strategy: Annotated[str, typer.Option(help=f"Sampling: {'|'.join(STRATEGIES)}.")] = "random",
    minibatches: Annotated[int, typer.Option(help="Measured minibatches per mode.")] = 40,
    warmup_minibatches: Annotated[int, typer.Option(help="Minimum warm-up minibatches per mode.")] = 5,
    warmup_s: Annotated[float, typer.Option(help="Minimum warm-up seconds dropped per mode.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Profile a workload on a device over a set of modes and write the profile CSV."""
    check_output(output, what="--output")  # before hours of profiling, not after
    bounded("--minibatches", minibatches, 1, 100_000)
    bounded("--warmup-minibatches", warmup_minibatches, 0, 100_000)
    bounded("--warmup-s", warmup_s, 0, 3600)
    bounded("--seed", seed, 0, 2**32 - 1)
    settings = ProfileSettings(minibatches, warmup_minibatches, warmup_s)
    dev: Device = make_device(device)
    get_workload(workload)
    frame = resolve_modes(dev.space, modes, grid, strategy, seed)
    with dev, progress_bar(f"profiling {workload} on {dev.device_type}", len(frame)) as update:
        run = profile(dev, workload, frame, settings, progress=update)
    write_profile(run.frame, output, knobs=dev.space.knob_names, what="--output")
    err.print(
        f"wrote {len(run.frame)} modes to {output}: time {run.frame.time_ms.min():.1f}-"
        f"{run.frame.time_ms.max():.1f} ms, power {run.frame.power_w.min():.2f}-"
        f"{run.frame.power_w.max():.2f} W; {run.total_minibatches} minibatches "
        f"({run.warmup_minibatches} warm-up), {run.device_seconds:.0f} s of device time"
    )
