"""The ModelStore contract, run against both backends (embedded SQLite and real Redis)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordinator.store.base import ArtifactMeta, BackendStore
from coordinator.store.builder import plan_or_rebuild
from coordinator.store.errors import ArtifactNotFoundError, CorruptArtifactError, StoreError
from coordinator.store.local_store import LocalModelStore
from powerfleet.serde import ArtifactError, artifact_id, chunk_digest, encode_predictor, encode_profile_frame
from powertrain.errors import InvalidParameterError
from powertrain.predictor import PredictorState
from tests.store.conftest import TAMPER_KINDS, TINY_BUILD, overwrite_blob, raw_blob, tamper, variant

REF = ("orin-agx", "resnet18-imagenet")
NANO = ("orin-nano", "lstm-wikitext")


def _one_line(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text, text
    for n in needles:
        assert n in text, (n, text)


def test_put_appends_immutable_versions(store: BackendStore, ref_state: PredictorState) -> None:
    states = [variant(ref_state, created_at=1000.0 + i) for i in range(3)]
    metas = [store.put(s) for s in states]
    assert [m.version for m in metas] == [1, 2, 3]
    other = store.put(variant(ref_state, *NANO))
    assert other.version == 1  # numbering is per pair
    for s, m in zip(states, metas, strict=True):
        assert m.artifact_id == artifact_id(encode_predictor(s))
        got = store.get(*REF, version=m.version)
        assert artifact_id(encode_predictor(got.state)) == m.artifact_id  # bit-exact round trip
        assert got.state.created_at == s.created_at
    assert store.meta(*REF).version == 3 and store.get(*REF).meta.artifact_id == metas[2].artifact_id
    _, data = store.get_artifact(*REF, version=1)
    assert artifact_id(data) == metas[0].artifact_id  # v1 untouched by later puts


def test_metadata_list_and_find(store: BackendStore, ref_state: PredictorState) -> None:
    ref = store.put(ref_state, labels={"rule": "reference-fit"})
    child_state = variant(ref_state, *NANO, kind="transfer", parent_id=ref.artifact_id, n_samples=12)
    child = store.put(child_state)
    assert (child.kind, child.parent_id, child.n_samples) == ("transfer", ref.artifact_id, 12)
    assert child.size_bytes == len(encode_predictor(child_state)) and abs(child.stored_at - time.time()) < 60
    assert ref.labels == {"rule": "reference-fit"}
    listed = store.list_pairs()
    assert [m.pair for m in listed] == [REF, NANO]
    assert listed[0] == store.meta(*REF)
    assert [m.version for m in store.versions(*REF)] == [1] and store.versions("xavier-agx", "x") == []
    assert [m.pair for m in store.find(ref.artifact_id)] == [REF]
    assert store.find("sha256:" + "0" * 64) == []


def test_delete_moves_latest_and_never_reuses_numbers(store: BackendStore, ref_state: PredictorState) -> None:
    for i in range(3):
        store.put(variant(ref_state, created_at=10.0 + i))
    removed = store.delete(*REF, version=3)
    assert [m.version for m in removed] == [3]
    assert store.meta(*REF).version == 2
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.get(*REF, version=3)
    _one_line(exc.value, "orin-agx/resnet18-imagenet v3")
    assert store.put(variant(ref_state, created_at=99.0)).version == 4
    store.delete(*REF, version=1)
    assert [m.version for m in store.versions(*REF)] == [2, 4]
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.delete(*REF, version=1)
    _one_line(exc.value, "v1", "nothing deleted")


def test_delete_pair_keeps_samples_unless_asked(store: BackendStore, ref_state: PredictorState,
                                                ref_profile: pd.DataFrame) -> None:
    store.put(ref_state)
    store.put(variant(ref_state))
    store.append_profile(*REF, ref_profile.head(10))
    assert len(store.delete(*REF)) == 2
    assert store.list_pairs() == [] and store.latest(*REF) is None
    assert len(store.get_profile(*REF)) == 10  # measurements survive a model delete
    assert store.put(ref_state).version == 3  # numbers never reused
    store.delete(*REF, profile=True)
    assert len(store.get_profile(*REF)) == 0 and store.profile_pairs() == []
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.meta(*REF)
    _one_line(exc.value, "orin-agx/resnet18-imagenet", store.url)


def test_history_follows_parents_across_pairs(store: BackendStore, ref_state: PredictorState) -> None:
    ref = store.put(ref_state)
    v1 = store.put(variant(ref_state, *NANO, kind="transfer", parent_id=ref.artifact_id))
    v2 = store.put(variant(ref_state, *NANO, kind="transfer", parent_id=v1.artifact_id))
    orphan = store.put(variant(ref_state, "xavier-agx", "lstm-wikitext", kind="transfer",
                               parent_id="sha256:" + "ab" * 32))
    hist = store.history(*NANO)
    assert [h.meta.version for h in hist] == [2, 1]
    assert [a.meta.label for a in hist[0].ancestors if a.meta] == [v1.label, ref.label]
    assert [a.artifact_id for a in hist[1].ancestors] == [ref.artifact_id]
    lost = store.lineage(orphan.artifact_id)
    assert len(lost) == 1 and lost[0].meta is None and lost[0].artifact_id == "sha256:" + "ab" * 32
    assert v2.parent_id == v1.artifact_id


def test_profiles_append_and_read_back(store: BackendStore, ref_profile: pd.DataFrame) -> None:
    first = ref_profile.head(5)
    second = ref_profile.iloc[5:8].assign(device_unit=3, source="round", timestamp=123.0)
    assert store.append_profile(*REF, first) == 5
    assert store.append_profile(*REF, second) == 3
    back = store.get_profile(*REF)
    assert len(back) == 8 and store.profile_pairs() == [REF]
    knobs = ["cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz"]
    assert np.allclose(back[knobs].to_numpy(float), ref_profile.head(8)[knobs].to_numpy(float))
    assert np.allclose(back.time_ms, ref_profile.time_ms.head(8)) and np.allclose(back.power_w,
                                                                                   ref_profile.power_w.head(8))
    assert list(back.source) == ["profile"] * 5 + ["round"] * 3 and list(back.device_unit[-3:]) == [3, 3, 3]
    assert back.timestamp.iloc[-1] == 123.0
    bad = first.drop(columns=["mem_mhz"])
    with pytest.raises(InvalidParameterError) as exc:
        store.append_profile(*REF, bad)
    _one_line(exc.value, "knobs", "mem_mhz")
    assert len(store.get_profile(*REF)) == 8  # nothing written
    assert len(store.get_profile(*NANO)) == 0


@pytest.mark.parametrize("fault", ["flip", "truncate", "foreign", "garbage"])
def test_tampered_value_is_refused_and_counted(make_store: Callable[..., BackendStore],
                                               ref_state: PredictorState, fault: str) -> None:
    store = make_store()
    meta = store.put(ref_state)
    other = encode_predictor(variant(ref_state, *NANO))
    good = raw_blob(store, meta)
    bad = {"flip": good[:-100] + bytes([good[-100] ^ 0x01]) + good[-99:], "truncate": good[: len(good) // 2],
           "foreign": other, "garbage": b"\x80\x04pickle-me-not"}[fault]
    overwrite_blob(store, meta, bad)
    fresh = make_store()  # no cached copy: the load must verify the stored bytes
    for load in (lambda: fresh.get(*REF), lambda: fresh.get_artifact(*REF, version=1)):
        with pytest.raises(CorruptArtifactError) as exc:
            load()
        _one_line(exc.value, "orin-agx/resnet18-imagenet v1", "refused")
    assert fresh.stats()["corrupt_refused"] == 2
    assert isinstance(exc.value, ArtifactError)  # a PowerfleetError the CLI prints as one line
    overwrite_blob(store, meta, good)
    assert make_store().get(*REF).meta.artifact_id == meta.artifact_id  # nothing else was changed


def test_bad_names_labels_and_versions(store: BackendStore, ref_state: PredictorState) -> None:
    for dt, wl in [("orin:agx", "w"), ("", "w"), ("orin-agx", "a/b"), ("x" * 200, "w")]:
        with pytest.raises(InvalidParameterError) as exc:
            store.meta(dt, wl)
        _one_line(exc.value, "not a valid name")
    with pytest.raises(InvalidParameterError):
        store.put(variant(ref_state, "orin:agx"))
    with pytest.raises(InvalidParameterError) as exc:
        store.put(ref_state, labels={"Bad Key": "x"})
    _one_line(exc.value, "'Bad Key'")
    with pytest.raises(InvalidParameterError) as exc:
        store.get(*REF, version=0)
    _one_line(exc.value, "version", "0")
    with pytest.raises(ArtifactError):
        store.put_artifact(b"not an artifact")
    assert store.list_pairs() == []


def test_artifact_size_is_bounded(make_store: Callable[..., BackendStore], ref_state: PredictorState) -> None:
    small = make_store(max_artifact_bytes=1000)
    with pytest.raises(StoreError) as exc:
        small.put(ref_state)
    _one_line(exc.value, "orin-agx/resnet18-imagenet", "limit is 1000")
    assert small.list_pairs() == [] and small.versions(*REF) == []


def test_locks_expire_and_release_only_with_token(store: BackendStore) -> None:
    held = store.acquire_lock("build:orin-agx:resnet18-imagenet", ttl_s=0.3, renew=False)
    assert held is not None
    assert store.acquire_lock("build:orin-agx:resnet18-imagenet", ttl_s=0.3) is None
    assert not store._unlock(held.name, "not-the-token")  # compare-and-delete
    assert held.extend()
    time.sleep(0.45)  # expired: a crashed holder does not block forever
    thief = store.acquire_lock("build:orin-agx:resnet18-imagenet", ttl_s=5.0, renew=False)
    assert thief is not None
    assert not held.release()  # no longer ours: must not release the new holder's lock
    assert store.acquire_lock("build:orin-agx:resnet18-imagenet") is None
    assert thief.release()
    renewing = store.acquire_lock("build:x", ttl_s=0.3)
    assert renewing is not None
    time.sleep(0.6)  # the background renewal keeps it past its ttl
    assert store.acquire_lock("build:x", ttl_s=0.3) is None and not renewing.lost
    renewing.release()


def test_concurrent_puts_get_distinct_versions(make_store: Callable[..., BackendStore],
                                               ref_state: PredictorState) -> None:
    stores = [make_store() for _ in range(8)]
    results: list[int] = []
    lock = threading.Lock()

    def put(i: int) -> None:
        meta = stores[i].put(variant(ref_state, created_at=500.0 + i))
        with lock:
            results.append(meta.version)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    assert stores[0].meta(*REF).version == 8
    assert len({m.artifact_id for m in stores[0].versions(*REF)}) == 8


def test_cache_is_keyed_by_artifact_id(store: BackendStore, ref_state: PredictorState) -> None:
    first = store.put(ref_state)
    a = store.get(*REF)
    b = store.get(*REF)
    assert b.state is a.state and store.stats()["cache_hits"] == 2  # the put verified and cached it
    assert store.stats()["cache_misses"] == 0
    second = store.put(variant(ref_state))
    c = store.get(*REF)
    assert c.meta.artifact_id == second.artifact_id != first.artifact_id  # never stale


def _put_many(path: str, created: list[float]) -> None:
    from coordinator.store.local_store import LocalModelStore
    from tests.store.conftest import variant as make_variant

    state = _STATE_FOR_CHILD
    store = LocalModelStore(path)
    for c in created:
        store.put(make_variant(state, created_at=c))
    store.close()


_STATE_FOR_CHILD: PredictorState


def test_local_store_is_safe_across_processes(tmp_path: Path, ref_state: PredictorState) -> None:
    global _STATE_FOR_CHILD
    _STATE_FOR_CHILD = ref_state
    path = str(tmp_path / "shared.sqlite")
    LocalModelStore(path).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_put_many, args=(path, [100.0 * p + i for i in range(5)])) for p in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = LocalModelStore(path)
    assert [m.version for m in store.versions(*REF)] == list(range(1, 16))
    assert len({m.artifact_id for m in store.versions(*REF)}) == 15


# ---------------------------------------------------------------------- tampering
# Index data is validated, never trusted: every kind of damage in TAMPER_KINDS, on both
# backends, is refused or repaired, reported once, counted, and the pair heals (a new put
# gets a fresh number and becomes latest; a refused latest is rebuilt from stored samples).
REFUSED = {"id-swapped", "blob-missing", "blob-flip"}
VALUE_DAMAGE = REFUSED | {"chunk-flip"}


def _exercise(store: BackendStore, v1: ArtifactMeta) -> dict[str, object]:
    """Every read of the contract; only a one-line CorruptArtifactError may come out."""
    out: dict[str, object] = {}
    reads: dict[str, Callable[[], object]] = {
        "list": lambda: [m.pair for m in store.list_pairs()],
        "names": store.pair_names,
        "versions": lambda: [m.version for m in store.versions(*NANO)],
        "latest_version": lambda: store.latest_version(*NANO),
        "meta": lambda: store.meta(*NANO).artifact_id,
        "get": lambda: store.get(*NANO).meta.artifact_id,
        "get_artifact": lambda: store.get_artifact(*NANO)[0].artifact_id,
        "meta_v1": lambda: store.meta(*NANO, version=1).artifact_id,
        "find_v1": lambda: [m.label for m in store.find(v1.artifact_id)],
        "history": lambda: [h.meta.version for h in store.history(*NANO)],
        "profile_pairs": store.profile_pairs,
        "profile_rows": lambda: len(store.get_profile(*NANO)),
        "ref": lambda: store.get(*REF).meta.artifact_id,
    }
    for name, read in reads.items():
        try:
            out[name] = read()
        except CorruptArtifactError as exc:
            _one_line(exc, "refused")
            out[name] = "refused"
    return out


@pytest.mark.parametrize("kind", sorted(TAMPER_KINDS))
def test_tampered_index_is_refused_or_repaired_and_heals(make_store: Callable[..., BackendStore], backend: str,
                                                        ref_state: PredictorState, nano_profile: pd.DataFrame,
                                                        kind: str, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store()
    ref = store.put(ref_state)
    v1 = store.put(variant(ref_state, *NANO, kind="transfer", parent_id=ref.artifact_id, n_samples=12))
    v2 = store.put(variant(ref_state, *NANO, kind="transfer", parent_id=ref.artifact_id, n_samples=12,
                           created_at=ref_state.created_at + 50), labels={"rule": "reference"})
    store.append_profile(*NANO, nano_profile.head(6))
    store.append_profile(*NANO, nano_profile.iloc[6:12])
    tamper(store, kind, v1, v2)

    fresh = make_store()  # nothing cached: every value comes from storage
    with caplog.at_level(logging.WARNING, logger="powerfleet.store"):
        first = _exercise(fresh, v1)
        reported = len(caplog.records)
        for _ in range(2):
            assert _exercise(fresh, v1) == first  # stable answers
        assert len(caplog.records) == reported, "a damaged entry must be reported once"

    assert first["ref"] == ref.artifact_id and first["meta_v1"] == v1.artifact_id  # the rest is intact
    assert first["names"] == [REF, NANO] and first["profile_pairs"] == [NANO]
    assert NANO in first["list"] and REF in first["list"]  # type: ignore[operator]
    assert 1 in first["versions"] and v1.label in first["find_v1"]  # type: ignore[operator]
    if kind != "id-swapped":  # (a record claiming v1's id is listed by SQLite's id index: it says so)
        assert first["find_v1"] == [v1.label]
    expected_latest = v1.artifact_id if (backend, kind) == ("local", "latest-not-int") else v2.artifact_id
    if kind in REFUSED:
        assert first["get"] == first["get_artifact"] == "refused"
        assert fresh.stats()["corrupt_refused"] >= 1
    else:
        assert first["get"] == first["get_artifact"] == expected_latest
    assert first["profile_rows"] == (6 if kind == "chunk-flip" else 12)
    if kind == "labels-garbage":
        assert fresh.meta(*NANO).labels == {}
    if kind in {"n-samples", "meta-missing", "created-at", "id-garbage"}:
        assert fresh.meta(*NANO).n_samples == 12 and fresh.stats()["index_repaired"] >= 1

    # heals: a refused latest is rebuilt from the 12 stored samples (no profiling), ...
    rebuilt = plan_or_rebuild(fresh, *NANO, TINY_BUILD)
    assert rebuilt.hit is not None and not rebuilt.needs_boards
    if kind in REFUSED:
        assert rebuilt.hit.meta.version > 2 and rebuilt.hit.meta.labels["rule"] == "reference"
        assert rebuilt.hit.meta.labels["profiled_modes"] == "0" and any("rebuilt" in n for n in rebuilt.notes)
    # ... and a new version gets a fresh number and becomes latest
    before = max(fresh.latest_version(*NANO), 2)
    new = fresh.put(variant(ref_state, *NANO, kind="transfer", created_at=ref_state.created_at + 99))
    assert new.version > before and fresh.get(*NANO).meta.artifact_id == new.artifact_id
    assert fresh.append_profile(*NANO, nano_profile.head(2)) == 2  # the profile takes new samples
    counted = fresh.stats()["corrupt_refused" if kind in VALUE_DAMAGE else "index_invalid"]
    assert counted >= 1, fresh.stats()
    assert any(r.levelno == logging.WARNING for r in caplog.records)


# ---------------------------------------------------------------------- profile compaction
def test_profile_chunks_are_compacted_keeping_every_sample(make_store: Callable[..., BackendStore],
                                                           ref_profile: pd.DataFrame) -> None:
    store = make_store(compact_chunks=8)
    chunks = [encode_profile_frame(ref_profile.iloc[i:i + 2].assign(source="round"), device_type=REF[0],
                                   workload=REF[1], knobs=list(ref_profile.columns[:4])) for i in range(0, 80, 2)]
    for c in chunks:  # one chunk per round, like a coordinator feeding observations
        store.append_profile_chunk(c)
        assert len(store.profile_chunks(*REF)) <= 9  # never grows past the threshold + 1
    back = store.get_profile(*REF)
    knobs = list(ref_profile.columns[:4])
    np.testing.assert_allclose(back[knobs].to_numpy(float), ref_profile.head(80)[knobs].to_numpy(float))
    np.testing.assert_allclose(back.time_ms, ref_profile.time_ms.head(80))  # same samples, same order
    assert store.stats()["compactions"] >= 4
    digests = store.profile_digests(*REF)
    assert all(chunk_digest(c) in digests for c in chunks)  # a replayed chunk is still recognised
    result = store.import_values([], chunks[:3])
    assert (result.added_chunks, result.skipped_chunks) == (0, 3) and len(store.get_profile(*REF)) == 80


def test_compaction_under_concurrent_appends_loses_nothing(make_store: Callable[..., BackendStore],
                                                           ref_profile: pd.DataFrame) -> None:
    stores = [make_store(compact_chunks=4) for _ in range(3)]
    knobs = list(ref_profile.columns[:4])

    def feed(i: int) -> None:
        for j in range(12):
            rows = ref_profile.iloc[[(i * 12 + j) % len(ref_profile)]].assign(device_unit=i, timestamp=float(j))
            stores[i].append_profile(*REF, rows, knobs=knobs)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = stores[0].get_profile(*REF)
    assert len(back) == 36 and len(stores[0].profile_chunks(*REF)) <= 5
    for unit in range(3):  # each writer's samples all there, in its own order
        assert list(back[back.device_unit == unit].timestamp) == [float(j) for j in range(12)]
