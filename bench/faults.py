"""Fault injection at the store level and on whole runs; writes ``bench/results/faults.md``.

A small "fleet" of three (device type, workload) pairs runs rounds against a real store the
way the coordinator does: every round, for every pair, make sure a predictor exists
(``builder.plan_or_rebuild``, profiling simulated boards when a build needs modes), ship its
verified bytes (``get_artifact``), and record two observations; every fourth round a pair
gets a new version. One fault is injected per round, at a random point of it. Kinds (one
table row each):

* ``redis-restart-empty``: the private ``redis-server`` (no persistence) is killed by PID and
  restarted empty 0-2 steps later (the store runs degraded in between);
* ``redis-restart-persistent``: the same with an append-only file (``appendfsync always``);
* ``tamper-index-{redis,sqlite}``: a random entry of the catalogue in
  ``tests/store/tampering.py`` (latest pointer, allocator, metadata fields, index members)
  is damaged on a random pair, behind the store's back;
* ``tamper-bytes-{redis,sqlite}``: a random pair's latest artifact is flipped, truncated,
  replaced by another pair's or by garbage, or deleted; or a profile chunk is flipped;
* ``crafted-bundle``: ``powerfleet store import`` of a crafted bundle or ``.model`` file (NaN
  weight, wrong tensor shape, architecture that does not match the settings, an invalid
  pair name in the second entry, a chunk whose knobs clash with the store, truncated or
  flipped bytes), alternately into an SQLite and a Redis store; each must be refused whole.

Columns: rounds completed (no error escaped), rounds lost (an error escaped), no-work rounds
(a round that ended without error but served no predictor or recorded nothing - for imports:
exit 0), artifacts lost (stored or served by the fleet, not destroyed on purpose, and no
longer retrievable from Redis / the file at the end), artifacts corrupted (bytes served that
do not verify as the pair's artifact; for imports: anything added or changed), tracebacks
(exceptions that are not powerfleet's own one-line errors).

Whole runs (real ``powerfleet simulate`` processes, analytic engine, a fleet of 2 Orin AGX and
2 Orin Nano boards whose Nano predictor must be bootstrapped; a fresh store per fault holding
only the reference, alternately an embedded file and a private Redis):

* ``interrupt-run``: SIGINT or SIGTERM at a random point (as soon as the run has started, or
  after 1-4 finished rounds). Rounds completed = rounds in the report it leaves; rounds lost =
  rounds it had finished (its progress file) that the report lacks; no-work = it did not exit
  130/143 with one ``error: stopped by ...`` line and a report marked incomplete; artifacts
  lost/corrupted from an audit of the store (every version loads and verifies, numbers and
  ids unique, latest = highest, no lock left held);
* ``two-runs``: two runs at once on one store. Rounds lost = rounds of a run that failed;
  no-work = the pair was profiled by both runs (or neither); the same audit, and the Nano's
  versions must be 1..n.

Adding a kind: decorate ``fn(bench: Bench, faults: int) -> FaultRow`` with
``@fault_kind("name", "what it injects")`` (one row each, same columns).

Run: ``.venv/bin/python bench/faults.py`` (``--faults 50`` per kind, ``--run-faults`` for the
whole-run kinds, which take ~10-30 s per fault; ``--kinds a,b``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import redis
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.store import open_store
from coordinator.store.base import ArtifactMeta, BackendStore, ModelStore
from coordinator.store.builder import BuildSettings, complete, current_predictor, get_or_build, plan_or_rebuild
from coordinator.store.collect import DeviceCollector
from coordinator.store.errors import CorruptArtifactError
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powerfleet.serde import (
    Bundle,
    BundleEntry,
    encode_bundle,
    encode_predictor,
    encode_profile_frame,
    verify_predictor,
)
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.errors import PowerfleetError
from powertrain.predictor import PowerTrainPredictor, PredictorState
from powertrain.profiler import ProfileSettings, profile
from powertrain.sampling import sample_modes
from tests.fleet.runs import StoreAudit, audit_store, fleet_file, start_simulate
from tests.procs import PrivateRedis, free_port
from tests.store.tampering import (
    TAMPER_KINDS,
    craft,
    nan_weight,
    tamper,
    wrong_architecture,
    wrong_shape,
)

OUT = Path(__file__).resolve().parent / "results" / "faults.md"
PAIRS: tuple[tuple[str, str], ...] = (("orin-agx", "resnet18-imagenet"), ("orin-nano", "lstm-wikitext"),
                                      ("xavier-agx", "resnet18-imagenet"))
TINY = {"fit_steps": 60, "members": 2, "hidden": (16, 8), "transfer_steps": 30, "cv_folds": 3}
SETTINGS = BuildSettings(k=12, reference_k=40, predictor_params=TINY, poll_s=0.02)
FAST = ProfileSettings(minibatches=5, warmup_minibatches=1, warmup_s=0)
VALUE_KINDS = ("blob-flip", "blob-truncate", "blob-foreign", "blob-garbage", "blob-missing", "chunk-flip")
INDEX_KINDS = tuple(k for k in TAMPER_KINDS if k not in ("blob-flip", "blob-missing", "chunk-flip"))
#: Index damage that makes the tampered version unreadable on purpose (its artifact is "destroyed").
UNREADABLE = {"id-swapped", "blob-flip", "blob-truncate", "blob-foreign", "blob-garbage", "blob-missing"}


@dataclass
class FaultRow:
    """One kind of fault and what the store did about it."""

    kind: str
    description: str
    faults: int = 0
    rounds: int = 0
    completed: int = 0
    lost: int = 0
    no_work: int = 0
    artifacts_lost: int = 0
    artifacts_corrupted: int = 0
    tracebacks: int = 0
    seconds: float = 0.0
    harness_errors: int = 0  # the injection itself failed (a bench bug, not the system's)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost, corrupted or crashed, every round did its work, every fault was injected."""
        return (self.lost == self.no_work == self.artifacts_lost == self.artifacts_corrupted == self.tracebacks
                == self.harness_errors == 0 and self.completed == self.rounds)


