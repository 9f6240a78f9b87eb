"""The ``ModelStore`` interface: one predictor per (device type, workload), versioned.

A store keeps, for every (device type, workload) *pair*, an append-only list of immutable
predictor artifacts (protobuf bytes with a sha256 digest, see ``powerfleet/serde.py``) numbered
1, 2, 3, ... and a ``latest`` pointer; plus the pair's *profile*, the measured samples the
predictors were built from. Artifact ids are payload digests, so the same predictor has the
same id in every store; version numbers are per store.

:class:`ModelStore` states the contract (Flower style: an ABC whose method docstrings are the
spec). :class:`BackendStore` implements the parts every real backend shares on top of a few
primitives: verification of every load, the refusal counter, the in-process cache of decoded
predictors and the build locks. ``RedisModelStore`` and ``LocalModelStore`` derive from it;
``FallbackModelStore`` wraps two stores.
"""

from __future__ import annotations

import abc
import json
import logging
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import wraps
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from coordinator.store.errors import ArtifactNotFoundError, CorruptArtifactError, StoreError
from powerfleet.serde import (
    MAX_ARTIFACT_BYTES,
    ArtifactError,
    ArtifactInfo,
    ProfileInfo,
    encode_predictor,
    encode_profile_frame,
    inspect_predictor,
    inspect_profile,
    load_predictor,
)
from powertrain.errors import InvalidParameterError, PowerfleetError
from powertrain.predictor.state import PredictorState
from powertrain.space import ModeSpace

log = logging.getLogger("powerfleet.store")
P = ParamSpec("P")
R = TypeVar("R")

#: Device type, workload and lock names: letters, digits and ``. _ + -`` (no ``:`` or ``/``,
#: which the Redis keys and the CLI use as separators).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
#: Profile columns that are not knobs.
PROFILE_META_COLUMNS = ("time_ms", "power_w", "device_unit", "timestamp", "source", "device", "workload")
#: Default bound of the in-process cache of decoded predictors.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


def check_name(field_name: str, value: str) -> str:
    """Return ``value`` if it is a valid device type / workload / lock name, else raise one line."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidParameterError(
            f"{field_name} {value!r} is not a valid name; use 1-128 letters, digits or . _ + - "
            "(starting with a letter or digit)")
    return value


def translating_errors(
        translate: Callable[[Any, Exception], PowerfleetError | None]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator for backend methods that turns library errors into one-line store errors.

    ``translate(store, exc)`` gives the error to raise instead (``None``: let ``exc`` pass);
    powerfleet's own errors always pass unchanged.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except PowerfleetError:
                raise
            except Exception as exc:
                translated = translate(args[0], exc)
                if translated is None:
                    raise
                raise translated from None

        return wrapper

    return decorate


def check_version(version: int) -> int:
    """Return ``version`` if it is a positive integer, else raise one line."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidParameterError(f"version must be a positive integer; got {version!r}")
    return version


