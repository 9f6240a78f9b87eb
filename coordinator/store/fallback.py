"""``FallbackModelStore``: keep running on the embedded store while Redis is down.

The wrapper sends every operation to the primary (Redis) store. When the primary becomes
unreachable *during* a run it logs one warning and serves from the embedded SQLite store:
reads see what that file holds (every artifact this host stored or read before, which is
mirrored there), and writes go to it **and** to a write-back journal in the same SQLite
transaction. Every ``retry_interval_s`` an operation probes the primary; once it answers,
the journal is replayed into it in order (skipping artifacts it already holds, so a replay
after a crash does not duplicate), under a cross-process lock, before any new write goes to
Redis. No journaled write is dropped: an entry the primary refuses stays in the journal and
is counted in ``stats()["writeback_failed"]``.

Deletes are refused while degraded (version numbers differ between the two stores, so a
delete could not be replayed unambiguously).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from coordinator.store.base import ArtifactMeta, LockHandle, ModelStore, StoredPredictor, check_labels
from coordinator.store.errors import LockBusyError, StoreUnavailableError
from coordinator.store.local_store import LocalModelStore
from powertrain.errors import PowerfleetError

log = logging.getLogger("powerfleet.store")
T = TypeVar("T")
_WRITEBACK_LOCK = "writeback"


class FallbackModelStore(ModelStore):
    """A primary store with an embedded fallback, a write-back journal and a local mirror."""

    def __init__(self, primary: ModelStore, local: LocalModelStore, *, retry_interval_s: float = 2.0,
                 writeback_wait_s: float = 60.0) -> None:
        self.primary = primary
        self.local = local
        self.retry_interval_s = float(retry_interval_s)
        self.writeback_wait_s = float(writeback_wait_s)
        self._degraded = False
        self._next_probe = 0.0
        self._state_lock = threading.RLock()
        self._mirrored: set[str] = set()
        self._counts: Counter[str] = Counter()
        if local.journal_size():  # a previous run ended while degraded
            self._degraded = True

    # ------------------------------------------------------------------ state
    @property
    def url(self) -> str:
        """The primary's URL and the fallback file."""
        return f"{self.primary.url} (fallback {self.local.url})"

    @property
    def degraded(self) -> bool:
        """True while operations are served by the embedded store."""
        return self._degraded

    def stats(self) -> dict[str, int]:
        """Own counters plus the sum of both stores' counters and the pending journal size."""
        merged: Counter[str] = Counter(self.primary.stats())
        merged.update(self.local.stats())
        merged.update(self._counts)
        out = {"fallbacks": 0, "written_back": 0, "writeback_failed": 0, "mirrored": 0, **merged}
        out["pending"] = self.local.journal_size()
        out["degraded"] = int(self._degraded)
        return out

    def _fail_over(self, exc: StoreUnavailableError) -> None:
        with self._state_lock:
            if not self._degraded:
                self._degraded = True
                self._counts["fallbacks"] += 1
                log.warning("store %s is unreachable (%s); falling back to the embedded store %s; writes "
                            "are journaled and written back when it returns", self.primary.url, exc,
                            self.local.url)
            self._next_probe = time.monotonic() + self.retry_interval_s

    def _use_primary(self) -> bool:
        """Whether to send this operation to the primary; probes it and writes back when due."""
        if not self._degraded:
            return True
        if time.monotonic() < self._next_probe:
            return False
        return self.sync(force=False) is not None

    def sync(self, *, force: bool = True) -> int | None:
        """Probe the primary and, if it answers, write back the journal now.

        Returns how many entries were written back, or None if the primary is still
        unreachable (or, with ``force=False``, if the next probe is not due yet).
        """
        with self._state_lock:
            if not force and time.monotonic() < self._next_probe:
                return None
            self._next_probe = time.monotonic() + self.retry_interval_s
            try:
                self.primary.ping()
                written = self._write_back()
            except StoreUnavailableError as exc:
                if not self._degraded:
                    self._fail_over(exc)
                return None
            if self._degraded:
                log.warning("store %s is back; wrote back %d pending write(s) from %s", self.primary.url,
                            written, self.local.url)
            self._degraded = False
            return written

    def _write_back(self) -> int:
        """Replay the journal into the primary under the cross-process write-back lock."""
        if not self.local.journal_size():
            return 0

        def held_elsewhere(_: RetryCallState) -> LockHandle:
            raise StoreUnavailableError(f"write-back to {self.primary.url} is held by another process "
                                        f"for over {self.writeback_wait_s:.0f} s")

        def take() -> LockHandle:
            handle = self.local.acquire_lock(_WRITEBACK_LOCK, ttl_s=30.0)
            if handle is None:  # another process on this host is writing back: let it finish
                raise LockBusyError
            return handle

        handle = Retrying(retry=retry_if_exception_type(LockBusyError), wait=wait_fixed(0.05),
                          stop=stop_after_delay(self.writeback_wait_s), retry_error_callback=held_elsewhere)(take)
        written = 0
        with handle:
            chunk_digests: dict[tuple[str, str], set[str]] = {}
            failed: set[int] = set()
            while True:
                entries = [e for e in self.local.journal(limit=100 + len(failed)) if e.seq not in failed]
                if not entries:
                    break
                for e in entries:
                    try:
                        if e.op == "put":
                            held = self.primary.find(e.artifact_id)
                            if not any(m.pair == (e.device_type, e.workload) for m in held):
                                self.primary.put_artifact(e.data, labels=e.labels)
                        else:
                            key = (e.device_type, e.workload)
                            if key not in chunk_digests:
                                chunk_digests[key] = {_sha(c) for c in self.primary.profile_chunks(*key)}
                            if _sha(e.data) not in chunk_digests[key]:
                                self.primary.append_profile_chunk(e.data)
                                chunk_digests[key].add(_sha(e.data))
                    except StoreUnavailableError:
                        raise
                    except PowerfleetError as exc:  # refused by the primary: keep it, report it
                        failed.add(e.seq)
                        self._counts["writeback_failed"] += 1
                        log.error("could not write back %s of %s/%s to %s (kept in the journal): %s", e.op,
                                  e.device_type, e.workload, self.primary.url, exc)
                        continue
                    self.local.journal_ack(e.seq)
                    self._counts["written_back"] += 1
                    written += 1
        return written

    def _route(self, on_primary: Callable[[], T], on_local: Callable[[], T]) -> T:
        if self._use_primary():
            try:
                return on_primary()
            except StoreUnavailableError as exc:
                self._fail_over(exc)
        return on_local()

    def _mirror(self, meta: ArtifactMeta, data: bytes | None = None) -> None:
        """Copy an artifact the primary holds into the embedded store (best effort, once per id)."""
        if meta.artifact_id in self._mirrored:
            return
        try:
            if not any(m.pair == meta.pair for m in self.local.find(meta.artifact_id)):
                if data is None:
                    _, data = self.primary.get_artifact(meta.device_type, meta.workload, meta.version)
                self.local.put_artifact(data, labels=meta.labels)
                self._counts["mirrored"] += 1
            self._mirrored.add(meta.artifact_id)
        except PowerfleetError as exc:
            log.warning("could not mirror %s into %s: %s", meta.label, self.local.url, exc)

    # ------------------------------------------------------------------ lifecycle
    def ping(self) -> None:
        """The primary answers, or (degraded) the embedded store does."""
        self._route(self.primary.ping, self.local.ping)

    def close(self) -> None:
        """Close both stores."""
        self.primary.close()
        self.local.close()

    # ------------------------------------------------------------------ artifacts
    def put_artifact(self, data: bytes, *, labels: Mapping[str, str] | None = None) -> ArtifactMeta:
        """Put on the primary (and mirror), or journal it locally while degraded."""
        checked = check_labels(labels)

        def on_primary() -> ArtifactMeta:
            meta = self.primary.put_artifact(data, labels=checked)
            self._mirror(meta, bytes(data))
            return meta

        return self._route(on_primary, lambda: self.local.put_artifact_journaled(bytes(data), checked))

    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata from the primary, or the embedded store while degraded."""
        return self._route(lambda: self.primary.meta(device_type, workload, version),
                           lambda: self.local.meta(device_type, workload, version))

    def get_artifact(self, device_type: str, workload: str,
                     version: int | None = None) -> tuple[ArtifactMeta, bytes]:
        """Verified bytes from the primary (mirrored locally), or the embedded store while degraded."""
        def on_primary() -> tuple[ArtifactMeta, bytes]:
            meta, data = self.primary.get_artifact(device_type, workload, version)
            self._mirror(meta, data)
            return meta, data

        return self._route(on_primary, lambda: self.local.get_artifact(device_type, workload, version))

    def get(self, device_type: str, workload: str, version: int | None = None) -> StoredPredictor:
        """A verified predictor from the primary (mirrored locally), or the embedded store."""
        def on_primary() -> StoredPredictor:
            found = self.primary.get(device_type, workload, version)
            self._mirror(found.meta)
            return found

        return self._route(on_primary, lambda: self.local.get(device_type, workload, version))

    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Versions from the primary, or the embedded store while degraded."""
        return self._route(lambda: self.primary.versions(device_type, workload),
                           lambda: self.local.versions(device_type, workload))

    def list_pairs(self) -> list[ArtifactMeta]:
        """Pairs from the primary, or the embedded store while degraded."""
        return self._route(self.primary.list_pairs, self.local.list_pairs)

    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Versions holding an artifact, from the primary or the embedded store."""
        return self._route(lambda: self.primary.find(artifact_id), lambda: self.local.find(artifact_id))

    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete on the primary; refused while degraded."""
        def on_local() -> list[ArtifactMeta]:
            raise StoreUnavailableError(f"cannot delete from {self.primary.url} while it is unreachable; "
                                        "retry when it is back")

        return self._route(lambda: self.primary.delete(device_type, workload, version, profile=profile),
                           on_local)

    # ------------------------------------------------------------------ profiles
    def append_profile_chunk(self, data: bytes) -> int:
        """Append on the primary, or locally and journaled while degraded."""
        return self._route(lambda: self.primary.append_profile_chunk(data),
                           lambda: self.local.append_profile_chunk_journaled(data))

    def profile_chunks(self, device_type: str, workload: str) -> list[bytes]:
        """Chunks from the primary, or (degraded) those written on this host."""
        return self._route(lambda: self.primary.profile_chunks(device_type, workload),
                           lambda: self.local.profile_chunks(device_type, workload))

    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs with a profile, from the primary or the embedded store."""
        return self._route(self.primary.profile_pairs, self.local.profile_pairs)

    # ------------------------------------------------------------------ locks
    def acquire_lock(self, name: str, ttl_s: float = 30.0, *, renew: bool = True) -> LockHandle | None:
        """A lock on the primary; while degraded, a lock among this host's processes only."""
        return self._route(lambda: self.primary.acquire_lock(name, ttl_s, renew=renew),
                           lambda: self.local.acquire_lock(name, ttl_s, renew=renew))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
