"""Fixtures of the store suite: both backends, tiny predictors, simulated boards.

Every backend test runs twice: on the embedded SQLite store (a temp file) and on the real
Redis at ``REDIS_URL`` in a namespace of its own, dropped afterwards.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coordinator.store.base import ArtifactMeta, BackendStore
from coordinator.store.builder import BuildSettings
from coordinator.store.collect import DeviceCollector, ProfilingCost
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.predictor import PowerTrainPredictor, PredictorState
from powertrain.profiler import ProfileSettings, profile
from powertrain.sampling import sample_modes

#: Small enough that a reference fit takes well under a second.
TINY_PARAMS: dict[str, Any] = {"fit_steps": 60, "members": 2, "hidden": (16, 8), "transfer_steps": 30,
                               "cv_folds": 3}
FAST_PROFILE = ProfileSettings(minibatches=5, warmup_minibatches=1, warmup_s=0)
TINY_BUILD = BuildSettings(k=12, reference_k=100, predictor_params=TINY_PARAMS,
                           poll_s=0.02)


def collector(device_type: str, boards: int = 1, first_unit: int = 0) -> DeviceCollector:
    """Simulated boards of one type."""
    return DeviceCollector([SimulatedJetson(device_type, unit=first_unit + u, seed=1) for u in range(boards)],
                           FAST_PROFILE)


class CountingCollector:
    """A collector that counts its calls (and can be slowed down to widen races)."""

    def __init__(self, inner: DeviceCollector, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.calls = 0
        self.delay_s = delay_s
        self.device_type = inner.device_type
        self.last_cost: ProfilingCost | None = None

    def boards(self) -> int:
        return self.inner.boards()

    def collect(self, workload: str, modes: pd.DataFrame) -> pd.DataFrame:
        import time

        self.calls += 1
        time.sleep(self.delay_s)
        frame = self.inner.collect(workload, modes)
        self.last_cost = self.inner.last_cost
        return frame


@pytest.fixture(scope="session")
def ref_profile() -> pd.DataFrame:
    """100 profiled modes of the reference pair."""
    modes = sample_modes(get_space("orin-agx").modes("powertrain"), 100, strategy="spacefill")
    return profile(SimulatedJetson("orin-agx", seed=1), "resnet18-imagenet", modes, FAST_PROFILE).frame


@pytest.fixture(scope="session")
def ref_state(ref_profile: pd.DataFrame) -> PredictorState:
    """A tiny reference predictor (orin-agx / resnet18-imagenet)."""
    return PowerTrainPredictor(**TINY_PARAMS).fit(ref_profile).to_state()


def variant(state: PredictorState, device_type: str | None = None, workload: str | None = None,
            **changes: Any) -> PredictorState:
    """A copy of ``state`` for another pair (a distinct artifact: created_at differs)."""
    return dataclasses.replace(state, device_type=device_type or state.device_type,
                               workload=workload or state.workload,
                               created_at=changes.pop("created_at", state.created_at + 1.0 + len(changes)),
                               **changes)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend name; ``make_store`` opens stores of it."""
    return str(request.param)


@pytest.fixture()
def make_store(backend: str, tmp_path: Path, redis_url: str) -> Iterator[Callable[..., BackendStore]]:
    """Open a store of the current backend (same file / namespace on every call)."""
    namespace = f"powerfleet:test:{uuid.uuid4().hex[:12]}"
    opened: list[BackendStore] = []

    def make(**options: Any) -> BackendStore:
        store: BackendStore
        if backend == "local":
            store = LocalModelStore(tmp_path / "store.sqlite", **options)
        else:
            store = RedisModelStore(redis_url, namespace=namespace, **options)
        opened.append(store)
        return store

    yield make
    if backend == "redis":
        cleaner = RedisModelStore(redis_url, namespace=namespace)
        cleaner.drop_namespace()
        assert not list(cleaner.client.scan_iter(match=f"{namespace}:*")), "namespace not cleaned up"
        cleaner.close()
    for s in opened:
        s.close()


@pytest.fixture()
def store(make_store: Callable[..., BackendStore]) -> BackendStore:
    """A fresh, empty store of the current backend."""
    return make_store()


def overwrite_blob(store: BackendStore, meta: ArtifactMeta, data: bytes) -> None:
    """Fault injection: replace a version's stored bytes behind the store's back."""
    if isinstance(store, RedisModelStore):
        store.client.set(store.key("blob", meta.device_type, meta.workload, meta.version), data)
        return
    assert isinstance(store, LocalModelStore)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE versions SET data=? WHERE device_type=? AND workload=? AND version=?",
                     (data, meta.device_type, meta.workload, meta.version))


