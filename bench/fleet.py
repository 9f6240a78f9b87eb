"""Fleet benchmark: policies compared on simulated fleets; analytic-engine scale.

For each fleet, every policy runs the same rounds with the same seed, deadline-aware
selection and store (``powertrain`` runs first and bootstraps the predictors; the others
reuse them). Power is judged on the simulator's ground truth. Writes
``bench/results/fleet.md`` and ``bench/results/fleet_raw.csv``.

    .venv/bin/python bench/fleet.py                 # mixed-12 (Flower) + mixed-100 + 10k scale
    .venv/bin/python bench/fleet.py --quick         # a few rounds only
    .venv/bin/python bench/fleet.py --cold-store    # only the cold-store table (10 rounds, fresh stores)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sections import md, put_section  # noqa: E402

from coordinator.config import RunConfig  # noqa: E402
from coordinator.fleet import FleetSpec  # noqa: E402
from powerfleet.protocol.enums import Policy  # noqa: E402
from powerfleet.sim.engines import simulate  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POLICIES = ("powertrain", "oracle", "maxn", "preset", "random")
COLD_POLICIES = ("powertrain", "oracle", "maxn", "best-preset", "preset", "random")
COLD_START = "<!-- cold-store -->"
COLD_END = "<!-- /cold-store -->"
TARGET_ACCURACY = 0.9


def _run_one(fleet_file: str | Path, engine: str, rounds: int, store: str, deadline_s: float, power_cap_w: float,
             policy: str, out: Path, cost_as: str = "") -> float:
    """One run, written to ``out``; Flower runs get a fresh process (Ray keeps state per process)."""
    started = time.perf_counter()
    if engine == "flower":
        cmd = [sys.executable, "-m", "powerfleet", "simulate", "--fleet", str(fleet_file), "--rounds", str(rounds),
               "--deadline-s", str(deadline_s), "--power-cap-w", str(power_cap_w), "--policy", policy,
               "--store", store, "--seed", "0", "--engine", "flower", "--out", str(out)]
        cmd += ["--cost-as", cost_as] if cost_as else []
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    else:
        cfg = RunConfig(num_server_rounds=rounds, deadline_s=deadline_s, power_cap_w=power_cap_w, policy=Policy(policy),
                        store=store, seed=0, cost_as=cost_as)
        simulate(cfg, FleetSpec.load(fleet_file), engine=engine, out_dir=out)
    return time.perf_counter() - started


def run_fleet(fleet_file: str | Path, engine: str, rounds: int, store: str, deadline_s: float, power_cap_w: float,
              workdir: Path) -> list[dict[str, Any]]:
    fleet = FleetSpec.load(fleet_file)
    rows: list[dict[str, Any]] = []
    for policy in POLICIES:
        out = workdir / f"{fleet.name}-{policy}"
        wall = _run_one(fleet_file, engine, rounds, store, deadline_s, power_cap_w, policy, out)
        s: dict[str, Any] = {k: (math.nan if v is None else v)  # JSON has no NaN: None stands for it
                             for k, v in json.loads((out / "summary.json").read_text()).items()}
        clients = pd.read_csv(out / "clients.csv")
        rounds_frame = pd.read_csv(out / "rounds.csv")
        steady = clients[clients.status.isin(["on-time", "late"]) & ~clients.bootstrap.astype(bool)]
        reach = rounds_frame[rounds_frame.accuracy >= TARGET_ACCURACY]
        trained = clients.work_done.sum()
        nan = math.nan
        rows.append({
            "fleet": fleet.name, "nodes": len(fleet.nodes), "engine": engine, "policy": policy, "rounds": rounds,
            "deadline_hit_rate": s["deadline_hit_rate"], "energy_j_per_round": s["energy_j_per_round"],
            "mean_true_power_w": float(steady.true_power_w.mean()) if len(steady) else nan,
            "max_true_power_w": float(steady.true_power_w.max()) if len(steady) else nan,
            "power_cap_violation_rate": s["power_cap_violation_rate"],
            "max_power_over_cap_w": s["max_power_over_cap_w"],
            "final_accuracy": s["final_accuracy"],
            "rounds_to_target": int(reach["round"].iloc[0]) if len(reach) else "-",
            "profiling_minibatches": s["profiling_minibatches"],
            "profiling_share": s["profiling_minibatches"] / trained if trained else 0.0,
            "skipped": s["skipped_client_rounds"], "partial": s["partial_work_client_rounds"],
            "trimmed": s["trimmed_client_rounds"], "wall_s": wall,
        })
        print(f"  {fleet.name} {policy}: hit {s['deadline_hit_rate']:.3f}, {s['energy_j_per_round']:.0f} J/round, "
              f"over cap {s['power_cap_violation_rate']:.3f}, acc {rows[-1]['final_accuracy']:.3f}, {wall:.0f} s",
              flush=True)
    by = {r["policy"]: r for r in rows}
    for r in rows:
        r["energy_vs_oracle_pct"] = (r["energy_j_per_round"] / by["oracle"]["energy_j_per_round"] - 1) * 100
        r["energy_vs_maxn_pct"] = (r["energy_j_per_round"] / by["maxn"]["energy_j_per_round"] - 1) * 100
    return rows


SWEEP = (("resnet18-imagenet", 20.0, 50), ("mobilenetv3-gld23k", 20.0, 50), ("yolov8n-coco", 60.0, 50),
         ("bert-base-squad", 60.0, 20), ("lstm-wikitext", 20.0, 50), ("vit-s16-imagenet", 30.0, 50))


def workload_sweep(store: str, rounds: int) -> pd.DataFrame:
    """Energy of powertrain against the oracle and MAXN per workload (mixed-100, analytic engine)."""
    fleet = FleetSpec.load("mixed-100")
    rows = []
    for workload, deadline_s, work in SWEEP:
        res: dict[str, dict[str, Any]] = {}
        for policy in ("powertrain", "oracle", "maxn"):
            cfg = RunConfig(num_server_rounds=rounds, cost_as=workload, policy=Policy(policy), store=store,
                            deadline_s=deadline_s, local_minibatches=work, seed=0)
            res[policy] = simulate(cfg, fleet, engine="analytic").summary
        pt, orc, mx = res["powertrain"], res["oracle"], res["maxn"]
        rows.append({"workload": workload, "deadline_s": deadline_s, "minibatches": work,
                     "hit_powertrain": pt["deadline_hit_rate"], "hit_maxn": mx["deadline_hit_rate"],
                     "powertrain_vs_oracle_pct": (pt["energy_j_per_round"] / orc["energy_j_per_round"] - 1) * 100,
                     "powertrain_vs_maxn_pct": (pt["energy_j_per_round"] / mx["energy_j_per_round"] - 1) * 100,
                     "oracle_vs_maxn_pct": (orc["energy_j_per_round"] / mx["energy_j_per_round"] - 1) * 100,
                     "over_cap_powertrain": pt["power_cap_violation_rate"],
                     "over_cap_maxn": mx["power_cap_violation_rate"],
                     "profiling_minibatches": pt["profiling_minibatches"]})
        print(f"  sweep {workload}: {rows[-1]['powertrain_vs_oracle_pct']:+.1f}% vs oracle, "
              f"{rows[-1]['powertrain_vs_maxn_pct']:+.1f}% vs maxn", flush=True)
    return pd.DataFrame(rows)


def scale(store: str, rounds: int) -> dict[str, float]:
    """Seconds per round of the analytic engine with 10,000 clients."""
    fleet = FleetSpec.load("mixed-10k")
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


def reference_store(path: Path) -> dict[str, float]:
    """A store holding only the reference predictor, profiled and fitted here as a fleet's
    first run would; returns what that cost the reference board."""
    from coordinator.store import builder, open_store
    from coordinator.store.collect import DeviceCollector
    from powertrain.devices import make_device
    from powertrain.profiler import ProfileSettings

    device = make_device("sim:orin-agx?unit=0&seed=0")
    t0, e0 = device.now_s(), device.energy_j()
    store = open_store(f"file://{path}")
    try:
        stored = builder.get_or_build(store, "orin-agx", "resnet18-imagenet",
                                      DeviceCollector([device], ProfileSettings()))
    finally:
        store.close()
    return {"modes": float(stored.state.n_samples), "device_s": device.now_s() - t0, "energy_j": device.energy_j() - e0}


def cold_store(fleets: list[tuple[str, str]], rounds: int, deadline_s: float, cap_w: float,
               workdir: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every policy from a fresh store (only the reference in it), every round counted: the
    cold-store figures a user sees on a new board type."""
    template = workdir / "reference-only.sqlite"
    ref = reference_store(template)
    rows: list[dict[str, Any]] = []
    for fleet_name, engine in fleets:
        fleet = FleetSpec.load(fleet_name)
        for policy in COLD_POLICIES:
            store_file = workdir / f"cold-{fleet_name}-{engine}-{policy}.sqlite"
            shutil.copy(template, store_file)
            out = workdir / f"cold-{fleet_name}-{engine}-{policy}"
            wall = _run_one(fleet_name, engine, rounds, f"file://{store_file}", deadline_s, cap_w, policy, out,
                            cost_as="resnet18-imagenet")
            s: dict[str, Any] = {k: (math.nan if v is None else v)
                                 for k, v in json.loads((out / "summary.json").read_text()).items()}
            rows.append({
                "fleet": fleet_name, "nodes": len(fleet.nodes), "engine": engine, "policy": policy,
                "energy_j_total_with_idle": s["energy_j_total_with_idle"],
                "energy_j_total": s["energy_j_total"], "idle_energy_j": s["idle_energy_j"],
                "bootstrap_energy_j": s["bootstrap_energy_j"],
                "deadline_hit_rate": s["deadline_hit_rate"], "deadline_hit_rate_steady": s["deadline_hit_rate_steady"],
                "power_cap_violation_rate": s["power_cap_violation_rate"],
                "breakeven_round": s["breakeven_round"], "bootstrap_rounds": s["bootstrap_rounds"],
                "profiled_modes": s["profiled_modes"], "minibatches_trained": s["minibatches_trained"],
                "final_accuracy": s["final_accuracy"], "wall_s": wall,
                "energy_j_per_minibatch": s["energy_j_total_with_idle"] / max(s["minibatches_trained"], 1),
            })
            print(f"  cold {fleet_name}/{engine} {policy}: {s['energy_j_total_with_idle']:.0f} J, "
                  f"hit {s['deadline_hit_rate']:.3f}, over cap {s['power_cap_violation_rate']:.3f}, "
                  f"breakeven {s['breakeven_round']}, {wall:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    for col, policy, value in (("vs_maxn", "maxn", "energy_j_total_with_idle"),
                               ("vs_oracle", "oracle", "energy_j_total_with_idle"),
                               ("per_minibatch_vs_maxn", "maxn", "energy_j_per_minibatch"),
                               ("per_minibatch_vs_oracle", "oracle", "energy_j_per_minibatch")):
        base = {(str(r["fleet"]), str(r["engine"])): float(r[value]) for r in rows if r["policy"] == policy}
        frame[col] = [float(r[value]) / base[(str(r["fleet"]), str(r["engine"]))] for r in rows]
    return frame, ref