@dataclass
class Bench:
    """What every fault kind gets: a random generator and a scratch directory."""

    rng: np.random.Generator
    workdir: Path


KINDS: dict[str, tuple[str, Callable[[Bench, int], FaultRow]]] = {}


def fault_kind(name: str, description: str) -> Callable[[Callable[[Bench, int], FaultRow]],
                                                        Callable[[Bench, int], FaultRow]]:
    """Register a fault kind (a table row)."""
    def register(fn: Callable[[Bench, int], FaultRow]) -> Callable[[Bench, int], FaultRow]:
        KINDS[name] = (description, fn)
        return fn
    return register


# ---------------------------------------------------------------------- the store-level fleet
class Fleet:
    """Three pairs served round after round from one store, with a ledger of every artifact."""

    def __init__(self, store: ModelStore, rng: np.random.Generator, row: FaultRow) -> None:
        self.store = store
        self.rng = rng
        self.row = row
        self.collectors = {dt: DeviceCollector([SimulatedJetson(dt, unit=u, seed=1) for u in range(2)], FAST)
                           for dt in dict.fromkeys(p[0] for p in PAIRS)}
        self.ledger: dict[str, tuple[str, str]] = {}  # artifact id -> pair: everything stored or served
        self.destroyed: set[str] = set()  # artifacts made unreadable on purpose by a fault
        self.observations = {pair: self._observations(*pair) for pair in PAIRS}

    @staticmethod
    def _observations(dt: str, wl: str) -> pd.DataFrame:
        modes = sample_modes(get_space(dt).modes("powertrain"), 24, strategy="random", seed=5)
        return profile(SimulatedJetson(dt, unit=7, seed=2), wl, modes, FAST).frame

    def setup(self) -> None:
        """Build every pair (reference fit, then transfers) and give each a second version."""
        for dt, wl in PAIRS:
            result = get_or_build(self.store, dt, wl, self.collectors[dt], settings=SETTINGS,
                                  reference_collector=self.collectors[PAIRS[0][0]])
            for m in result.built:
                self.ledger[m.artifact_id] = m.pair
            self.new_version((dt, wl))

    def new_version(self, pair: tuple[str, str]) -> None:
        """A new version of the pair (what a refinement does: from the current one, rebuilt if refused)."""
        got = current_predictor(self.store, *pair, SETTINGS)
        meta = self.store.put(dataclasses.replace(got.state, created_at=time.time()), labels={"rule": "bench"})
        self.ledger[meta.artifact_id] = meta.pair

    def serve(self, pair: tuple[str, str]) -> bool:
        """Make sure the pair has a predictor and ship its verified bytes; False if it could not."""
        for _ in range(4):
            try:
                plan = plan_or_rebuild(self.store, *pair, SETTINGS)
                if plan.needs_boards:  # profile the planned modes on simulated boards, as a bootstrap would
                    samples = self.collectors[plan.device_type].collect(plan.workload, plan.modes)
                    built = complete(self.store, plan, samples, settings=SETTINGS)
                    self.ledger[built.meta.artifact_id] = built.meta.pair
                    continue
                meta, data = self.store.get_artifact(*pair)
            except CorruptArtifactError:
                continue  # refused: the next plan rebuilds it
            info = verify_predictor(data, meta.label)
            if info.artifact_id != meta.artifact_id or (info.device_type, info.workload) != pair:
                self.row.artifacts_corrupted += 1
                return False
            self.ledger[meta.artifact_id] = pair
            return True
        return False

    def observe(self, pair: tuple[str, str]) -> None:
        pool = self.observations[pair]
        rows = pool.iloc[self.rng.choice(len(pool), 2, replace=False)]
        self.store.append_profile(*pair, rows, knobs=get_space(pair[0]).knob_names, source="round")

    def run(self, rounds: int, inject: Callable[[int], None], after_step: Callable[[], None] = lambda: None,
            after_round: Callable[[], None] = lambda: None) -> None:
        """``rounds`` rounds, each with one injected fault at a random point."""
        for r in range(rounds):
            point = int(self.rng.integers(0, len(PAIRS) + 1))
            self.row.rounds += 1
            try:
                served = recorded = 0
                for i, pair in enumerate(PAIRS):
                    if i == point:
                        self._inject(inject, r)
                    served += self.serve(pair)
                    self.observe(pair)
                    recorded += 1
                    after_step()
                if point == len(PAIRS):
                    self._inject(inject, r)
                if r % 4 == 3:
                    self.new_version(PAIRS[int(self.rng.integers(0, len(PAIRS)))])
                self.row.completed += 1
                if served < len(PAIRS) or recorded < len(PAIRS):
                    self.row.no_work += 1
            except PowerfleetError as exc:
                self.row.lost += 1
                self.row.notes.append(f"round {r} lost: {exc}")
            except Exception:
                self.row.lost += 1
                self.row.tracebacks += 1
                self.row.notes.append("traceback: " + traceback.format_exc().strip().splitlines()[-1])
            finally:
                after_round()

    def _inject(self, inject: Callable[[int], None], r: int) -> None:
        """Inject one fault; a failure of the injection is the bench's, kept apart from the system's."""
        try:
            inject(r)
        except Exception:
            self.row.harness_errors += 1
            self.row.notes.append("injection failed: " + traceback.format_exc().strip().splitlines()[-1])
            return
        self.row.faults += 1

    def audit(self, check: ModelStore) -> None:
        """Count artifacts of the ledger ``check`` no longer returns verified (destroyed ones excepted)."""
        for artifact_id, pair in self.ledger.items():
            if artifact_id in self.destroyed:
                continue
            held = [m for m in check.find(artifact_id) if m.pair == pair]
            ok = False
            for m in held:
                try:
                    meta, data = check.get_artifact(*pair, version=m.version)
                    ok = verify_predictor(data).artifact_id == artifact_id == meta.artifact_id
                except PowerfleetError:
                    ok = False
                if ok:
                    break
            if not ok:
                self.row.artifacts_lost += 1
                self.row.notes.append(f"lost {pair[0]}/{pair[1]} {artifact_id[:19]}")


