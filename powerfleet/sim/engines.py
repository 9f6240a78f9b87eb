"""``powerfleet simulate``: the fleet on Flower's simulation engine, or on the analytic engine.

Flower engine: N virtual SuperNodes (one per fleet board) run the real ClientApp - real torch
training on generated data, time and power from each node's simulated Jetson on its virtual
clock - under the real coordinator ServerApp. Analytic engine: the same coordinator with
vectorised steady-state nodes and no training (:mod:`powerfleet.sim.analytic`). Dropouts are
injected here, never by the coordinator (:mod:`powerfleet.sim.faults`).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec, check_cap_above_idle
from coordinator.interrupt import RunInterrupted, raise_on_signals
from coordinator.records import RoundRecord, describe_round
from coordinator.report import (
    PROGRESS_FILE,
    check_report_dir,
    load_report,
    progress_writer,
    report_from_progress,
    write_report,
)
from coordinator.rounds import FleetCoordinator, RoundCallback, RunReport
from coordinator.store import open_store, resolve_store_url
from powerfleet.protocol.tasks import cached_task, check_task
from powerfleet.sim.analytic import AnalyticBackend
from powerfleet.sim.faults import DropoutBackend, DropoutPlan
from powerfleet.sim.processes import ProcessGroup, free_port, wait_http_ok
from powertrain.devices import make_device
from powertrain.errors import InvalidParameterError, PowerfleetError

ENGINES = ("flower", "analytic")
STARTUP_TIMEOUT_S = 60.0
#: After a stop signal, how long Flower's processes get to exit on SIGTERM before SIGKILL.
STOP_GRACE_S = 3.0
_ROUND_LINE = re.compile(r"powerfleet round \d+/\d+.*")


def check_fleet(cfg: RunConfig, fleet: FleetSpec) -> None:
    """Refuse, before any round, a cap below a board's idle power or a fleet that cannot be built."""
    lowest: dict[str, float] = {}  # the lowest cap of each device type: the binding one
    for node in fleet.nodes:
        lowest[node.device_type] = min(lowest.get(node.device_type, math.inf), fleet.cap_of(node, cfg.power_cap_w))
    first_of_type = {n.device_type: n for n in reversed(fleet.nodes)}  # one board per type suffices
    for node in first_of_type.values():
        check_cap_above_idle(node.device_type, lowest[node.device_type], make_device(node.device_spec).idle_power_w())


def check_run(cfg: RunConfig, fleet: FleetSpec) -> str:
    """:func:`check_fleet`, then the run's task loaded and given one real training step and a
    small evaluation (:func:`check_task`); returns its fingerprint. Nothing is stored or made."""
    check_fleet(cfg, fleet)
    return check_task(cached_task(cfg.task), cfg.seed)


def simulate(cfg: RunConfig, fleet: FleetSpec, *, engine: str = "flower", out_dir: str | Path | None = None,
             on_round: RoundCallback | None = None, on_line: Callable[[str], None] | None = None,
             on_output: Callable[[str], None] | None = None) -> RunReport:
    """Run the fleet and write the report (to ``out_dir``; the Flower engine needs one and uses
    a temporary directory when none is given); returns the report.

    ``on_round`` gets every round's record (on the Flower engine once the run has ended, from
    the report); ``on_line`` gets the one-line round summaries as they happen; ``on_output``
    every line of the Flower engine's ``flwr run --stream`` output.
    """
    if engine not in ENGINES:
        raise InvalidParameterError(f"engine {engine!r} is not known; valid engines: {', '.join(ENGINES)}")
    check_run(cfg, fleet)
    store_url = resolve_store_url(cfg.store)
    open_store(store_url or None).close()  # fail fast, with one line, before anything starts
    if engine == "analytic":
        with raise_on_signals() as signals:  # SIGINT/SIGTERM: the finished rounds, marked incomplete
            report = _run_analytic(cfg, fleet, store_url, on_round, on_line, out_dir)
            signals.armed = False  # the report is written whole, whatever arrives now
            if out_dir is not None:
                write_report(report, out_dir, title=f"powerfleet simulation: {fleet.name}, policy {cfg.policy}")
                (Path(out_dir) / PROGRESS_FILE).unlink(missing_ok=True)
        return report
    if out_dir is not None:
        report = _run_flower(cfg, fleet, Path(out_dir), on_line, on_output)
    else:
        with tempfile.TemporaryDirectory(prefix="powerfleet-sim-") as tmp:
            report = _run_flower(cfg, fleet, Path(tmp) / "report", on_line, on_output)
    for record in report.rounds if on_round is not None else ():
        on_round(record)  # type: ignore[misc]
    return report


def _run_analytic(cfg: RunConfig, fleet: FleetSpec, store_url: str, on_round: RoundCallback | None,
                  on_line: Callable[[str], None] | None, out_dir: str | Path | None) -> RunReport:
    store = open_store(store_url or None)
    backend = DropoutBackend(AnalyticBackend(fleet, cfg.seed), DropoutPlan(cfg.dropout_rate, cfg.seed),
                             {n.index + 1: n.index for n in fleet.nodes})
    coordinator = FleetCoordinator(cfg, store, backend, fleet=fleet)
    # round records only: the coordinator reports a stopped run itself, and 10,000 client records
    # a round would cost more than the round
    checkpoint = progress_writer(check_report_dir(out_dir), coordinator, clients=False) if out_dir else None

    def progress(record: RoundRecord) -> None:
        if checkpoint is not None:
            checkpoint(record)
        if on_line is not None:
            on_line(describe_round(record, [c for c in coordinator.clients if c.round == record.round],
                                   cfg.num_server_rounds))
        if on_round is not None:
            on_round(record)

    coordinator.on_round = progress
    try:
        with raise_on_signals():  # shared with simulate()'s block
            return coordinator.run()
    finally:
        store.close()