def cold_store_text(frame: pd.DataFrame, ref: dict[str, float], rounds: int, deadline_s: float, cap_w: float,
                    flags: str) -> str:
    """The cold-store section of fleet.md."""
    cols = ["fleet", "engine", "policy", "energy_j_total_with_idle", "vs_maxn", "vs_oracle", "minibatches_trained",
            "energy_j_per_minibatch", "per_minibatch_vs_maxn", "per_minibatch_vs_oracle", "deadline_hit_rate",
            "deadline_hit_rate_steady", "power_cap_violation_rate", "breakeven_round", "bootstrap_rounds",
            "bootstrap_energy_j", "idle_energy_j", "profiled_modes", "final_accuracy", "wall_s"]
    pt = frame[frame.policy == "powertrain"]
    checks = [f"- {r.fleet}/{r.engine}: powertrain {r.vs_maxn:.3f}x maxn (target <= 0.85), {r.vs_oracle:.3f}x oracle "
              f"(<= 1.10), hits {r.deadline_hit_rate:.3f} over all rounds (>= 0.97), cap violations "
              f"{r.power_cap_violation_rate:.3f} (<= 0.01), breakeven round {r.breakeven_round:g} (<= 3); "
              f"per minibatch trained {r.per_minibatch_vs_maxn:.3f}x maxn and {r.per_minibatch_vs_oracle:.3f}x oracle "
              f"({r.minibatches_trained:,} minibatches trained)"
              for r in pt.itertuples()]
    return "\n".join([
        COLD_START, "## Cold store (issue 13): every round counted", "",
        f"Generated by `bench/fleet.py{flags}` on {time.strftime('%Y-%m-%d')}. Each run starts from its own fresh "
        f"store holding only the reference predictor (orin-agx/resnet18), so `powertrain` bootstraps the Xavier "
        f"and Nano pairs inside its rounds and every other policy runs without predictors. {rounds} rounds, "
        f"deadline {deadline_s:g} s, cap {cap_w:g} W, 50 local minibatches charged as resnet18-imagenet, "
        "conformal margins. Energy is every joule the selected boards drew, profiling included, plus what those "
        "that finished early drew at idle until the round closed (`energy_j_total_with_idle`); hit rate and cap "
        "violations count every client-round, bootstrap rounds included (`_steady` leaves them out). "
        "`breakeven_round`: the first round from which cumulative energy stays at or below the MAXN fleet's. "
        "A policy that trains fewer minibatches (partial work where its margins say the full work would not fit) "
        "spends less in total: `energy_j_per_minibatch` divides by the minibatches trained.", "",
        f"Building the reference itself (once per store, on one board, outside FL rounds): "
        f"{ref['device_s'] / 3600:.2f} device-hours, {ref['energy_j'] / 1000:.0f} kJ - not in the figures below, "
        "which start from it.", "",
        md(frame.loc[:, cols]), "", *checks, "", COLD_END, ""])


