"""Predictor commands: ``fit``, ``transfer``, ``predict``, ``pareto``, ``optimize``, ``evaluate``.

Inputs are checked before any work: outputs with :mod:`powertrain.outputs`, numbers against
a finite range, modes against the device's tables (``--off-grid`` accepts values between
table entries, never outside the range), and a model's device type against ``--device``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from powerfleet.cli._common import board_space, bounded, check_model_device, check_modes, device_name, err, out
from powerfleet.serde import artifact_id, load_model, read_artifact_file, save_model
from powertrain.boards import get_space
from powertrain.errors import InvalidParameterError
from powertrain.optimize import OBJECTIVES, Choice, ModeTable
from powertrain.outputs import atomic_outputs, check_output
from powertrain.pareto import pareto_front
from powertrain.predictor import TRANSFER_METHODS, PowerTrainPredictor
from powertrain.predictor.baselines import accuracy_table
from powertrain.profile_io import read_profile, single_value
from powertrain.space import JETSON_KNOBS

OffGridOpt = Annotated[bool, typer.Option(
    "--off-grid", help="Accept knob values between the device's table entries (never outside its range).")]
#: A fit or transfer whose chosen model has a cross-validated MAPE above this is refused by default.
DEFAULT_MAX_CV_MAPE_PCT = 100.0


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("fit")(fit_cmd)
    app.command("transfer")(transfer_cmd)
    app.command("predict")(predict_cmd)
    app.command("pareto")(pareto_cmd)
    app.command("optimize")(optimize_cmd)
    app.command("evaluate")(evaluate_cmd)


def _load(path: Path) -> PowerTrainPredictor:
    return PowerTrainPredictor.from_state(load_model(path))


def _knob_list(text: str | None) -> tuple[str, ...]:
    if text is None:
        return JETSON_KNOBS
    knobs = tuple(k.strip() for k in text.split(",") if k.strip())
    if not knobs:
        raise InvalidParameterError(f"--knobs {text!r} must list at least one column name, comma-separated")
    return knobs


def _check_fit(model: PowerTrainPredictor, max_cv_mape_pct: float) -> None:
    """Refuse to write a model whose own cross-validation says it is useless (an outlier, a unit error)."""
    for name, t in model.describe()["targets"].items():
        chosen = t["cv_mape"].get(t["method"])
        if chosen is not None and not (math.isfinite(chosen) and chosen <= max_cv_mape_pct):
            raise InvalidParameterError(
                f"{name} model: cross-validated MAPE {chosen:.3g}% exceeds --max-cv-mape-pct "
                f"{max_cv_mape_pct:g}; check the profile for outliers or unit errors; nothing written")


def fit_cmd(
    profile: Annotated[Path, typer.Argument(help="Reference profile CSV (thousands of modes).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
    knobs: Annotated[str | None, typer.Option(help="Knob columns, comma-separated (default Jetson).")] = None,
    time_col: Annotated[str, typer.Option(help="Time column.")] = "time_ms",
    power_col: Annotated[str, typer.Option(help="Power column.")] = "power_w",
    seed: Annotated[int, typer.Option(help="Seed (fits are deterministic for a seed).")] = 0,
    device_type: Annotated[str, typer.Option(help="Device type to record (default: the CSV's).")] = "",
    workload: Annotated[str, typer.Option(help="Workload to record (default: the CSV's).")] = "",
    members: Annotated[int, typer.Option(help="Ensemble members per target.")] = 4,
    fit_steps: Annotated[int, typer.Option(help="Training steps of the reference fit.")] = 3000,
    transfer_steps: Annotated[int, typer.Option(help="Training steps of later transfers.")] = 400,
    off_grid: OffGridOpt = False,
    max_cv_mape_pct: Annotated[float, typer.Option(
        help="Refuse a fit whose cross-validated MAPE exceeds this (%).")] = DEFAULT_MAX_CV_MAPE_PCT,
) -> None:
    """Fit reference time and power networks on a profile."""
    check_output(output, what="--output")
    bounded("--members", members, 1, 64)
    bounded("--fit-steps", fit_steps, 1, 1_000_000)
    bounded("--transfer-steps", transfer_steps, 1, 1_000_000)
    bounded("--max-cv-mape-pct", max_cv_mape_pct, 0, 1e6, low_inclusive=False)
    knob_names = _knob_list(knobs)
    frame = read_profile(profile, knobs=knob_names, time_col=time_col, power_col=power_col)
    device_type = single_value(frame, "device", str(profile), device_type)
    workload = single_value(frame, "workload", str(profile), workload)
    check_modes(frame, knob_names, board_space(device_type), off_grid=off_grid, source=str(profile))
    started = time.perf_counter()
    with err.status(f"fitting on {len(frame)} modes"):
        model = PowerTrainPredictor(knobs=knob_names, time_col=time_col, power_col=power_col, seed=seed,
                                    members=members, fit_steps=fit_steps, transfer_steps=transfer_steps)
        model.fit(frame, device_type=device_type, workload=workload)
    _check_fit(model, max_cv_mape_pct)
    ident = save_model(output, model.to_state(), board_space(model.to_state().device_type), what="--output")
    _report(model, f"fitted in {time.perf_counter() - started:.1f} s; wrote {output} ({ident[:19]})")


def transfer_cmd(
    model: Annotated[Path, typer.Argument(help="Source model file.")],
    samples: Annotated[Path, typer.Argument(help="Profile CSV of a few modes of the new workload/device.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    methods: Annotated[str | None, typer.Option(
        help=f"Candidate methods, comma-separated ({','.join(TRANSFER_METHODS)}).")] = None,
    device_type: Annotated[str, typer.Option(help="Device type of the samples (default: the CSV's).")] = "",
    workload: Annotated[str, typer.Option(help="Workload of the samples (default: the CSV's).")] = "",
    off_grid: OffGridOpt = False,
    max_cv_mape_pct: Annotated[float, typer.Option(
        help="Refuse a transfer whose cross-validated MAPE exceeds this (%).")] = DEFAULT_MAX_CV_MAPE_PCT,
) -> None:
    """Transfer a model to a new workload and/or device type from a few profiled modes."""
    check_output(output, what="--output")
    bounded("--max-cv-mape-pct", max_cv_mape_pct, 0, 1e6, low_inclusive=False)
    source = _load(model)
    frame = read_profile(samples, knobs=source.knobs, time_col=source.time_col, power_col=source.power_col)
    target = single_value(frame, "device", str(samples), device_type) or source.to_state().device_type
    workload = single_value(frame, "workload", str(samples), workload)
    check_modes(frame, source.knobs, board_space(target), off_grid=off_grid, source=str(samples))
    parent = artifact_id(read_artifact_file(model), str(model))
    started = time.perf_counter()
    new = source.transfer(frame, seed=seed, parent_id=parent,
                          methods=[m.strip() for m in methods.split(",")] if methods else None,
                          device_type=target or None, workload=workload or None)
    _check_fit(new, max_cv_mape_pct)
    state = new.to_state()
    ident = save_model(output, state, board_space(state.device_type), what="--output")
    _report(new, f"transferred in {time.perf_counter() - started:.1f} s from {len(frame)} samples; "
                 f"wrote {output} ({ident[:19]})")


def predict_cmd(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    modes: Annotated[Path, typer.Argument(help="CSV with the model's knob columns (other columns kept).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Predictions CSV to write.")],
    off_grid: OffGridOpt = False,
) -> None:
    """Predict time and power (with uncertainty) for every mode of a CSV."""
    check_output(output, what="--output")
    predictor = _load(model)
    frame = _modes_file(predictor, modes, off_grid)
    result = predictor.predict(frame).to_frame(frame)
    with atomic_outputs((output, "--output")) as (tmp,):
        result.to_csv(tmp, index=False, float_format="%.6g")
    err.print(f"wrote {len(result)} predictions to {output}")


def _modes_file(predictor: PowerTrainPredictor, path: Path, off_grid: bool) -> pd.DataFrame:
    """A modes CSV, its values checked against the model's device (see :func:`check_modes`)."""
    frame = read_profile(path, knobs=predictor.knobs, require_targets=False)
    state = predictor.to_state()
    if "device" in frame.columns:
        check_model_device(state.device_type, single_value(frame, "device", str(path)), f"{path}: column device")
    return check_modes(frame, predictor.knobs, board_space(state.device_type), off_grid=off_grid, source=str(path))


