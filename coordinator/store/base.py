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
import math
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
    chunk_digest,
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
#: A pair's profile is compacted (its chunks merged) once it has more chunks than this.
DEFAULT_COMPACT_CHUNKS = 32
#: An artifact id: ``sha256:`` and 64 lowercase hex digits.
ARTIFACT_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
#: What ``ArtifactMeta.kind`` may be (the artifact's made_by).
KINDS = ("reference", "transfer", "scratch")


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
    return parse_labels(text)[0]


def parse_labels(text: object) -> tuple[dict[str, str], str]:
    """Persisted labels and what is wrong with them ("" if nothing): a JSON object of strings."""
    if text is None or text in ("", b""):
        return {}, ""
    try:
        value = json.loads(text if isinstance(text, str | bytes) else str(text))
    except ValueError:
        return {}, "labels are not valid JSON"
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {}, "labels are not a JSON object of strings"
    return dict(value), ""


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _as_int(text: str | None, low: int) -> int | None:
    if text is None or not re.fullmatch(r"-?[0-9]{1,18}", text.strip()):
        return None
    value = int(text)
    return value if value >= low else None


def _as_float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def record_problems(fields: Mapping[str, object], device_type: str, workload: str,
                    version: int) -> tuple[list[str], dict[str, Any]]:
    """Check a persisted metadata record field by field.

    Returns the problems found (``["n_samples='abc' is not an integer >= 0", ...]``) and the
    fields that parsed, so a backend can report the record and rebuild it from the artifact.
    """
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for name, expected in (("device_type", device_type), ("workload", workload), ("version", str(version))):
        got = _text(fields.get(name))
        if got is None:
            problems.append(f"{name} is missing")
        elif got != expected:
            problems.append(f"{name}={got!r} does not match the record's key")
    checks: tuple[tuple[str, Callable[[str | None], Any], str], ...] = (
        ("artifact_id", lambda t: t if t is not None and ARTIFACT_ID_RE.match(t) else None, "is not sha256:<64 hex>"),
        ("kind", lambda t: t if t in KINDS else None, f"is not one of {', '.join(KINDS)}"),
        ("parent_id", lambda t: t if t is not None and (t == "" or ARTIFACT_ID_RE.match(t)) else None,
         "is not empty or sha256:<64 hex>"),
        ("n_samples", lambda t: _as_int(t, 0), "is not an integer >= 0"),
        ("created_at", _as_float, "is not a finite number"),
        ("stored_at", _as_float, "is not a finite number"),
        ("size_bytes", lambda t: _as_int(t, 1), "is not an integer >= 1"),
    )
    for name, parse, complaint in checks:
        raw = _text(fields.get(name))
        value = parse(raw)
        if value is None:
            problems.append(f"{name} is missing" if raw is None else f"{name}={raw[:40]!r} {complaint}")
        else:
            parsed[name] = value
    return problems, parsed


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


@dataclass(frozen=True)
class ImportResult:
    """What :meth:`ModelStore.import_values` added and skipped."""

    added: tuple[ArtifactMeta, ...] = ()
    skipped: int = 0  # artifacts the store already held for their pair
    added_chunks: int = 0
    skipped_chunks: int = 0  # chunks the store already held (by digest)