@contextlib.contextmanager
def redis_server(workdir: Path, persist: bool) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), workdir, persist=persist)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()


def _fallback(server: PrivateRedis, workdir: Path) -> FallbackModelStore:
    primary = RedisModelStore(server.url, namespace="powerfleet:bench", retries=1, connect_timeout_s=0.3,
                              socket_timeout_s=2.0)
    return FallbackModelStore(primary, LocalModelStore(workdir / "mirror.sqlite"), retry_interval_s=0.05,
                              epoch_check_s=1.0)


def _timed(row: FaultRow, fn: Callable[[], None]) -> FaultRow:
    started = time.perf_counter()
    try:
        fn()
    except Exception:  # a failure of the harness itself: counted, never hidden
        row.tracebacks += 1
        row.notes.append("harness: " + traceback.format_exc().strip().splitlines()[-1])
    row.seconds = time.perf_counter() - started
    return row


# ---------------------------------------------------------------------- Redis restarts
def _restarts(bench: Bench, faults: int, name: str, persist: bool) -> FaultRow:
    row = FaultRow(name, KINDS[name][0])
    workdir = Path(tempfile.mkdtemp(dir=bench.workdir, prefix=f"{name}-"))

    def body() -> None:
        with redis_server(workdir, persist) as server:
            store = _fallback(server, workdir)
            fleet = Fleet(store, bench.rng, row)
            fleet.setup()
            down = {"steps": -1}

            def inject(_: int) -> None:
                server.kill()
                down["steps"] = int(bench.rng.integers(0, 3))  # steps run degraded before the restart
                if down["steps"] == 0:
                    server.start()

            def step_done() -> None:
                if down["steps"] > 0:
                    down["steps"] -= 1
                    if down["steps"] == 0:
                        server.start()

            def round_done() -> None:
                if server.proc is None:
                    server.start()
                down["steps"] = -1

            fleet.run(faults, inject, step_done, round_done)
            store.heal()  # the coordinator calls it every round; here once more before the audit
            if store.sync() is None:
                row.notes.append("Redis still unreachable at the end")
            check = RedisModelStore(server.url, namespace="powerfleet:bench")
            fleet.audit(check)  # in Redis itself, not only in the mirror
            check.close()
            stats = store.stats()
            row.notes.append(f"fallbacks {stats['fallbacks']}, epoch changes {stats['epoch_changes']}, "
                             f"re-published {stats['republished']} artifacts and {stats['republished_chunks']} "
                             f"chunks, written back {stats['written_back']}, pending {stats['pending']}")
            store.close()

    return _timed(row, body)


