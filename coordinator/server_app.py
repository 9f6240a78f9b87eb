"""The Flower ServerApp (thin): turn the run config into a coordinator, run it, report.

``flwr run`` loads ``app``; the simulation engine loads ``powerfleet.sim.apps:server_app``,
which runs the same :func:`run_fleet`. The round logic lives in ``coordinator/rounds.py``.
What a user of Flower's own tools sees: one log line per round in ``flwr run --stream`` and
``flwr log`` (powerfleet's log records go through Flower's console handler), the report in
``out-dir`` (default ``$POWERFLEET_RUNS_DIR/<run id>``), and a failed run status with one
line when the run cannot start (bad run config, unreachable store, no nodes in time).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec, default_fleet
from coordinator.flower_backend import FlowerBackend
from coordinator.interrupt import raise_on_signals
from coordinator.records import RoundRecord
from coordinator.report import PROGRESS_FILE, check_report_dir, progress_writer, write_report
from coordinator.rounds import FleetCoordinator, RoundCallback, RunReport, node_query
from coordinator.store import open_store, redact_url, resolve_store_url
from powerfleet.protocol.tasks import cached_task, check_task
from powertrain.errors import InvalidParameterError, PowerfleetError

log = logging.getLogger("powerfleet.coordinator")
#: Where reports go when the run config names no out-dir: ``$POWERFLEET_RUNS_DIR/<run id>``.
RUNS_DIR_ENV = "POWERFLEET_RUNS_DIR"


def configure_logging() -> None:
    """Send powerfleet's log records through Flower's console handler (Flower captures it)."""
    from flwr.common.logger import console_handler

    logger = logging.getLogger("powerfleet")
    logger.setLevel(logging.INFO)
    if console_handler not in logger.handlers:
        logger.addHandler(console_handler)
    logger.propagate = False


def out_dir_for(cfg: RunConfig, run_id: int | str) -> Path:
    """The run's report and state directory: ``out-dir``, else ``$POWERFLEET_RUNS_DIR/<run id>``."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")) / str(run_id)


def run_fleet(grid: Grid, cfg: RunConfig, fleet: FleetSpec | None = None, on_round: RoundCallback | None = None,
              *, run_id: int | str = "run") -> RunReport:
    """Run the configured rounds over ``grid`` and write the report (see the module docstring).

    The fleet list broadcast to nodes without a device of their own (simulation) is the run's
    ``fleet-file``, else the bundled default fleet; deployed nodes report their own boards.
    """
    if fleet is None:
        fleet = FleetSpec.load(cfg.fleet_file) if cfg.fleet_file else default_fleet()
    backend = FlowerBackend(grid)
    backend.announce(node_query(cfg, fleet, 0))  # the nodes describe themselves while this process starts up
    check_task(cached_task(cfg.task), cfg.seed)  # a task that does not load or train: one line, nothing made
    created = not out_dir_for(cfg, run_id).exists()
    out = check_report_dir(out_dir_for(cfg, run_id), what="out-dir")  # before any round, not after the run
    try:
        url = resolve_store_url(cfg.store)
        store = open_store(url or None, local_path=out / "store-fallback.sqlite" if url else None)
        log.info("powerfleet run %s: store %s, report in %s", run_id, store.url, out.resolve())
        try:
            coordinator = FleetCoordinator(cfg, store, backend, fleet=fleet)
            checkpoint = progress_writer(out, coordinator)

            def each_round(record: RoundRecord) -> None:
                checkpoint(record)
                if on_round is not None:
                    on_round(record)

            coordinator.on_round = each_round
            with raise_on_signals():  # in flwr-serverapp's main thread: SIGINT/SIGTERM end the run early
                report = coordinator.run()
            pending = store.stats().get("pending", 0)
        finally:
            store.close()
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a run that failed leaves no empty report directory behind
        raise
    report.summary["store"] = redact_url(url) if url else "embedded"
    report.summary["store_writes_pending"] = pending
    if pending:
        log.warning("%d store write(s) wait in %s for the store to return", pending, out / "store-fallback.sqlite")
    write_report(report, out, title=f"powerfleet run {run_id} ({cfg.policy})", what="out-dir")
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    if report.summary.get("stopped_by"):
        stopped(str(report.summary["stopped_by"]), len(report.rounds), cfg.num_server_rounds, out)
    return report


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``: the config comes from ``[tool.flwr.app.config]`` and ``--run-config``."""
    configure_logging()
    try:
        cfg = RunConfig.from_run_config(dict(context.run_config))
        if cfg.dropout_rate > 0:
            raise InvalidParameterError(f"dropout-rate={cfg.dropout_rate:g} simulates node failures and applies "
                                        "to 'powerfleet simulate' only; a deployed fleet's failures are real")
        run_fleet(grid, cfg, run_id=context.run_id)
    except PowerfleetError as exc:
        fail(exc)


def stopped(signal_name: str, rounds: int, of: int, out: Path) -> None:
    """End a run a signal stopped, after its partial report is written: Flower's graceful exit
    for that signal, with one line."""
    from flwr.supercore.exit import ExitCode, flwr_exit

    code = ExitCode.GRACEFUL_EXIT_SIGTERM if signal_name == "SIGTERM" else ExitCode.GRACEFUL_EXIT_SIGINT
    flwr_exit(code, f"powerfleet: stopped by {signal_name} after {rounds} of {of} rounds; report in {out.resolve()}")


def fail(exc: PowerfleetError) -> None:
    """End the run with a failed status and one line (Flower's exit path logs it once, no traceback)."""
    from flwr.supercore.exit import ExitCode, flwr_exit

    flwr_exit(ExitCode.SERVERAPP_EXCEPTION, f"powerfleet: {exc.message}")