def pair_label(device_type: str, workload: str, version: int | None = None) -> str:
    """``orin-nano/lstm-wikitext`` or ``orin-nano/lstm-wikitext v3`` for messages."""
    return f"{device_type}/{workload}" + ("" if version is None else f" v{version}")


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Validate store labels: short lowercase keys, string values."""
    out: dict[str, str] = {}
    for k, v in (labels or {}).items():
        if not isinstance(k, str) or not _LABEL_KEY_RE.match(k):
            raise InvalidParameterError(
                f"label key {k!r} must be 1-64 of a-z 0-9 _ . - starting with a letter")
        if not isinstance(v, str) or len(v) > 1024:
            raise InvalidParameterError(f"label {k}: value must be a string of at most 1024 characters")
        out[k] = v
    return out


@dataclass(frozen=True)
class ArtifactMeta:
    """What the store knows about one version of a pair (no tensors)."""

    device_type: str
    workload: str
    version: int
    artifact_id: str  # "sha256:<hex>" of the payload; the same in every store
    kind: str  # "reference" | "transfer" | "scratch" (the artifact's made_by)
    parent_id: str  # artifact id of the predictor it was transferred from ("" for none)
    n_samples: int  # profiled modes it was fitted on
    created_at: float  # unix seconds, when the predictor was made
    stored_at: float  # unix seconds, when this store received it
    size_bytes: int
    labels: Mapping[str, str] = field(default_factory=dict)  # build rule, source, cost, ...

    @property
    def pair(self) -> tuple[str, str]:
        """(device_type, workload)."""
        return (self.device_type, self.workload)

    @property
    def label(self) -> str:
        """``device/workload vN`` for messages."""
        return pair_label(self.device_type, self.workload, self.version)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {"device_type": self.device_type, "workload": self.workload, "version": self.version,
                "artifact_id": self.artifact_id, "kind": self.kind, "parent_id": self.parent_id,
                "n_samples": self.n_samples, "created_at": self.created_at, "stored_at": self.stored_at,
                "size_bytes": self.size_bytes, "labels": dict(self.labels)}

    @classmethod
    def from_info(cls, info: ArtifactInfo, version: int, stored_at: float,
                  labels: Mapping[str, str]) -> ArtifactMeta:
        """Metadata of a verified artifact stored as ``version``."""
        return cls(info.device_type, info.workload, version, info.artifact_id, info.kind, info.parent_id,
                   info.n_samples, info.created_at, stored_at, info.size_bytes, dict(labels))

    def encode_labels(self) -> str:
        """Labels as a JSON object string (how backends persist them)."""
        return json.dumps(dict(self.labels), sort_keys=True)


def decode_labels(text: str | bytes | None) -> dict[str, str]:
    """Labels persisted by :meth:`ArtifactMeta.encode_labels` (bad JSON reads as no labels)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


@dataclass(frozen=True)
class StoredPredictor:
    """A verified predictor and its metadata."""

    meta: ArtifactMeta
    state: PredictorState


@dataclass(frozen=True)
class LineageEntry:
    """One ancestor on a lineage chain; ``meta`` is None when the store does not hold it."""

    artifact_id: str
    meta: ArtifactMeta | None


@dataclass(frozen=True)
class HistoryEntry:
    """One version of a pair and the chain of its ancestors (parent first)."""

    meta: ArtifactMeta
    ancestors: tuple[LineageEntry, ...]