def _candidate_modes(predictor: PowerTrainPredictor, device: str | None, modes: Path | None,
                     grid: str, off_grid: bool) -> pd.DataFrame:
    if (device is None) == (modes is None):
        raise InvalidParameterError("give exactly one of --device D or --modes MODES.csv")
    if modes is not None:
        return _modes_file(predictor, modes, off_grid)
    assert device is not None
    space = get_space(device_name(device))
    check_model_device(predictor.to_state().device_type, device)
    missing = [k for k in predictor.knobs if k not in space.knob_names]
    if missing:
        raise InvalidParameterError(f"--device {device}: the model's knob(s) {', '.join(missing)} are not "
                                    f"knobs of {space.name} ({', '.join(space.knob_names)})")
    return space.modes(grid)


def pareto_cmd(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Front CSV to write.")],
    device: Annotated[str | None, typer.Option(help="Device type whose modes to use, e.g. orin-agx.")] = None,
    modes: Annotated[Path | None, typer.Option(help="Or a CSV of modes.")] = None,
    grid: Annotated[str, typer.Option(help="With --device: full or a grid name.")] = "full",
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG of all modes and the front.")] = None,
    power_cap_w: Annotated[float | None, typer.Option(help="Draw this power cap on the plot.")] = None,
    off_grid: OffGridOpt = False,
) -> None:
    """Build the predicted time/power Pareto front of a device's modes."""
    outputs = [(output, "--output")] + ([(plot, "--plot")] if plot is not None else [])
    for path, what in outputs:
        check_output(path, what=what)
    if power_cap_w is not None:
        bounded("--power-cap-w", power_cap_w, 0, 1000, low_inclusive=False)
    predictor = _load(model)
    frame = _candidate_modes(predictor, device, modes, grid, off_grid)
    pred = predictor.predict(frame)
    table = pred.to_frame(frame)
    front = table.iloc[pareto_front(pred.time_ms, pred.power_w)].reset_index(drop=True)
    with atomic_outputs(*outputs) as temps:  # both files, or neither
        front.to_csv(temps[0], index=False, float_format="%.6g")
        if plot is not None:
            _plot_front(table, front, predictor, power_cap_w, temps[1])
    err.print(f"{len(front)} of {len(table)} modes are on the predicted front; wrote {output}"
              + (f" and {plot}" if plot else ""))