def raw_blob(store: BackendStore, meta: ArtifactMeta) -> bytes:
    """The stored bytes of a version, read behind the store's back."""
    if isinstance(store, RedisModelStore):
        data = store.client.get(store.key("blob", meta.device_type, meta.workload, meta.version))
        assert data is not None
        return bytes(data)
    assert isinstance(store, LocalModelStore)
    with sqlite3.connect(store.path) as conn:
        row = conn.execute("SELECT data FROM versions WHERE device_type=? AND workload=? AND version=?",
                           (meta.device_type, meta.workload, meta.version)).fetchone()
    return bytes(row[0])


@pytest.fixture(scope="session")
def nano_profile() -> pd.DataFrame:
    """12 profiled modes of orin-nano / lstm-wikitext (the builder's k in TINY_BUILD)."""
    modes = sample_modes(get_space("orin-nano").modes("powertrain"), 12, strategy="spacefill")
    return profile(SimulatedJetson("orin-nano", seed=1), "lstm-wikitext", modes, FAST_PROFILE).frame


#: Index damage the tampering suite injects, as (name, what it stands for). Each has a
#: realisation on both backends (:func:`tamper`).
TAMPER_KINDS: dict[str, str] = {
    "latest-not-int": "the pointer to the latest version is not an integer",
    "latest-dangling": "the latest pointer names a version that is not stored",
    "seq-not-int": "the version allocator is not an integer",
    "seq-behind": "the version allocator is behind the stored versions",
    "n-samples": "a metadata field (n_samples) is not an integer",
    "created-at": "a metadata field (created_at) is not a number",
    "meta-missing": "the metadata record is missing or blank",
    "id-garbage": "the record's artifact id is not a digest",
    "id-swapped": "the record names another version's artifact id",
    "labels-garbage": "the labels are not JSON",
    "pairs-member": "the pair index holds malformed members",
    "versions-member": "the versions index holds a non-integer version",
    "id-member": "the artifact-id index holds malformed members",
    "blob-missing": "the artifact bytes are missing",
    "blob-flip": "a byte of the artifact is flipped",
    "chunk-flip": "a byte of a profile chunk is flipped",
    "profiles-index": "the profile index holds malformed entries",
}


def _sql(store: LocalModelStore, statement: str, *args: Any) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(statement, args)