class LockHandle:
    """A held store lock. Renews its expiry in the background until released, so a long build
    (hours of profiling on real boards) keeps it, while a crashed holder's lock expires."""

    def __init__(self, store: BackendStore, name: str, token: str, ttl_s: float, renew: bool = True) -> None:
        self.store = store
        self.name = name
        self.token = token
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None
        if renew:
            self._thread = threading.Thread(target=self._renew, name=f"lock-renew:{name}", daemon=True)
            self._thread.start()

    @property
    def lost(self) -> bool:
        """True if the lock expired or was taken over while held."""
        return self._lost

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3.0):
            try:
                ok = self.store._extend_lock(self.name, self.token, self.ttl_s)
            except StoreError as exc:
                log.warning("could not renew lock %s: %s", self.name, exc)
                continue
            if not ok:
                self._lost = True
                log.warning("lock %s expired while held; another builder may start", self.name)
                return

    def extend(self) -> bool:
        """Push the expiry ``ttl_s`` into the future now; False if the lock is no longer ours."""
        ok = self.store._extend_lock(self.name, self.token, self.ttl_s)
        self._lost = self._lost or not ok
        return ok

    def release(self) -> bool:
        """Release the lock if it is still ours (compare-and-delete); idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            return self.store._unlock(self.name, self.token)
        except StoreError as exc:
            log.warning("could not release lock %s (it expires by itself): %s", self.name, exc)
            return False

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class ModelStore(abc.ABC):
    """A versioned store of predictor artifacts and profiles, keyed by (device type, workload).

    Contract shared by every backend (checked by ``tests/store/test_contract.py``):

    * ``put`` never overwrites: it appends a new immutable version (1, 2, ...) to the pair and
      moves the pair's ``latest`` pointer atomically; version numbers are never reused, even
      after a delete. Concurrent puts to one pair get distinct versions.
    * Every load verifies the artifact (magic, format, sha256 digest, and that it belongs to
      the pair and version asked for); a value that fails is refused whole with
      :class:`CorruptArtifactError` and counted in ``stats()["corrupt_refused"]``.
    * A failing operation leaves everything already stored intact.
    * Device types and workloads are names (:data:`NAME_RE`); bad ones raise one line.
    """

    # ------------------------------------------------------------------ identity
    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where the store lives (a URL with any password redacted), for messages."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Return if the store answers, else raise StoreUnavailableError (one line)."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters of this store object: ``corrupt_refused``, ``puts``, ``cache_hits``, ..."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store must not be used afterwards."""

    def __enter__(self) -> ModelStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ artifacts
    @abc.abstractmethod
    def put_artifact(self, data: bytes, *, labels: Mapping[str, str] | None = None) -> ArtifactMeta:
        """Verify ``data`` (a serialized predictor artifact) and append it to its pair.

        The pair is read from the artifact itself. Returns the new version's metadata. Raises
        ArtifactError for bytes that are not a valid artifact and StoreError for one above
        the store's size bound; in both cases nothing is written.
        """

    @abc.abstractmethod
    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata of ``version`` (default: latest) of a pair; ArtifactNotFoundError if absent."""

    @abc.abstractmethod
    def get_artifact(self, device_type: str, workload: str,
                     version: int | None = None) -> tuple[ArtifactMeta, bytes]:
        """Metadata and *verified* bytes of ``version`` (default: latest) of a pair.

        Raises ArtifactNotFoundError if absent and CorruptArtifactError (counted) if the stored
        bytes fail verification.
        """

    @abc.abstractmethod
    def get(self, device_type: str, workload: str, version: int | None = None) -> StoredPredictor:
        """The verified, decoded predictor ``version`` (default: latest) of a pair.

        Same errors as :meth:`get_artifact`. Backends may serve it from an in-process cache
        keyed by artifact id (ids are digests, so such a cache cannot go stale).
        """

    @abc.abstractmethod
    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Every stored version of a pair, oldest first ([] for an unknown pair)."""

    @abc.abstractmethod
    def list_pairs(self) -> list[ArtifactMeta]:
        """The latest version of every pair, sorted by (device type, workload)."""

    @abc.abstractmethod
    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Every version (of any pair) holding the artifact ``artifact_id``, oldest first."""

    @abc.abstractmethod
    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete one version, or (``version=None``) every version of the pair.

        Returns what was deleted (ArtifactNotFoundError if nothing matched). Deleting the
        latest version moves ``latest`` back to the highest remaining one. The pair's profile
        is kept (measurements are expensive) unless ``profile`` is True and the whole pair
        is deleted.
        """

    # ------------------------------------------------------------------ profiles
    @abc.abstractmethod
    def append_profile_chunk(self, data: bytes) -> int:
        """Verify ``data`` (an encoded Profile) and append it to its pair's profile.

        Returns the number of samples appended. All chunks of a pair must name the same
        knobs, in the same order (else InvalidParameterError, nothing written).
        """

    @abc.abstractmethod
    def profile_chunks(self, device_type: str, workload: str) -> list[bytes]:
        """The verified encoded chunks of a pair's profile, in append order ([] if none)."""

    @abc.abstractmethod
    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs that have a profile, sorted."""

    # ------------------------------------------------------------------ locks
    @abc.abstractmethod
    def acquire_lock(self, name: str, ttl_s: float = 30.0, *, renew: bool = True) -> LockHandle | None:
        """Try once to take the lock ``name``; None if someone else holds it.

        Locks expire ``ttl_s`` after the last renewal, so a crashed holder cannot block others
        forever; the handle renews in the background while held (``renew``). Release is
        compare-and-delete: only the holder's token can release it.
        """

    # ------------------------------------------------------------------ conveniences
    def put(self, state: PredictorState, *, space: ModeSpace | None = None,
            labels: Mapping[str, str] | None = None) -> ArtifactMeta:
        """Encode ``state`` as an artifact and append it to its pair (see :meth:`put_artifact`)."""
        return self.put_artifact(encode_predictor(state, space), labels=labels)

    def latest(self, device_type: str, workload: str) -> ArtifactMeta | None:
        """Metadata of the latest version of a pair, or None if the pair has none."""
        try:
            return self.meta(device_type, workload)
        except ArtifactNotFoundError:
            return None

    def append_profile(self, device_type: str, workload: str, frame: pd.DataFrame, *,
                       knobs: Sequence[str] | None = None, source: str = "profile") -> int:
        """Append samples to a pair's profile; returns how many.

        ``frame`` has the knob columns (``knobs``, default: every column that is not one of
        :data:`PROFILE_META_COLUMNS`), ``time_ms`` and ``power_w``, and optionally
        ``device_unit``, ``timestamp`` and ``source`` per row (``source`` defaults to the
        argument: "profile", or "round" for samples observed during FL rounds).
        """
        check_name("device type", device_type)
        check_name("workload", workload)
        knob_list = profile_knobs(frame, knobs)
        if len(frame) == 0:
            return 0
        for col in ("time_ms", "power_w"):
            if col not in frame.columns:
                raise InvalidParameterError(f"profile for {pair_label(device_type, workload)}: missing "
                                            f"column {col}; needs {', '.join(knob_list)}, time_ms, power_w")
        data = encode_profile_frame(frame, device_type=device_type, workload=workload, knobs=knob_list,
                                    source=source)
        return self.append_profile_chunk(data)

    def get_profile(self, device_type: str, workload: str) -> pd.DataFrame:
        """Every sample of a pair's profile, in append order (an empty frame if none)."""
        from powerfleet.serde import decode_profile_frame

        frames = [decode_profile_frame(c, f"profile of {pair_label(device_type, workload)}")
                  for c in self.profile_chunks(device_type, workload)]
        if not frames:
            return pd.DataFrame(columns=["time_ms", "power_w", "device_unit", "timestamp", "source"])
        return pd.concat(frames, ignore_index=True)

    def get_profile_tail(self, device_type: str, workload: str, rows: int, source: str | None = None) -> pd.DataFrame:
        """The newest ``rows`` samples of a pair (of ``source`` only, if given), oldest first.

        Decodes chunks from the newest backwards and stops once enough rows are found, so the
        cost does not grow with the length of the pair's history.
        """
        from powerfleet.serde import decode_profile_frame

        frames: list[pd.DataFrame] = []
        found = 0
        for chunk in reversed(self.profile_chunks(device_type, workload)):
            frame = decode_profile_frame(chunk, f"profile of {pair_label(device_type, workload)}")
            if source is not None:
                frame = frame[frame["source"] == source]
            frames.append(frame)
            found += len(frame)
            if found >= rows:
                break
        if not frames:
            return pd.DataFrame(columns=["time_ms", "power_w", "device_unit", "timestamp", "source"])
        return pd.concat(frames[::-1], ignore_index=True).tail(rows).reset_index(drop=True)

    def lineage(self, artifact_id: str, *, max_depth: int = 64) -> list[LineageEntry]:
        """The ancestors of an artifact, parent first, following parent ids across pairs.

        Stops at a root (no parent) or at a parent this store does not hold (its entry has
        ``meta=None``).
        """
        chain: list[LineageEntry] = []
        seen = {artifact_id}
        current = self.find(artifact_id)
        parent = current[0].parent_id if current else ""
        while parent and len(chain) < max_depth and parent not in seen:
            seen.add(parent)
            found = self.find(parent)
            chain.append(LineageEntry(parent, found[0] if found else None))
            if not found:
                break
            parent = found[0].parent_id
        return chain

    def history(self, device_type: str, workload: str) -> list[HistoryEntry]:
        """Every version of a pair, newest first, each with its chain of ancestors."""
        out = []
        for m in reversed(self.versions(device_type, workload)):
            out.append(HistoryEntry(m, tuple(self.lineage(m.artifact_id))))
        return out


