"""Fleet benchmark: policies compared on simulated fleets; analytic-engine scale.

For each fleet, every policy runs the same rounds with the same seed, deadline-aware
selection and store (``powertrain`` runs first and bootstraps the predictors; the others
reuse them). Power is judged on the simulator's ground truth. Writes
``bench/results/fleet.md`` and ``bench/results/fleet_raw.csv``.

    .venv/bin/python bench/fleet.py                 # mixed-12 (Flower) + mixed-100 + 10k scale
    .venv/bin/python bench/fleet.py --quick         # a few rounds only
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.config import RunConfig  # noqa: E402
from coordinator.fleet import FleetSpec  # noqa: E402
from coordinator.simulate import simulate  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POLICIES = ("powertrain", "oracle", "maxn", "preset", "random")
TARGET_ACCURACY = 0.9


def run_fleet(fleet: FleetSpec, engine: str, rounds: int, store: str, deadline_s: float,
              power_cap_w: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for policy in POLICIES:
        cfg = RunConfig(num_server_rounds=rounds, deadline_s=deadline_s, power_cap_w=power_cap_w, policy=policy,
                        store=store, seed=0)
        started = time.perf_counter()
        report = simulate(cfg, fleet, engine=engine)
        wall = time.perf_counter() - started
        s: dict[str, Any] = report.summary
        steady = [c for c in report.clients if c.status in ("on-time", "late") and not c.bootstrap]
        true_p = [c.true_power_w for c in steady]
        accs = [r.accuracy for r in report.rounds]
        reach = next((r.round for r in report.rounds if r.accuracy >= TARGET_ACCURACY), None)
        trained = sum(c.work_done for c in report.clients)
        rows.append({
            "fleet": fleet.name, "nodes": len(fleet.nodes), "engine": engine, "policy": policy, "rounds": rounds,
            "deadline_s": deadline_s, "power_cap_w": power_cap_w,
            "deadline_hit_rate": s["deadline_hit_rate"], "energy_j_per_round": s["energy_j_per_round"],
            "mean_true_power_w": statistics.fmean(true_p) if true_p else math.nan,
            "max_true_power_w": max(true_p, default=math.nan),
            "power_cap_violation_rate": s["power_cap_violation_rate"],
            "max_power_over_cap_w": s["max_power_over_cap_w"], "final_accuracy": s["final_accuracy"],
            "rounds_to_target": reach if reach is not None else "-",
            "best_accuracy": max((a for a in accs if not math.isnan(a)), default=math.nan),
            "profiling_minibatches": s["profiling_minibatches"],
            "profiling_share": s["profiling_minibatches"] / trained if trained else 0.0,
            "skipped": s["skipped_client_rounds"], "partial": s["partial_work_client_rounds"],
            "trimmed": s["trimmed_client_rounds"], "wall_s": wall,
        })
        print(f"  {fleet.name} {policy}: hit {s['deadline_hit_rate']:.3f}, {s['energy_j_per_round']:.0f} J/round, "
              f"over cap {s['power_cap_violation_rate']:.3f}, acc {s['final_accuracy']:.3f}, {wall:.0f} s", flush=True)
    by = {r["policy"]: r for r in rows}
    for r in rows:
        r["energy_vs_oracle_pct"] = (r["energy_j_per_round"] / by["oracle"]["energy_j_per_round"] - 1) * 100
        r["energy_vs_maxn_pct"] = (r["energy_j_per_round"] / by["maxn"]["energy_j_per_round"] - 1) * 100
    return rows


def scale(store: str, rounds: int) -> dict[str, float]:
    """Seconds per round of the analytic engine with 10,000 clients."""
    fleet = FleetSpec.load(ROOT / "examples/fleets/mixed-10k.toml")
    cfg = RunConfig(num_server_rounds=rounds, store=store, seed=0)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_: object) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    simulate(cfg, fleet, engine="analytic", on_round=tick)
    steady = times[1:] if len(times) > 1 else times
    return {"clients": len(fleet.nodes), "rounds": rounds, "median_round_s": statistics.median(steady),
            "max_round_s": max(steady), "first_round_s": times[0]}


def md(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        out.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--flower-100", action="store_true", help="run the 100-node fleet on Flower too")
    args = parser.parse_args()
    rounds = 4 if args.quick else args.rounds
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    store = f"file://{tmp / 'store.sqlite'}"
    deadline_s, cap_w = 20.0, 25.0
    rows = []
    print("mixed-12 on the Flower engine ...", flush=True)
    rows += run_fleet(FleetSpec.load(ROOT / "examples/fleets/mixed-12.toml"), "flower", rounds, store, deadline_s,
                      cap_w)
    engine_100 = "flower" if args.flower_100 else "analytic"
    print(f"mixed-100 on the {engine_100} engine ...", flush=True)
    rows += run_fleet(FleetSpec.load(ROOT / "examples/fleets/mixed-100.toml"), engine_100, rounds, store,
                      deadline_s, cap_w)
    print("10,000 clients on the analytic engine ...", flush=True)
    big = scale(store, 3 if args.quick else 5)
    frame = pd.DataFrame(rows)
    frame.to_csv(RESULTS / "fleet_raw.csv", index=False)
    cols = ["fleet", "engine", "policy", "deadline_hit_rate", "energy_j_per_round", "energy_vs_oracle_pct",
            "energy_vs_maxn_pct", "mean_true_power_w", "max_true_power_w", "power_cap_violation_rate",
            "max_power_over_cap_w", "final_accuracy", "rounds_to_target", "profiling_minibatches",
            "profiling_share", "skipped", "partial", "trimmed", "wall_s"]
    text = [
        "# Fleet benchmark", "",
        f"Generated by `bench/fleet.py{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d')}. "
        f"{rounds} rounds, deadline {deadline_s:g} s (device time), power cap {cap_w:g} W on every board, "
        "50 local minibatches of resnet18-imagenet (min 10), objective energy, margin z = 2, deadline-aware "
        "selection for every policy, seed 0. Hit rate, energy per round and power exclude the bootstrap round "
        "(where `powertrain` profiles the Xavier and Nano pairs; the other policies reuse those predictors). "
        f"Power is the simulator's true steady power of the chosen mode. Target accuracy: {TARGET_ACCURACY:g}; the "
        "analytic engine does not train (accuracy n/a).", "",
        md(frame.loc[:, cols]), "",
        "## Analytic engine at scale", "",
        f"{big['clients']:,} simulated clients (mixed-10k), {big['rounds']} rounds: median "
        f"{big['median_round_s']:.2f} s per round after the first (max {big['max_round_s']:.2f} s; first round, "
        f"which predicts every mode space once: {big['first_round_s']:.2f} s). Target: <= 1 s per round.", "",
    ]
    (RESULTS / "fleet.md").write_text("\n".join(text))
    print(f"wrote {RESULTS / 'fleet.md'}")


if __name__ == "__main__":
    main()
