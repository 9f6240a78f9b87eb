"""Writing a run's report: CSV/JSON records, ``summary.json``, a markdown summary and plots.

Every file goes through :mod:`powertrain.outputs`: the directory is checked (or made) before
anything is written - :func:`check_report_dir` lets a run check it before its first round -
and the files are moved into place together, only once all of them are written.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from coordinator.config import RunConfig
from coordinator.records import ClientRecord, RoundRecord, summarize
from coordinator.rounds import FleetCoordinator, RoundCallback, RunReport, run_status
from powerfleet.protocol.enums import ChoiceKind, ClientStatus, WorkKind
from powertrain.errors import DataFormatError
from powertrain.outputs import atomic_outputs, check_output_dir

SUMMARY_KEYS = ("policy", "rounds", "client_rounds", "deadline_hit_rate", "deadline_hit_rate_steady",
                "energy_j_total", "idle_energy_j", "energy_j_total_with_idle", "energy_vs_maxn", "breakeven_round",
                "bootstrap_energy_j", "energy_j_per_round", "power_cap_violation_rate", "max_power_over_cap_w",
                "final_accuracy", "profiling_minibatches")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


REPORT_FILES = ("rounds.csv", "rounds.json", "clients.csv", "summary.json", "summary.md", "rounds.png", "report.json")


def check_report_dir(out_dir: str | Path, *, what: str = "--out") -> Path:
    """Make sure the report directory exists and takes new files (call before a run starts)."""
    return check_output_dir(out_dir, what=what)


def write_report(report: RunReport, out_dir: str | Path, *, title: str = "", what: str = "--out") -> dict[str, Path]:
    """Write every report file into ``out_dir`` (all or none of them); returns them by name."""
    out = check_report_dir(out_dir, what=what)
    rounds = pd.DataFrame([r.to_dict() for r in report.rounds])
    clients = pd.DataFrame([c.to_dict() for c in report.clients])
    files = {name: out / name for name in REPORT_FILES}
    if report.weights:  # the final global model, as safetensors (loaded without unpickling)
        files["model.safetensors"] = out / "model.safetensors"
    summary = {**report.summary, "config": report.config.to_run_config(), "predictors": report.predictors}
    with atomic_outputs(*((path, what) for path in files.values())) as temps:
        tmp = dict(zip(files, temps, strict=True))
        rounds.to_csv(tmp["rounds.csv"], index=False, float_format="%.6g")
        tmp["rounds.json"].write_text(json.dumps(_clean(rounds.to_dict(orient="records")), indent=1),
                                      encoding="utf-8")
        clients.to_csv(tmp["clients.csv"], index=False, float_format="%.6g")
        tmp["summary.json"].write_text(json.dumps(_clean(summary), indent=1, sort_keys=False), encoding="utf-8")
        tmp["summary.md"].write_text(markdown(report, title), encoding="utf-8")
        tmp["report.json"].write_text(json.dumps(_clean({
            "config": report.config.to_run_config(), "summary": report.summary, "predictors": report.predictors,
            "rounds": [asdict(r) for r in report.rounds], "clients": [asdict(c) for c in report.clients]})),
            encoding="utf-8")
        plots(report, tmp["rounds.png"])
        if report.weights:
            save_file({k: np.ascontiguousarray(v) for k, v in report.weights.items()}, str(tmp["model.safetensors"]),
                      metadata={"task": report.config.task, "rounds": str(len(report.rounds))})
    return files


def load_report(out_dir: str | Path) -> RunReport:
    """The run report a :func:`write_report` left in ``out_dir`` (its ``report.json``)."""
    path = Path(out_dir) / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: no readable run report ({exc})") from None

    rounds, clients = _records(data["rounds"], data["clients"])
    return RunReport(RunConfig.from_run_config(data["config"]), rounds, clients, _nan(data["summary"]),
                     data["predictors"])


#: Summary keys whose JSON null means "none", not a missing number.
_NOT_NUMBERS = frozenset({"stopped_by"})


def _nan(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a null number comes back as NaN (a null that means 'none' stays None)."""
    return {k: (math.nan if v is None and k not in _NOT_NUMBERS else v) for k, v in values.items()}


def _records(rounds: list[dict[str, Any]], clients: list[dict[str, Any]]) -> tuple[list[RoundRecord],
                                                                                  list[ClientRecord]]:
    return ([RoundRecord(**_nan(r)) for r in rounds],
            [ClientRecord(**{**_nan(c), "status": ClientStatus(c["status"]), "work_kind": WorkKind(c["work_kind"]),
                             "choice_kind": ChoiceKind(c["choice_kind"])}) for c in clients])


#: The run's progress, one JSON line per finished round, while a ServerApp runs (removed once the
#: report is written): what a stopped run is reported from when its ServerApp could not write.
PROGRESS_FILE = "progress.jsonl"


def progress_writer(out_dir: str | Path, coordinator: FleetCoordinator, *, clients: bool = True) -> RoundCallback:
    """A round callback that appends each finished round (its record, its clients unless
    ``clients`` is False, the predictors and summary extras at that point) to
    ``<out_dir>/progress.jsonl``, flushed to disk."""
    path = Path(out_dir) / PROGRESS_FILE
    path.unlink(missing_ok=True)  # a previous run's

    def write(record: RoundRecord) -> None:
        records = []
        for c in reversed(coordinator.clients if clients else ()):  # the round's clients are the last ones added
            if c.round != record.round:
                break
            records.append(asdict(c))
        line = json.dumps(_clean({"config": coordinator.cfg.to_run_config(), "round": asdict(record),
                                  "clients": records[::-1], "predictors": coordinator.predictor_info(),
                                  "extra": coordinator.summary_extra()}))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    return write


