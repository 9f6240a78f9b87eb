"""End to end: the analytic engine, a 3-node Flower simulation, and dropouts."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec
from coordinator.records import RoundRecord
from coordinator.report import SUMMARY_KEYS, load_report
from coordinator.store import open_store
from powerfleet.sim.engines import simulate
from powerfleet.tasks.digits import evaluate, make_dataset, new_model
from tests.fleet.conftest import FAST
from tests.procs import PrivateRedis, free_port

MIXED = [{"device": "sim:orin-agx", "count": 2, "first_unit": 10},
         {"device": "sim:xavier-agx", "count": 2, "first_unit": 20},
         {"device": "sim:orin-nano", "count": 2, "first_unit": 30}]


def check_report(out: Path, summary: dict[str, object]) -> None:
    """The report files exist and hold the figures the summary prints."""
    for name in ("rounds.csv", "rounds.json", "clients.csv", "summary.json", "summary.md", "rounds.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    rounds = pd.read_csv(out / "rounds.csv")
    clients = pd.read_csv(out / "clients.csv")
    for key in SUMMARY_KEYS:
        assert key in saved
        value = summary[key]
        if isinstance(value, float) and math.isnan(value):
            assert saved[key] is None
        else:
            assert saved[key] == pytest.approx(value)
            row = re.search(rf"^\| {key} \| (.+) \|$", md, re.M)
            assert row is not None, key
            printed = row.group(1)
            assert printed == str(value) or float(printed) == pytest.approx(float(value), rel=1e-3)  # type: ignore[arg-type]
    assert saved["rounds"] == len(rounds)
    assert saved["energy_j_total"] == pytest.approx(rounds.energy_j.sum(), rel=1e-5)
    replied = clients[clients.status.isin(["on-time", "late"])]
    assert saved["client_rounds"] == len(replied)
    assert rounds.energy_j.sum() == pytest.approx(replied.energy_j.sum(), rel=1e-5)  # CSV keeps 6 digits
    assert saved["profiling_minibatches"] == clients.profiling_minibatches.sum()


def test_analytic_engine_bootstraps_and_schedules(store_url: str, tmp_path: Path) -> None:
    fleet = FleetSpec.from_groups("mixed-6", MIXED, 0)
    cfg = RunConfig(num_server_rounds=7, store=store_url, **FAST)  # two boards a type: a slow bootstrap
    out = tmp_path / "report"
    report = simulate(cfg, fleet, engine="analytic", out_dir=out)
    s: dict[str, Any] = report.summary
    boots = [r.bootstrap for r in report.rounds]
    assert boots[0] and not boots[-1] and boots == sorted(boots, reverse=True)  # a prefix of bootstrap rounds
    assert s["bootstrap_rounds"] <= 6 and s["profiling_minibatches"] > 0
    profiling = [c for c in report.clients if c.profiling_minibatches > 0]
    assert profiling and all(c.status == "on-time" for c in profiling)  # profiling fits the deadline
    assert set(report.predictors) == {"orin-agx", "xavier-agx", "orin-nano"}
    assert s["deadline_hit_rate"] >= 0.9 and s["power_cap_violation_rate"] <= 0.1
    assert math.isnan(s["final_accuracy"])  # no training in the analytic engine
    check_report(out, s)
    # read back as the Flower engine reads its report: a complete run was stopped by nothing
    back: dict[str, Any] = load_report(out).summary
    assert back["complete"] is True and back["stopped_by"] is None and math.isnan(back["final_accuracy"])
    # the store now holds the bootstrapped pairs, with the reference as their parent
    store = open_store(store_url)
    pairs = {(m.device_type, m.workload) for m in store.list_pairs()}
    assert ("orin-nano", "resnet18-imagenet") in pairs and ("xavier-agx", "resnet18-imagenet") in pairs
    ref = store.meta("orin-agx", "resnet18-imagenet")
    assert store.meta("orin-nano", "resnet18-imagenet").parent_id == ref.artifact_id
    store.close()
    # a second run reuses them: no profiling at all
    again = simulate(cfg, fleet, engine="analytic")
    assert again.summary["profiling_minibatches"] == 0 and again.summary["bootstrap_rounds"] == 0


def test_powertrain_saves_energy_against_maxn(store_url: str) -> None:
    """From a store without the Xavier and Nano pairs: bootstrap rounds and idle waits counted."""
    fleet = FleetSpec.from_groups("mixed-6", MIXED, 0)
    runs = {p: simulate(RunConfig(num_server_rounds=5, store=store_url, policy=p, **FAST),
                        fleet, engine="analytic").summary for p in ("powertrain", "maxn")}
    pt: dict[str, Any] = runs["powertrain"]
    mx: dict[str, Any] = runs["maxn"]
    assert pt["bootstrap_rounds"] >= 1 and mx["bootstrap_rounds"] == 0 and mx["profiling_minibatches"] == 0
    assert pt["energy_j_total_with_idle"] < 0.9 * mx["energy_j_total_with_idle"]
    assert pt["deadline_hit_rate"] >= 0.9  # every round, bootstrap rounds included
    assert pt["power_cap_violation_rate"] <= mx["power_cap_violation_rate"]
    # the MAXN counterfactual a run reports agrees with a real MAXN run of the same fleet
    assert pt["maxn_energy_j_total_with_idle"] == pytest.approx(mx["energy_j_total_with_idle"], rel=0.05)
    assert 1 <= pt["breakeven_round"] <= 3


def test_dropouts_do_not_stall_rounds(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    fleet = FleetSpec.from_groups("mixed-6", MIXED, 0)
    cfg = RunConfig(num_server_rounds=4, store=store_url, dropout_rate=0.4, **FAST)
    with caplog.at_level(logging.INFO, logger="powerfleet"):
        report = simulate(cfg, fleet, engine="analytic")
    dropped = [c for c in report.clients if c.status == "dropped"]
    assert dropped and all("dropped out" in c.reason for c in dropped)
    assert len(report.rounds) == 4 and all(r.completed > 0 for r in report.rounds[1:])
    assert report.summary["dropped_client_rounds"] == len(dropped)
    # every simulated dropout is logged as exactly one line, without a traceback
    logged = [r for r in caplog.records if "dropped out" in r.getMessage()]
    assert len(logged) == len(dropped)
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in logged)


@pytest.mark.flower
@pytest.mark.slow
def test_flower_simulation_three_nodes_two_rounds(store_url: str, tmp_path: Path) -> None:
    fleet = FleetSpec.from_groups("three", [{"device": "sim:orin-agx", "count": 1},
                                            {"device": "sim:orin-nano", "count": 2}], 0)
    cfg = RunConfig(num_server_rounds=3, store=store_url, dropout_rate=0.0, **FAST)
    out = tmp_path / "report"
    seen: list[int] = []
    report = simulate(cfg, fleet, engine="flower", out_dir=out, on_round=lambda r: seen.append(r.round))
    assert seen == [1, 2, 3]
    s: dict[str, Any] = report.summary
    assert report.rounds[0].bootstrap  # orin-nano was bootstrapped through the fleet
    assert s["client_rounds"] == 9 and s["deadline_hit_rate"] >= 0.75
    accs = [r.accuracy for r in report.rounds]
    assert all(0.0 <= a <= 1.0 for a in accs)
    untrained_loss, _ = evaluate(new_model(cfg.seed), make_dataset(cfg.seed)[1])
    assert report.rounds[-1].loss < untrained_loss - 0.05  # real training moved the global model
    nano = [c for c in report.clients if c.device_type == "orin-nano" and not c.bootstrap]
    assert all(c.true_power_w <= c.power_cap_w for c in nano)
    check_report(out, s)


@pytest.mark.flower
@pytest.mark.slow
def test_flower_simulation_survives_dropouts(store_url: str) -> None:
    fleet = FleetSpec.uniform("sim:orin-agx", 3)
    cfg = RunConfig(num_server_rounds=2, store=store_url, dropout_rate=0.5, seed=3, **FAST)
    output: list[str] = []
    report = simulate(cfg, fleet, engine="flower", on_output=output.append)
    statuses = [c.status for c in report.clients]
    assert "dropped" in statuses and "on-time" in statuses
    dropped = [c for c in report.clients if c.status == "dropped"]
    assert all("dropped out" in c.reason for c in dropped)
    assert len(report.rounds) == 2
    # the run's Flower output: one line per simulated dropout (the coordinator's), no traceback
    assert not [ln for ln in output if "Traceback" in ln or "NodeFailureError" in ln], output
    assert len([ln for ln in output if "failed: node" in ln and "dropped out" in ln]) == len(dropped), output


@pytest.mark.redis
def test_redis_lost_mid_run_loses_no_round_record(reference_store: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the fallback's local file
    private_redis = PrivateRedis(free_port(), tmp_path, persist=True)  # persistent, as deployed
    private_redis.start()
    try:
        _outage_run(private_redis, reference_store, tmp_path)
    finally:
        if private_redis.proc is not None:
            private_redis.kill()


def _outage_run(private_redis: PrivateRedis, reference_store: Path, tmp_path: Path) -> None:
    local = open_store(f"file://{reference_store}")
    redis_store = open_store(private_redis.url)
    redis_store.put(local.get("orin-agx", "resnet18-imagenet").state)
    local.close()
    redis_store.close()
    fleet = FleetSpec.from_groups("mixed-6", MIXED, 0)
    cfg = RunConfig(num_server_rounds=9, store=private_redis.url, refine_threshold_pct=0.1,  # refine every round
                    **FAST)
    outage_round: list[int] = []

    def outage(r: RoundRecord) -> None:
        if not r.bootstrap and not outage_round:
            private_redis.kill()   # Redis dies after the first steady round ...
            outage_round.append(r.round + 1)
        elif outage_round and r.round == outage_round[0]:
            private_redis.start()  # ... and comes back one round later

    report = simulate(cfg, fleet, engine="analytic", on_round=outage, out_dir=tmp_path / "report")
    assert [r.round for r in report.rounds] == list(range(1, 10))  # every round ran and was recorded
    assert all(r.completed > 0 for r in report.rounds)
    assert len(pd.read_csv(tmp_path / "report" / "rounds.csv")) == 9
    assert outage_round and outage_round[0] <= 8, "the bootstrap never ended"
    # what the run stored during the outage was written back once Redis answered again
    back = open_store(private_redis.url)
    pairs = {(m.device_type, m.workload) for m in back.list_pairs()}
    assert {("orin-nano", "resnet18-imagenet"), ("xavier-agx", "resnet18-imagenet")} <= pairs
    rounds_seen = back.get_profile("orin-nano", "resnet18-imagenet")
    rounds_seen = rounds_seen[rounds_seen["source"] == "round"]
    # one observation per Nano client-round after its bootstrap, the outage round included
    steady = [c for c in report.clients if c.device_type == "orin-nano" and c.status.replied
              and c.profiling_minibatches == 0]
    assert len(steady) >= 2 and outage_round[0] in {c.round for c in steady}
    assert len(rounds_seen) >= len(steady)
    back.close()


def test_refine_trains_on_a_capped_sample() -> None:
    from coordinator.store.builder import refine_samples

    profile = pd.DataFrame({"cpu_cores": range(1000), "time_ms": 1.0, "power_w": 1.0,
                            "source": ["profile"] * 900 + ["round"] * 100})
    picked = refine_samples(profile, 256)
    assert len(picked) == 256
    assert (picked.source == "round").sum() == 100  # every recent observation is kept
    assert list(picked[picked.source == "round"].cpu_cores) == list(range(900, 1000))
    assert refine_samples(profile.head(50), 256).equals(profile.head(50))


def test_preset_rounds_do_not_feed_the_predictor(store_url: str) -> None:
    fleet = FleetSpec.from_groups("agx", [{"device": "sim:orin-agx", "count": 2}], 0)
    report = simulate(RunConfig(num_server_rounds=4, store=store_url, policy="preset", **FAST),
                      fleet, engine="analytic")
    assert all(not r.notes for r in report.rounds)  # no refinement triggered
    store = open_store(store_url)
    rounds = store.get_profile("orin-agx", "resnet18-imagenet")
    assert "round" not in set(rounds.get("source", []))  # TPC-gated presets are not mode samples
    store.close()
