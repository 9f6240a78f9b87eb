"""Benchmark of the predictor store; writes ``bench/results/store.md``.

* get/put latency (p50/p99) of a paper-sized artifact (hidden (256, 128, 64), 4 members,
  about 1.4 MB) on loopback Redis (``REDIS_URL``) and on the embedded SQLite store: the raw
  path (read, sha256 verify, decode: what every load does) and the in-process cache by
  artifact id, plus a breakdown of the raw path;
* throughput of gets with 8 threads;
* profiling cost per board of building a new pair (orin-nano / lstm-wikitext, k = 50
  modes, default ProfileSettings) for fleets of 1, 4 and 16 simulated boards.

Run: ``.venv/bin/python bench/store.py`` (``--quick`` for fewer repetitions).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.store.base import BackendStore
from coordinator.store.builder import BuildSettings, get_or_build
from coordinator.store.collect import DeviceCollector
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powerfleet.serde import encode_predictor, load_predictor
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.predictor import PowerTrainPredictor, PredictorState
from powertrain.profiler import ProfileSettings, profile
from powertrain.sampling import sample_modes

OUT = Path(__file__).resolve().parent / "results" / "store.md"
REF = ("orin-agx", "resnet18-imagenet")


def pct(samples_s: list[float], q: float) -> float:
    """Percentile in milliseconds."""
    return float(np.percentile(np.asarray(samples_s) * 1000.0, q))


def timed(fn: Callable[[], object], n: int, warmup: int = 5) -> list[float]:
    """Wall time of ``n`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def reference_profile() -> pd.DataFrame:
    """500 space-filling modes of the reference pair, profiled on a simulated AGX Orin."""
    modes = sample_modes(get_space("orin-agx").modes("powertrain"), 500, strategy="spacefill")
    return profile(SimulatedJetson("orin-agx", seed=1), "resnet18-imagenet", modes,
                   ProfileSettings(minibatches=10, warmup_minibatches=2, warmup_s=0)).frame


def paper_sized_state(frame: pd.DataFrame) -> PredictorState:
    """The latency artifact: a reference predictor of the paper's size."""
    return PowerTrainPredictor(hidden=(256, 128, 64), activation="relu", fit_steps=50).fit(frame).to_state()


@dataclass
class BackendFigures:
    """Latency samples (seconds) of one backend, and the stores they came from."""

    name: str
    size_bytes: int
    samples: dict[str, list[float]]
    raw_store: BackendStore
    cached_store: BackendStore


def latency(name: str, make: Callable[[int], BackendStore], state: PredictorState, n: int) -> BackendFigures:
    """Latency figures of one backend."""
    raw = make(0)  # cache off: every get reads, verifies and decodes
    datas = [encode_predictor(dataclasses.replace(state, created_at=state.created_at + i))
             for i in range(n // 4)]
    it = iter(datas)
    samples = {"put": timed(lambda: raw.put_artifact(next(it)), len(datas) - 5)}
    meta = raw.meta(*REF)
    data = raw._load_blob(meta)
    samples |= {
        "get_raw": timed(lambda: raw.get(*REF), n),
        "get_bytes": timed(lambda: raw.get_artifact(*REF), n),
        "fetch": timed(lambda: raw._load_blob(meta), n),
        "sha": timed(lambda: hashlib.sha256(data).digest(), n),
        "decode": timed(lambda: load_predictor(data), n),
        "meta": timed(lambda: raw.meta(*REF), n),
    }
    cached = make(256 * 1024 * 1024)
    samples["get_cached"] = timed(lambda: cached.get(*REF), n * 4)
    return BackendFigures(name, meta.size_bytes, samples, raw, cached)


def throughput(store: BackendStore, threads: int = 8, seconds: float = 3.0) -> float:
    """Gets per second with ``threads`` threads sharing one store object."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            store.get(*REF)
            counts[i] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def fleet_cost(state: PredictorState, boards: int, tmp: Path) -> dict[str, float]:
    """Build orin-nano / lstm-wikitext with k = 50 on a fleet of ``boards`` simulated boards.

    The source is a default-architecture reference (hidden (64, 32)): the transfer is the same
    work for every fleet size, and the profiling cost per board is what is measured.
    """
    store = LocalModelStore(tmp / f"fleet-{boards}.sqlite")
    store.put(state)
    fleet = DeviceCollector([SimulatedJetson("orin-nano", unit=u, seed=3) for u in range(boards)],
                            ProfileSettings())
    settings = BuildSettings(k=50)
    t0 = time.perf_counter()
    res = get_or_build(store, "orin-nano", "lstm-wikitext", fleet, settings=settings)
    wall = time.perf_counter() - t0
    cost = res.cost
    assert cost is not None and res.rule == "reference"
    store.close()
    return {"boards": boards, "modes": cost.modes, "max_modes": max(cost.board_modes),
            "max_mb": cost.max_board_minibatches, "max_s": cost.max_board_device_s,
            "total_mb": cost.total_minibatches, "total_s": cost.total_device_s, "collect_wall": cost.wall_s,
            "build_wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    # One intra-op thread: on a 2-core machine shared with other jobs, OpenMP barriers of a
    # second thread that is descheduled turned a 1-2 s transfer into 40-100 s in trial runs.
    torch.set_num_threads(1)
    n = 100 if args.quick else 400
    print("fitting the paper-sized predictor ...", file=sys.stderr)
    frame = reference_profile()
    state = paper_sized_state(frame)
    ns = f"powerfleet:bench:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        print("latency: redis ...", file=sys.stderr)
        redis_figures = latency("Redis (loopback)", lambda cache: RedisModelStore(
            args.redis_url, namespace=ns, cache_bytes=cache), state, n)
        print("latency: embedded ...", file=sys.stderr)
        local_figures = latency("embedded SQLite", lambda cache: LocalModelStore(
            tmp / "bench.sqlite", cache_bytes=cache), state, n)
        results = [redis_figures, local_figures]
        print("throughput ...", file=sys.stderr)
        tput = {r.name: (throughput(r.raw_store), throughput(r.cached_store)) for r in results}
        assert isinstance(redis_figures.raw_store, RedisModelStore)
        redis_version = str(redis_figures.raw_store.client.info().get("redis_version", "?"))
        redis_figures.raw_store.drop_namespace()
        print("fitting the default-architecture reference ...", file=sys.stderr)
        source = PowerTrainPredictor(fit_steps=1000).fit(frame).to_state()
        fleets = []
        for boards in (1, 4, 16):
            print(f"fleet of {boards} ...", file=sys.stderr)
            fleets.append(fleet_cost(source, boards, tmp))
    write_report(results, tput, fleets, redis_version, n)


def write_report(results: list[BackendFigures], tput: dict[str, tuple[float, float]],
                 fleets: list[dict[str, float]], redis_version: str, n: int) -> None:
    """Markdown tables to ``bench/results/store.md`` (and stdout)."""
    size = results[0].size_bytes
    lines = [
        "# Predictor store benchmark",
        "",
        f"`bench/store.py`, {time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} cores shared "
        f"with other work (load average {os.getloadavg()[0]:.1f} at the end); Python "
        f"{platform.python_version()}, Redis {redis_version} on loopback. Artifact: hidden (256, 128, 64), "
        f"relu, 4 members, {size} bytes ({size / 1e6:.2f} MB). {n} gets per row (x4 for cached); "
        "torch uses one thread.",
        "",
        "## Latency (ms)",
        "",
        "| backend | operation | p50 | p99 |",
        "|---|---|---:|---:|",
    ]
    labels = [("put", "put (bytes: verify + store)"), ("get_raw", "get, raw (read + sha256 + decode)"),
              ("get_bytes", "get_artifact (read + sha256, no decode)"),
              ("get_cached", "get, cached by artifact id"), ("meta", "  metadata lookup only"),
              ("fetch", "  fetch bytes only"), ("sha", "  sha256 of the bytes"),
              ("decode", "  verify + decode (no I/O)")]
    for r in results:
        for key, label in labels:
            p50, p99 = pct(r.samples[key], 50), pct(r.samples[key], 99)
            lines.append(f"| {r.name} | {label} | {p50:.3f} | {p99:.3f} |")
    lines += ["", "## Throughput, 8 threads (gets/s)", "", "| backend | raw | cached |", "|---|---:|---:|"]
    for name, (raw, cached) in tput.items():
        lines.append(f"| {name} | {raw:,.0f} | {cached:,.0f} |")
    lines += ["", "## Profiling cost per board of a new pair", "",
              "orin-nano / lstm-wikitext transferred from the reference with k = 50 modes, default "
              "ProfileSettings (40 measured + >= 5 warm-up minibatches and >= 2 s warm-up per mode), "
              "modes dealt round-robin over the boards; source: a default-architecture reference "
              "(hidden (64, 32)). Build wall time includes the transfer (same for every fleet size) and "
              "the simulated boards, which share this machine's 2 cores.", "",
              "| boards | modes on busiest board | minibatches, busiest board | device s, busiest board "
              "| total minibatches | total device s | build wall s |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for f in fleets:
        lines.append(f"| {f['boards']:.0f} | {f['max_modes']:.0f} | {f['max_mb']:.0f} | {f['max_s']:.1f} | "
                     f"{f['total_mb']:.0f} | {f['total_s']:.1f} | {f['build_wall']:.1f} |")
    med = {r.name: statistics.median(r.samples["get_raw"]) * 1e3 for r in results}
    lines += ["", f"Raw get medians: {', '.join(f'{k} {v:.2f} ms' for k, v in med.items())}.", ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
