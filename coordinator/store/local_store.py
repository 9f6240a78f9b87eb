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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from coordinator.store.base import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_COMPACT_CHUNKS,
    NAME_RE,
    ArtifactMeta,
    BackendStore,
    ImportResult,
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
from powerfleet.serde import MAX_ARTIFACT_BYTES, ArtifactInfo, ProfileInfo, load_predictor
from powertrain.errors import InvalidParameterError, PowerfleetError
from powertrain.outputs import user_cache_dir

SCHEMA_VERSION = 1
_META_COLS = ("device_type, workload, version, artifact_id, kind, parent_id, n_samples, created_at, "
              "stored_at, size_bytes, labels")
_META_NAMES = tuple(c.strip() for c in _META_COLS.split(","))
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
    return user_cache_dir("store.sqlite")


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
                 max_artifact_bytes: int = MAX_ARTIFACT_BYTES, busy_timeout_s: float = 30.0,
                 compact_chunks: int = DEFAULT_COMPACT_CHUNKS) -> None:
        super().__init__(cache_bytes=cache_bytes, max_artifact_bytes=max_artifact_bytes,
                         compact_chunks=compact_chunks)
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
    def get_info(self, key: str) -> str:
        """A value of the file's ``store_info`` table ("" if unset), e.g. the primary's last seen epoch."""
        row = self._conn().execute("SELECT value FROM store_info WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row is not None else ""

    @_sqlite_errors
    def set_info(self, key: str, value: str) -> None:
        """Set a value of the ``store_info`` table."""
        with self._tx() as c:
            c.execute("INSERT INTO store_info VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                      (key, value))

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
    def _next_version(self, c: sqlite3.Connection, device_type: str, workload: str) -> int:
        """Allocate the pair's next version number; a damaged ``seq`` is repaired from the versions."""
        pair = (device_type, workload)
        row = c.execute("SELECT seq FROM pairs WHERE device_type=? AND workload=?", pair).fetchone()
        (top,) = c.execute("SELECT MAX(version) FROM versions WHERE device_type=? AND workload=? "
                           "AND typeof(version)='integer'", pair).fetchone()
        top = int(top or 0)
        seq = row[0] if row is not None else 0
        key = f"pairs row {pair_label(device_type, workload)}"
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            self._index_problem(key, f"seq={str(seq)[:40]!r} is not an integer >= 0", f"using v{top}")
            seq = top
        elif seq < top:
            self._index_problem(key, f"seq={seq} is behind the stored v{top}", f"using v{top}")
            seq = top
        c.execute("INSERT INTO pairs VALUES (?, ?, ?) ON CONFLICT (device_type, workload) DO UPDATE SET "
                  "seq=excluded.seq", (*pair, seq + 1))
        return seq + 1

    def _insert_version(self, c: sqlite3.Connection, info: ArtifactInfo, data: bytes,
                        labels: dict[str, str], stored_at: float) -> ArtifactMeta:
        version = self._next_version(c, info.device_type, info.workload)
        meta = ArtifactMeta.from_info(info, version, stored_at, labels)
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
    def _blob(self, device_type: str, workload: str, version: int) -> bytes | None:
        row = self._conn().execute(
            "SELECT data FROM versions WHERE device_type=? AND workload=? AND version=?",
            (device_type, workload, version)).fetchone()
        if row is None:
            return None
        data = row[0]
        return bytes(data) if isinstance(data, bytes | memoryview) else str(data).encode()

    @_sqlite_errors
    def _has_record(self, device_type: str, workload: str, version: int) -> bool:
        return self._conn().execute("SELECT 1 FROM versions WHERE device_type=? AND workload=? AND version=?",
                                    (device_type, workload, version)).fetchone() is not None

    @_sqlite_errors
    def _write_record(self, meta: ArtifactMeta) -> None:
        with self._tx() as c:
            c.execute("UPDATE versions SET artifact_id=?, kind=?, parent_id=?, n_samples=?, created_at=?, stored_at=?, "
                      "size_bytes=?, labels=? WHERE device_type=? AND workload=? AND version=?",
                      (meta.artifact_id, meta.kind, meta.parent_id, meta.n_samples, meta.created_at, meta.stored_at,
                       meta.size_bytes, meta.encode_labels(), meta.device_type, meta.workload, meta.version))

    def _row_meta(self, row: tuple[Any, ...]) -> ArtifactMeta | None:
        """A versions row as metadata (validated; rebuilt from its bytes if a field is damaged).

        None, reported once, for a row whose key itself is damaged.
        """
        dt, wl, version = row[0], row[1], row[2]
        key = f"versions row {dt}/{wl} v{str(version)[:20]}"
        if not (isinstance(dt, str) and NAME_RE.match(dt) and isinstance(wl, str) and NAME_RE.match(wl)):
            self._index_problem(key, "device type or workload is not a valid name")
            return None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            self._index_problem(key, f"version={str(version)[:20]!r} is not a positive integer")
            return None
        fields = dict(zip(_META_NAMES, row, strict=True))
        return self._meta_from_record(key, fields, dt, wl, version)

    def _metas(self, rows: list[tuple[Any, ...]], *, strict: bool = False) -> list[ArtifactMeta]:
        """Rows as metadata; damaged ones are skipped (reported) unless ``strict``."""
        out = []
        for r in rows:
            try:
                m = self._row_meta(r)
            except CorruptArtifactError:
                if strict:
                    raise
                continue
            if m is not None:
                out.append(m)
        return out

    @_sqlite_errors
    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata of a version (default: latest = the highest stored version)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        conn = self._conn()
        if version is None:
            row = conn.execute(f"SELECT {_META_COLS} FROM versions WHERE device_type=? AND workload=? "
                               "AND typeof(version)='integer' ORDER BY version DESC LIMIT 1",
                               (device_type, workload)).fetchone()
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
        found = self._metas([row], strict=True)
        if not found:
            raise ArtifactNotFoundError(f"{pair_label(device_type, workload, version)} is not in {self.url}")
        return found[0]

    @_sqlite_errors
    def latest_version(self, device_type: str, workload: str) -> int:
        """The highest stored version number of a pair (0 if none), its record unread."""
        check_name("device type", device_type)
        check_name("workload", workload)
        (top,) = self._conn().execute("SELECT MAX(version) FROM versions WHERE device_type=? AND workload=? "
                                      "AND typeof(version)='integer'", (device_type, workload)).fetchone()
        return int(top or 0)

    @_sqlite_errors
    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Every readable version of a pair, oldest first (damaged rows reported and skipped)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        rows = self._conn().execute(f"SELECT {_META_COLS} FROM versions WHERE device_type=? AND workload=?",
                                    (device_type, workload)).fetchall()
        return sorted(self._metas(rows), key=lambda m: m.version)

    @_sqlite_errors
    def list_pairs(self) -> list[ArtifactMeta]:
        """Latest readable version of every pair (damaged rows reported and skipped)."""
        rows = self._conn().execute(
            f"SELECT {', '.join('v.' + c.strip() for c in _META_COLS.split(','))} FROM versions v JOIN "
            "(SELECT device_type, workload, MAX(version) AS top FROM versions WHERE typeof(version)='integer' "
            "GROUP BY device_type, workload) t "
            "ON v.device_type=t.device_type AND v.workload=t.workload AND v.version=t.top "
            "ORDER BY v.device_type, v.workload").fetchall()
        return self._metas(rows)

    @_sqlite_errors
    def pair_names(self) -> list[tuple[str, str]]:
        """Every pair with a version or samples (also when its records cannot be read)."""
        rows = self._conn().execute("SELECT device_type, workload FROM versions UNION "
                                    "SELECT device_type, workload FROM profiles").fetchall()
        out = set()
        for dt, wl in rows:
            if isinstance(dt, str) and NAME_RE.match(dt) and isinstance(wl, str) and NAME_RE.match(wl):
                out.add((dt, wl))
            else:
                self._index_problem(f"row {str(dt)[:40]}/{str(wl)[:40]}", "device type or workload is not a "
                                                                         "valid name")
        return sorted(out)

    @_sqlite_errors
    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Every readable version holding ``artifact_id`` (rows whose id field is damaged are rebuilt
        from their bytes first, so they are found too)."""
        rows = self._conn().execute(f"SELECT {_META_COLS} FROM versions WHERE artifact_id=? OR "
                                    "typeof(artifact_id)!='text' OR length(artifact_id)!=71 OR "
                                    "substr(artifact_id, 1, 7)!='sha256:'", (artifact_id,)).fetchall()
        found = [m for m in self._metas(rows) if m.artifact_id == artifact_id]
        return sorted(found, key=lambda m: (m.stored_at, m.version))

    @_sqlite_errors
    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete a version or a whole pair (see :meth:`ModelStore.delete`); damaged rows go too."""
        check_name("device type", device_type)
        check_name("workload", workload)
        where = "device_type=? AND workload=?"
        args: tuple[Any, ...] = (device_type, workload)
        if version is not None:
            check_version(version)
            where += " AND version=?"
            args += (int(version),)
        with self._tx() as c:
            rows = c.execute(f"SELECT {_META_COLS} FROM versions WHERE {where}", args).fetchall()
            removed_profile = 0
            if version is None and profile:
                removed_profile = c.execute("DELETE FROM profiles WHERE device_type=? AND workload=?",
                                            (device_type, workload)).rowcount
            if not rows and not removed_profile:
                what = pair_label(device_type, workload, version)
                raise ArtifactNotFoundError(f"{what} is not in {self.url}; nothing deleted")
            c.execute(f"DELETE FROM versions WHERE {where}", args)
        return sorted((_deleted_meta(self, r) for r in rows), key=lambda m: m.version)

    # ------------------------------------------------------------------ profiles
    def _stored_knobs(self, c: sqlite3.Connection, device_type: str, workload: str) -> list[str] | None:
        """The knob names the pair's stored chunks use (None if none); damaged entries reported."""
        rows = c.execute("SELECT DISTINCT knobs FROM profiles WHERE device_type=? AND workload=?",
                         (device_type, workload)).fetchall()
        for (text,) in rows:
            try:
                knobs = json.loads(text) if isinstance(text, str | bytes) else None
            except ValueError:
                knobs = None
            if isinstance(knobs, list) and knobs and all(isinstance(k, str) for k in knobs):
                return knobs
            self._index_problem(f"profiles rows of {pair_label(device_type, workload)}",
                                f"knobs={str(text)[:40]!r} is not a JSON list of names", "ignored")
        return None

    def _insert_profile(self, c: sqlite3.Connection, data: bytes, info: ProfileInfo | None = None,
                        seq: int | None = None) -> tuple[str, str, int]:
        info = info or self._inspect_chunk(data)
        stored = self._stored_knobs(c, info.device_type, info.workload)
        if stored is not None and stored != list(info.knobs):
            raise InvalidParameterError(
                f"profile for {pair_label(info.device_type, info.workload)}: knobs {list(info.knobs)} differ "
                f"from the stored profile's {stored}")
        c.execute("INSERT INTO profiles (seq, device_type, workload, knobs, n_samples, data) "
                  "VALUES (?, ?, ?, ?, ?, ?)",
                  (seq, info.device_type, info.workload, json.dumps(list(info.knobs)), info.n_samples, data))
        return info.device_type, info.workload, info.n_samples

    def _chunk_count(self, device_type: str, workload: str) -> int:
        (n,) = self._conn().execute("SELECT COUNT(*) FROM profiles WHERE device_type=? AND workload=?",
                                    (device_type, workload)).fetchone()
        return int(n)

    @_sqlite_errors
    def append_profile_chunk(self, data: bytes) -> int:
        """Verify and append an encoded Profile to its pair (compacting the profile when it is long)."""
        with self._tx() as c:
            dt, wl, n = self._insert_profile(c, bytes(data))
        self._after_append(dt, wl, self._chunk_count(dt, wl))
        return n

    @_sqlite_errors
    def _raw_chunks(self, device_type: str, workload: str) -> list[tuple[str, bytes]]:
        rows = self._conn().execute("SELECT seq, data FROM profiles WHERE device_type=? AND workload=? "
                                    "ORDER BY seq", (device_type, workload)).fetchall()
        return [(f"profiles row seq={seq}", bytes(d) if isinstance(d, bytes | memoryview) else str(d).encode())
                for seq, d in rows]

    @_sqlite_errors
    def _compact(self, device_type: str, workload: str, chunks: list[tuple[str, bytes]],
                 merged: list[bytes]) -> bool:
        with self._tx() as c:
            rows = c.execute("SELECT seq, data FROM profiles WHERE device_type=? AND workload=? ORDER BY seq "
                             "LIMIT ?", (device_type, workload, len(chunks))).fetchall()
            if len(rows) != len(chunks) or any(bytes(r[1]) != d for r, (_, d) in zip(rows, chunks, strict=True)):
                return False
            seqs = [int(r[0]) for r in rows]
            c.execute(f"DELETE FROM profiles WHERE seq IN ({', '.join('?' * len(seqs))})", seqs)
            for seq, data in zip(seqs, merged, strict=False):
                self._insert_profile(c, data, seq=seq)
        return True

    @_sqlite_errors
    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs with a profile."""
        rows = self._conn().execute("SELECT DISTINCT device_type, workload FROM profiles "
                                    "ORDER BY device_type, workload").fetchall()
        out = []
        for dt, wl in rows:
            if isinstance(dt, str) and NAME_RE.match(dt) and isinstance(wl, str) and NAME_RE.match(wl):
                out.append((dt, wl))
            else:
                self._index_problem(f"profiles rows {str(dt)[:40]}/{str(wl)[:40]}",
                                    "device type or workload is not a valid name")
        return out

    # ------------------------------------------------------------------ import
    @_sqlite_errors
    def _import(self, artifacts: Sequence[tuple[ArtifactInfo, bytes, dict[str, str]]],
                chunks: Sequence[tuple[ProfileInfo, bytes]], stored_at: float,
                journal: bool = False) -> list[ArtifactMeta | None]:
        out: list[ArtifactMeta | None] = []
        with self._tx() as c:
            for info, data, labels in artifacts:
                held = c.execute("SELECT 1 FROM versions WHERE artifact_id=? AND device_type=? AND workload=?",
                                 (info.artifact_id, info.device_type, info.workload)).fetchone()
                if held is not None:
                    out.append(None)
                    continue
                meta = self._insert_version(c, info, data, labels, stored_at)
                out.append(meta)
                if journal:
                    c.execute(f"INSERT INTO journal ({_JOURNAL_COLS}) VALUES ('put', ?, ?, ?, ?, ?, ?)",
                              (meta.device_type, meta.workload, meta.artifact_id, meta.encode_labels(), data,
                               stored_at))
            for pinfo, data in chunks:
                dt, wl, _ = self._insert_profile(c, data, pinfo)
                if journal:
                    c.execute(f"INSERT INTO journal ({_JOURNAL_COLS}) VALUES ('profile', ?, ?, '', '{{}}', ?, ?)",
                              (dt, wl, data, stored_at))
        for dt, wl in dict.fromkeys((p.device_type, p.workload) for p, _ in chunks):
            self._after_append(dt, wl, self._chunk_count(dt, wl))
        return out

    def import_values_journaled(self, artifacts: Sequence[tuple[bytes, Mapping[str, str]]],
                                chunks: Sequence[bytes] = ()) -> ImportResult:
        """:meth:`import_values` whose writes are also journaled for write-back, in the same transaction."""
        return self._import_checked(artifacts, chunks, journal=True)

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
        info, _ = load_predictor(bytes(data), "artifact to store")
        self._check_value("artifact", info.device_type, info.workload, len(data))
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
        self._after_append(dt, wl, self._chunk_count(dt, wl))
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


def _deleted_meta(store: LocalModelStore, row: tuple[Any, ...]) -> ArtifactMeta:
    """What a deleted row was: its metadata, or (damaged row) what can be said about it."""
    try:
        meta = store._row_meta(row)
    except CorruptArtifactError:
        meta = None
    if meta is not None:
        return meta
    version = row[2] if isinstance(row[2], int) and not isinstance(row[2], bool) else 0
    return ArtifactMeta(str(row[0]), str(row[1]), version, str(row[3])[:80], "?", "", 0, 0.0, 0.0, 0)
