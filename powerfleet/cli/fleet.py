"""``powerfleet simulate``: run a simulated fleet and write its report."""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Annotated

import typer

from powerfleet.cli._common import err, out
from powertrain.errors import InvalidParameterError

DEFAULT_FLEET = Path("examples/fleets/mixed-12.toml")


class _DropDeprecation(logging.Filter):
    """Hide Flower's notice that ``run_simulation`` is deprecated (we use it on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in record.getMessage()


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("simulate")(simulate_cmd)


def simulate_cmd(
    fleet: Annotated[Path, typer.Option(help="Fleet TOML file.")] = DEFAULT_FLEET,
    rounds: Annotated[int, typer.Option(help="FL rounds.")] = 10,
    deadline_s: Annotated[float, typer.Option(help="Round deadline on each board's clock (s).")] = 20.0,
    power_cap_w: Annotated[float, typer.Option(help="Power cap per board (W); fleet groups may override.")] = 25.0,
    objective: Annotated[str, typer.Option(help="energy|time.")] = "energy",
    policy: Annotated[str, typer.Option(help="powertrain|maxn|preset|random|oracle.")] = "powertrain",
    selection: Annotated[str, typer.Option(help="deadline (predictor-aware) | all.")] = "deadline",
    workload: Annotated[str, typer.Option(help="Catalog workload the boards model.")] = "resnet18-imagenet",
    local_minibatches: Annotated[int, typer.Option(help="Local minibatches per round.")] = 50,
    min_minibatches: Annotated[int, typer.Option(help="Least useful work; nodes that cannot are skipped.")] = 10,
    fraction: Annotated[float, typer.Option(help="Share of eligible nodes selected per round.")] = 1.0,
    margin_z: Annotated[float, typer.Option(help="Safety margin in predictor standard deviations.")] = 2.0,
    dropout_rate: Annotated[float, typer.Option(help="Chance a selected node dies mid-round.")] = 0.0,
    store: Annotated[str | None, typer.Option(help="Store URL (default: embedded; env POWERFLEET_STORE).")] = None,
    seed: Annotated[int, typer.Option(help="Experiment seed.")] = 0,
    engine: Annotated[str, typer.Option(help="flower (real training) | analytic (no Flower, no training).")] = "flower",
    out_dir: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path("runs/sim"),
) -> None:
    """Run FL rounds on a simulated fleet of Jetsons and write the report."""
    from coordinator.config import RunConfig
    from coordinator.fleet import FleetSpec
    from coordinator.report import SUMMARY_KEYS
    from coordinator.store import open_store
    from powerfleet.sim.engines import ENGINES, check_fleet, simulate

    if engine not in ENGINES:
        raise InvalidParameterError(f"--engine {engine!r} is not known; valid engines: {', '.join(ENGINES)}")
    store_url = store if store is not None else os.environ.get("POWERFLEET_STORE", "")
    cfg = RunConfig.from_run_config({
        "num-server-rounds": rounds, "deadline-s": deadline_s, "power-cap-w": power_cap_w, "objective": objective,
        "policy": policy, "selection": selection, "workload": workload, "local-minibatches": local_minibatches,
        "min-minibatches": min_minibatches, "fraction": fraction, "margin-z": margin_z,
        "dropout-rate": dropout_rate, "store": store_url, "seed": seed})
    spec = FleetSpec.load(fleet)
    check_fleet(cfg, spec)  # every bad input fails here, before anything starts
    open_store(cfg.store or None).close()
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
    logging.getLogger("flwr").addFilter(_DropDeprecation())
    err.print(f"fleet {spec.name}: {len(spec.nodes)} boards ({', '.join(spec.device_types)}); engine {engine}, "
              f"policy {policy}, {rounds} rounds")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=err) as bar:
        task = bar.add_task("rounds", total=rounds, last="preparing predictors ...")

        def on_round(r: object) -> None:
            from coordinator.records import RoundRecord

            assert isinstance(r, RoundRecord)
            acc = "" if math.isnan(r.accuracy) else f", acc {r.accuracy:.2f}"
            boot = " (bootstrap)" if r.bootstrap else ""
            bar.update(task, advance=1, last=f"round {r.round}{boot}: {r.on_time}/{r.selected} on time, "
                                             f"{r.energy_j:.0f} J{acc}")

        report = simulate(cfg, spec, engine=engine, out_dir=out_dir, on_round=on_round)
    s = report.summary
    for key in SUMMARY_KEYS:
        value = s[key]
        out.print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    out.print(f"report: {out_dir.resolve() / 'summary.md'} (plots: rounds.png, data: rounds.csv, clients.csv, "
              "summary.json)")
