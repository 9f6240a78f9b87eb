"""Interrupts and concurrent runs, with real processes and real signals (issue 16, item 6).

SIGINT/SIGTERM sent to a running ``powerfleet simulate`` stop it within seconds with exit
130/143, one line on stderr and no traceback, a consistent store, no Flower process left, and
a report of the finished rounds marked incomplete. Two runs sharing one store profile a pair
once and never lose or duplicate a version (Redis here; the embedded file in tests/store/test_faults.py,
which runs bench/faults.py's ``interrupt-run`` and ``two-runs`` once each).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest

from coordinator.store import open_store
from powerfleet.sim.processes import alive, descendants, session_members
from tests.fleet.runs import SimRun, audit_store, fleet_file, start_simulate
from tests.procs import PrivateRedis, free_port

#: Seconds a stopped run may take from the signal to its exit (report written) on a loaded 2-core machine.
STOP_WITHIN_S = 30.0


def check_stopped(run: SimRun, sig: signal.Signals, code: int) -> dict[str, object]:
    """The exit code, the one line, and the report of the finished rounds, marked incomplete."""
    err = run.err()
    assert code == 128 + int(sig), err
    assert run.stop_s < STOP_WITHIN_S, f"took {run.stop_s:.1f} s to stop"
    assert "Traceback" not in err and "Error:" not in err and "Warning" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"stopped by {sig.name} after" in errors[0], err
    summary = run.summary()
    assert summary["complete"] is False and summary["stopped_by"] == sig.name
    rounds = pd.read_csv(run.out / "rounds.csv")
    assert summary["rounds"] == len(rounds) >= 1 and list(rounds["round"]) == list(range(1, len(rounds) + 1))
    md = (run.out / "summary.md").read_text()
    assert f"**Incomplete: stopped by {sig.name} after {len(rounds)} of" in md
    assert not (run.out / "progress.jsonl").exists()
    return summary


def test_sigint_stops_an_analytic_run_with_a_report_of_its_rounds(store_url: str, tmp_path: Path) -> None:
    """Issue 16: Ctrl-C on the analytic engine exited 130 with nothing written. (SIGTERM at start-up:
    tests/store/test_faults.py; both signals at random points: bench/faults.py.)"""
    sig = signal.SIGINT
    fleet = fleet_file(tmp_path / "fleet.toml", [("sim:orin-agx", 3, 0)])
    run = start_simulate(tmp_path, "run", fleet, store_url, 100_000)
    try:
        assert run.wait_rounds(3, 120), run.err()
        run.signal(sig)
        code = run.wait(60)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    summary = check_stopped(run, sig, code)
    assert 3 <= int(summary["rounds"]) < 100_000  # type: ignore[call-overload]
    audit = audit_store(store_url)
    assert not audit.problems, audit.problems


@pytest.mark.flower
@pytest.mark.slow
def test_sigint_stops_a_flower_run_and_every_flower_process(store_url: str, tmp_path: Path) -> None:
    """Issue 16: Ctrl-C did not stop a Flower-engine simulate (still alive 120 s later)."""
    fleet = fleet_file(tmp_path / "fleet.toml", [("sim:orin-agx", 2, 0)])
    run = start_simulate(tmp_path, "run", fleet, store_url, 1000, engine="flower")
    try:
        assert run.wait_rounds(1, 300), run.err()
        flower = [p for p in [*descendants(run.pid), *session_members(run.pid)] if p != run.pid]
        flower += [q for p in list(flower) for q in session_members(p)]  # sessions of their own
        assert flower, "no Flower process was running"
        run.signal(signal.SIGINT)
        code = run.wait(90)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    check_stopped(run, signal.SIGINT, code)
    assert not [p for p in set(flower) if alive(p)], "Flower processes outlived the run"
    assert not audit_store(store_url).problems


def _concurrent(tmp_path: Path, store: str) -> tuple[list[SimRun], list[dict[str, object]]]:
    """Two runs at once on one store, each with Orin Nanos that have no predictor yet."""
    fleet = fleet_file(tmp_path / "fleet.toml", [("sim:orin-agx", 2, 0), ("sim:orin-nano", 2, 10)])
    runs = [start_simulate(tmp_path, f"run{i}", fleet, store, 8, "--seed", str(i)) for i in range(2)]
    codes = []
    try:
        codes = [r.wait(300) for r in runs]
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
    assert codes == [0, 0], [r.err() for r in runs]
    return runs, [r.summary() for r in runs]


def _check_concurrent(runs: list[SimRun], summaries: list[dict[str, object]], store: str) -> None:
    nano = ("orin-nano", "resnet18-imagenet")
    profiled = []
    for r in runs:
        clients = pd.read_csv(r.out / "clients.csv")
        profiled.append(int(clients[clients.device_type == "orin-nano"].profiled_modes.sum()))
    assert sorted(p > 0 for p in profiled) == [False, True], profiled  # the pair was profiled by one run only
    audit = audit_store(store)
    assert not audit.problems, audit.problems
    assert audit.versions[nano] == list(range(1, len(audit.versions[nano]) + 1))  # none lost, none twice
    for s in summaries:  # what each run used is in the store, under its version
        for dtype, p in s["predictors"].items():  # type: ignore[attr-defined]
            pair = (dtype, "resnet18-imagenet")
            assert audit.artifacts[pair][audit.versions[pair].index(p["version"])] == p["artifact_id"]
    with open_store(store) as opened:
        rows = opened.get_profile(*nano)
        bootstrap_rows = rows[rows["source"] == "profile"]
        assert len(bootstrap_rows) == max(profiled)  # the profiles were stored once


@pytest.mark.redis
@pytest.mark.slow
def test_two_runs_on_one_redis_profile_a_pair_once(reference_store: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the fallback's local files (runs inherit it)
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        with open_store(f"file://{reference_store}") as local, open_store(server.url) as remote:
            remote.put(local.get("orin-agx", "resnet18-imagenet").state)
        runs, summaries = _concurrent(tmp_path, server.url)
        _check_concurrent(runs, summaries, server.url)
    finally:
        server.kill()