def tamper(store: BackendStore, kind: str, v1: ArtifactMeta, v2: ArtifactMeta) -> None:
    """Damage the index (or bytes) of pair ``v2.pair`` (versions v1 < v2) behind the store's back."""
    dt, wl = v2.pair
    if isinstance(store, RedisModelStore):
        r, k = store.client, store.key
        actions: dict[str, Callable[[], object]] = {
            "latest-not-int": lambda: r.hset(k("pair", dt, wl), "latest", "abc"),
            "latest-dangling": lambda: r.hset(k("pair", dt, wl), "latest", "99"),
            "seq-not-int": lambda: r.hset(k("pair", dt, wl), "seq", "abc"),
            "seq-behind": lambda: r.hset(k("pair", dt, wl), "seq", "0"),
            "n-samples": lambda: r.hset(k("meta", dt, wl, 2), "n_samples", "abc"),
            "created-at": lambda: r.hset(k("meta", dt, wl, 2), "created_at", "x"),
            "meta-missing": lambda: r.delete(k("meta", dt, wl, 2)),
            "id-garbage": lambda: r.hset(k("meta", dt, wl, 2), "artifact_id", "nope"),
            "id-swapped": lambda: r.hset(k("meta", dt, wl, 2), "artifact_id", v1.artifact_id),
            "labels-garbage": lambda: r.hset(k("meta", dt, wl, 2), "labels", "{not json"),
            "pairs-member": lambda: r.sadd(k("pairs"), "nocolon", "bad name:x", f"{dt}:"),
            "versions-member": lambda: r.zadd(k("versions", dt, wl), {"abc": 50, "7.5": 7.5}),
            "id-member": lambda: r.sadd(k("id", v1.artifact_id), "garbage", f"{dt}:{wl}:2", "a:b:c:d"),
            "blob-missing": lambda: r.delete(k("blob", dt, wl, 2)),
            "blob-flip": lambda: overwrite_blob(store, v2, _flip(raw_blob(store, v2))),
            "chunk-flip": lambda: r.lset(k("profile", dt, wl), 0,
                                         _flip(bytes(r.lindex(k("profile", dt, wl), 0) or b""))),
            "profiles-index": lambda: (r.hset(k("profiles"), "nocolon", "[]"),
                                       r.hset(k("profiles"), f"{dt}:{wl}", "not json")),
        }
        actions[kind]()
        return
    assert isinstance(store, LocalModelStore)
    where = "device_type=? AND workload=? AND version=2"
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "latest-not-int": (f"UPDATE versions SET version='abc' WHERE {where}", (dt, wl)),
        "latest-dangling": (f"UPDATE versions SET version=99 WHERE {where}", (dt, wl)),
        "seq-not-int": ("UPDATE pairs SET seq='abc' WHERE device_type=? AND workload=?", (dt, wl)),
        "seq-behind": ("UPDATE pairs SET seq=0 WHERE device_type=? AND workload=?", (dt, wl)),
        "n-samples": (f"UPDATE versions SET n_samples='abc' WHERE {where}", (dt, wl)),
        "created-at": (f"UPDATE versions SET created_at='x' WHERE {where}", (dt, wl)),
        "meta-missing": (f"UPDATE versions SET artifact_id='', kind='', parent_id='', n_samples='', created_at='', "
                         f"stored_at='', size_bytes='', labels='' WHERE {where}", (dt, wl)),
        "id-garbage": (f"UPDATE versions SET artifact_id='nope' WHERE {where}", (dt, wl)),
        "id-swapped": (f"UPDATE versions SET artifact_id=? WHERE {where}", (v1.artifact_id, dt, wl)),
        "labels-garbage": (f"UPDATE versions SET labels='{{not json' WHERE {where}", (dt, wl)),
        "pairs-member": ("INSERT INTO versions SELECT 'bad:name', workload, version, artifact_id, kind, parent_id, "
                         "n_samples, created_at, stored_at, size_bytes, labels, data FROM versions WHERE "
                         "device_type=? AND workload=? AND version=1", (dt, wl)),
        "versions-member": ("INSERT INTO versions SELECT device_type, workload, 'abc', artifact_id, kind, "
                            "parent_id, n_samples, created_at, stored_at, size_bytes, labels, data FROM versions "
                            "WHERE device_type=? AND workload=? AND version=1", (dt, wl)),
        "id-member": ("INSERT INTO versions SELECT device_type, 'a/b', version, artifact_id, kind, parent_id, "
                      "n_samples, created_at, stored_at, size_bytes, labels, data FROM versions WHERE "
                      "device_type=? AND workload=? AND version=1", (dt, wl)),
        "blob-missing": (f"UPDATE versions SET data=X'' WHERE {where}", (dt, wl)),
        "profiles-index": ("UPDATE profiles SET knobs='not json' WHERE device_type=? AND workload=?", (dt, wl)),
    }
    if kind == "blob-flip":
        overwrite_blob(store, v2, _flip(raw_blob(store, v2)))
    elif kind == "chunk-flip":
        with sqlite3.connect(store.path) as conn:
            seq, data = conn.execute("SELECT seq, data FROM profiles WHERE device_type=? AND workload=? "
                                     "ORDER BY seq LIMIT 1", (dt, wl)).fetchone()
            conn.execute("UPDATE profiles SET data=? WHERE seq=?", (_flip(bytes(data)), seq))
    else:
        statement, args = statements[kind]
        _sql(store, statement, *args)


def _flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:]


def craft(data: bytes, mutate: Callable[[Any], None]) -> bytes:
    """An artifact whose payload ``mutate`` changed, re-digested: valid bytes, possibly no meaning."""
    from powerfleet.serde import digest_of
    from powerfleet.v1 import powerfleet_pb2 as pb

    artifact = pb.PredictorArtifact()
    artifact.ParseFromString(data)
    payload = pb.PredictorPayload()
    payload.ParseFromString(artifact.payload)
    mutate(payload)
    raw = payload.SerializeToString(deterministic=True)
    artifact.payload = raw
    artifact.digest = digest_of(raw)
    return bytes(artifact.SerializeToString(deterministic=True))


def nan_weight(payload: Any) -> None:
    """Mutation: the first weight of the time network becomes NaN."""
    import numpy as np

    tensor = payload.targets[0].components[0].network.weights[0]
    values = np.frombuffer(tensor.data, dtype="<" + ("f4" if tensor.dtype == "float32" else "f8")).copy()
    values[0] = np.nan
    tensor.data = values.tobytes()


def wrong_shape(payload: Any) -> None:
    """Mutation: the first weight tensor claims a shape its data does not have."""
    tensor = payload.targets[0].components[0].network.weights[0]
    tensor.shape[-1] = tensor.shape[-1] * 2


def wrong_architecture(payload: Any) -> None:
    """Mutation: the settings declare other hidden widths than the tensors have."""
    import json

    settings = json.loads(payload.settings_json)
    settings["hidden"] = [w * 2 for w in settings["hidden"]]
    payload.settings_json = json.dumps(settings, sort_keys=True)
