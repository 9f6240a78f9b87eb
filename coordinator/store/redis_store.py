"""``RedisModelStore``: the fleet-wide predictor store on Redis (redis-py).

Key schema (``ns`` defaults to ``powerfleet:v1``; device types and workloads are names without
``:``, see :data:`coordinator.store.base.NAME_RE`)::

    {ns}:pairs                      SET   "dt:wl" of every pair with a version (listing index)
    {ns}:pair:{dt}:{wl}             HASH  seq (last version allocated), latest (current version)
    {ns}:versions:{dt}:{wl}         ZSET  version numbers (score = version)
    {ns}:meta:{dt}:{wl}:{v}         HASH  artifact_id, kind, parent_id, n_samples, created_at, ...
    {ns}:blob:{dt}:{wl}:{v}         STRING the artifact bytes (protobuf + sha256 digest)
    {ns}:id:{artifact_id}           SET   "dt:wl:v" of every version holding that artifact
    {ns}:profiles                   HASH  "dt:wl" -> knob names (JSON): pairs with a profile
    {ns}:profile:{dt}:{wl}          LIST  encoded Profile chunks, in append order
    {ns}:lock:{name}                STRING holder token, with an expiry (SET NX PX)

A put allocates a version with ``HINCRBY seq`` (so numbers are never reused, even after a
delete) and then writes blob, metadata and indexes and moves ``latest`` in one Lua script,
atomically; ``latest`` only moves forward. Listing reads the index sets, never ``KEYS``.
Transient connection errors are retried with exponential backoff (redis-py ``Retry``); a
server that stays unreachable raises :class:`StoreUnavailableError`.
"""

from __future__ import annotations

import json
import re
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

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

DEFAULT_NAMESPACE = "powerfleet:v1"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,127}(?<!:)$")

P = ParamSpec("P")
R = TypeVar("R")

# KEYS: pair, versions, meta, blob, pairs, id-set; ARGV: version, blob, "dt:wl", "dt:wl:v", meta...
_PUT_LUA = """
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('powerfleet: version ' .. ARGV[1] .. ' already exists')
end
redis.call('SET', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[3], unpack(ARGV, 5, #ARGV))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[1])
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
if tonumber(ARGV[1]) > latest then redis.call('HSET', KEYS[1], 'latest', ARGV[1]) end
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[4])
return 1
"""
# KEYS: pair, versions, meta, blob, pairs, id-set; ARGV: version, "dt:wl", "dt:wl:v"
_DELETE_LUA = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[3])
local top = redis.call('ZRANGE', KEYS[2], -1, -1)
if #top == 0 then
  redis.call('HDEL', KEYS[1], 'latest')
  redis.call('SREM', KEYS[5], ARGV[2])
else
  redis.call('HSET', KEYS[1], 'latest', top[1])
end
return 1
"""
# KEYS: profiles hash, profile list; ARGV: "dt:wl", knobs JSON, chunk
_PROFILE_LUA = """
local k = redis.call('HGET', KEYS[1], ARGV[1])
if k and k ~= ARGV[2] then return redis.error_reply('powerfleet: knobs ' .. k) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('RPUSH', KEYS[2], ARGV[3])
"""
_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: Characters that cannot appear unescaped in a URL's user info (they end the authority).
_UNSAFE_USERINFO = re.compile(r"[/?#\[\]]")


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, user info, rest)`` of ``url``, the user info being everything before the last ``@``.

    ``urlsplit`` ends the authority at the first ``/``, ``?`` or ``#``, so a password holding
    one of them unescaped would be cut in the wrong place; the last ``@`` never is.
    """
    scheme, sep, body = url.partition("://")
    head = f"{scheme}://" if sep else ""
    if not sep:
        body = url
    userinfo, at, rest = body.rpartition("@")
    return (head, userinfo, rest) if at else None


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, whatever the password contains.

    The user name is kept when it is an ordinary one; user info that does not parse cleanly is
    redacted whole. When in doubt more is hidden, never less.
    """
    split = _split_userinfo(url)
    if split is None:
        return url
    head, userinfo, rest = split
    user, colon, _ = userinfo.partition(":")
    if _UNSAFE_USERINFO.search(user) or "@" in user:
        return f"{head}***@{rest}"
    return f"{head}{user}:***@{rest}" if colon else url


def check_redis_url(url: str) -> None:
    """Refuse, without echoing it, a password that holds ``/``, ``?``, ``#``, ``[`` or ``]`` unescaped."""
    split = _split_userinfo(url)
    if split is not None and _UNSAFE_USERINFO.search(split[1]):
        raise InvalidParameterError(
            f"Redis URL {redact_url(url)!r}: the user name or password holds / ? # [ or ] unescaped; "
            "percent-encode it (urllib.parse.quote(password, safe='')), or leave it out of the URL and "
            "set POWERFLEET_REDIS_PASSWORD_FILE")


