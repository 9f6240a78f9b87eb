"""``powerfleet simulate``: the fleet on Flower's simulation engine, or on the analytic engine.

Flower engine: N virtual SuperNodes (one per fleet board) run the real ClientApp - real torch
training on generated data, time and power from each node's simulated Jetson on its virtual
clock - under the real coordinator ServerApp. Analytic engine: the same coordinator with
vectorised steady-state nodes and no training (:mod:`powerfleet.sim.analytic`). Dropouts are
injected here, never by the coordinator (:mod:`powerfleet.sim.faults`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec, check_cap_above_idle
from coordinator.report import write_report
from coordinator.rounds import FleetCoordinator, RoundCallback, RunReport
from coordinator.store import open_store
from powerfleet.sim.analytic import AnalyticBackend
from powerfleet.sim.faults import DropoutBackend, DropoutPlan
from powertrain.devices import make_device
from powertrain.errors import InvalidParameterError, PowerfleetError

ENGINES = ("flower", "analytic")


def check_fleet(cfg: RunConfig, fleet: FleetSpec) -> None:
    """Refuse, before any round, a cap below a board's idle power or a fleet that cannot be built."""
    first_of_type = {n.device_type: n for n in reversed(fleet.nodes)}  # one board per type suffices
    for node in first_of_type.values():
        device = make_device(node.device_spec)
        check_cap_above_idle(node.device_type, fleet.cap_for(node.device_type, cfg.power_cap_w),
                             device.idle_power_w())


def simulate(cfg: RunConfig, fleet: FleetSpec, *, engine: str = "flower", out_dir: str | Path | None = None,
             on_round: RoundCallback | None = None) -> RunReport:
    """Run the fleet and (if ``out_dir``) write the report; returns the report."""
    if engine not in ENGINES:
        raise InvalidParameterError(f"engine {engine!r} is not known; valid engines: {', '.join(ENGINES)}")
    check_fleet(cfg, fleet)
    dropouts = DropoutPlan(cfg.dropout_rate, cfg.seed)
    if engine == "analytic":
        store = open_store(cfg.store or None)
        backend = AnalyticBackend(fleet, cfg.seed)
        partition_of = {n.index + 1: n.index for n in fleet.nodes}
        try:
            report = FleetCoordinator(cfg, store, DropoutBackend(backend, dropouts, partition_of), fleet=fleet,
                                      on_round=on_round).run()
        finally:
            store.close()
    else:
        report = _run_flower(cfg, fleet, dropouts, on_round)
    if out_dir is not None:
        write_report(report, out_dir, title=f"powerfleet simulation: {fleet.name}, policy {cfg.policy}")
    return report


def _run_flower(cfg: RunConfig, fleet: FleetSpec, dropouts: DropoutPlan, on_round: RoundCallback | None) -> RunReport:
    from flwr.simulation import run_simulation

    from client.client_app import build_client_app
    from coordinator.server_app import make_server_app

    store_probe = open_store(cfg.store or None)  # fail fast, with one line, before Ray starts
    store_probe.close()
    holder: list[RunReport] = []
    server_app = make_server_app(cfg, fleet, on_round, holder.append)
    client_app = build_client_app(dropouts.device_hook if dropouts.rate > 0 else None)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": max(1, min(os.cpu_count() or 1, 4)), "include_dashboard": False,
                      "logging_level": "error", "log_to_driver": False},
    }
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(fleet.nodes),
                   backend_name="ray", backend_config=backend_config)  # type: ignore[arg-type]
    if not holder:
        raise PowerfleetError("the simulation ended without a result; see the log above")
    return holder[0]
