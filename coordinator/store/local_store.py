"""``LocalModelStore``: the embedded default store, one SQLite file in the user cache dir.

Used when no Redis URL is configured (so ``make run`` needs no server), and as the fallback
and write-back journal of a Redis store. Safe for several threads (one connection per thread)
and several processes (WAL mode, writes in ``BEGIN IMMEDIATE`` transactions, a busy timeout):
a version is allocated and stored in the same transaction, so ``latest`` (the highest
version) can never point at a missing or half-written artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from coordinator.store.base import (
    DEFAULT_CACHE_BYTES,
    ArtifactMeta,
    BackendStore,
    check_name,
    check_version,
    decode_labels,
    pair_label,
    translating_errors,
)
from coordinator.store.errors import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    StoreError,
    StoreUnavailableError,
)
from powerfleet.serde import MAX_ARTIFACT_BYTES, ArtifactError, ArtifactInfo, inspect_profile
from powertrain.errors import InvalidParameterError, PowerfleetError

SCHEMA_VERSION = 1
_META_COLS = ("device_type, workload, version, artifact_id, kind, parent_id, n_samples, created_at, "
              "stored_at, size_bytes, labels")
_JOURNAL_COLS = "op, device_type, workload, artifact_id, labels, data, created_at"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    device_type TEXT NOT NULL, workload TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (device_type, workload)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    device_type TEXT NOT NULL, workload TEXT NOT NULL, version INTEGER NOT NULL,
    artifact_id TEXT NOT NULL, kind TEXT NOT NULL, parent_id TEXT NOT NULL, n_samples INTEGER NOT NULL,
    created_at REAL NOT NULL, stored_at REAL NOT NULL, size_bytes INTEGER NOT NULL, labels TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (device_type, workload, version));
CREATE INDEX IF NOT EXISTS versions_by_id ON versions (artifact_id);
CREATE TABLE IF NOT EXISTS profiles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_type TEXT NOT NULL, workload TEXT NOT NULL,
    knobs TEXT NOT NULL, n_samples INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS profiles_by_pair ON profiles (device_type, workload, seq);
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, device_type TEXT NOT NULL,
    workload TEXT NOT NULL, artifact_id TEXT NOT NULL, labels TEXT NOT NULL, data BLOB NOT NULL,
    created_at REAL NOT NULL);
"""

P = ParamSpec("P")
R = TypeVar("R")