def _scrub(message: str, url: str) -> str:
    """``message`` with any piece of ``url``'s password replaced by ``***``."""
    split = _split_userinfo(url)
    if split is None:
        return message
    secret = split[1].partition(":")[2]
    for piece in {secret, unquote(secret), *re.split(r"[^A-Za-z0-9]+", secret)}:
        if len(piece) >= 2:
            message = message.replace(piece, "***")
    return message


def _redis_error(store: Any, exc: Exception) -> PowerfleetError | None:
    """redis-py errors as one-line store errors naming the (redacted) URL."""
    url = getattr(store, "url", "?")
    if isinstance(exc, redis.AuthenticationError):
        return StoreUnavailableError(f"Redis at {url} refused the credentials: {exc}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreUnavailableError(f"Redis at {url} is unreachable: {msg}")
    if isinstance(exc, redis.RedisError):
        return StoreError(f"Redis at {url}: {exc}")
    return None


_redis_errors = translating_errors(_redis_error)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisModelStore(BackendStore):
    """Predictor store on Redis (see the module docstring for keys and atomicity)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis[bytes] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        retries: int = 3,
    ) -> None:
        super().__init__(cache_bytes=cache_bytes, max_artifact_bytes=max_artifact_bytes)
        if not _NAMESPACE_RE.match(namespace):
            raise InvalidParameterError(f"namespace {namespace!r} must be letters, digits and : . _ - "
                                        "(not ending in ':')")
        self.ns = namespace
        if client is None:
            if not url:
                raise InvalidParameterError("RedisModelStore needs a redis:// or rediss:// URL or a client")
            scheme = url.split("://", 1)[0].lower()
            if scheme not in ("redis", "rediss", "unix"):
                raise InvalidParameterError(f"Redis URL {redact_url(url)!r} must start with redis://, "
                                            "rediss:// or unix://")
            check_redis_url(url)
            retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), int(retries))
            try:
                client = redis.Redis.from_url(
                    url, retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                    socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s,
                    health_check_interval=30, decode_responses=False)
            except ValueError as exc:
                raise InvalidParameterError(f"Redis URL {redact_url(url)!r} is not valid: "
                                            f"{_scrub(str(exc), url)}") from None
            self._url = redact_url(url)
        else:
            kwargs = client.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise InvalidParameterError("the Redis client must use decode_responses=False "
                                            "(artifacts are binary)")
            self._url = redact_url(url) if url else (
                f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}")
        self._r = client
        self._put_script = client.register_script(_PUT_LUA)
        self._delete_script = client.register_script(_DELETE_LUA)
        self._profile_script = client.register_script(_PROFILE_LUA)
        self._extend_script = client.register_script(_EXTEND_LUA)
        self._unlock_script = client.register_script(_UNLOCK_LUA)

    # ------------------------------------------------------------------ keys
    @property
    def url(self) -> str:
        """The Redis URL, password redacted."""
        return self._url

    @property
    def client(self) -> redis.Redis[bytes]:
        """The redis-py client (for tests and operations tooling)."""
        return self._r

    def key(self, *parts: str | int) -> str:
        """A key in this store's namespace."""
        return ":".join([self.ns, *map(str, parts)])

    def _pair_keys(self, dt: str, wl: str, v: int, artifact_id: str) -> list[str]:
        return [self.key("pair", dt, wl), self.key("versions", dt, wl), self.key("meta", dt, wl, v),
                self.key("blob", dt, wl, v), self.key("pairs"), self.key("id", artifact_id)]

    # ------------------------------------------------------------------ lifecycle
    @_redis_errors
    def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers."""
        self._r.ping()

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()

    # ------------------------------------------------------------------ artifacts
    @_redis_errors
    def _append(self, info: ArtifactInfo, data: bytes, labels: dict[str, str],
                stored_at: float) -> ArtifactMeta:
        dt, wl = info.device_type, info.workload
        version = int(self._r.hincrby(self.key("pair", dt, wl), "seq", 1))
        meta = ArtifactMeta.from_info(info, version, stored_at, labels)
        fields: list[str | int | float] = []
        for k, v in _meta_fields(meta).items():
            fields += [k, v]
        self._put_script(keys=self._pair_keys(dt, wl, version, meta.artifact_id),
                         args=[version, data, f"{dt}:{wl}", f"{dt}:{wl}:{version}", *fields])
        return meta

    @_redis_errors
    def _read_blob(self, meta: ArtifactMeta) -> bytes:
        data = self._r.get(self.key("blob", meta.device_type, meta.workload, meta.version))
        if data is None:
            raise ArtifactNotFoundError(f"{meta.label} is no longer in {self.url} (deleted)")
        return bytes(data)

    def _parse_meta(self, raw: dict[Any, Any], what: str) -> ArtifactMeta:
        d = {_s(k): _s(v) for k, v in raw.items()}
        try:
            return ArtifactMeta(d["device_type"], d["workload"], int(d["version"]), d["artifact_id"],
                                d["kind"], d["parent_id"], int(d["n_samples"]), float(d["created_at"]),
                                float(d["stored_at"]), int(d["size_bytes"]), decode_labels(d.get("labels")))
        except (KeyError, ValueError):
            self._count("corrupt_refused")
            raise CorruptArtifactError(f"{what} in {self.url}: metadata record is damaged; refused") from None

    @_redis_errors
    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata of a version (default: latest)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        if version is None:
            latest = self._r.hget(self.key("pair", device_type, workload), "latest")
            if latest is None:
                raise ArtifactNotFoundError(f"no predictor for {pair_label(device_type, workload)} "
                                            f"in {self.url}")
            v = int(latest)
        else:
            check_version(version)
            v = int(version)
        raw = self._r.hgetall(self.key("meta", device_type, workload, v))
        if not raw:
            raise ArtifactNotFoundError(f"{pair_label(device_type, workload, v)} is not in {self.url}")
        return self._parse_meta(raw, pair_label(device_type, workload, v))

    def _metas(self, triples: list[tuple[str, str, int]]) -> list[ArtifactMeta]:
        pipe = self._r.pipeline(transaction=False)
        for dt, wl, v in triples:
            pipe.hgetall(self.key("meta", dt, wl, v))
        out = []
        for (dt, wl, v), raw in zip(triples, pipe.execute(), strict=True):
            if raw:  # deleted between the index read and now
                out.append(self._parse_meta(raw, pair_label(dt, wl, v)))
        return out

    @_redis_errors
    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Every version of a pair, oldest first."""
        check_name("device type", device_type)
        check_name("workload", workload)
        nums = [int(v) for v in self._r.zrange(self.key("versions", device_type, workload), 0, -1)]
        return self._metas([(device_type, workload, v) for v in nums])

    @_redis_errors
    def list_pairs(self) -> list[ArtifactMeta]:
        """Latest version of every pair (index set, no KEYS)."""
        tokens = sorted(_s(t) for t in self._r.sscan_iter(self.key("pairs"), count=500))
        pairs = [tuple(t.split(":", 1)) for t in tokens]
        pipe = self._r.pipeline(transaction=False)
        for dt, wl in pairs:
            pipe.hget(self.key("pair", dt, wl), "latest")
        latest = pipe.execute()
        triples = [(dt, wl, int(v)) for (dt, wl), v in zip(pairs, latest, strict=True) if v is not None]
        return self._metas(triples)

    @_redis_errors
    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Every version holding ``artifact_id``."""
        members = [_s(m) for m in self._r.smembers(self.key("id", artifact_id))]
        triples = []
        for m in members:
            dt, wl, v = m.split(":")
            triples.append((dt, wl, int(v)))
        return sorted(self._metas(triples), key=lambda m: (m.stored_at, m.version))

    @_redis_errors
    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete a version or a whole pair (see :meth:`ModelStore.delete`)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        if version is not None:
            check_version(version)
            targets = [m for m in self.versions(device_type, workload) if m.version == version]
        else:
            targets = self.versions(device_type, workload)
        removed = []
        for m in targets:
            done = self._delete_script(
                keys=self._pair_keys(device_type, workload, m.version, m.artifact_id),
                args=[m.version, f"{device_type}:{workload}", f"{device_type}:{workload}:{m.version}"])
            if done:
                removed.append(m)
        removed_profile = 0
        if version is None and profile:
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self.key("profile", device_type, workload))
            pipe.hdel(self.key("profiles"), f"{device_type}:{workload}")
            removed_profile = int(pipe.execute()[0])
        if not removed and not removed_profile:
            raise ArtifactNotFoundError(f"{pair_label(device_type, workload, version)} is not in "
                                        f"{self.url}; nothing deleted")
        return removed

    # ------------------------------------------------------------------ profiles
    @_redis_errors
    def append_profile_chunk(self, data: bytes) -> int:
        """Verify and append an encoded Profile to its pair."""
        data = bytes(data)
        info = self._inspect_chunk(data)
        token = f"{info.device_type}:{info.workload}"
        try:
            keys = [self.key("profiles"), self.key("profile", info.device_type, info.workload)]
            self._profile_script(keys=keys, args=[token, json.dumps(list(info.knobs)), data])
        except redis.ResponseError as exc:
            if "powerfleet: knobs" in str(exc):
                stored = str(exc).split("knobs", 1)[1].strip()
                raise InvalidParameterError(
                    f"profile for {pair_label(info.device_type, info.workload)}: knobs {list(info.knobs)} "
                    f"differ from the stored profile's {stored}") from None
            raise
        return info.n_samples

    @_redis_errors
    def profile_chunks(self, device_type: str, workload: str) -> list[bytes]:
        """Verified chunks of a pair's profile, in append order."""
        check_name("device type", device_type)
        check_name("workload", workload)
        out = []
        for i, raw in enumerate(self._r.lrange(self.key("profile", device_type, workload), 0, -1)):
            data = bytes(raw)
            what = f"profile chunk {i + 1} of {pair_label(device_type, workload)}"
            try:
                info = inspect_profile(data, what)
            except ArtifactError as exc:
                self._count("corrupt_refused")
                raise CorruptArtifactError(f"{exc}; refused") from None
            if (info.device_type, info.workload) != (device_type, workload):
                self._count("corrupt_refused")
                raise CorruptArtifactError(f"{what} belongs to {pair_label(info.device_type, info.workload)} "
                                           "(foreign value); refused")
            out.append(data)
        return out

    @_redis_errors
    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs with a profile."""
        out = []
        for t in self._r.hkeys(self.key("profiles")):
            dt, wl = _s(t).split(":", 1)
            out.append((dt, wl))
        return sorted(out)

    # ------------------------------------------------------------------ locks
    @_redis_errors
    def _try_lock(self, name: str, token: str, ttl_s: float) -> bool:
        return bool(self._r.set(self.key("lock", name), token, nx=True, px=max(1, int(ttl_s * 1000))))

    @_redis_errors
    def _extend_lock(self, name: str, token: str, ttl_s: float) -> bool:
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(self._extend_script(keys=[self.key("lock", name)], args=[token, ttl_ms]))

    @_redis_errors
    def _unlock(self, name: str, token: str) -> bool:
        return bool(self._unlock_script(keys=[self.key("lock", name)], args=[token]))

    # ------------------------------------------------------------------ maintenance
    @_redis_errors
    def drop_namespace(self) -> int:
        """Delete every key of this store's namespace (SCAN, not KEYS); returns how many.

        For tests and decommissioning: it removes every predictor and profile.
        """
        n = 0
        batch: list[bytes] = []
        for k in self._r.scan_iter(match=f"{self.ns}:*", count=1000):
            batch.append(k)
            if len(batch) >= 500:
                n += int(self._r.delete(*batch))
                batch = []
        if batch:
            n += int(self._r.delete(*batch))
        self.clear_cache()
        return n


def _meta_fields(meta: ArtifactMeta) -> dict[str, str | int | float]:
    return {"device_type": meta.device_type, "workload": meta.workload, "version": meta.version,
            "artifact_id": meta.artifact_id, "kind": meta.kind, "parent_id": meta.parent_id,
            "n_samples": meta.n_samples, "created_at": repr(meta.created_at),
            "stored_at": repr(meta.stored_at), "size_bytes": meta.size_bytes, "labels": meta.encode_labels()}


__all__ = ["DEFAULT_NAMESPACE", "RedisModelStore", "check_redis_url", "redact_url"]
