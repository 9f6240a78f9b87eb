"""The Flower ServerApp (thin): turn the run config into a coordinator and run it.

``flwr run`` (deployment engine) loads ``app``; ``powerfleet simulate`` builds its own app
with :func:`make_server_app` so it can pass the fleet and a progress callback in-process.
The round logic lives in ``coordinator/rounds.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec
from coordinator.flower_backend import FlowerBackend
from coordinator.report import write_report
from coordinator.rounds import FleetCoordinator, RoundCallback, RunReport
from coordinator.store import open_store, resolve_store_url
from powertrain.errors import InvalidParameterError


def run_fleet(grid: Grid, cfg: RunConfig, fleet: FleetSpec | None = None,
              on_round: RoundCallback | None = None) -> RunReport:
    """Run the configured rounds over ``grid``; writes the report when ``cfg.out_dir`` is set."""
    if fleet is None and cfg.fleet_file:
        fleet = FleetSpec.load(cfg.fleet_file)
    # No store in the run config: the coordinator host's own ($POWERFLEET_STORE, e.g. the compose
    # ServerApp's Redis with its password in a secret file), so no secret travels in a run config.
    store = open_store(resolve_store_url(cfg.store))
    try:
        report = FleetCoordinator(cfg, store, FlowerBackend(grid), fleet=fleet, on_round=on_round).run()
    finally:
        store.close()
    if cfg.out_dir:
        write_report(report, cfg.out_dir, title=f"powerfleet run ({cfg.policy})")
    return report


def make_server_app(cfg: RunConfig, fleet: FleetSpec | None, on_round: RoundCallback | None,
                    sink: Callable[[RunReport], None]) -> ServerApp:
    """A ServerApp bound to an in-process config and fleet (for the simulation engine)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        sink(run_fleet(grid, cfg, fleet, on_round))

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``: the config comes from ``[tool.flwr.app.config]``."""
    cfg = RunConfig.from_run_config(dict(context.run_config))
    if cfg.dropout_rate > 0:
        raise InvalidParameterError(f"dropout-rate={cfg.dropout_rate:g} simulates node failures and applies to "
                                    "'powerfleet simulate' only; a deployed fleet's failures are real")
    run_fleet(grid, cfg)