def profile_knobs(frame: pd.DataFrame, knobs: Sequence[str] | None = None) -> tuple[str, ...]:
    """The knob columns of a profile frame: ``knobs`` if given (checked), else the non-meta columns."""
    if knobs is not None:
        missing = [k for k in knobs if k not in frame.columns]
        if missing:
            raise InvalidParameterError(f"profile: missing knob column(s) {', '.join(missing)}; "
                                        f"found: {', '.join(map(str, frame.columns))}")
        return tuple(knobs)
    found = tuple(str(c) for c in frame.columns if c not in PROFILE_META_COLUMNS)
    if not found:
        raise InvalidParameterError("profile: no knob columns; expected knob columns besides "
                                    f"{', '.join(PROFILE_META_COLUMNS)}")
    return found


class _StateCache:
    """LRU cache of decoded predictors by artifact id, bounded by artifact bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[str, tuple[PredictorState, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> PredictorState | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, state: PredictorState, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (state, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, s) = self._items.popitem(last=False)
                self._bytes -= s

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class BackendStore(ModelStore):
    """What the Redis and SQLite backends share: verification, counters, cache and locks.

    Backends implement :meth:`_append`, :meth:`_read_blob` and the lock primitives, plus the
    listing and profile methods of :class:`ModelStore`.
    """

    def __init__(self, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 max_artifact_bytes: int = MAX_ARTIFACT_BYTES) -> None:
        if max_artifact_bytes < 1 or max_artifact_bytes > MAX_ARTIFACT_BYTES:
            raise InvalidParameterError(f"max_artifact_bytes must be in [1, {MAX_ARTIFACT_BYTES}]; "
                                        f"got {max_artifact_bytes}")
        self.max_artifact_bytes = int(max_artifact_bytes)
        self._cache = _StateCache(cache_bytes)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    # ------------------------------------------------------------------ counters
    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def stats(self) -> dict[str, int]:
        """Counters of this store object (``corrupt_refused``, ``puts``, ``gets``, ``cache_hits``...)."""
        with self._counts_lock:
            base = {"corrupt_refused": 0, "puts": 0, "gets": 0, "cache_hits": 0, "cache_misses": 0}
            return {**base, **self._counts}

    def clear_cache(self) -> None:
        """Drop every cached decoded predictor (the next get loads and verifies again)."""
        self._cache.clear()

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def _append(self, info: ArtifactInfo, data: bytes, labels: dict[str, str],
                stored_at: float) -> ArtifactMeta:
        """Store verified ``data`` as a new version of its pair and move ``latest``, atomically."""

    @abc.abstractmethod
    def _read_blob(self, meta: ArtifactMeta) -> bytes:
        """The stored bytes of a version, unverified (ArtifactNotFoundError if gone)."""

    @abc.abstractmethod
    def _try_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Take lock ``name`` with ``token`` if free or expired; True on success."""

    @abc.abstractmethod
    def _extend_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Renew the lock if ``token`` still holds it."""

    @abc.abstractmethod
    def _unlock(self, name: str, token: str) -> bool:
        """Delete the lock if ``token`` still holds it (compare-and-delete)."""

    # ------------------------------------------------------------------ shared implementation
    def put_artifact(self, data: bytes, *, labels: Mapping[str, str] | None = None) -> ArtifactMeta:
        """Verify and append ``data`` to its pair (see :meth:`ModelStore.put_artifact`)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidParameterError(f"artifact must be bytes; got {type(data).__name__}")
        data = bytes(data)
        info = inspect_predictor(data, "artifact to store")
        self._check_value("artifact", info.device_type, info.workload, len(data))
        meta = self._append(info, data, check_labels(labels), time.time())
        self._count("puts")
        return meta

    def _check_value(self, what: str, device_type: str, workload: str, size: int) -> None:
        """Refuse a value whose pair names are invalid or that exceeds the size limit."""
        check_name("device type", device_type)
        check_name("workload", workload)
        if size > self.max_artifact_bytes:
            raise StoreError(f"{what} for {pair_label(device_type, workload)} is {size} bytes; this store's "
                             f"limit is {self.max_artifact_bytes}")

    def _inspect_chunk(self, data: bytes) -> ProfileInfo:
        """A verified profile chunk's metadata (names and size checked)."""
        info = inspect_profile(data, "profile chunk")
        self._check_value("profile chunk", info.device_type, info.workload, len(data))
        return info

    def _refuse(self, meta: ArtifactMeta, reason: str) -> CorruptArtifactError:
        self._count("corrupt_refused")
        log.warning("refused %s in %s: %s", meta.label, self.url, reason)
        return CorruptArtifactError(f"{meta.label} in {self.url}: {reason}; refused")

    def _check(self, meta: ArtifactMeta, info: ArtifactInfo) -> None:
        if info.artifact_id != meta.artifact_id:
            raise self._refuse(meta, f"stored bytes are artifact {info.artifact_id[:19]}..., "
                                     f"the record says {meta.artifact_id[:19]}...")
        if (info.device_type, info.workload) != meta.pair:
            raise self._refuse(meta, "stored bytes belong to pair "
                                     f"{pair_label(info.device_type, info.workload)} (foreign value)")

    def get_artifact(self, device_type: str, workload: str,
                     version: int | None = None) -> tuple[ArtifactMeta, bytes]:
        """Metadata and verified bytes of a version (see :meth:`ModelStore.get_artifact`)."""
        meta = self.meta(device_type, workload, version)
        data = self._read_blob(meta)
        try:
            info = inspect_predictor(data, meta.label)
        except ArtifactError as exc:
            raise self._refuse(meta, _reason(exc, meta.label)) from None
        self._check(meta, info)
        return meta, data

    def get(self, device_type: str, workload: str, version: int | None = None) -> StoredPredictor:
        """The verified, decoded predictor (cached by artifact id; see :meth:`ModelStore.get`)."""
        meta = self.meta(device_type, workload, version)
        self._count("gets")
        cached = self._cache.get(meta.artifact_id)
        if cached is not None:
            self._count("cache_hits")
            return StoredPredictor(meta, cached)
        self._count("cache_misses")
        data = self._read_blob(meta)
        try:
            info, state = load_predictor(data, meta.label)
        except ArtifactError as exc:
            raise self._refuse(meta, _reason(exc, meta.label)) from None
        self._check(meta, info)
        self._cache.put(meta.artifact_id, state, len(data))
        return StoredPredictor(meta, state)

    def acquire_lock(self, name: str, ttl_s: float = 30.0, *, renew: bool = True) -> LockHandle | None:
        """Try once to take lock ``name`` (see :meth:`ModelStore.acquire_lock`)."""
        for part in name.split(":"):
            check_name("lock name part", part)
        if not ttl_s > 0:
            raise InvalidParameterError(f"lock ttl_s must be > 0; got {ttl_s}")
        token = secrets.token_hex(16)
        if not self._try_lock(name, token, float(ttl_s)):
            return None
        return LockHandle(self, name, token, float(ttl_s), renew=renew)


def _reason(exc: ArtifactError, what: str) -> str:
    """An ArtifactError's message without its leading ``what: ``."""
    text = str(exc)
    return text[len(what) + 2:] if text.startswith(what + ": ") else text
