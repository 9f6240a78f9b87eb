"""The catalogue of store damage the tests and ``bench/faults.py`` inject, on both backends.

Everything here works behind the store's back (raw Redis commands, raw SQL), the way a bug,
an operator or a half-finished write would. No pytest needed, so the benchmark imports it.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from typing import Any

from coordinator.store.base import ArtifactMeta, BackendStore
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore


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


_UNIQUE = itertools.count(1)  # repeated damage to one pair must not collide with the previous one


def _sql(store: LocalModelStore, statement: str, *args: Any) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(statement, args)


def tamper(store: BackendStore, kind: str, older: ArtifactMeta, newer: ArtifactMeta) -> None:
    """Damage the index (or bytes) of the latest version ``newer`` of a pair (``older``: a previous
    version of the same pair) behind the store's back."""
    dt, wl = newer.pair
    v = newer.version
    n = next(_UNIQUE)
    if isinstance(store, RedisModelStore):
        r, k = store.client, store.key
        actions: dict[str, Callable[[], object]] = {
            "latest-not-int": lambda: r.hset(k("pair", dt, wl), "latest", "abc"),
            "latest-dangling": lambda: r.hset(k("pair", dt, wl), "latest", str(v + 97)),
            "seq-not-int": lambda: r.hset(k("pair", dt, wl), "seq", "abc"),
            "seq-behind": lambda: r.hset(k("pair", dt, wl), "seq", "0"),
            "n-samples": lambda: r.hset(k("meta", dt, wl, v), "n_samples", "abc"),
            "created-at": lambda: r.hset(k("meta", dt, wl, v), "created_at", "x"),
            "meta-missing": lambda: r.delete(k("meta", dt, wl, v)),
            "id-garbage": lambda: r.hset(k("meta", dt, wl, v), "artifact_id", "nope"),
            "id-swapped": lambda: r.hset(k("meta", dt, wl, v), "artifact_id", older.artifact_id),
            "labels-garbage": lambda: r.hset(k("meta", dt, wl, v), "labels", "{not json"),
            "pairs-member": lambda: r.sadd(k("pairs"), "nocolon", "bad name:x", f"{dt}:"),
            "versions-member": lambda: r.zadd(k("versions", dt, wl), {"abc": 50, "7.5": 7.5}),
            "id-member": lambda: r.sadd(k("id", older.artifact_id), "garbage", f"{dt}:{wl}:{v}", "a:b:c:d"),
            "blob-missing": lambda: r.delete(k("blob", dt, wl, v)),
            "blob-flip": lambda: overwrite_blob(store, newer, _flip(raw_blob(store, newer))),
            "chunk-flip": lambda: r.lset(k("profile", dt, wl), 0,
                                         _flip(bytes(r.lindex(k("profile", dt, wl), 0) or b""))),
            "profiles-index": lambda: (r.hset(k("profiles"), "nocolon", "[]"),
                                       r.hset(k("profiles"), f"{dt}:{wl}", "not json")),
        }
        actions[kind]()
        return
    assert isinstance(store, LocalModelStore)
    where = f"device_type=? AND workload=? AND version={newer.version}"
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "latest-not-int": (f"UPDATE versions SET version=? WHERE {where}", (f"abc{n}", dt, wl)),
        "latest-dangling": (f"UPDATE versions SET version=? WHERE {where}", (v + 97 + 1000 * n, dt, wl)),
        "seq-not-int": ("UPDATE pairs SET seq='abc' WHERE device_type=? AND workload=?", (dt, wl)),
        "seq-behind": ("UPDATE pairs SET seq=0 WHERE device_type=? AND workload=?", (dt, wl)),
        "n-samples": (f"UPDATE versions SET n_samples='abc' WHERE {where}", (dt, wl)),
        "created-at": (f"UPDATE versions SET created_at='x' WHERE {where}", (dt, wl)),
        "meta-missing": (f"UPDATE versions SET artifact_id='', kind='', parent_id='', n_samples='', created_at='', "
                         f"stored_at='', size_bytes='', labels='' WHERE {where}", (dt, wl)),
        "id-garbage": (f"UPDATE versions SET artifact_id='nope' WHERE {where}", (dt, wl)),
        "id-swapped": (f"UPDATE versions SET artifact_id=? WHERE {where}", (older.artifact_id, dt, wl)),
        "labels-garbage": (f"UPDATE versions SET labels='{{not json' WHERE {where}", (dt, wl)),
        "pairs-member": ("INSERT OR IGNORE INTO versions SELECT 'bad:name', workload, version, artifact_id, kind, "
                         "parent_id, n_samples, created_at, stored_at, size_bytes, labels, data FROM versions WHERE "
                         "device_type=? AND workload=? AND version=?", (dt, wl, older.version)),
        "versions-member": ("INSERT OR IGNORE INTO versions SELECT device_type, workload, 'abc', artifact_id, kind, "
                            "parent_id, n_samples, created_at, stored_at, size_bytes, labels, data FROM versions "
                            "WHERE device_type=? AND workload=? AND version=?", (dt, wl, older.version)),
        "id-member": ("INSERT OR IGNORE INTO versions SELECT device_type, 'a/b', version, artifact_id, kind, "
                      "parent_id, n_samples, created_at, stored_at, size_bytes, labels, data FROM versions WHERE "
                      "device_type=? AND workload=? AND version=?", (dt, wl, older.version)),
        "blob-missing": (f"UPDATE versions SET data=X'' WHERE {where}", (dt, wl)),
        "profiles-index": ("UPDATE profiles SET knobs='not json' WHERE device_type=? AND workload=?", (dt, wl)),
    }
    if kind == "blob-flip":
        overwrite_blob(store, newer, _flip(raw_blob(store, newer)))
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