@dataclass(frozen=True)
class HealReport:
    """What :meth:`ModelStore.heal` found and did."""

    epoch_changed: bool = False  # the primary lost its data since this process last looked
    republished: int = 0  # artifacts re-published into the primary
    republished_chunks: int = 0  # profile chunks re-published into the primary
    written_back: int = 0  # journal entries written back
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True if anything was re-published or written back."""
        return bool(self.republished or self.republished_chunks or self.written_back)


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
        renewed = time.monotonic()
        while not self._stop.wait(self.ttl_s / 3.0):
            try:
                ok = self.store._extend_lock(self.name, self.token, self.ttl_s)
            except StoreError as exc:
                if time.monotonic() - renewed > self.ttl_s:  # expired by now: it is not ours any more
                    self._lost = True
                    log.warning("lock %s lost: the store did not answer for %.0f s (%s)", self.name,
                                time.monotonic() - renewed, exc)
                    return
                log.warning("could not renew lock %s: %s", self.name, exc)
                continue
            renewed = time.monotonic()
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
    * Index data (pointers, set members, metadata fields) is validated on every read, never
      trusted: a malformed entry is reported once (which key, what was wrong), counted in
      ``stats()["index_invalid"]``, and skipped or rebuilt from the artifact it describes
      (``stats()["index_repaired"]``); it never surfaces as a traceback.
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

    @abc.abstractmethod
    def import_values(self, artifacts: Sequence[tuple[bytes, Mapping[str, str]]],
                      chunks: Sequence[bytes] = ()) -> ImportResult:
        """Add exported artifacts (with their labels) and profile chunks, all or nothing.

        Every value is verified (bytes and meaning) before anything is written. Artifacts the
        store already holds for their pair, and chunks it already holds (by digest, compacted
        ones included), are skipped, so an import can be repeated. Any refusal raises and
        leaves the store exactly as it was.
        """

    def profile_digests(self, device_type: str, workload: str) -> set[str]:
        """Hex sha256 of every chunk of a pair's profile, chunks compacted into others included."""
        out: set[str] = set()
        for c in self.profile_chunks(device_type, workload):
            out.add(chunk_digest(c))
            out.update(inspect_profile(c).merged)
        return out

    # ------------------------------------------------------------------ index and health
    def latest_version(self, device_type: str, workload: str) -> int:
        """The number of the pair's latest version (0 if none), read from the index alone.

        Unlike :meth:`meta` it does not load or validate the version's record, so a builder
        can tell whether someone stored a newer version even when the latest is damaged.
        """
        try:
            return self.meta(device_type, workload).version
        except (ArtifactNotFoundError, CorruptArtifactError):
            return max((m.version for m in self.versions(device_type, workload)), default=0)

    def pair_names(self) -> list[tuple[str, str]]:
        """Every pair the index names (with versions or samples), sorted - pairs whose records
        cannot be read included, so an export can account for every pair."""
        return sorted({m.pair for m in self.list_pairs()} | set(self.profile_pairs()))

    def epoch(self) -> str:
        """A token that changes whenever the store lost its data behind this process's back
        (a Redis restarted without persistence, a flushed namespace); "" for a store that
        cannot lose data that way (a file)."""
        return ""

    def heal(self) -> HealReport:
        """Notice lost data and re-publish what this process holds (see FallbackModelStore).

        Cheap to call every round: stores that cannot lose data return an empty report.
        """
        return HealReport()

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

    def discard(self, key: str) -> None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class BackendStore(ModelStore):
    """What the Redis and SQLite backends share: verification, index validation, counters,
    cache, imports, compaction and locks.

    Backends implement the storage primitives (:meth:`_append`, :meth:`_blob`,
    :meth:`_has_record`, :meth:`_raw_chunks`, :meth:`_import`, :meth:`_compact`, the lock
    primitives) plus the listing methods of :class:`ModelStore`.
    """

    def __init__(self, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
                 compact_chunks: int = DEFAULT_COMPACT_CHUNKS) -> None:
        if max_artifact_bytes < 1 or max_artifact_bytes > MAX_ARTIFACT_BYTES:
            raise InvalidParameterError(f"max_artifact_bytes must be in [1, {MAX_ARTIFACT_BYTES}]; "
                                        f"got {max_artifact_bytes}")
        if isinstance(compact_chunks, bool) or not isinstance(compact_chunks, int) or compact_chunks < 2:
            raise InvalidParameterError(f"compact_chunks must be an integer >= 2; got {compact_chunks!r}")
        self.max_artifact_bytes = int(max_artifact_bytes)
        self.compact_chunks = compact_chunks
        self._cache = _StateCache(cache_bytes)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ counters
    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def stats(self) -> dict[str, int]:
        """Counters of this store object (``corrupt_refused``, ``index_invalid``, ``puts``, ...)."""
        with self._counts_lock:
            base = {"corrupt_refused": 0, "index_invalid": 0, "index_repaired": 0, "puts": 0, "gets": 0,
                    "cache_hits": 0, "cache_misses": 0, "compactions": 0}
            return {**base, **self._counts}

    def clear_cache(self) -> None:
        """Drop every cached decoded predictor (the next get loads and verifies again)."""
        self._cache.clear()

    def _index_problem(self, key: str, problem: str, action: str = "skipped") -> None:
        """Report a malformed index entry once per process (key, what was wrong, what was done) and count it."""
        with self._counts_lock:
            if (key, problem) in self._reported:
                return
            self._reported.add((key, problem))
            self._counts["index_invalid"] += 1
            if action.startswith("rebuilt") or action.startswith("using"):
                self._counts["index_repaired"] += 1
        log.warning("store %s: index entry %s: %s; %s", self.url, key, problem, action)

    def _value_problem(self, key: str, problem: str) -> None:
        """Report a stored value that fails verification once per process, counted as refused."""
        with self._counts_lock:
            if (key, problem) in self._reported:
                return
            self._reported.add((key, problem))
            self._counts["corrupt_refused"] += 1
        log.warning("store %s: %s: %s; skipped", self.url, key, problem)

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def _append(self, info: ArtifactInfo, data: bytes, labels: dict[str, str],
                stored_at: float) -> ArtifactMeta:
        """Store verified ``data`` as a new version of its pair and move ``latest``, atomically."""

    @abc.abstractmethod
    def _blob(self, device_type: str, workload: str, version: int) -> bytes | None:
        """The stored bytes of a version, unverified (None if there are none)."""

    @abc.abstractmethod
    def _has_record(self, device_type: str, workload: str, version: int) -> bool:
        """Whether a metadata record of the version exists (to tell a deletion from damage)."""

    @abc.abstractmethod
    def _raw_chunks(self, device_type: str, workload: str) -> list[tuple[str, bytes]]:
        """The stored chunks of a pair's profile in append order, unverified, each with its key."""

    @abc.abstractmethod
    def _import(self, artifacts: Sequence[tuple[ArtifactInfo, bytes, dict[str, str]]],
                chunks: Sequence[tuple[ProfileInfo, bytes]], stored_at: float,
                journal: bool = False) -> list[ArtifactMeta | None]:
        """Write every artifact and chunk in one atomic step (None: the pair already held it);
        ``journal``: also record them for write-back (only the embedded store journals)."""

    @abc.abstractmethod
    def _compact(self, device_type: str, workload: str, chunks: list[tuple[str, bytes]],
                 merged: list[bytes]) -> bool:
        """Replace exactly ``chunks`` (still the head of the pair's profile) by ``merged``, atomically.

        False (nothing changed) if the profile's head is no longer ``chunks``.
        """

    @abc.abstractmethod
    def _write_record(self, meta: ArtifactMeta) -> None:
        """Store a metadata record rebuilt from the artifact bytes over the damaged one (and its index
        entries), so the repair is kept and lookups by artifact id find the version again."""

    @abc.abstractmethod
    def _try_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Take lock ``name`` with ``token`` if free or expired; True on success."""

    @abc.abstractmethod
    def _extend_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Renew the lock if ``token`` still holds it."""

    @abc.abstractmethod
    def _unlock(self, name: str, token: str) -> bool:
        """Delete the lock if ``token`` still holds it (compare-and-delete)."""

    # ------------------------------------------------------------------ records
    def _meta_from_record(self, key: str, fields: Mapping[str, object], device_type: str, workload: str,
                          version: int) -> ArtifactMeta:
        """A validated metadata record, or one rebuilt from the artifact bytes if a field is damaged.

        Raises CorruptArtifactError (counted) when the record is damaged and the bytes cannot
        stand in for it.
        """
        problems, parsed = record_problems(fields, device_type, workload, version)
        labels, label_problem = parse_labels(fields.get("labels"))
        if not problems:
            if label_problem:
                self._index_problem(key, label_problem, "labels dropped")
            return ArtifactMeta(device_type, workload, version, parsed["artifact_id"], parsed["kind"],
                                parsed["parent_id"], parsed["n_samples"], parsed["created_at"],
                                parsed["stored_at"], parsed["size_bytes"], labels)
        label = pair_label(device_type, workload, version)
        what = "; ".join(problems[:3])
        data = self._blob(device_type, workload, version)
        reason = "the artifact bytes are missing"
        if data is not None:
            try:
                info = inspect_predictor(data, label)
            except ArtifactError as exc:
                reason = _reason(exc, label)
            else:
                if (info.device_type, info.workload) == (device_type, workload):
                    self._index_problem(key, what, "rebuilt from the artifact bytes")
                    meta = ArtifactMeta.from_info(info, version, parsed.get("stored_at", 0.0), labels)
                    try:
                        self._write_record(meta)
                    except PowerfleetError as exc:  # a read must not fail because the repair could not be kept
                        log.warning("store %s: could not write the rebuilt record %s back: %s", self.url, key, exc)
                    return meta
                reason = f"the bytes belong to {pair_label(info.device_type, info.workload)}"
        self._count("corrupt_refused")
        with self._counts_lock:
            first = (key, what) not in self._reported
            self._reported.add((key, what))
        if first:
            log.warning("store %s: index entry %s: %s, and %s; refused", self.url, key, what, reason)
        raise CorruptArtifactError(f"{label} in {self.url}: metadata record is damaged ({what}) and {reason}; "
                                   "refused")

    def _load_blob(self, meta: ArtifactMeta) -> bytes:
        """The stored bytes of a version; missing bytes under an existing record are damage."""
        data = self._blob(meta.device_type, meta.workload, meta.version)
        if data is None:
            if self._has_record(meta.device_type, meta.workload, meta.version):
                raise self._refuse(meta, "its artifact bytes are missing")
            raise ArtifactNotFoundError(f"{meta.label} is no longer in {self.url} (deleted)")
        return data

    # ------------------------------------------------------------------ shared implementation
    def put_artifact(self, data: bytes, *, labels: Mapping[str, str] | None = None) -> ArtifactMeta:
        """Verify (bytes and meaning) and append ``data`` to its pair (see :meth:`ModelStore.put_artifact`)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidParameterError(f"artifact must be bytes; got {type(data).__name__}")
        data = bytes(data)
        info, state = load_predictor(data, "artifact to store")
        self._check_value("artifact", info.device_type, info.workload, len(data))
        meta = self._append(info, data, check_labels(labels), time.time())
        self._cache.put(info.artifact_id, state, len(data))
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
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidParameterError(f"profile chunk must be bytes; got {type(data).__name__}")
        info = inspect_profile(bytes(data), "profile chunk")
        self._check_value("profile chunk", info.device_type, info.workload, len(data))
        return info

    def _refuse(self, meta: ArtifactMeta, reason: str) -> CorruptArtifactError:
        """Count a refused load (every time) and log it (once per version and reason).

        The artifact is evicted from the cache: once its stored bytes are found bad, :meth:`get`
        refuses it too (instead of serving the decoded copy), so a builder rebuilds the pair.
        """
        self._cache.discard(meta.artifact_id)
        self._count("corrupt_refused")
        with self._counts_lock:
            first = (meta.label, reason) not in self._reported
            self._reported.add((meta.label, reason))
        if first:
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
        """Metadata and verified bytes of a version (see :meth:`ModelStore.get_artifact`).

        The first load of an artifact in this process checks its meaning too (the decoded
        predictor is cached, so later loads check the bytes only).
        """
        meta = self.meta(device_type, workload, version)
        data = self._load_blob(meta)
        cached = self._cache.get(meta.artifact_id)
        try:
            if cached is None:
                info, state = load_predictor(data, meta.label)
            else:
                info = inspect_predictor(data, meta.label)
        except ArtifactError as exc:
            raise self._refuse(meta, _reason(exc, meta.label)) from None
        self._check(meta, info)
        if cached is None:
            self._cache.put(meta.artifact_id, state, len(data))
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
        data = self._load_blob(meta)
        try:
            info, state = load_predictor(data, meta.label)
        except ArtifactError as exc:
            raise self._refuse(meta, _reason(exc, meta.label)) from None
        self._check(meta, info)
        self._cache.put(meta.artifact_id, state, len(data))
        return StoredPredictor(meta, state)

    # ------------------------------------------------------------------ profiles
    def _verified_chunks(self, device_type: str, workload: str,
                         raw: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes, ProfileInfo]]:
        """The pair's chunks that verify; a chunk that does not is reported once, counted and skipped."""
        check_name("device type", device_type)
        check_name("workload", workload)
        out = []
        rows = self._raw_chunks(device_type, workload) if raw is None else raw
        for i, (key, data) in enumerate(rows):
            what = f"profile chunk {i + 1} of {pair_label(device_type, workload)}"
            try:
                info = inspect_profile(data, what)
            except ArtifactError as exc:
                self._value_problem(key, f"{_reason(exc, what)} (chunk sha256 {chunk_digest(data)[:12]})")
                continue
            if (info.device_type, info.workload) != (device_type, workload):
                self._value_problem(key, f"chunk belongs to {pair_label(info.device_type, info.workload)} "
                                         "(foreign value)")
                continue
            out.append((key, data, info))
        return out

    def profile_chunks(self, device_type: str, workload: str) -> list[bytes]:
        """The verified chunks of a pair's profile, in append order; damaged ones are skipped (reported)."""
        return [data for _, data, _ in self._verified_chunks(device_type, workload)]

    def profile_digests(self, device_type: str, workload: str) -> set[str]:
        """Hex sha256 of every chunk of a pair's profile, chunks compacted into others included."""
        out: set[str] = set()
        for _, data, info in self._verified_chunks(device_type, workload):
            out.add(chunk_digest(data))
            out.update(info.merged)
        return out

    def compact_profile(self, device_type: str, workload: str, *, max_samples: int = 200_000) -> int:
        """Merge a pair's profile chunks into as few as possible, atomically; returns how many chunks
        it had before (0 if nothing was done).

        Samples, their order and the digests of merged chunks (for idempotent replays) are kept;
        a chunk that fails verification is dropped here (it was refused on every read anyway).
        Concurrent appends are safe: only the chunks read are replaced, and only if they are
        still the head of the profile.
        """
        from powerfleet.serde import merge_profiles

        raw = self._raw_chunks(device_type, workload)
        if len(raw) < 2:
            return 0
        keep = [data for _, data, _ in self._verified_chunks(device_type, workload, raw)]
        merged = merge_profiles(keep, max_samples=max_samples,
                                what=f"profile of {pair_label(device_type, workload)}") if keep else []
        if len(merged) >= len(raw):
            return 0
        if not self._compact(device_type, workload, raw, merged):
            return 0
        self._count("compactions")
        dropped = len(raw) - len(keep)
        log.info("compacted the profile of %s in %s: %d chunks into %d%s", pair_label(device_type, workload),
                 self.url, len(raw), len(merged), f" ({dropped} unreadable dropped)" if dropped else "")
        return len(raw)

    def _after_append(self, device_type: str, workload: str, chunks: int) -> None:
        """Compact a pair's profile once it has more than ``compact_chunks`` chunks (best effort)."""
        if chunks <= self.compact_chunks:
            return
        try:
            self.compact_profile(device_type, workload)
        except PowerfleetError as exc:
            log.warning("could not compact the profile of %s in %s: %s", pair_label(device_type, workload),
                        self.url, exc)

    # ------------------------------------------------------------------ import
    def import_values(self, artifacts: Sequence[tuple[bytes, Mapping[str, str]]],
                      chunks: Sequence[bytes] = ()) -> ImportResult:
        """Verify everything, then add what is new in one atomic step (see :meth:`ModelStore.import_values`)."""
        return self._import_checked(artifacts, chunks, journal=False)

    def _import_checked(self, artifacts: Sequence[tuple[bytes, Mapping[str, str]]], chunks: Sequence[bytes],
                        journal: bool) -> ImportResult:
        items: list[tuple[ArtifactInfo, bytes, dict[str, str]]] = []
        seen: set[tuple[str, str, str]] = set()
        skipped = 0
        states: dict[str, tuple[PredictorState, int]] = {}
        for i, (raw, labels) in enumerate(artifacts):
            data = bytes(raw)
            info, state = load_predictor(data, f"artifact {i + 1} to import")
            self._check_value(f"artifact {i + 1} to import", info.device_type, info.workload, len(data))
            checked = check_labels(labels)
            key = (info.device_type, info.workload, info.artifact_id)
            if key in seen or any(m.pair == key[:2] for m in self.find(info.artifact_id)):
                skipped += 1
                continue
            seen.add(key)
            items.append((info, data, checked))
            states[info.artifact_id] = (state, len(data))
        todo: list[tuple[ProfileInfo, bytes]] = []
        held: dict[tuple[str, str], set[str]] = {}
        knobs: dict[tuple[str, str], tuple[str, ...]] = {}
        skipped_chunks = 0
        for raw in chunks:
            data = bytes(raw)
            pinfo = self._inspect_chunk(data)
            pair = (pinfo.device_type, pinfo.workload)
            if knobs.setdefault(pair, pinfo.knobs) != pinfo.knobs:
                raise InvalidParameterError(f"profile chunks for {pair_label(*pair)} in the import name different "
                                            f"knobs: {list(knobs[pair])} and {list(pinfo.knobs)}")
            if pair not in held:
                held[pair] = self.profile_digests(*pair)
            if chunk_digest(data) in held[pair]:
                skipped_chunks += 1
                continue
            held[pair].add(chunk_digest(data))
            todo.append((pinfo, data))
        written = self._import(items, todo, time.time(), journal) if items or todo else []
        added = tuple(m for m in written if m is not None)
        for m in added:
            state, size = states[m.artifact_id]
            self._cache.put(m.artifact_id, state, size)
        self._count("puts", len(added))
        return ImportResult(added, skipped + len(written) - len(added), len(todo), skipped_chunks)

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