def default_store_path() -> Path:
    """``$XDG_CACHE_HOME/powerfleet/store.sqlite``, else ``~/.cache/powerfleet/store.sqlite``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "powerfleet" / "store.sqlite"


def _sqlite_error(store: Any, exc: Exception) -> PowerfleetError | None:
    """sqlite3 errors as one-line store errors naming the file."""
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailableError(f"local store {getattr(store, 'path', '?')}: {exc}")
    if isinstance(exc, sqlite3.DatabaseError):
        return StoreError(f"local store {getattr(store, 'path', '?')} is unusable: {exc}")
    return None


_sqlite_errors = translating_errors(_sqlite_error)


@dataclass(frozen=True)
class JournalEntry:
    """A write made while the primary store was unreachable, waiting to be written back."""

    seq: int
    op: str  # "put" | "profile"
    device_type: str
    workload: str
    artifact_id: str  # for "put"; "" for profiles
    labels: dict[str, str]
    data: bytes
    created_at: float


class LocalModelStore(BackendStore):
    """Predictor store in one SQLite file (see the module docstring)."""

    def __init__(self, path: str | Path | None = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 max_artifact_bytes: int = MAX_ARTIFACT_BYTES, busy_timeout_s: float = 30.0) -> None:
        super().__init__(cache_bytes=cache_bytes, max_artifact_bytes=max_artifact_bytes)
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(f"local store {self.path}: cannot create its directory "
                                        f"({exc.strerror or exc})") from None
        self._init_schema()

    # ------------------------------------------------------------------ connections
    @property
    def url(self) -> str:
        """``file://<path>``."""
        return f"file://{self.path}"

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"local store {self.path} is closed")
        if os.getpid() != self._pid:  # forked: never reuse the parent's connections
            self._pid = os.getpid()
            self._local = threading.local()
            self._conns = []
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA mmap_size=268435456")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: one writer at a time across processes)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @_sqlite_errors
    def _init_schema(self) -> None:
        conn = self._conn()
        fresh = not conn.execute("SELECT 1 FROM sqlite_master WHERE name='store_info'").fetchone()
        if fresh:
            # large pages keep a ~1 MB artifact in few overflow pages (faster blob reads)
            conn.execute("PRAGMA page_size=65536")
        conn.execute("PRAGMA journal_mode=WAL")
        with self._tx() as c:
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                c.execute(stmt)
            row = c.execute("SELECT value FROM store_info WHERE key='schema_version'").fetchone()
            if row is None:
                c.execute("INSERT INTO store_info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"local store {self.path}: schema version {row[0]} is not supported "
                                 f"(this build uses {SCHEMA_VERSION})")

    @_sqlite_errors
    def ping(self) -> None:
        """The file opens and answers a query."""
        self._conn().execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._conns = []
        self._closed = True

    # ------------------------------------------------------------------ artifacts
    def _insert_version(self, c: sqlite3.Connection, info: ArtifactInfo, data: bytes,
                        labels: dict[str, str], stored_at: float) -> ArtifactMeta:
        pair = (info.device_type, info.workload)
        c.execute("INSERT INTO pairs VALUES (?, ?, 0) ON CONFLICT DO NOTHING", pair)
        (version,) = c.execute("UPDATE pairs SET seq = seq + 1 WHERE device_type=? AND workload=? "
                               "RETURNING seq", pair).fetchone()
        meta = ArtifactMeta.from_info(info, int(version), stored_at, labels)
        c.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (meta.device_type, meta.workload, meta.version, meta.artifact_id, meta.kind,
                   meta.parent_id, meta.n_samples, meta.created_at, meta.stored_at, meta.size_bytes,
                   meta.encode_labels(), data))
        return meta

    @_sqlite_errors
    def _append(self, info: ArtifactInfo, data: bytes, labels: dict[str, str],
                stored_at: float) -> ArtifactMeta:
        with self._tx() as c:
            return self._insert_version(c, info, data, labels, stored_at)

    @_sqlite_errors
    def _read_blob(self, meta: ArtifactMeta) -> bytes:
        row = self._conn().execute(
            "SELECT data FROM versions WHERE device_type=? AND workload=? AND version=?",
            (meta.device_type, meta.workload, meta.version)).fetchone()
        if row is None:
            raise ArtifactNotFoundError(f"{meta.label} is no longer in {self.url} (deleted)")
        return bytes(row[0])

    @staticmethod
    def _row_meta(row: tuple[Any, ...]) -> ArtifactMeta:
        return ArtifactMeta(str(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]), str(row[5]),
                            int(row[6]), float(row[7]), float(row[8]), int(row[9]), decode_labels(row[10]))

    @_sqlite_errors
    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata of a version (default: latest)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        conn = self._conn()
        if version is None:
            row = conn.execute(f"SELECT {_META_COLS} FROM versions WHERE device_type=? AND workload=? "
                               "ORDER BY version DESC LIMIT 1", (device_type, workload)).fetchone()
            if row is None:
                raise ArtifactNotFoundError(f"no predictor for {pair_label(device_type, workload)} "
                                            f"in {self.url}")
        else:
            check_version(version)
            row = conn.execute(f"SELECT {_META_COLS} FROM versions WHERE device_type=? AND workload=? "
                               "AND version=?", (device_type, workload, int(version))).fetchone()
            if row is None:
                raise ArtifactNotFoundError(f"{pair_label(device_type, workload, version)} is not in "
                                            f"{self.url}")
        return self._row_meta(row)

    @_sqlite_errors
    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Every version of a pair, oldest first."""
        check_name("device type", device_type)
        check_name("workload", workload)
        rows = self._conn().execute(f"SELECT {_META_COLS} FROM versions WHERE device_type=? AND workload=? "
                                    "ORDER BY version", (device_type, workload)).fetchall()
        return [self._row_meta(r) for r in rows]

    @_sqlite_errors
    def list_pairs(self) -> list[ArtifactMeta]:
        """Latest version of every pair."""
        rows = self._conn().execute(
            f"SELECT {', '.join('v.' + c.strip() for c in _META_COLS.split(','))} FROM versions v JOIN "
            "(SELECT device_type, workload, MAX(version) AS top FROM versions "
            "GROUP BY device_type, workload) t "
            "ON v.device_type=t.device_type AND v.workload=t.workload AND v.version=t.top "
            "ORDER BY v.device_type, v.workload").fetchall()
        return [self._row_meta(r) for r in rows]

    @_sqlite_errors
    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Every version holding ``artifact_id``."""
        rows = self._conn().execute(f"SELECT {_META_COLS} FROM versions WHERE artifact_id=? "
                                    "ORDER BY stored_at, version", (artifact_id,)).fetchall()
        return [self._row_meta(r) for r in rows]

    @_sqlite_errors
    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete a version or a whole pair (see :meth:`ModelStore.delete`)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        where = "device_type=? AND workload=?"
        args: tuple[Any, ...] = (device_type, workload)
        if version is not None:
            check_version(version)
            where += " AND version=?"
            args += (int(version),)
        with self._tx() as c:
            rows = c.execute(f"SELECT {_META_COLS} FROM versions WHERE {where} ORDER BY version",
                             args).fetchall()
            removed_profile = 0
            if version is None and profile:
                removed_profile = c.execute("DELETE FROM profiles WHERE device_type=? AND workload=?",
                                            (device_type, workload)).rowcount
            if not rows and not removed_profile:
                what = pair_label(device_type, workload, version)
                raise ArtifactNotFoundError(f"{what} is not in {self.url}; nothing deleted")
            c.execute(f"DELETE FROM versions WHERE {where}", args)
        return [self._row_meta(r) for r in rows]

    # ------------------------------------------------------------------ profiles
    def _insert_profile(self, c: sqlite3.Connection, data: bytes) -> tuple[str, str, int]:
        info = self._inspect_chunk(data)
        knobs = json.dumps(list(info.knobs))
        row = c.execute("SELECT knobs FROM profiles WHERE device_type=? AND workload=? LIMIT 1",
                        (info.device_type, info.workload)).fetchone()
        if row is not None and row[0] != knobs:
            raise InvalidParameterError(
                f"profile for {pair_label(info.device_type, info.workload)}: knobs {list(info.knobs)} differ "
                f"from the stored profile's {json.loads(row[0])}")
        c.execute("INSERT INTO profiles (device_type, workload, knobs, n_samples, data) "
                  "VALUES (?, ?, ?, ?, ?)", (info.device_type, info.workload, knobs, info.n_samples, data))
        return info.device_type, info.workload, info.n_samples

    @_sqlite_errors
    def append_profile_chunk(self, data: bytes) -> int:
        """Verify and append an encoded Profile to its pair."""
        with self._tx() as c:
            return self._insert_profile(c, bytes(data))[2]

    @_sqlite_errors
    def profile_chunks(self, device_type: str, workload: str) -> list[bytes]:
        """Verified chunks of a pair's profile, in append order."""
        check_name("device type", device_type)
        check_name("workload", workload)
        rows = self._conn().execute("SELECT seq, data FROM profiles WHERE device_type=? AND workload=? "
                                    "ORDER BY seq", (device_type, workload)).fetchall()
        out = []
        for i, (_, data) in enumerate(rows):
            what = f"profile chunk {i + 1} of {pair_label(device_type, workload)}"
            try:
                info = inspect_profile(bytes(data), what)
            except ArtifactError as exc:
                self._count("corrupt_refused")
                raise CorruptArtifactError(f"{exc}; refused") from None
            if (info.device_type, info.workload) != (device_type, workload):
                self._count("corrupt_refused")
                raise CorruptArtifactError(f"{what} belongs to {pair_label(info.device_type, info.workload)} "
                                           "(foreign value); refused")
            out.append(bytes(data))
        return out

    @_sqlite_errors
    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs with a profile."""
        rows = self._conn().execute("SELECT DISTINCT device_type, workload FROM profiles "
                                    "ORDER BY device_type, workload").fetchall()
        return [(str(a), str(b)) for a, b in rows]

    # ------------------------------------------------------------------ locks
    @_sqlite_errors
    def _try_lock(self, name: str, token: str, ttl_s: float) -> bool:
        now = time.time()
        with self._tx() as c:
            c.execute("DELETE FROM locks WHERE name=? AND expires_at<=?", (name, now))
            cur = c.execute("INSERT OR IGNORE INTO locks VALUES (?, ?, ?)", (name, token, now + ttl_s))
            return cur.rowcount == 1

    @_sqlite_errors
    def _extend_lock(self, name: str, token: str, ttl_s: float) -> bool:
        now = time.time()
        with self._tx() as c:
            cur = c.execute("UPDATE locks SET expires_at=? WHERE name=? AND token=? AND expires_at>?",
                            (now + ttl_s, name, token, now))
            return cur.rowcount == 1

    @_sqlite_errors
    def _unlock(self, name: str, token: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM locks WHERE name=? AND token=?", (name, token)).rowcount == 1

    # ------------------------------------------------------------------ write-back journal
    @_sqlite_errors
    def put_artifact_journaled(self, data: bytes, labels: dict[str, str]) -> ArtifactMeta:
        """Store an artifact *and* journal it for write-back to the primary, in one transaction."""
        from powerfleet.serde import inspect_predictor

        info = inspect_predictor(data, "artifact to store")
        check_name("device type", info.device_type)
        check_name("workload", info.workload)
        now = time.time()
        with self._tx() as c:
            meta = self._insert_version(c, info, data, labels, now)
            c.execute(f"INSERT INTO journal ({_JOURNAL_COLS}) VALUES ('put', ?, ?, ?, ?, ?, ?)",
                      (meta.device_type, meta.workload, meta.artifact_id, meta.encode_labels(), data, now))
        self._count("puts")
        return meta

    @_sqlite_errors
    def append_profile_chunk_journaled(self, data: bytes) -> int:
        """Append a profile chunk *and* journal it for write-back, in one transaction."""
        with self._tx() as c:
            dt, wl, n = self._insert_profile(c, bytes(data))
            c.execute(f"INSERT INTO journal ({_JOURNAL_COLS}) VALUES ('profile', ?, ?, '', '{{}}', ?, ?)",
                      (dt, wl, bytes(data), time.time()))
        return n

    @_sqlite_errors
    def journal(self, limit: int = 1000) -> list[JournalEntry]:
        """Pending write-back entries, oldest first."""
        rows = self._conn().execute(f"SELECT seq, {_JOURNAL_COLS} FROM journal ORDER BY seq LIMIT ?",
                                    (int(limit),)).fetchall()
        return [JournalEntry(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), decode_labels(r[5]),
                             bytes(r[6]), float(r[7])) for r in rows]

    @_sqlite_errors
    def journal_size(self) -> int:
        """Number of pending write-back entries."""
        (n,) = self._conn().execute("SELECT COUNT(*) FROM journal").fetchone()
        return int(n)

    @_sqlite_errors
    def journal_ack(self, seq: int) -> None:
        """Drop a journal entry once the primary holds it."""
        with self._tx() as c:
            c.execute("DELETE FROM journal WHERE seq=?", (int(seq),))
