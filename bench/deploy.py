"""Deployment benchmark: a 3-node, 3-round loopback deployment timed before and after issue 14.

Each version runs from its own checkout with its own ``.venv`` (the "before" checkout is a
worktree of the commit before issue 14, made with ``make install``): a SuperLink started with
``--disable-runtime-dependency-installation`` on loopback, three SuperNodes with simulated
Orin Nanos, and ``flwr run <checkout> loopback --stream``. The timed span is ``flwr run`` from
launch to exit, once all three SuperNodes have registered. Both versions get the same rounds,
deadline, cap, work per round and board cost (ResNet-18's), and a store that already holds the
Orin Nano predictor (built by one untimed warm-up run per version, whose time is reported as
the cold run), so no timed run bootstraps. Runs alternate between the versions (the machine is
shared; interleaving spreads its load over both). Messages per node are counted from the
SuperNodes' own logs ("Receiving: <type> message"). Writes ``bench/results/deploy.md`` and
``bench/results/deploy_raw.csv``.

    .venv/bin/python bench/deploy.py --before ../wt-14-before        # 3 timed runs each
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopback import CONNECTION, loopback  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NODES = 3
#: Keys both versions know; the "after" version also gets ``AFTER_ONLY``.
COMMON = {"deadline-s": "20.0", "power-cap-w": "25.0", "local-minibatches": "50", "min-minibatches": "10",
          "transfer-samples": "9", "profile-minibatches": "5", "round-timeout-s": "300.0"}
AFTER_ONLY = {"cost-as": '"resnet18-imagenet"', "min-available-nodes": str(NODES)}
#: what issue 14 asked of the deployment: wall time before / after
TARGET_SPEEDUP = 2.0
_RECEIVED = re.compile(r"Receiving: (\w+) message")
_ROUND = re.compile(r"powerfleet round (\d+)/")


def _run_config(version: str, rounds: int, store: Path, out: Path) -> str:
    keys = {"num-server-rounds": str(rounds), **COMMON, "store": f'"file://{store}"', "out-dir": f'"{out}"'}
    if version == "after":
        keys.update(AFTER_ONLY)
    return " ".join(f"{k}={v}" for k, v in keys.items())


def deploy_once(version: str, checkout: Path, rounds: int, store: Path, workdir: Path) -> dict[str, Any]:
    """One deployment of ``checkout`` on loopback; returns wall time, rounds and messages per node."""
    bin_dir = checkout / ".venv" / "bin"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(workdir), "POWERFLEET_RUNS_DIR": str(workdir / "runs")}
    out = workdir / "report"
    with loopback(bin_dir, workdir, env, nodes=NODES) as deployment:
        started = time.perf_counter()
        run = deployment.procs.start("flwr-run", [str(bin_dir / "flwr"), "run", str(checkout), CONNECTION, "--stream",
                                                  "--run-config", _run_config(version, rounds, store, out)],
                                     cwd=workdir)
        run.wait(timeout=3600)
        wall_s = time.perf_counter() - started
        stream = deployment.procs.log("flwr-run")
        messages = [Counter(_RECEIVED.findall(deployment.supernode_log(i))) for i in range(NODES)]
    if not (out / "summary.json").is_file():
        raise RuntimeError(f"{version}: the run wrote no report:\n{stream[-3000:]}")
    summary = pd.read_json(out / "summary.json", typ="series")
    per_node = {t: statistics.mean(m[t] for m in messages) for t in sorted(set().union(*messages))}
    return {"version": version, "wall_s": round(wall_s, 1), "rounds": int(summary["rounds"]),
            "bootstrap_rounds": int(summary.get("bootstrap_rounds", 0)),
            "messages_per_node": sum(per_node.values()),
            "by_type": " ".join(f"{t}={n:g}" for t, n in per_node.items()),
            "round_lines": len(set(_ROUND.findall(stream)))}


def table(raw: pd.DataFrame) -> str:
    """The markdown table: medians of the timed runs, the cold run apart."""
    rows = ["| version | runs | wall s (median) | wall s (all) | rounds | messages per node | by type | "
            "cold run s |", "|---|---|---|---|---|---|---|---|"]
    for version in ("before", "after"):
        timed = raw[(raw.version == version) & ~raw.cold]
        cold = raw[(raw.version == version) & raw.cold]
        rows.append(f"| {version} | {len(timed)} | {timed.wall_s.median():.1f} | "
                    f"{', '.join(f'{w:.1f}' for w in timed.wall_s)} | {timed.rounds.iloc[0]} | "
                    f"{timed.messages_per_node.median():g} | {timed.by_type.iloc[0]} | "
                    f"{cold.wall_s.iloc[0]:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="checkout of the commit before issue 14, "
                                                                   "with its own .venv (make install)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows-from", type=Path, default=None,
                        help="write the table from the rows an earlier (stopped) bench printed, run nothing")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still stops its Flower processes
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    rows: list[dict[str, Any]] = []
    if args.rows_from is not None:
        printed = [ast.literal_eval(ln) for ln in args.rows_from.read_text().splitlines() if ln.startswith("{")]
        seen: Counter[str] = Counter()
        for row in printed:  # each version's first run is its cold run
            seen[row["version"]] += 1
            rows.append({**row, "cold": seen[row["version"]] == 1})
        write_results(rows, args.rounds)
        return
    with tempfile.TemporaryDirectory(prefix="powerfleet-bench-deploy-") as tmp_text:
        tmp = Path(tmp_text)
        warm = {}
        for version, checkout in checkouts.items():  # cold: builds the reference and the Nano pair
            warm[version] = tmp / f"{version}-warm.sqlite"
            row = deploy_once(version, checkout, args.rounds, warm[version], tmp / f"{version}-cold")
            rows.append({**row, "cold": True})
            print(row, flush=True)
        for i in range(args.runs):
            for version, checkout in checkouts.items():
                store = tmp / f"{version}-{i}.sqlite"
                shutil.copy(warm[version], store)
                row = deploy_once(version, checkout, args.rounds, store, tmp / f"{version}-{i}")
                rows.append({**row, "cold": False})
                print(row, flush=True)
    write_results(rows, args.rounds)


def write_results(rows: list[dict[str, Any]], rounds: int) -> None:
    """``deploy_raw.csv`` and ``deploy.md`` from the runs' rows."""
    raw = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw.to_csv(RESULTS / "deploy_raw.csv", index=False)
    before = raw[(raw.version == "before") & ~raw.cold].wall_s.median()
    after = raw[(raw.version == "after") & ~raw.cold].wall_s.median()
    timed = raw[~raw.cold]
    pairs = ", ".join(f"{b:.0f}/{a:.0f} s = {b / a:.2f}x" for b, a in zip(
        timed[timed.version == "before"].wall_s, timed[timed.version == "after"].wall_s, strict=False))
    (RESULTS / "deploy.md").write_text(
        f"# Loopback deployment: {NODES} nodes, {rounds} rounds, before and after issue 14\n\n"
        f"`bench/deploy.py --before <checkout of b8038ee>`; wall time of `flwr run --stream` once the "
        f"SuperNodes are registered; timed runs start from a store holding the Orin Nano predictor (no "
        f"bootstrap), the cold run builds it. Versions alternate on a 2-core machine, so single figures "
        f"are noisy.\n\n{table(raw)}\n\n"
        f"Speed-up of the medians (before / after): {before / after:.2f}x. Of each back-to-back pair "
        f"(a before run, then the after run that followed it): {pairs}. When the machine's load changes "
        f"between runs, the pairs are the fairer figure.\n\n"
        f"Target (issue 14): {TARGET_SPEEDUP:g}x, i.e. at most {before / TARGET_SPEEDUP:.1f} s here: "
        f"**{'met' if before / after >= TARGET_SPEEDUP else 'not met'}**. Where the time goes: "
        f"`docs/fleet.md` (Engines).\n", encoding="utf-8")
    print((RESULTS / "deploy.md").read_text())


if __name__ == "__main__":
    main()