def report_from_progress(out_dir: str | Path, stopped_by: str, cfg: RunConfig) -> RunReport:
    """The report of the rounds ``<out_dir>/progress.jsonl`` holds (none if it is missing; a torn
    last line is skipped), marked stopped by ``stopped_by``."""
    rounds_data: list[dict[str, Any]] = []
    clients_data: list[dict[str, Any]] = []
    predictors: dict[str, dict[str, object]] = {}
    extra: dict[str, Any] = {"task": cfg.task, "cost_as": cfg.cost_as, "strategy": cfg.strategy}
    path = Path(out_dir) / PROGRESS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for text in lines:
        try:
            entry = json.loads(text)
        except ValueError:
            continue  # the process died while writing it
        cfg = RunConfig.from_run_config(entry["config"])
        rounds_data.append(entry["round"])
        clients_data += entry["clients"]
        predictors, extra = entry["predictors"], _nan(entry["extra"])
    rounds, clients = _records(rounds_data, clients_data)
    summary = summarize(cfg.policy, rounds, clients, extra, target_accuracy=cfg.target_accuracy)
    summary.update(run_status(cfg, len(rounds), stopped_by))
    return RunReport(cfg, rounds, clients, summary, predictors)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _margin(cfg: Any) -> str:
    if cfg.margin == "conformal":
        return (f"conformal margins (deadline-miss target {cfg.deadline_miss_target:g}, "
                f"cap-violation target {cfg.cap_violation_target:g})")
    return f"margin z={cfg.margin_z:g}"


def markdown(report: RunReport, title: str = "") -> str:
    """A human-readable summary of the run."""
    s = report.summary
    cfg = report.config
    lines = [f"# {title or 'powerfleet run'}", "",
             f"Policy **{cfg.policy}**, objective {cfg.objective}, {cfg.num_server_rounds} rounds, deadline "
             f"{cfg.deadline_s:g} s, power cap {cfg.power_cap_w:g} W, {cfg.local_minibatches} local minibatches "
             f"of task `{cfg.task}`" + (f" **charged as {cfg.cost_as}** (simulation only)" if cfg.cost_as else "")
             + f", strategy {cfg.strategy}, selection {cfg.selection}, {_margin(cfg)}.", "",
             "Every round is counted; a figure that leaves the bootstrap rounds out ends in `_steady`.", "",
             "| metric | value |", "|---|---|"]
    if s.get("stopped_by"):
        lines[2:2] = [f"**Incomplete: stopped by {s['stopped_by']} after {len(report.rounds)} of "
                      f"{cfg.num_server_rounds} rounds.** Only the finished rounds are reported.", ""]
    lines += [f"| {k} | {_fmt(s.get(k))} |" for k in SUMMARY_KEYS]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in s.items() if k not in SUMMARY_KEYS]
    lines += ["", "## Predictors", "", "| device type | version | how | time margin % | power margin % |",
              "|---|---|---|---|---|"]
    lines += [f"| {d} | v{p['version']} | {p['how']} | {_fmt(p.get('margin_time_pct', math.nan))} | "
              f"{_fmt(p.get('margin_power_pct', math.nan))} |" for d, p in report.predictors.items()]
    lines += ["", "## Rounds", "",
              "| round | selected | on time | late | dropped | skipped | energy J | mean W | duration s | accuracy |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.rounds:
        lines.append(f"| {r.round}{' (bootstrap)' if r.bootstrap else ''} | {r.selected} | {r.on_time} | "
                     f"{r.late} | {r.dropped} | {r.skipped} | {r.energy_j:.0f} | {_fmt(r.mean_power_w)} | "
                     f"{r.duration_s:.1f} | {_fmt(r.accuracy)} |")
    notes = [f"- round {r.round}: {r.notes}" for r in report.rounds if r.notes]
    if notes:
        lines += ["", "## Predictor updates", "", *notes]
    return "\n".join(lines) + "\n"


def plots(report: RunReport, path: Path) -> Path:
    """Energy and duration per round by device type, deadline outcomes, and accuracy (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report.rounds
    x = [r.round for r in rounds]
    types = sorted({t for r in rounds for t in r.energy_by_type_j})
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    bottom = [0.0] * len(rounds)
    for t in types:
        values = [r.energy_by_type_j.get(t, 0.0) for r in rounds]
        ax.bar(x, values, bottom=bottom, label=t)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("energy per round by device type (J)")
    if types:  # a run stopped before its first round has none
        ax.legend(fontsize=8)
    ax = axes[0][1]
    for t in types:
        ax.plot(x, [r.duration_by_type_s.get(t, math.nan) for r in rounds], "-o", ms=3, label=t)
    ax.axhline(report.config.deadline_s, color="k", ls="--", lw=1, label="deadline")
    ax.set_title("slowest client per device type (device s)")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    on_time = [r.on_time for r in rounds]
    late = [r.late for r in rounds]
    dropped = [r.dropped for r in rounds]
    skipped = [r.skipped for r in rounds]
    ax.bar(x, on_time, label="on time", color="tab:green")
    ax.bar(x, late, bottom=on_time, label="late", color="tab:red")
    base = [a + b for a, b in zip(on_time, late, strict=True)]
    ax.bar(x, dropped, bottom=base, label="dropped", color="tab:gray")
    base = [a + b for a, b in zip(base, dropped, strict=True)]
    ax.bar(x, skipped, bottom=base, label="skipped", color="tab:olive")
    ax.set_title("client-rounds by outcome (bootstrap: late replies used)")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(x, [r.accuracy for r in rounds], "-o", ms=3, color="tab:purple")
    ax.set_ylim(0, 1)
    ax.set_title("test accuracy of the global model")
    for a in axes.ravel():
        a.set_xlabel("round")
        a.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