def app_project(cfg: RunConfig, directory: Path) -> Path:
    """A Flower app project (only a ``pyproject.toml``) whose components are the simulated
    fleet's apps and whose run-config defaults are ``cfg``; the code runs from this environment."""
    directory.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{key} = {_toml(value)}" for key, value in cfg.to_run_config().items())
    (directory / "pyproject.toml").write_text(f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "powerfleet-sim"
version = "0.1.0"
description = "powerfleet's simulated fleet (generated by powerfleet simulate)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "powerfleet"

[tool.flwr.app.components]
serverapp = "powerfleet.sim.apps:server_app"
clientapp = "powerfleet.sim.apps:client_app"

[tool.flwr.app.config]
{config}
""", encoding="utf-8")
    return directory


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _run_flower(cfg: RunConfig, fleet: FleetSpec, out: Path, on_line: Callable[[str], None] | None,
                on_output: Callable[[str], None] | None = None) -> RunReport:
    """The Flower engine: the SuperLink's simulation runtime on loopback, ``flwr run --stream``."""
    bin_dir = Path(sys.executable).parent
    out = out.resolve()
    started = time.time() - 1.0  # a report.json older than this is a previous run's
    with tempfile.TemporaryDirectory(prefix="powerfleet-flower-") as tmp_text:
        tmp = Path(tmp_text)
        fleet_file = tmp / "fleet.toml"
        fleet_file.write_text(fleet.to_toml(), encoding="utf-8")
        run_cfg = cfg.with_overrides({"out-dir": str(out), "fleet-file": str(fleet_file),
                                      "min-available-nodes": len(fleet.nodes)})
        app = app_project(run_cfg, tmp / "app")
        http_port = free_port()  # Fleet, Control and Runtime APIs share it in Flower 1.42
        home = tmp / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{http_port}"\n'
            "insecure = true\n", encoding="utf-8")
        env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1",
               "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_DEDUP_LOGS": "0",
               "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
        procs = ProcessGroup(tmp / "logs", env)
        lines: list[str] = []
        with raise_on_signals() as signals:
            try:
                _stream_flower(procs, bin_dir, app, fleet, tmp, env, http_port, on_line, on_output, lines)
            except RunInterrupted:  # stop every Flower process, then report the rounds they finished
                pass
            finally:
                signals.armed = False  # a signal now only asks for what is being done anyway
                procs.stop_all(grace_s=STOP_GRACE_S)
    finished = (out / "report.json").is_file() and (out / "report.json").stat().st_mtime >= started
    if signals.signal_name and not finished:
        report = report_from_progress(out, signals.signal_name, run_cfg)
        (out / PROGRESS_FILE).unlink(missing_ok=True)
        write_report(report, out, title=f"powerfleet simulation: {fleet.name}, policy {cfg.policy}")
        return report
    if not finished:
        errors = [ln.split("powerfleet: ", 1)[1] for ln in lines if "powerfleet: " in ln]
        raise PowerfleetError(errors[-1] if errors else f"the simulation ended without a report: {_tail(lines)}")
    return load_report(out)


def _stream_flower(procs: ProcessGroup, bin_dir: Path, app: Path, fleet: FleetSpec, tmp: Path, env: dict[str, str],
                   http_port: int, on_line: Callable[[str], None] | None,
                   on_output: Callable[[str], None] | None, lines: list[str]) -> None:
    """Start the SuperLink, ``flwr run --stream`` the app, pass on its round lines; its output
    goes to ``lines``."""
    link = procs.start("superlink", [
        str(bin_dir / "flower-superlink"), "--insecure", "--simulation",
        "--disable-runtime-dependency-installation", "--isolation", "subprocess",
        "--host", "127.0.0.1", "--port", str(http_port)])
    if not wait_http_ok(f"http://127.0.0.1:{http_port}/health", STARTUP_TIMEOUT_S, link):
        raise PowerfleetError(f"the loopback SuperLink did not start: {_tail(procs.log('superlink'))}")
    federation = (f"num-supernodes={len(fleet.nodes)} client-resources-num-cpus=1 "
                  f"client-resources-num-gpus=0.0 init-args-num-cpus={max(1, min(os.cpu_count() or 1, 4))} "
                  'init-args-logging-level="error" init-args-log-to-driver=false')
    run = subprocess.Popen(
        [str(bin_dir / "flwr"), "run", str(app), "sim", "--stream", "--federation-config", federation],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp,
        start_new_session=True)
    procs.started.append(run)  # type: ignore[arg-type]
    assert run.stdout is not None
    for line in run.stdout:
        lines.append(line.rstrip())
        if on_output is not None:
            on_output(lines[-1])
        text = line.strip()
        if on_line is not None and (m := _ROUND_LINE.search(text)):
            on_line(m.group(0))
    run.wait()


def _tail(text: str | list[str]) -> str:
    lines = [ln for ln in (text.splitlines() if isinstance(text, str) else text) if ln.strip()]
    return " | ".join(lines[-3:])[-500:] if lines else "no output"