@fault_kind("redis-restart-empty", "redis-server killed by PID, restarted empty (no persistence) 0-2 steps later")
def redis_restart_empty(bench: Bench, faults: int) -> FaultRow:
    return _restarts(bench, faults, "redis-restart-empty", persist=False)


@fault_kind("redis-restart-persistent", "redis-server killed by PID, restarted from its append-only file")
def redis_restart_persistent(bench: Bench, faults: int) -> FaultRow:
    return _restarts(bench, faults, "redis-restart-persistent", persist=True)


# ---------------------------------------------------------------------- tampering
def _damage_bytes(store: BackendStore, kind: str, older: ArtifactMeta, newer: ArtifactMeta,
                  foreign: bytes) -> None:
    from tests.store.tampering import overwrite_blob, raw_blob

    if kind in ("blob-flip", "blob-missing", "chunk-flip"):
        tamper(store, kind, older, newer)
    elif kind == "blob-truncate":
        data = raw_blob(store, newer)
        overwrite_blob(store, newer, data[: len(data) // 2])
    elif kind == "blob-foreign":
        overwrite_blob(store, newer, foreign)
    else:
        overwrite_blob(store, newer, b"\x80\x04pickle-me-not" + bytes(range(64)))


def _readable(store: BackendStore, pair: tuple[str, str]) -> list[ArtifactMeta]:
    """The versions of a pair whose bytes still verify, oldest first."""
    out = []
    for m in store.versions(*pair):
        with contextlib.suppress(PowerfleetError):
            store.get_artifact(*pair, version=m.version)
            out.append(m)
    return out


def _tampering(bench: Bench, faults: int, name: str, backend: str, kinds: tuple[str, ...]) -> FaultRow:
    row = FaultRow(name, KINDS[name][0])
    workdir = Path(tempfile.mkdtemp(dir=bench.workdir, prefix=f"{name}-"))
    counts: dict[str, int] = {}

    def body() -> None:
        with contextlib.ExitStack() as stack:
            if backend == "redis":
                server = stack.enter_context(redis_server(workdir, persist=False))
                store: ModelStore = _fallback(server, workdir)
                target: BackendStore = store.primary  # type: ignore[attr-defined]
            else:
                store = target = LocalModelStore(workdir / "store.sqlite")
            fleet = Fleet(store, bench.rng, row)
            fleet.setup()
            foreign = {pair: target.get_artifact(*next(p for p in PAIRS if p != pair))[1] for pair in PAIRS}

            def inject(_: int) -> None:
                pair = PAIRS[int(bench.rng.integers(0, len(PAIRS)))]
                readable = _readable(target, pair)  # damage what is still intact, not a version already hit
                if len(readable) < 2:
                    fleet.new_version(pair)
                    readable = _readable(target, pair)
                older, newer = readable[-2], readable[-1]
                kind = kinds[int(bench.rng.integers(0, len(kinds)))]
                counts[kind] = counts.get(kind, 0) + 1
                if kind in VALUE_KINDS:
                    _damage_bytes(target, kind, older, newer, foreign[pair])
                else:
                    tamper(target, kind, older, newer)
                if kind in UNREADABLE or (backend == "sqlite" and kind == "latest-not-int"):
                    fleet.destroyed.add(newer.artifact_id)

            fleet.run(faults, inject)
            fleet.audit(target)
            stats = target.stats()
            row.notes.append(f"injected {', '.join(f'{k} x{n}' for k, n in sorted(counts.items()))}")
            row.notes.append(f"index entries reported {stats['index_invalid']} (rebuilt from artifacts "
                             f"{stats['index_repaired']}), loads refused {stats['corrupt_refused']}, "
                             f"destroyed on purpose {len(fleet.destroyed)}")
            store.close()

    return _timed(row, body)


@fault_kind("tamper-index-redis", "index damage in Redis: pointers, allocator, metadata fields, set members")
def tamper_index_redis(bench: Bench, faults: int) -> FaultRow:
    return _tampering(bench, faults, "tamper-index-redis", "redis", INDEX_KINDS)


@fault_kind("tamper-index-sqlite", "index damage in the SQLite file: version keys, allocator, metadata fields")
def tamper_index_sqlite(bench: Bench, faults: int) -> FaultRow:
    return _tampering(bench, faults, "tamper-index-sqlite", "sqlite", INDEX_KINDS)


@fault_kind("tamper-bytes-redis", "artifact flipped, truncated, foreign, garbage or missing; chunk flipped (Redis)")
def tamper_bytes_redis(bench: Bench, faults: int) -> FaultRow:
    return _tampering(bench, faults, "tamper-bytes-redis", "redis", VALUE_KINDS)


@fault_kind("tamper-bytes-sqlite", "artifact flipped, truncated, foreign, garbage or missing; chunk flipped (SQLite)")
def tamper_bytes_sqlite(bench: Bench, faults: int) -> FaultRow:
    return _tampering(bench, faults, "tamper-bytes-sqlite", "sqlite", VALUE_KINDS)


# ---------------------------------------------------------------------- crafted imports
Snapshot = tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], int]]