def write_cold_store(text: str) -> None:
    """Put the cold-store section into fleet.md, replacing an earlier one."""
    put_section(RESULTS / "fleet.md", COLD_START, COLD_END, text, empty="# Fleet benchmark\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--flower-100", action="store_true", help="run the 100-node fleet on Flower too")
    parser.add_argument("--cold-store", action="store_true", help="only the cold-store table (10 rounds)")
    args = parser.parse_args()
    if args.cold_store:
        tmp = Path(tempfile.mkdtemp(prefix="pf-bench-cold-"))
        fleets = [("mixed-12", "flower"), ("mixed-12", "analytic"), ("mixed-100", "analytic")]
        fleets += [("mixed-100", "flower")] if args.flower_100 else []
        n = 4 if args.quick else 10
        frame, ref = cold_store(fleets, n, 20.0, 25.0, tmp)
        flags = " --cold-store" + (" --quick" if args.quick else "") + (" --flower-100" if args.flower_100 else "")
        RESULTS.mkdir(parents=True, exist_ok=True)
        frame.to_csv(RESULTS / "fleet_cold_raw.csv", index=False)
        write_cold_store(cold_store_text(frame, ref, n, 20.0, 25.0, flags))
        print(f"wrote {RESULTS / 'fleet.md'}")
        return
    rounds = 4 if args.quick else args.rounds
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    store = f"file://{tmp / 'store.sqlite'}"
    deadline_s, cap_w = 20.0, 25.0
    rows = []
    print("mixed-12 on the Flower engine ...", flush=True)
    rows += run_fleet("mixed-12", "flower", rounds, store, deadline_s, cap_w, tmp)
    engine_100 = "flower" if args.flower_100 else "analytic"
    print(f"mixed-100 on the {engine_100} engine ...", flush=True)
    rows += run_fleet("mixed-100", engine_100, rounds, store, deadline_s, cap_w, tmp)
    print("workload sweep (mixed-100, analytic) ...", flush=True)
    sweep = workload_sweep(store, 3 if args.quick else 10)
    print("10,000 clients on the analytic engine ...", flush=True)
    big = scale(store, 3 if args.quick else 5)
    frame = pd.DataFrame(rows)
    frame.to_csv(RESULTS / "fleet_raw.csv", index=False)
    cols = ["fleet", "engine", "policy", "deadline_hit_rate", "energy_j_per_round", "energy_vs_oracle_pct",
            "energy_vs_maxn_pct", "mean_true_power_w", "max_true_power_w", "power_cap_violation_rate",
            "max_power_over_cap_w", "final_accuracy", "rounds_to_target", "profiling_minibatches",
            "profiling_share", "skipped", "partial", "trimmed", "wall_s"]
    flags = (" --quick" if args.quick else "") + (" --flower-100" if args.flower_100 else "")
    text = [
        "# Fleet benchmark", "",
        f"Generated by `bench/fleet.py{flags}` on {time.strftime('%Y-%m-%d')}. "
        f"{rounds} rounds, deadline {deadline_s:g} s (device time), power cap {cap_w:g} W on every board, "
        "50 local minibatches of resnet18-imagenet (min 10), objective energy, margin z = 2, deadline-aware "
        "selection for every policy, seed 0. Hit rate, energy per round and power exclude the bootstrap round "
        "(where `powertrain` profiles the Xavier and Nano pairs; the other policies reuse those predictors). "
        "One store serves the whole benchmark, so mixed-100 reuses the predictors mixed-12 built and profiles "
        "nothing: each (device type, workload) pair is profiled once per store. "
        f"Power is the simulator's true steady power of the chosen mode. Target accuracy: {TARGET_ACCURACY:g}; the "
        "analytic engine does not train (accuracy n/a).", "",
        md(frame.loc[:, cols]), "",
        "## Energy by workload (mixed-100, analytic engine, bootstraps included in profiling only)", "",
        "Each workload gets its own predictors, bootstrapped through the fleet by the powertrain run. Cap 25 W.", "",
        md(sweep), "",
        "## Analytic engine at scale", "",
        f"{big['clients']:,} simulated clients (mixed-10k), {big['rounds']} rounds: median "
        f"{big['median_round_s']:.2f} s per round after the first (max {big['max_round_s']:.2f} s; first round, "
        f"which predicts every mode space once: {big['first_round_s']:.2f} s). Target: <= 1 s per round.", "",
    ]
    (RESULTS / "fleet.md").write_text("\n".join(text))
    print(f"wrote {RESULTS / 'fleet.md'}")


if __name__ == "__main__":
    main()
