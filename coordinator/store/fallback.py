"""``FallbackModelStore``: keep running on the embedded store while Redis is down or was wiped.

The wrapper sends every operation to the primary (Redis) store. When the primary becomes
unreachable *during* a run it logs one warning and serves from the embedded SQLite store:
reads see what that file holds (every artifact and profile chunk this host stored or read
before, which is mirrored there), and writes go to it **and** to a write-back journal in the
same SQLite transaction. Every ``retry_interval_s`` an operation probes the primary; once it
answers, the journal is replayed into it in order (skipping values it already holds, so a
replay after a crash does not duplicate), under a cross-process lock, before any new write
goes to Redis. No journaled write is dropped: an entry the primary refuses stays in the
journal and is counted in ``stats()["writeback_failed"]``.

A primary that comes back *empty* (a Redis without persistence restarted, a flushed
namespace) is noticed through its epoch (:meth:`RedisModelStore.epoch`), checked before every
write, at most every ``epoch_check_s`` before reads, and at once when a read finds nothing:
the pairs the primary lacks are re-published from the mirror (which holds the journaled
writes too, so everything goes back in the order this host made it, oldest version first)
with the profile chunks the primary lacks, the journal is written back (finding most of it
present), and the read is retried. A version
number handed out before (by the old primary, or by the embedded store while degraded) is
translated through its artifact id, so ``get(dt, wl, version)`` of a pair this process built
keeps working. :meth:`heal` runs the same check on demand and says what it did.

Deletes are refused while degraded (version numbers differ between the two stores, so a
delete could not be replayed unambiguously).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from coordinator.store.base import (
    ArtifactMeta,
    HealReport,
    ImportResult,
    LockHandle,
    ModelStore,
    StoredPredictor,
    check_labels,
)
from coordinator.store.errors import ArtifactNotFoundError, LockBusyError, StoreUnavailableError
from coordinator.store.local_store import LocalModelStore
from powerfleet.serde import chunk_digest, inspect_profile
from powertrain.errors import PowerfleetError

log = logging.getLogger("powerfleet.store")
T = TypeVar("T")
_WRITEBACK_LOCK = "writeback"
_EPOCH_INFO = "primary_epoch"
_LOCAL = "local"


class FallbackModelStore(ModelStore):
    """A primary store with an embedded fallback, a write-back journal and a local mirror."""

    def __init__(self, primary: ModelStore, local: LocalModelStore, *, retry_interval_s: float = 2.0,
                 writeback_wait_s: float = 60.0, epoch_check_s: float = 1.0) -> None:
        self.primary = primary
        self.local = local
        self.retry_interval_s = float(retry_interval_s)
        self.writeback_wait_s = float(writeback_wait_s)
        self.epoch_check_s = float(epoch_check_s)
        self._degraded = False
        self._next_probe = 0.0
        self._next_epoch_check = 0.0
        self._state_lock = threading.RLock()
        self._mirrored: set[str] = set()
        self._counts: Counter[str] = Counter()
        #: the primary's epoch when last checked (from the mirror file at start: a coordinator
        #: restarted after Redis was wiped notices it too)
        self._epoch = local.get_info(_EPOCH_INFO)
        #: (dt, wl, version) -> (side, artifact id) of every version number handed out
        self._handed: dict[tuple[str, str, int], tuple[str, str]] = {}
        self._last_heal = HealReport()
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
        out = {"fallbacks": 0, "written_back": 0, "writeback_failed": 0, "mirrored": 0, "epoch_changes": 0,
               "republished": 0, "republished_chunks": 0, "republish_failed": 0, **merged}
        out["pending"] = self.local.journal_size()
        out["degraded"] = int(self._degraded)
        return out

    def _side(self) -> str:
        return f"primary@{self._epoch}"

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
        """Probe the primary and, if it answers, check its epoch and write back the journal now.

        Returns how many entries were written back (re-published values included), or None if
        the primary is still unreachable (or, with ``force=False``, if the next probe is not due).
        """
        with self._state_lock:
            if not force and time.monotonic() < self._next_probe:
                return None
            self._next_probe = time.monotonic() + self.retry_interval_s
            try:
                self.primary.ping()
                report = self._check_epoch(force=True)
                written = report.written_back + report.republished + report.republished_chunks
                written += self._under_writeback_lock(self._write_back)
            except StoreUnavailableError as exc:
                if not self._degraded:
                    self._fail_over(exc)
                return None
            if self._degraded:
                log.warning("store %s is back; wrote back %d pending write(s) from %s", self.primary.url,
                            written, self.local.url)
            self._degraded = False
            return written

    # ------------------------------------------------------------------ epoch and healing
    def epoch(self) -> str:
        """The primary's epoch (see :meth:`ModelStore.epoch`)."""
        return self.primary.epoch()

    def heal(self) -> HealReport:
        """Check the primary now: if it lost its data, re-publish what this host holds and write
        back the journal. Returns everything done since the previous call (operations trigger the
        same healing by themselves); an empty report with a note while the primary is unreachable."""
        with self._state_lock:
            if self._degraded and self.sync(force=True) is None:
                return HealReport(notes=("primary unreachable; serving from the embedded store",))
            try:
                self._check_epoch(force=True)
            except StoreUnavailableError as exc:
                self._fail_over(exc)
                return HealReport(notes=("primary unreachable; serving from the embedded store",))
            report, self._last_heal = self._last_heal, HealReport()
            return report

    def _check_epoch(self, *, force: bool = False) -> HealReport:
        """Compare the primary's epoch with the last one seen; on a change, re-publish and write back."""
        with self._state_lock:
            now = time.monotonic()
            if not force and now < self._next_epoch_check:
                return HealReport()
            self._next_epoch_check = now + self.epoch_check_s
            epoch = self.primary.epoch()
            known = self._epoch
            if epoch == known:
                return HealReport()
            self._epoch = epoch
            self.local.set_info(_EPOCH_INFO, epoch)
            if not known:
                return HealReport()
            self._counts["epoch_changes"] += 1
            log.warning("store %s lost its data (epoch %s -> %s: restarted empty or flushed); re-publishing "
                        "what this host holds from %s", self.primary.url, known, epoch, self.local.url)
            # the mirror holds the journaled writes too, in the order this host made them: re-publishing
            # it first keeps that order (the newest stays latest); the journal then finds them present
            republished, chunks = self._under_writeback_lock(self._republish)
            written = self._under_writeback_lock(self._write_back)
            report = HealReport(True, republished, chunks, written,
                                (f"{self.primary.url} lost its data; re-published {republished} artifact(s) "
                                 f"and {chunks} profile chunk(s), wrote back {written} journal entr(ies)",))
            last = self._last_heal  # what heal() has not reported yet, this included
            self._last_heal = HealReport(True, last.republished + republished, last.republished_chunks + chunks,
                                         last.written_back + written, (*last.notes, *report.notes))
            log.warning("%s", report.notes[0])
            return report

    def _under_writeback_lock(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` holding the cross-process write-back lock of the embedded store."""
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
        with handle:
            return fn()

    def _republish(self) -> tuple[int, int]:
        """Copy into the primary the pairs it lost entirely (oldest version first) and the profile
        chunks it lacks, from the embedded store; a pair the primary holds is left alone, so a
        newer version someone stored there stays the latest."""
        held = {m.pair for m in self.primary.list_pairs()}
        artifacts = chunks = 0
        for dt, wl in self.local.pair_names():
            if (dt, wl) in held:
                continue
            for m in self.local.versions(dt, wl):
                try:
                    _, data = self.local.get_artifact(dt, wl, m.version)
                    if any(x.pair == m.pair for x in self.primary.find(m.artifact_id)):
                        continue
                    self.primary.put_artifact(data, labels=m.labels)
                except StoreUnavailableError:
                    raise
                except PowerfleetError as exc:
                    self._counts["republish_failed"] += 1
                    log.error("could not re-publish %s into %s: %s", m.label, self.primary.url, exc)
                    continue
                artifacts += 1
        for dt, wl in self.local.profile_pairs():
            have = self.primary.profile_digests(dt, wl)
            for c in self.local.profile_chunks(dt, wl):
                merged = set(inspect_profile(c).merged)
                if chunk_digest(c) in have or (merged and merged <= have):
                    continue
                try:
                    self.primary.append_profile_chunk(c)
                except StoreUnavailableError:
                    raise
                except PowerfleetError as exc:
                    self._counts["republish_failed"] += 1
                    log.error("could not re-publish a profile chunk of %s/%s into %s: %s", dt, wl,
                              self.primary.url, exc)
                    continue
                have.add(chunk_digest(c))
                chunks += 1
        self._counts["republished"] += artifacts
        self._counts["republished_chunks"] += chunks
        return artifacts, chunks

    def _write_back(self) -> int:
        """Replay the journal into the primary (the caller holds the write-back lock); returns how many
        entries were written (entries the primary already held are acknowledged, not counted)."""
        if not self.local.journal_size():
            return 0
        written = 0
        digests: dict[tuple[str, str], set[str]] = {}
        failed: set[int] = set()
        while True:
            entries = [e for e in self.local.journal(limit=100 + len(failed)) if e.seq not in failed]
            if not entries:
                break
            for e in entries:
                wrote = False
                try:
                    if e.op == "put":
                        held = self.primary.find(e.artifact_id)
                        if not any(m.pair == (e.device_type, e.workload) for m in held):
                            self.primary.put_artifact(e.data, labels=e.labels)
                            wrote = True
                    else:
                        key = (e.device_type, e.workload)
                        if key not in digests:
                            digests[key] = self.primary.profile_digests(*key)
                        if chunk_digest(e.data) not in digests[key]:
                            self.primary.append_profile_chunk(e.data)
                            digests[key].add(chunk_digest(e.data))
                            wrote = True
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
                written += wrote
        return written

    # ------------------------------------------------------------------ routing
    def _route(self, on_primary: Callable[[], T], on_local: Callable[[], T], *, write: bool = False) -> T:
        if self._use_primary():
            try:
                self._check_epoch(force=write)
                return on_primary()
            except StoreUnavailableError as exc:
                self._fail_over(exc)
        return on_local()

    def _read(self, device_type: str, workload: str, version: int | None,
              on_primary: Callable[[int | None], T], on_local: Callable[[int | None], T]) -> T:
        """A read of one version: retried once after a not-found if the primary turns out to have
        lost its data (and was healed); version numbers handed out earlier are translated."""
        def primary() -> T:
            try:
                return on_primary(self._version_on(self.primary, self._side(), device_type, workload, version))
            except ArtifactNotFoundError:
                if not self._check_epoch(force=True).epoch_changed:
                    raise
            return on_primary(self._version_on(self.primary, self._side(), device_type, workload, version))

        return self._route(primary, lambda: on_local(self._version_on(self.local, _LOCAL, device_type, workload,
                                                                     version)))

    def _version_on(self, store: ModelStore, side: str, device_type: str, workload: str,
                    version: int | None) -> int | None:
        """The number ``store`` gives the version handed out as ``version`` (by whichever side)."""
        if version is None:
            return None
        handed = self._handed.get((device_type, workload, version))
        if handed is None or handed[0] == side:
            return version
        for m in store.find(handed[1]):
            if m.pair == (device_type, workload):
                return m.version
        return version

    def _hand(self, side: str, meta: ArtifactMeta) -> ArtifactMeta:
        """Remember which artifact a version number handed to the caller stands for."""
        self._handed[(meta.device_type, meta.workload, meta.version)] = (side, meta.artifact_id)
        return meta

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
            return self._hand(self._side(), meta)

        return self._route(on_primary, lambda: self._hand(_LOCAL, self.local.put_artifact_journaled(
            bytes(data), checked)), write=True)

    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata from the primary, or the embedded store while degraded."""
        return self._read(device_type, workload, version,
                          lambda v: self._hand(self._side(), self.primary.meta(device_type, workload, v)),
                          lambda v: self._hand(_LOCAL, self.local.meta(device_type, workload, v)))

    def get_artifact(self, device_type: str, workload: str,
                     version: int | None = None) -> tuple[ArtifactMeta, bytes]:
        """Verified bytes from the primary (mirrored locally), or the embedded store while degraded."""
        def on_primary(v: int | None) -> tuple[ArtifactMeta, bytes]:
            meta, data = self.primary.get_artifact(device_type, workload, v)
            self._mirror(meta, data)
            return self._hand(self._side(), meta), data

        def on_local(v: int | None) -> tuple[ArtifactMeta, bytes]:
            meta, data = self.local.get_artifact(device_type, workload, v)
            return self._hand(_LOCAL, meta), data

        return self._read(device_type, workload, version, on_primary, on_local)

    def get(self, device_type: str, workload: str, version: int | None = None) -> StoredPredictor:
        """A verified predictor from the primary (mirrored locally), or the embedded store."""
        def on_primary(v: int | None) -> StoredPredictor:
            found = self.primary.get(device_type, workload, v)
            self._mirror(found.meta)
            self._hand(self._side(), found.meta)
            return found

        def on_local(v: int | None) -> StoredPredictor:
            found = self.local.get(device_type, workload, v)
            self._hand(_LOCAL, found.meta)
            return found

        return self._read(device_type, workload, version, on_primary, on_local)

    def latest_version(self, device_type: str, workload: str) -> int:
        """The latest version number from the primary, or the embedded store while degraded."""
        return self._route(lambda: self.primary.latest_version(device_type, workload),
                           lambda: self.local.latest_version(device_type, workload))

    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Versions from the primary, or the embedded store while degraded."""
        return self._route(lambda: self.primary.versions(device_type, workload),
                           lambda: self.local.versions(device_type, workload))

    def list_pairs(self) -> list[ArtifactMeta]:
        """Pairs from the primary, or the embedded store while degraded."""
        return self._route(self.primary.list_pairs, self.local.list_pairs)

    def pair_names(self) -> list[tuple[str, str]]:
        """Pair names from the primary, or the embedded store while degraded."""
        return self._route(self.primary.pair_names, self.local.pair_names)

    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Versions holding an artifact, from the primary or the embedded store."""
        return self._route(lambda: self.primary.find(artifact_id), lambda: self.local.find(artifact_id))

    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete on the primary; refused while degraded."""
        def on_local() -> list[ArtifactMeta]:
            raise StoreUnavailableError(f"cannot delete from {self.primary.url} while it is unreachable; "
                                        "retry when it is back")

        def on_primary() -> list[ArtifactMeta]:
            removed = self.primary.delete(device_type, workload, version, profile=profile)
            self._forget(device_type, workload, removed, profile=version is None and profile)
            return removed

        return self._route(on_primary, on_local, write=True)

    def _forget(self, device_type: str, workload: str, removed: list[ArtifactMeta], *, profile: bool) -> None:
        """Delete from the mirror what was deleted from the primary, so a later re-publish after a
        wipe does not bring it back (best effort)."""
        try:
            for m in removed:
                for local in self.local.find(m.artifact_id):
                    if local.pair == (device_type, workload):
                        self.local.delete(device_type, workload, local.version)
                self._mirrored.discard(m.artifact_id)
            if profile and (device_type, workload) in self.local.profile_pairs():
                self.local.delete(device_type, workload, profile=True)
        except PowerfleetError as exc:
            log.warning("could not delete %s/%s from the mirror %s: %s", device_type, workload, self.local.url,
                        exc)

    def import_values(self, artifacts: Sequence[tuple[bytes, Mapping[str, str]]],
                      chunks: Sequence[bytes] = ()) -> ImportResult:
        """Import into the primary (mirrored), or locally and journaled while degraded; all or nothing."""
        def on_primary() -> ImportResult:
            result = self.primary.import_values(artifacts, chunks)
            for m in result.added:
                self._hand(self._side(), m)
                self._mirror(m)
            return result

        return self._route(on_primary, lambda: self.local.import_values_journaled(artifacts, chunks), write=True)

    # ------------------------------------------------------------------ profiles
    def append_profile_chunk(self, data: bytes) -> int:
        """Append on the primary (and mirror it), or locally and journaled while degraded."""
        def on_primary() -> int:
            n = self.primary.append_profile_chunk(data)
            try:
                self.local.append_profile_chunk(data)
            except PowerfleetError as exc:
                log.warning("could not mirror a profile chunk into %s: %s", self.local.url, exc)
            return n

        return self._route(on_primary, lambda: self.local.append_profile_chunk_journaled(data), write=True)

    def profile_chunks(self, device_type: str, workload: str) -> list[bytes]:
        """Chunks from the primary, or (degraded) those written on this host."""
        return self._route(lambda: self.primary.profile_chunks(device_type, workload),
                           lambda: self.local.profile_chunks(device_type, workload))

    def profile_digests(self, device_type: str, workload: str) -> set[str]:
        """Chunk digests from the primary, or (degraded) of those written on this host."""
        return self._route(lambda: self.primary.profile_digests(device_type, workload),
                           lambda: self.local.profile_digests(device_type, workload))

    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs with a profile, from the primary or the embedded store."""
        return self._route(self.primary.profile_pairs, self.local.profile_pairs)

    # ------------------------------------------------------------------ locks
    def acquire_lock(self, name: str, ttl_s: float = 30.0, *, renew: bool = True) -> LockHandle | None:
        """A lock on the primary; while degraded, a lock among this host's processes only."""
        return self._route(lambda: self.primary.acquire_lock(name, ttl_s, renew=renew),
                           lambda: self.local.acquire_lock(name, ttl_s, renew=renew))
