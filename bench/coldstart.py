"""Cold store against warm store: does bootstrapping predictors slow down learning?

The same experiment runs twice with the same seed: first from a fresh store (the reference
predictor is profiled, the other board types are bootstrapped through the fleet, their
profiled minibatches being the round's training work), then again on the store the first run
left (every predictor cached, no profiling). Global accuracy per round is compared; the issue
asks for a gap of at most 0.03 after 5 rounds.

* ``simulate``: the bundled mixed-12 fleet on Flower's simulation engine with real training,
  as ``make run`` runs it (``--cost-as resnet18-imagenet``), 5 rounds.
* ``deployment`` (``--deployment``): a loopback SuperLink and 3 SuperNodes (simulated Orin
  Nanos, one partition each), ``flwr run`` as in the README's quickstart, 5 rounds.

Writes ``bench/results/coldstart.md`` and ``bench/results/coldstart_raw.csv``.

    .venv/bin/python bench/coldstart.py                  # mixed-12 simulate
    .venv/bin/python bench/coldstart.py --deployment     # and the 3-node deployment
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopback import CONNECTION, loopback  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
ROUNDS = 5
GAP_LIMIT = 0.03


def run_simulate(store: str, out: Path, rounds: int) -> float:
    """``powerfleet simulate`` on mixed-12 as ``make run`` does (Flower engine, real training)."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "powerfleet", "simulate", "--fleet", "mixed-12", "--rounds", str(rounds),
           "--cost-as", "resnet18-imagenet", "--seed", "0", "--store", store, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def run_deployment(store: str, out: Path, rounds: int, workdir: Path) -> float:
    """A loopback SuperLink, 3 SuperNodes (sim:orin-nano units 0-2, partitions 0-2), ``flwr run``."""
    started = time.perf_counter()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with loopback(BIN, workdir, env, nodes=3) as deployment:
        config = (f'num-server-rounds={rounds} min-available-nodes=3 store="{store}" out-dir="{out}" seed=0')
        proc = subprocess.run([str(BIN / "flwr"), "run", str(ROOT), CONNECTION, "--stream", "--run-config", config],
                              env=deployment.env, cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
        if proc.returncode != 0 or not (out / "summary.json").is_file():
            raise RuntimeError(f"flwr run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - started


def pair(engine: str, workdir: Path, rounds: int, reuse: bool) -> list[dict[str, Any]]:
    """Cold then warm on one store; one row per run and round (``reuse``: runs already in
    ``workdir`` are read, not repeated)."""
    store = f"file://{workdir / engine / 'store.sqlite'}"
    (workdir / engine).mkdir(parents=True, exist_ok=True)
    rows = []
    for start in ("cold", "warm"):
        out = workdir / engine / start
        if not (reuse and (out / "summary.json").is_file()):
            if engine == "simulate":
                wall = run_simulate(store, out, rounds)
            else:
                wall = run_deployment(store, out, rounds, workdir / engine / f"{start}-procs")
            (out / "wall_s.txt").write_text(f"{wall:.1f}\n")
        wall = float((out / "wall_s.txt").read_text()) if (out / "wall_s.txt").is_file() else float("nan")
        summary = json.loads((out / "summary.json").read_text())
        rounds_df = pd.read_csv(out / "rounds.csv")
        clients = pd.read_csv(out / "clients.csv")
        local = int(json.loads((out / "report.json").read_text())["config"]["local-minibatches"])
        clients["in_update"] = clients.work_done.clip(upper=local)  # what a board's update carries
        print(f"{engine} {start}: {wall:.0f} s, accuracy {list(rounds_df.accuracy.round(3))}", flush=True)
        if start == "warm" and int(summary.get("bootstrap_rounds", 0)):
            raise SystemExit(f"{engine}: the warm run bootstrapped in {summary['bootstrap_rounds']} round(s): the "
                             "cold run left its pairs unbuilt, so there is no warm store to compare with")
        for _, r in rounds_df.iterrows():
            done = clients[(clients["round"] == r["round"]) & clients.status.isin(["on-time", "late"])]
            profiling = done[done.profiling_minibatches > 0]
            rows.append({"engine": engine, "start": start, "round": int(r["round"]), "accuracy": float(r.accuracy),
                         "loss": float(r.loss), "bootstrap": bool(r.bootstrap),
                         "profiling_minibatches": int(done.profiling_minibatches.sum()),
                         "work_done": int(done.in_update.sum()), "profiling_nodes": len(profiling),
                         "profiling_types": ",".join(sorted(set(profiling.device_type))),
                         "mean_work_of_profiling_types": float(profiling.in_update.mean()) if len(profiling) else
                         float("nan"),
                         "wall_s": wall, "workload": summary.get("workload", "")})
    for row in rows:  # what the same boards trained in the warm run's round
        if row["start"] == "cold" and row["profiling_types"]:
            warm = clients[(clients["round"] == row["round"]) & clients.status.isin(["on-time", "late"])
                           & clients.device_type.isin(row["profiling_types"].split(","))]
            row["warm_mean_work_same_types"] = float(warm.in_update.mean())
    return rows


def write(rows: list[dict[str, Any]], rounds: int) -> None:
    df = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "coldstart_raw.csv", index=False)
    lines = ["# Cold store against warm store", "",
             "Generated by `bench/coldstart.py`. The same experiment, same seed, first from a fresh store "
             "(reference profiled, other board types bootstrapped through the fleet: their profiled "
             "minibatches are the round's training work), then again on the store it left (predictors "
             f"cached, no profiling). Requirement: global accuracy after {rounds} rounds within "
             f"{GAP_LIMIT} of the warm run's. Wall times are from a shared 2-core machine and are not a "
             "measure of anything.", ""]
    for engine, part in df.groupby("engine", sort=False):
        cold = part[part.start == "cold"].set_index("round")
        warm = part[part.start == "warm"].set_index("round")
        what = ("mixed-12, `powerfleet simulate` (Flower simulation engine, real training, `--cost-as "
                "resnet18-imagenet`, as `make run`)" if engine == "simulate" else
                "3 SuperNodes on loopback (sim:orin-nano units 0-2, partitions 0-2), `flwr run` as in the "
                "README quickstart")
        lines += [f"## {engine}: {what}", "", f"Workload key: `{part.workload.iloc[0]}`.", "",
                  "| round | cold accuracy | warm accuracy | gap | cold: bootstrap round | cold: boards profiling "
                  "| cold: profiling minibatches | minibatches in the updates, cold / warm | per profiling board, "
                  "cold / warm (same boards) |", "|---|---|---|---|---|---|---|---|---|"]
        for rnd in cold.index:
            c, w = cold.loc[rnd], warm.loc[rnd]
            per_board = (f"{c.mean_work_of_profiling_types:.1f} / {c.warm_mean_work_same_types:.1f}"
                         if c.profiling_nodes else "-")
            lines.append(f"| {rnd} | {c.accuracy:.3f} | {w.accuracy:.3f} | {c.accuracy - w.accuracy:+.3f} | "
                         f"{'yes' if c.bootstrap else 'no'} | {c.profiling_nodes} | {c.profiling_minibatches} | "
                         f"{c.work_done} / {w.work_done} | {per_board} |")
        last = cold.index.max()
        gap = abs(cold.loc[last].accuracy - warm.loc[last].accuracy)
        verdict = "met" if gap <= GAP_LIMIT else "NOT met"
        lines += ["", f"Gap after round {last}: **{gap:.3f}** ({verdict}; limit {GAP_LIMIT}). Wall time: cold "
                  f"{cold.wall_s.iloc[0]:.0f} s, warm {warm.wall_s.iloc[0]:.0f} s.", ""]
        boot = cold[cold.profiling_nodes > 0]
        cum_cold = int(cold.work_done.sum())
        warm_cum = warm.work_done.cumsum()
        near = int(warm_cum.index[int((warm_cum - cum_cold).abs().to_numpy().argmin())])
        if len(boot):
            lines += [f"Why: {len(boot)} of the cold run's {len(cold)} rounds had boards profiling "
                      f"({boot.profiling_types.iloc[0].replace(',', ', ')}). A profiling board's update is the model "
                      "after its first `local-minibatches` steps (profiled steps are training steps) and is weighted "
                      "by those alone, so profiling does not swamp the aggregate. What differs is how many steps "
                      "fit: a board profiling slower modes than the one it would choose may fit fewer than "
                      "`local-minibatches` in the deadline. Here its update carried "
                      f"{boot.mean_work_of_profiling_types.mean():.1f} minibatches per round on average, against "
                      f"{boot.warm_mean_work_same_types.mean():.1f} for the same boards warm "
                      f"({cold.work_done.sum()} against {warm.work_done.sum()} minibatches in the updates over the "
                      "run). "
                      f"By minibatches in the updates: cold after round {last}, {cum_cold} minibatches, "
                      f"accuracy {cold.loc[last].accuracy:.3f}; warm after round {near}, "
                      f"{int(warm_cum.loc[near])} minibatches, accuracy {warm.loc[near].accuracy:.3f}.", ""]
    (RESULTS / "coldstart.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--deployment", action="store_true", help="also the 3-node loopback deployment")
    parser.add_argument("--only-deployment", action="store_true", help="the deployment only")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the runs (stores, reports) here instead of a temporary directory")
    parser.add_argument("--reuse", action="store_true", help="read runs already in --workdir instead of repeating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="powerfleet-coldstart-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        rows: list[dict[str, Any]] = []
        if not args.only_deployment:
            rows += pair("simulate", workdir, args.rounds, args.reuse)
        if args.deployment or args.only_deployment:
            rows += pair("deployment", workdir, args.rounds, args.reuse)
    write(rows, args.rounds)
    print(f"wrote {RESULTS / 'coldstart.md'}")


if __name__ == "__main__":
    main()