def _plot_front(table: pd.DataFrame, front: pd.DataFrame, predictor: PowerTrainPredictor,
                power_cap_w: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tc, pc = f"pred_{predictor.time_col}", f"pred_{predictor.power_col}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(table[tc], table[pc], s=3, c="0.7", label=f"all modes ({len(table)})")
    ax.plot(front[tc], front[pc], "-o", ms=3, c="tab:red", label=f"Pareto front ({len(front)})")
    if power_cap_w is not None:
        ax.axhline(power_cap_w, c="tab:blue", ls="--", label=f"cap {power_cap_w:g} W")
    ax.set_xscale("log")
    ax.set_xlabel(f"predicted {predictor.time_col}")
    ax.set_ylabel(f"predicted {predictor.power_col}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def optimize_cmd(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    power_cap_w: Annotated[float, typer.Option(help="Power cap (W).")],
    device: Annotated[str | None, typer.Option(help="Device type whose modes to use, e.g. orin-agx.")] = None,
    modes: Annotated[Path | None, typer.Option(help="Or a CSV of modes.")] = None,
    grid: Annotated[str, typer.Option(help="With --device: full or a grid name.")] = "full",
    deadline_ms: Annotated[float | None, typer.Option(help="Deadline for the work (ms).")] = None,
    minibatches: Annotated[int, typer.Option(help="Minibatches the deadline covers.")] = 1,
    objective: Annotated[str, typer.Option(help=f"{'|'.join(OBJECTIVES)}.")] = "time",
    margin_z: Annotated[float, typer.Option(help="Safety margin in standard deviations.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    off_grid: OffGridOpt = False,
) -> None:
    """Choose the best mode under a power cap (and deadline) from predictions."""
    bounded("--power-cap-w", power_cap_w, 0, 1000, low_inclusive=False)
    if deadline_ms is not None:
        bounded("--deadline-ms", deadline_ms, 0, 1e9, low_inclusive=False)
    bounded("--minibatches", minibatches, 1, 10_000_000)
    bounded("--margin-z", margin_z, 0, 10)
    predictor = _load(model)
    frame = _candidate_modes(predictor, device, modes, grid, off_grid)
    table = ModeTable(frame, predictor.predict(frame), predictor.knobs)
    result = table.choose(power_cap_w=power_cap_w, deadline_ms=deadline_ms, objective=objective,
                          margin_z=margin_z, minibatches=minibatches)
    if as_json:
        out.print_json(json.dumps(_json_safe(result.to_dict()), allow_nan=False))
    elif isinstance(result, Choice):
        out.print(f"mode {result.mode}: {result.time_ms:.1f} ms/minibatch, {result.power_w:.2f} W, "
                  f"{result.energy_j:.3f} J for {minibatches} minibatch(es) (objective {objective})")
    else:
        out.print(f"infeasible ({result.violated}): {result.reason}")
        if result.closest is not None:
            out.print(f"closest: mode {result.closest.mode}: {result.closest.time_ms:.1f} ms, "
                      f"{result.closest.power_w:.2f} W")
    if not isinstance(result, Choice):
        raise typer.Exit(code=3)


def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    profile: Annotated[Path, typer.Argument(help="Ground-truth profile CSV.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    off_grid: OffGridOpt = False,
) -> None:
    """Print the accuracy of a model against a ground-truth profile."""
    predictor = _load(model)
    state = predictor.to_state()
    frame = read_profile(profile, knobs=predictor.knobs, time_col=predictor.time_col,
                         power_col=predictor.power_col)
    found = single_value(frame, "device", str(profile))
    if found:
        check_model_device(state.device_type, found, f"{profile}: column device")
    check_modes(frame, predictor.knobs, board_space(state.device_type), off_grid=off_grid, source=str(profile))
    table = accuracy_table(predictor.predict(frame), frame, predictor.time_col, predictor.power_col)
    if as_json:
        out.print_json(json.dumps(_json_safe(table.to_dict(orient="records")), allow_nan=False))
    else:
        out.print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def _report(model: PowerTrainPredictor, headline: str) -> None:
    info = model.describe()
    err.print(headline)
    for name, t in info["targets"].items():
        cv = ", ".join(f"{m} {v:.2f}%" for m, v in sorted(t["cv_mape"].items(), key=lambda kv: kv[1]))
        err.print(f"  {name}: {t['method']} (errors: {cv})")