def _snapshot(store: BackendStore) -> Snapshot:
    """Every pair's versions (artifact ids) and profile length."""
    versions = {pair: [m.artifact_id for m in store.versions(*pair)] for pair in store.pair_names()}
    profiles = {pair: len(store.get_profile(*pair)) for pair in store.profile_pairs()}
    return versions, profiles


def _crafted(good: bytes, profile_frame: pd.DataFrame) -> dict[str, tuple[str, bytes]]:
    """Bundles and .model files that must be refused whole: name -> (file suffix, bytes)."""
    from powerfleet.serde import decode_predictor

    state = decode_predictor(good)
    other_pair = encode_predictor(dataclasses.replace(state, device_type="orin-nano", workload="bench-new"))
    bad_name = encode_predictor(dataclasses.replace(state, device_type="orin:agx"))
    clash = encode_profile_frame(profile_frame.head(2), device_type=state.device_type, workload=state.workload,
                                 knobs=["cpu_cores", "cpu_mhz", "gpu_mhz"])
    bundle = encode_bundle(Bundle((BundleEntry(other_pair),)))
    flipped = bytearray(bundle)
    flipped[len(flipped) // 2] ^= 0x10
    return {
        "nan-weight.model": (".model", craft(good, nan_weight)),
        "wrong-shape.model": (".model", craft(good, wrong_shape)),
        "wrong-architecture.model": (".model", craft(good, wrong_architecture)),
        "bad-name-second-entry": (".pfb", encode_bundle(Bundle((BundleEntry(other_pair), BundleEntry(bad_name))))),
        "knobs-clash-chunk": (".pfb", encode_bundle(Bundle((BundleEntry(other_pair),), (clash,)))),
        "truncated-bundle": (".pfb", bundle[: len(bundle) // 2]),
        "flipped-bundle": (".pfb", bytes(flipped)),
        "not-a-bundle": (".pfb", b"PK\x03\x04 this is a zip, not a bundle"),
    }


@fault_kind("crafted-bundle", "store import of crafted bundles/.model files into SQLite and Redis (refused whole)")
def crafted_bundle(bench: Bench, faults: int) -> FaultRow:
    from powerfleet.cli import main

    row = FaultRow("crafted-bundle", KINDS["crafted-bundle"][0])
    workdir = Path(tempfile.mkdtemp(dir=bench.workdir, prefix="crafted-"))

    def body() -> None:
        with redis_server(workdir, persist=False) as server:
            stores: list[tuple[str, BackendStore]] = [
                (f"file://{workdir / 'target.sqlite'}", LocalModelStore(workdir / "target.sqlite")),
                (f"{server.url}?namespace=powerfleet:bench", RedisModelStore(server.url, namespace="powerfleet:bench"))]
            fleet = Fleet(stores[0][1], bench.rng, row)
            fleet.setup()  # the SQLite target holds three pairs, two versions each, and samples
            for m in stores[0][1].list_pairs():  # the Redis target holds the latest of each, and samples
                stores[1][1].put_artifact(stores[0][1].get_artifact(*m.pair)[1])
                stores[1][1].append_profile(*m.pair, fleet.observations[m.pair].head(4))
            good = stores[0][1].get_artifact(*PAIRS[0])[1]
            crafted = _crafted(good, fleet.observations[PAIRS[0]])
            names = sorted(crafted)
            for i in range(faults):
                name = names[i % len(names)]
                url, store = stores[i % 2]
                suffix, data = crafted[name]
                path = workdir / f"{i}-{name}{'' if name.endswith(suffix) else suffix}"
                path.write_bytes(data)
                before = _snapshot(store)
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = main(["store", "import", str(path), "--store", url])
                text = err.getvalue()
                after = _snapshot(store)
                row.rounds += 1
                row.faults += 1
                lines = [line for line in text.splitlines() if line.strip()]
                if "Traceback" in text:
                    row.tracebacks += 1
                if code == 0:
                    row.no_work += 1  # a crafted value accepted with exit 0: a wrong result
                if code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and after == before:
                    row.completed += 1
                else:
                    row.lost += 1
                    row.notes.append(f"{name} into {url.split('?')[0]}: rc {code}, {lines[-1:] or ['no message']}")
                held_before = {a for ids in before[0].values() for a in ids}
                held_after = {a for ids in after[0].values() for a in ids}
                lost, added = held_before - held_after, held_after - held_before
                row.artifacts_lost += len(lost)
                row.artifacts_corrupted += len(added)
            good_bundle = workdir / "good.pfb"
            good_bundle.write_bytes(encode_bundle(Bundle((BundleEntry(good),))))
            for url, _ in stores:
                with contextlib.redirect_stderr(io.StringIO()):
                    code = main(["store", "import", str(good_bundle), "--store", url])
                if code != 0:
                    row.notes.append(f"a good bundle failed to import into {url}")
            row.notes.append(f"{len(names)} crafted inputs, each tried {faults // len(names)}-"
                             f"{-(-faults // len(names))} times, alternately into SQLite and Redis; a good bundle "
                             "imports afterwards")
            for _, store in stores:
                store.close()

    return _timed(row, body)


# ---------------------------------------------------------------------- whole runs
#: The fleet of the run-level kinds: Orin AGX boards (the reference's type) and Orin Nanos, whose
#: predictor each run must bootstrap in its rounds unless another run already did.
RUN_FLEET = [("sim:orin-agx", 2, 0), ("sim:orin-nano", 2, 10)]
#: The stop budget of an interrupted run, signal to exit with its report written (2 loaded cores).
STOP_WITHIN_S = 30.0


def _reference_state() -> PredictorState:
    """A small orin-agx/resnet18 reference predictor (as the tests' reference store holds)."""
    truth = SimulatedJetson("orin-agx").true_performance("resnet18-imagenet", get_space("orin-agx").modes("powertrain"))
    return PowerTrainPredictor(fit_steps=300, members=2, transfer_steps=80).fit(
        truth, device_type="orin-agx", workload="resnet18-imagenet").to_state()


class RunStores:
    """A fresh store per fault, alternately an embedded file and a private Redis (flushed), each
    holding only the reference predictor."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = _reference_state()
        self.redis = PrivateRedis(free_port(), workdir)
        self.redis.start()
        self.xdg = os.environ.get("XDG_CACHE_HOME")  # restored by close()

    def fresh(self, i: int) -> tuple[str, str]:
        """The URL of the ``i``-th fault's store and the artifact id of its reference. A fresh host
        too: the fallback's local file (under ``XDG_CACHE_HOME``, inherited by the runs) is new per
        fault, or it would re-publish an earlier fault's predictors into the flushed Redis."""
        os.environ["XDG_CACHE_HOME"] = str(self.workdir / f"cache-{i}")
        if i % 2 == 0:
            url = f"file://{self.workdir / f'store-{i}.sqlite'}"
        else:
            redis.Redis(port=self.redis.port).flushall()
            url = self.redis.url
        with open_store(url) as store:
            return url, store.put(self.state, space=get_space("orin-agx")).artifact_id

    def close(self) -> None:
        if self.redis.proc is not None:
            self.redis.kill()
        if self.xdg is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = self.xdg


def _audit(row: FaultRow, url: str, before: dict[tuple[str, str], list[str]]) -> StoreAudit:
    """Count problems of the store after a fault: artifacts that were there and are gone or no
    longer verify are lost; duplicates and foreign bytes are corruption."""
    audit = audit_store(url)
    for pair, ids in before.items():
        row.artifacts_lost += len(set(ids) - set(audit.artifacts.get(pair, [])))
    for problem in audit.problems:
        if "duplicate" in problem or "another artifact" in problem:
            row.artifacts_corrupted += 1
        else:
            row.artifacts_lost += 1
        row.notes.append(problem)
    return audit


@fault_kind("interrupt-run", "SIGINT or SIGTERM to a running `powerfleet simulate` (analytic engine) at a random "
                             "point: during start-up/bootstrap or after 1-4 rounds")
def interrupt_run(bench: Bench, faults: int) -> FaultRow:
    row = FaultRow("interrupt-run", KINDS["interrupt-run"][0])
    workdir = Path(tempfile.mkdtemp(dir=bench.workdir, prefix="interrupt-"))

    def body() -> None:
        stores = RunStores(workdir)
        fleet = fleet_file(workdir / "fleet.toml", RUN_FLEET)
        stop_times: list[float] = []
        try:
            for i in range(faults):
                url, ref_id = stores.fresh(i)
                sig = (signal.SIGINT, signal.SIGTERM)[int(bench.rng.integers(0, 2))]
                after = int(bench.rng.integers(0, 5))  # 0: as soon as the command has started its run
                run = start_simulate(workdir, f"run-{i}", fleet, url, 1000)
                try:
                    if after == 0:
                        deadline = time.monotonic() + 120
                        while "fleet " not in run.err() and run.proc.poll() is None and time.monotonic() < deadline:
                            time.sleep(0.05)
                    elif not run.wait_rounds(after, 180):
                        row.harness_errors += 1
                        row.notes.append(f"fault {i}: the run never reached round {after}: {run.err()[-200:]}")
                        continue
                    seen = run.progress()
                    run.signal(sig)
                    code = run.wait(120)
                finally:
                    if run.proc.poll() is None:
                        run.proc.kill()
                        run.proc.wait()
                row.faults += 1
                stop_times.append(run.stop_s)
                err = run.err()
                if "Traceback" in err:
                    row.tracebacks += 1
                    row.notes.append(f"fault {i}: traceback: {err.strip().splitlines()[-1]}")
                errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
                if "Warning" in err:  # a Python warning is a line more than the one the user gets
                    errors.append(next(ln for ln in err.splitlines() if "Warning" in ln))
                if code != 128 + int(sig) or len(errors) != 1 or f"stopped by {sig.name}" not in errors[0]:
                    row.no_work += 1  # ended without saying it was stopped (or with exit 0)
                    row.notes.append(f"fault {i}: exit {code}, stderr {errors}")
                if run.stop_s > STOP_WITHIN_S:
                    row.notes.append(f"fault {i}: {run.stop_s:.1f} s to stop")
                try:
                    summary = run.summary()
                    reported = int(summary["rounds"])  # type: ignore[call-overload]
                    if summary["complete"] is not False or summary["stopped_by"] != sig.name:
                        row.no_work += 1
                except (OSError, ValueError, KeyError):
                    reported = 0
                    row.no_work += 1
                    row.notes.append(f"fault {i}: no report")
                row.rounds += max(seen, reported)
                row.completed += reported
                row.lost += max(0, seen - reported)  # finished before the signal, missing from the report
                _audit(row, url, {("orin-agx", "resnet18-imagenet"): [ref_id]})
        finally:
            stores.close()
        if stop_times:
            row.notes.insert(0, f"signal to exit (report written): median {np.median(stop_times):.1f} s, max "
                                f"{max(stop_times):.1f} s; exit codes 130 (SIGINT) / 143 (SIGTERM)")

    return _timed(row, body)


@fault_kind("two-runs", "two `powerfleet simulate` runs at once on one store (embedded file or Redis), both "
                        "needing the same pair bootstrapped")
def two_runs(bench: Bench, faults: int) -> FaultRow:
    row = FaultRow("two-runs", KINDS["two-runs"][0])
    workdir = Path(tempfile.mkdtemp(dir=bench.workdir, prefix="two-runs-"))
    rounds = 6

    def body() -> None:
        stores = RunStores(workdir)
        fleet = fleet_file(workdir / "fleet.toml", RUN_FLEET)
        twice = 0
        try:
            for i in range(faults):
                url, ref_id = stores.fresh(i)
                runs = [start_simulate(workdir, f"run-{i}-{j}", fleet, url, rounds, "--seed", str(j))
                        for j in range(2)]
                try:
                    codes = [r.wait(600) for r in runs]
                finally:
                    for r in runs:
                        if r.proc.poll() is None:
                            r.proc.kill()
                            r.proc.wait()
                row.faults += 1
                profiled = []
                for r, code in zip(runs, codes, strict=True):
                    row.rounds += rounds
                    err = r.err()
                    if "Traceback" in err:
                        row.tracebacks += 1
                        row.notes.append(f"fault {i}: traceback: {err.strip().splitlines()[-1]}")
                    try:
                        done = len(pd.read_csv(r.out / "rounds.csv"))
                        clients = pd.read_csv(r.out / "clients.csv")
                        profiled.append(int(clients[clients.device_type == "orin-nano"].profiled_modes.sum()))
                    except OSError:
                        done = 0
                    row.completed += done if code == 0 else 0
                    row.lost += rounds - (done if code == 0 else 0)
                    if code != 0:
                        row.notes.append(f"fault {i}: exit {code}: {err.strip().splitlines()[-1:]}")
                if sum(p > 0 for p in profiled) != 1:
                    twice += 1
                    row.no_work += 1  # both runs profiled the pair (or neither did)
                    row.notes.append(f"fault {i}: orin-nano profiled by {sum(p > 0 for p in profiled)} runs")
                audit = _audit(row, url, {("orin-agx", "resnet18-imagenet"): [ref_id]})
                nano = audit.versions.get(("orin-nano", "resnet18-imagenet"), [])
                if nano != list(range(1, len(nano) + 1)):
                    row.artifacts_lost += 1
                    row.notes.append(f"fault {i}: orin-nano versions {nano}")
        finally:
            stores.close()
        row.notes.insert(0, f"{rounds} rounds per run; faults where the pair was profiled by both runs (or none): "
                            f"{twice} (counted as no-work); odd faults on Redis, even on the embedded file")

    return _timed(row, body)


# ---------------------------------------------------------------------- table
#: The kinds that start real ``powerfleet simulate`` processes (``--run-faults`` each).
RUN_KINDS = ("interrupt-run", "two-runs")


def run(kinds: list[str], faults: int, seed: int, workdir: Path, run_faults: int | None = None) -> list[FaultRow]:
    """Run the kinds; one row each (``run_faults`` for :data:`RUN_KINDS`, default ``faults``)."""
    bench = Bench(np.random.default_rng(seed), workdir)
    rows = []
    for name in kinds:
        if name not in KINDS:
            raise SystemExit(f"unknown fault kind {name!r}; kinds: {', '.join(KINDS)}")
        rows.append(KINDS[name][1](bench, run_faults if run_faults is not None and name in RUN_KINDS else faults))
        r = rows[-1]
        print(f"{name}: {r.faults} faults, {r.completed}/{r.rounds} rounds, lost {r.lost}, no-work {r.no_work}, "
              f"artifacts lost {r.artifacts_lost}, corrupted {r.artifacts_corrupted}, tracebacks {r.tracebacks} "
              f"({r.seconds:.0f} s)", file=sys.stderr)
    return rows


def table(rows: list[FaultRow]) -> str:
    """The markdown table of the rows, with a total."""
    lines = ["| fault kind | faults injected | rounds completed | rounds lost | no-work rounds | artifacts lost | "
             "artifacts corrupted | tracebacks | injection failures | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fields = ("faults", "rounds", "completed", "lost", "no_work", "artifacts_lost", "artifacts_corrupted",
              "tracebacks", "harness_errors")
    total = FaultRow("**total**", "", seconds=sum(r.seconds for r in rows))
    for f in fields:
        setattr(total, f, sum(getattr(r, f) for r in rows))
    for r in [*rows, total]:
        lines.append(f"| {r.kind} | {r.faults} | {r.completed}/{r.rounds} | {r.lost} | {r.no_work} | "
                     f"{r.artifacts_lost} | {r.artifacts_corrupted} | {r.tracebacks} | {r.harness_errors} | "
                     f"{r.seconds:.0f} |")
    return "\n".join(lines)


def write(rows: list[FaultRow], faults: int, seed: int, path: Path = OUT, run_faults: int | None = None) -> None:
    """Write ``bench/results/faults.md``."""
    version = "?"
    with contextlib.suppress(Exception), tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp), False) as s:
        version = str(redis.Redis(port=s.port).info("server")["redis_version"])
    text = [
        "# Fault injection (store level and whole runs)", "",
        f"`bench/faults.py --faults {faults}" + (f" --run-faults {run_faults}" if run_faults is not None else "")
        + f" --seed {seed}`, {time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} cores shared with "
        f"other work, Python {platform.python_version()}, Redis {version} (a private redis-server per kind, killed "
        "by PID). Store-level kinds: three pairs (orin-agx/resnet18-imagenet, orin-nano/lstm-wikitext, "
        "xavier-agx/resnet18-imagenet) served every round through `plan_or_rebuild` + `get_artifact`, two "
        "observations recorded per pair per round, a new version every fourth round; one fault per round at a "
        "random point of it. Whole-run kinds (`interrupt-run`, `two-runs`): real `powerfleet simulate` processes "
        "on a fresh store per fault; one fault per run (pair of runs).", "",
        table(rows), "",
        "Columns: see the docstring of `bench/faults.py`. *Rounds lost* = an error escaped the round (whole runs: "
        "a finished round missing from the report, or the rounds of a failed run); *no-work rounds* = a round "
        "that ended without error but served no predictor or recorded nothing (for imports: exit 0; for an "
        "interrupt: no exit 130/143 with one line and an incomplete report; for two runs: the pair profiled by "
        "both). Artifacts deliberately made unreadable by a fault are not counted as lost.", "",
        *([f"**Short of the target:** the whole-run kinds ran {run_faults} faults each here, not 50, to keep "
           "this run short (each fault starts one or two real `powerfleet simulate` processes, 15-40 s on these "
           "shared cores); `--run-faults 50` runs the full count.", ""] if run_faults is not None and run_faults < 50
          else []),
        "## Kinds and notes", ""]
    for r in rows:
        text.append(f"* **{r.kind}** - {r.description}.")
        text += [f"  - {n}" for n in r.notes[:12]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--faults", type=int, default=50, help="faults per kind (default 50)")
    parser.add_argument("--run-faults", type=int, default=None,
                        help=f"faults per whole-run kind ({', '.join(RUN_KINDS)}; default: --faults)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("powerfleet").setLevel(logging.ERROR)  # the faults are expected: keep the output short
    with tempfile.TemporaryDirectory(prefix=f"faults-{uuid.uuid4().hex[:6]}-") as tmp:
        rows = run([k.strip() for k in args.kinds.split(",") if k.strip()], args.faults, args.seed, Path(tmp),
                   args.run_faults)
    write(rows, args.faults, args.seed, args.out, args.run_faults)
    print(table(rows))
    return 0 if all(r.clean for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
