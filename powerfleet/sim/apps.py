"""The Flower apps of the simulated fleet, run by the SuperLink's simulation runtime.

The same coordinator and ClientApp as a deployment, with what only a simulation has: nodes
take their simulated board from the broadcast fleet (``fleet-file``, else the bundled default),
and ``dropout-rate`` makes nodes crash mid-round (:mod:`powerfleet.sim.faults`).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from client.client_app import build_client_app
from coordinator.config import RunConfig
from coordinator.server_app import configure_logging, fail, run_fleet
from powerfleet.sim.faults import dropout_hook
from powertrain.errors import PowerfleetError

server_app = ServerApp()
client_app = build_client_app(dropout_hook)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the simulated fleet's rounds and write the report."""
    configure_logging()
    try:
        run_fleet(grid, RunConfig.from_run_config(dict(context.run_config)), run_id=context.run_id)
    except PowerfleetError as exc:
        fail(exc)
