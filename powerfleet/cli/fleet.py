"""``powerfleet simulate``: run a simulated fleet and write its report.

Its options are the run config (:class:`coordinator.config.RunConfig`), under the same
kebab-case names as ``flwr run --run-config`` and ``[tool.flwr.app.config]``: every key is a
flag (``--deadline-s 20``), and ``--run-config "k=v ..."`` takes Flower's syntax. Precedence:
the defaults, then the fleet file's ``[run]`` table, then ``--run-config``, then the flags.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import click

from powerfleet.cli._common import err, out
from powertrain.errors import InvalidParameterError

if TYPE_CHECKING:
    from coordinator.config import RunConfig
    from coordinator.fleet import FleetSpec
    from coordinator.rounds import RunReport

#: Older flag names, kept as aliases of the run-config keys they always meant.
ALIASES = {"num-server-rounds": "--rounds", "fleet-file": "--fleet", "out-dir": "--out"}


def simulate_command() -> click.Command:
    """The ``simulate`` command, one flag per run-config key (help and choices from the model)."""
    from coordinator.config import RunConfig, field_help, keys

    params: list[click.Parameter] = []
    for key in keys():
        field = RunConfig.model_fields[key.replace("-", "_")]
        names = [f"--{key}", *([ALIASES[key]] if key in ALIASES else [])]
        params.append(click.Option([*names, key.replace("-", "_")], type=_click_type(field.annotation), default=None,
                                   help=f"{field_help(key)} [default: {_default_text(key, field.default)}]"))
    params.append(click.Option(["--run-config", "run_config"], default=None, metavar='"k=v ..."',
                               help="Run-config overrides in flwr run's syntax, e.g. "
                                    "'deadline-s=30 policy=\"maxn\"'."))
    params.append(click.Option(["--engine", "engine"], type=click.Choice(["flower", "analytic"]), default="flower",
                               help="flower: the SuperLink's simulation runtime, real training; analytic: no Flower, "
                                    "no training, thousands of nodes."))
    return click.Command("simulate", callback=_simulate, params=params,
                         help="Run FL rounds on a simulated fleet of Jetsons and write the report.")


def _click_type(annotation: Any) -> click.ParamType[Any] | type[Any]:
    if get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in get_args(annotation)])
    if isinstance(annotation, type) and issubclass(annotation, str) and annotation is not str:
        return click.Choice([str(v) for v in annotation])  # type: ignore[attr-defined]
    if annotation in (int, float):
        return annotation  # type: ignore[no-any-return]
    return str


def _default_text(key: str, default: object) -> str:
    if key == "fleet-file":
        return "the bundled mixed-12"
    if key == "out-dir":
        return "runs/<fleet name>"
    return str(default) if default != "" else '""'


def parse_run_config(text: str) -> dict[str, Any]:
    """Flower's ``--run-config`` syntax, strictly: Flower's parser skips a token it cannot read
    (``rounds=``, a bare word) without a word; here every token must be a pair it read."""
    import shlex

    from flwr.common.config import parse_config_args

    bad = (f"--run-config {text!r} must be space-separated key=value pairs with quoted strings, "
           "e.g. 'deadline-s=30 policy=\"maxn\"'")
    try:
        parsed: dict[str, Any] = parse_config_args([text])
        tokens = shlex.split(text)
    except (click.ClickException, ValueError):
        raise InvalidParameterError(bad) from None
    for token in tokens:
        if token.split("=", 1)[0] not in parsed:
            raise InvalidParameterError(f"{bad}; {token!r} is not one")
    return parsed


def _simulate(engine: str, run_config: str | None, **flags: Any) -> None:
    from coordinator.config import RunConfig
    from coordinator.fleet import DEFAULT_FLEET, FleetSpec
    from coordinator.interrupt import RunInterrupted, RunStoppedError, raise_on_signals
    from coordinator.report import PROGRESS_FILE, SUMMARY_KEYS, check_report_dir, report_from_progress, write_report
    from coordinator.store import open_store, resolve_store_url
    from powerfleet.sim.engines import check_run

    overrides: dict[str, Any] = {}
    if run_config:
        overrides.update(parse_run_config(run_config))
    overrides.update({k.replace("_", "-"): v for k, v in flags.items() if v is not None})
    spec = FleetSpec.load(str(overrides.get("fleet-file") or DEFAULT_FLEET))
    # the fleet file's [run] table sets this fleet's defaults; the command line wins over it
    base = RunConfig.from_run_config(dict(spec.run), where=f"fleet {spec.name} [run]") if spec.run else RunConfig()
    cfg = base.with_overrides(overrides)
    out_dir = Path(cfg.out_dir or f"runs/{spec.name}")
    check_run(cfg, spec)  # every bad input (the task's too) fails here, before anything starts
    open_store(resolve_store_url(cfg.store) or None).close()
    check_report_dir(out_dir, what="--out-dir")  # last: it makes the directory
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
    # From here on SIGINT/SIGTERM end the run with a report of its finished rounds (a signal after
    # the run has finished changes nothing: its report is complete).
    with raise_on_signals() as signals:
        try:
            report = _run(engine, cfg, spec, out_dir)
        except RunInterrupted:  # before the coordinator ran, or while the report was written
            signals.armed = False
            report = report_from_progress(out_dir, signals.signal_name, cfg)
            write_report(report, out_dir, title=f"powerfleet simulation: {spec.name}, policy {cfg.policy}")
            (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
    s = report.summary
    if s.get("stopped_by"):  # one line, the signal's exit code; the finished rounds are in the report
        raise RunStoppedError(f"stopped by {s['stopped_by']} after {len(report.rounds)} of {cfg.num_server_rounds} "
                              f"rounds; report of the finished rounds (marked incomplete): "
                              f"{out_dir.resolve() / 'summary.md'}", str(s["stopped_by"]))
    for key in SUMMARY_KEYS:
        value = s[key]
        out.print(f"{key:>26}: {value:.4g}" if isinstance(value, float) and not math.isnan(value)
                  else f"{key:>26}: {value}")
    out.print(f"report: {out_dir.resolve() / 'summary.md'} (plots: rounds.png, data: rounds.csv, clients.csv, "
              "summary.json)")


def _run(engine: str, cfg: RunConfig, spec: FleetSpec, out_dir: Path) -> RunReport:
    """The run with its progress bar on stderr (one line per round as they finish)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from powerfleet.sim.engines import simulate

    err.print(f"fleet {spec.name}: {len(spec.nodes)} boards ({', '.join(spec.device_types)}); engine {engine}, "
              f"policy {cfg.policy}, {cfg.num_server_rounds} rounds")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=err) as bar:
        task = bar.add_task("rounds", total=cfg.num_server_rounds, last="preparing predictors ...")

        def on_line(line: str) -> None:
            bar.update(task, advance=1, last=line.removeprefix("powerfleet ")[:110])

        return simulate(cfg, spec, engine=engine, out_dir=out_dir, on_line=on_line)
