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
    {ns}:epoch                      STRING a random token set once per data lifetime (SET NX): a
                                    Redis restarted empty, or a flushed namespace, has a new one

A put allocates a version with ``HINCRBY seq`` (so numbers are never reused, even after a
delete) and then writes blob, metadata and indexes and moves ``latest`` in one Lua script,
atomically; ``latest`` is the highest well-formed version of the ``versions`` index. Listing
reads the index sets, never ``KEYS``. Nothing read from Redis is trusted: a malformed pointer,
set member or metadata field is reported once, counted, and skipped or rebuilt from the
artifact bytes (see :class:`~coordinator.store.base.BackendStore`).
Transient connection errors are retried with exponential backoff (redis-py ``Retry``); a
server that stays unreachable raises :class:`StoreUnavailableError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from coordinator.store.base import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_COMPACT_CHUNKS,
    NAME_RE,
    ArtifactMeta,
    BackendStore,
    check_name,
    check_version,
    pair_label,
    translating_errors,
)
from coordinator.store.errors import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    StoreError,
    StoreUnavailableError,
)
from powerfleet.serde import MAX_ARTIFACT_BYTES, ArtifactInfo, ProfileInfo
from powertrain.errors import InvalidParameterError, PowerfleetError

DEFAULT_NAMESPACE = "powerfleet:v1"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,127}(?<!:)$")

P = ParamSpec("P")
R = TypeVar("R")

# Picks the highest well-formed version member of the versions zset (KEYS[2]) as latest.
_SET_LATEST_LUA = """
local function set_latest(pair_key, versions_key, fallback)
  local top = redis.call('ZREVRANGE', versions_key, 0, 15, 'WITHSCORES')
  local latest = fallback
  for i = 1, #top, 2 do
    local s = tonumber(top[i + 1])
    if s and top[i] == string.format('%d', s) then latest = top[i]; break end
  end
  if latest then redis.call('HSET', pair_key, 'latest', latest) else redis.call('HDEL', pair_key, 'latest') end
end
"""
# KEYS: pair, versions; ARGV: how many numbers. Repairs a damaged or lagging seq from the versions.
_ALLOC_LUA = """
local raw = redis.call('HGET', KEYS[1], 'seq')
local seq = tonumber(raw)
local top = 0
local t = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #t > 0 then
  local s = tonumber(t[2])
  if s and s == math.floor(s) and s > 0 and s < 2^50 then top = s end
end
local bad = ''
if raw and (not seq or seq < 0 or seq ~= math.floor(seq) or seq >= 2^50) then
  bad = 'seq=' .. string.sub(raw, 1, 40) .. ' is not an integer >= 0'
  seq = top
elseif not seq then
  seq = 0
end
if seq < top then
  if bad == '' then
    bad = 'seq=' .. string.format('%d', seq) .. ' is behind the stored v' .. string.format('%d', top)
  end
  seq = top
end
redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq + tonumber(ARGV[1])))
return {seq + 1, bad}
"""
# KEYS: pair, versions, meta, blob, pairs, id-set; ARGV: version, blob, "dt:wl", "dt:wl:v", meta...
_PUT_LUA = _SET_LATEST_LUA + """
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('powerfleet: version ' .. ARGV[1] .. ' already exists')
end
redis.call('SET', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[3], unpack(ARGV, 5, #ARGV))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[1])
set_latest(KEYS[1], KEYS[2], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[4])
return 1
"""
# KEYS: pair, versions, meta, blob, pairs, id-set; ARGV: version, "dt:wl", "dt:wl:v"
_DELETE_LUA = _SET_LATEST_LUA + """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[3])
set_latest(KEYS[1], KEYS[2], nil)
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[5], ARGV[2]) end
return 1
"""
# KEYS: profiles hash, profile list; ARGV: "dt:wl", knobs JSON, chunk. Returns {chunks, replaced knobs}:
# stored knobs that are not a JSON list (damaged) are replaced by the chunk's own.
_PROFILE_LUA = """
local k = redis.call('HGET', KEYS[1], ARGV[1])
local replaced = ''
if k and k ~= ARGV[2] then
  local ok, v = pcall(cjson.decode, k)
  if ok and type(v) == 'table' and #v > 0 then return redis.error_reply('powerfleet: knobs ' .. k) end
  replaced = k
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {redis.call('RPUSH', KEYS[2], ARGV[3]), replaced}
"""
# KEYS: profile list; ARGV: n, m, m merged chunks, n sha1 of the chunks they replace. All or nothing.
_COMPACT_LUA = """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local head = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #head ~= n then return 0 end
for i = 1, n do
  if redis.sha1hex(head[i]) ~= ARGV[2 + m + i] then return 0 end
end
redis.call('LTRIM', KEYS[1], n, -1)
for i = m, 1, -1 do redis.call('LPUSH', KEYS[1], ARGV[2 + i]) end
return 1
"""
# An import, all or nothing: every check runs before the first write.
# KEYS: 6 per artifact (pair, versions, meta, blob, pairs, id-set), then 2 per chunk (profiles, profile).
# ARGV: n_artifacts, n_chunks; per artifact: version, blob, "dt:wl", "dt:wl:v", n_fields, fields...;
# per chunk: "dt:wl", knobs JSON, chunk. Returns 1/0 per artifact (0: the pair already held it).
_IMPORT_LUA = _SET_LATEST_LUA + """
local na, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
local arts, chunks, a = {}, {}, 3
for i = 1, na do
  local nf = tonumber(ARGV[a + 4])
  arts[i] = {k = (i - 1) * 6, v = ARGV[a], blob = ARGV[a + 1], pair = ARGV[a + 2], member = ARGV[a + 3],
             f0 = a + 5, f1 = a + 4 + nf}
  a = a + 5 + nf
end
for j = 1, nc do
  chunks[j] = {k = na * 6 + (j - 1) * 2, pair = ARGV[a], knobs = ARGV[a + 1], data = ARGV[a + 2]}
  a = a + 3
end
local skip = {}
for i, x in ipairs(arts) do
  if redis.call('EXISTS', KEYS[x.k + 3]) == 1 or redis.call('EXISTS', KEYS[x.k + 4]) == 1 then
    return redis.error_reply('powerfleet: version ' .. x.member .. ' already exists')
  end
  skip[i] = false
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[x.k + 6])) do
    if string.sub(m, 1, #x.pair + 1) == x.pair .. ':' then skip[i] = true end
  end
end
for _, c in ipairs(chunks) do
  local k = redis.call('HGET', KEYS[c.k + 1], c.pair)
  if k and k ~= c.knobs then
    local ok, v = pcall(cjson.decode, k)
    if ok and type(v) == 'table' and #v > 0 then return redis.error_reply('powerfleet: knobs ' .. k) end
  end
end
local out = {}
for i, x in ipairs(arts) do
  out[i] = 0
  if not skip[i] then
    redis.call('SET', KEYS[x.k + 4], x.blob)
    redis.call('HSET', KEYS[x.k + 3], unpack(ARGV, x.f0, x.f1))
    redis.call('ZADD', KEYS[x.k + 2], tonumber(x.v), x.v)
    set_latest(KEYS[x.k + 1], KEYS[x.k + 2], x.v)
    redis.call('SADD', KEYS[x.k + 5], x.pair)
    redis.call('SADD', KEYS[x.k + 6], x.member)
    out[i] = 1
  end
end
for _, c in ipairs(chunks) do
  redis.call('HSET', KEYS[c.k + 1], c.pair, c.knobs)
  redis.call('RPUSH', KEYS[c.k + 2], c.data)
end
return out
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


def check_redis_userinfo(url: str) -> None:
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
        compact_chunks: int = DEFAULT_COMPACT_CHUNKS,
    ) -> None:
        super().__init__(cache_bytes=cache_bytes, max_artifact_bytes=max_artifact_bytes,
                         compact_chunks=compact_chunks)
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
            check_redis_userinfo(url)
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
        self._alloc_script = client.register_script(_ALLOC_LUA)
        self._put_script = client.register_script(_PUT_LUA)
        self._delete_script = client.register_script(_DELETE_LUA)
        self._profile_script = client.register_script(_PROFILE_LUA)
        self._compact_script = client.register_script(_COMPACT_LUA)
        self._import_script = client.register_script(_IMPORT_LUA)
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

    # ------------------------------------------------------------------ epoch
    @_redis_errors
    def epoch(self) -> str:
        """The namespace's data-lifetime token (created if missing: Redis lost its data, or a fresh store)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.set(self.key("epoch"), secrets.token_hex(8), nx=True)
        pipe.get(self.key("epoch"))
        _, value = pipe.execute()
        return _s(value) if value is not None else ""

    # ------------------------------------------------------------------ artifacts
    def _allocate(self, dt: str, wl: str, n: int = 1) -> int:
        """Allocate ``n`` version numbers of a pair; returns the first (a damaged seq is repaired)."""
        first, bad = self._alloc_script(keys=[self.key("pair", dt, wl), self.key("versions", dt, wl)], args=[n])
        if bad:
            self._index_problem(f"{self.key('pair', dt, wl)} seq", _s(bad), f"using v{int(first) - 1}")
        return int(first)

    @_redis_errors
    def _append(self, info: ArtifactInfo, data: bytes, labels: dict[str, str],
                stored_at: float) -> ArtifactMeta:
        dt, wl = info.device_type, info.workload
        for attempt in range(4):
            version = self._allocate(dt, wl)
            meta = ArtifactMeta.from_info(info, version, stored_at, labels)
            try:
                self._put_script(keys=self._pair_keys(dt, wl, version, meta.artifact_id),
                                 args=[version, data, f"{dt}:{wl}", f"{dt}:{wl}:{version}", *_flat(meta)])
                return meta
            except redis.ResponseError as exc:
                if "already exists" not in str(exc) or attempt == 3:
                    raise
                self._index_problem(self.key("meta", dt, wl, version), "a record exists for a number the pair's "
                                    "seq and versions do not hold", "skipped that number")
        raise AssertionError("unreachable")

    @_redis_errors
    def _blob(self, device_type: str, workload: str, version: int) -> bytes | None:
        data = self._r.get(self.key("blob", device_type, workload, version))
        return None if data is None else bytes(data)

    @_redis_errors
    def _write_record(self, meta: ArtifactMeta) -> None:
        dt, wl, v = meta.device_type, meta.workload, meta.version
        pipe = self._r.pipeline(transaction=True)
        fields: dict[str | bytes, bytes | float | int | str] = dict(_meta_fields(meta).items())
        pipe.hset(self.key("meta", dt, wl, v), mapping=fields)
        pipe.zadd(self.key("versions", dt, wl), {str(v): v})
        pipe.sadd(self.key("id", meta.artifact_id), f"{dt}:{wl}:{v}")
        pipe.sadd(self.key("pairs"), f"{dt}:{wl}")
        pipe.execute()

    @_redis_errors
    def _has_record(self, device_type: str, workload: str, version: int) -> bool:
        return bool(self._r.exists(self.key("meta", device_type, workload, version)))

    def _version_numbers(self, dt: str, wl: str, raw: list[Any]) -> list[int]:
        """Well-formed version members (others reported once)."""
        out = []
        for m in raw:
            text = _s(m)
            if re.fullmatch(r"[1-9][0-9]{0,15}", text):
                out.append(int(text))
            else:
                self._index_problem(f"{self.key('versions', dt, wl)} member {text[:40]!r}",
                                    "is not a positive integer version")
        return out

    def _record(self, dt: str, wl: str, v: int, raw: dict[Any, Any] | None) -> ArtifactMeta | None:
        """The metadata of ``v`` from its hash ``raw`` (fetched if None); rebuilt from the bytes if the
        hash is damaged or gone; None (reported) if neither record nor bytes remain or both are bad."""
        key = self.key("meta", dt, wl, v)
        if raw is None:
            raw = self._r.hgetall(key)
        try:
            if raw:
                return self._meta_from_record(key, {_s(k): v_ for k, v_ in raw.items()}, dt, wl, v)
            if self._r.exists(self.key("blob", dt, wl, v)):
                return self._meta_from_record(key, {}, dt, wl, v)
        except CorruptArtifactError:
            return None
        if self._r.zscore(self.key("versions", dt, wl), str(v)) is not None:
            self._index_problem(f"{self.key('versions', dt, wl)} member {v}", "names a version with no record "
                                "and no artifact bytes")
        return None

    def _latest(self, dt: str, wl: str, latest_raw: Any, tops: list[Any]) -> ArtifactMeta | None:
        """The pair's latest readable version, from its ``latest`` pointer and the top of its versions
        index (the index is authoritative: puts and deletes keep the pointer equal to its top)."""
        pointer_key = f"{self.key('pair', dt, wl)} latest"
        pointer: int | None = None
        if latest_raw is not None:
            text = _s(latest_raw)
            if re.fullmatch(r"[1-9][0-9]{0,15}", text):
                pointer = int(text)
            else:
                self._index_problem(pointer_key, f"latest={text[:40]!r} is not a positive integer",
                                    "using the highest stored version")
        members = self._version_numbers(dt, wl, [m for m, _ in tops])
        if len(tops) >= 8 and len(members) < len(tops):  # many damaged members at the top: read all
            members = self._version_numbers(dt, wl, self._r.zrevrange(self.key("versions", dt, wl), 0, -1))
        order = list(members)
        if pointer is not None and pointer not in order:
            order.append(pointer)
        for v in order:
            meta = self._record(dt, wl, v, None)
            if meta is None:
                continue
            if pointer is not None and pointer != v:
                self._index_problem(pointer_key, f"latest={pointer} but the newest readable version is v{v}",
                                    f"using v{v}")
            elif pointer is None and latest_raw is None:
                self._index_problem(pointer_key, "latest is missing", f"using v{v}")
            if not members:
                self._index_problem(self.key("versions", dt, wl), f"index is missing v{v}", f"using v{v}")
            return meta
        if pointer is not None:
            self._index_problem(pointer_key, f"latest={pointer} names no readable version")
        return None

    def _latest_raw(self, pairs: list[tuple[str, str]]) -> list[tuple[Any, list[Any]]]:
        pipe = self._r.pipeline(transaction=False)
        for dt, wl in pairs:
            pipe.hget(self.key("pair", dt, wl), "latest")
            pipe.zrevrange(self.key("versions", dt, wl), 0, 7, withscores=True)
        raw = pipe.execute()
        return [(raw[2 * i], list(raw[2 * i + 1])) for i in range(len(pairs))]

    @_redis_errors
    def meta(self, device_type: str, workload: str, version: int | None = None) -> ArtifactMeta:
        """Metadata of a version (default: latest), validated (see the module docstring)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        if version is None:
            ((latest_raw, tops),) = self._latest_raw([(device_type, workload)])
            meta = self._latest(device_type, workload, latest_raw, tops)
            if meta is None:
                raise ArtifactNotFoundError(f"no predictor for {pair_label(device_type, workload)} "
                                            f"in {self.url}")
            return meta
        check_version(version)
        v = int(version)
        key = self.key("meta", device_type, workload, v)
        raw = self._r.hgetall(key)
        if raw:
            return self._meta_from_record(key, {_s(k): x for k, x in raw.items()}, device_type, workload, v)
        if self._r.exists(self.key("blob", device_type, workload, v)):
            return self._meta_from_record(key, {}, device_type, workload, v)
        raise ArtifactNotFoundError(f"{pair_label(device_type, workload, v)} is not in {self.url}")

    @_redis_errors
    def latest_version(self, device_type: str, workload: str) -> int:
        """The top of the pair's versions index (else its latest pointer; 0 if none), records unread."""
        check_name("device type", device_type)
        check_name("workload", workload)
        ((latest_raw, tops),) = self._latest_raw([(device_type, workload)])
        members = self._version_numbers(device_type, workload, [m for m, _ in tops])
        if members:
            return members[0]
        text = _s(latest_raw) if latest_raw is not None else ""
        return int(text) if re.fullmatch(r"[1-9][0-9]{0,15}", text) else 0

    def _metas(self, triples: list[tuple[str, str, int]]) -> list[ArtifactMeta]:
        pipe = self._r.pipeline(transaction=False)
        for dt, wl, v in triples:
            pipe.hgetall(self.key("meta", dt, wl, v))
        out = []
        for (dt, wl, v), raw in zip(triples, pipe.execute(), strict=True):
            meta = self._record(dt, wl, v, raw) if raw else self._record(dt, wl, v, {})
            if meta is not None:
                out.append(meta)
        return out

    @_redis_errors
    def versions(self, device_type: str, workload: str) -> list[ArtifactMeta]:
        """Every readable version of a pair, oldest first (damaged entries reported and skipped)."""
        check_name("device type", device_type)
        check_name("workload", workload)
        nums = self._version_numbers(device_type, workload,
                                     self._r.zrange(self.key("versions", device_type, workload), 0, -1))
        return sorted(self._metas([(device_type, workload, v) for v in sorted(set(nums))]),
                      key=lambda m: m.version)

    def _pair_tokens(self, tokens: list[str], key: str) -> list[tuple[str, str]]:
        """``dt:wl`` members as pairs; malformed ones reported once and skipped."""
        out = []
        for t in tokens:
            dt, sep, wl = t.partition(":")
            if sep and NAME_RE.match(dt) and NAME_RE.match(wl):
                out.append((dt, wl))
            else:
                self._index_problem(f"{key} member {t[:60]!r}", "is not device_type:workload with valid names")
        return sorted(set(out))

    @_redis_errors
    def list_pairs(self) -> list[ArtifactMeta]:
        """Latest readable version of every pair (index set, no KEYS; damaged entries reported, skipped)."""
        pairs = self._pair_tokens([_s(t) for t in self._r.sscan_iter(self.key("pairs"), count=500)],
                                  self.key("pairs"))
        out = []
        for (dt, wl), (latest_raw, tops) in zip(pairs, self._latest_raw(pairs), strict=True):
            meta = self._latest(dt, wl, latest_raw, tops)
            if meta is not None:
                out.append(meta)
            elif latest_raw is not None or tops:
                self._index_problem(f"{self.key('pairs')} member '{dt}:{wl}'", "names a pair with no readable "
                                    "version")
        return out

    @_redis_errors
    def pair_names(self) -> list[tuple[str, str]]:
        """Every pair the pairs set or the profiles hash names, records unread."""
        pairs = self._pair_tokens([_s(t) for t in self._r.sscan_iter(self.key("pairs"), count=500)],
                                  self.key("pairs"))
        return sorted(set(pairs) | set(self.profile_pairs()))

    @_redis_errors
    def find(self, artifact_id: str) -> list[ArtifactMeta]:
        """Every readable version holding ``artifact_id`` (malformed id-set members reported, skipped)."""
        key = self.key("id", artifact_id)
        triples = []
        for raw in self._r.smembers(key):
            m = _s(raw)
            parts = m.split(":")
            if (len(parts) == 3 and NAME_RE.match(parts[0]) and NAME_RE.match(parts[1])
                    and re.fullmatch(r"[1-9][0-9]{0,15}", parts[2])):
                triples.append((parts[0], parts[1], int(parts[2])))
            else:
                self._index_problem(f"{key} member {m[:60]!r}", "is not device_type:workload:version")
        out = []
        for meta in self._metas(triples):
            if meta.artifact_id == artifact_id:
                out.append(meta)
            else:
                self._index_problem(f"{key} member '{meta.device_type}:{meta.workload}:{meta.version}'",
                                    "names a version holding another artifact")
        return sorted(out, key=lambda m: (m.stored_at, m.version))

    @_redis_errors
    def delete(self, device_type: str, workload: str, version: int | None = None, *,
               profile: bool = False) -> list[ArtifactMeta]:
        """Delete a version or a whole pair (see :meth:`ModelStore.delete`); damaged versions go too."""
        check_name("device type", device_type)
        check_name("workload", workload)
        vkey = self.key("versions", device_type, workload)
        members = [_s(m) for m in self._r.zrange(vkey, 0, -1)]
        nums = self._version_numbers(device_type, workload, members)
        if version is not None:
            check_version(version)
            nums = [v for v in nums if v == version]
        removed = []
        for v in nums:
            meta = self._record(device_type, workload, v, None) or ArtifactMeta(
                device_type, workload, v, "", "?", "", 0, 0.0, 0.0, 0)
            done = self._delete_script(
                keys=self._pair_keys(device_type, workload, v, meta.artifact_id or "-"),
                args=[v, f"{device_type}:{workload}", f"{device_type}:{workload}:{v}"])
            if done:
                removed.append(meta)
        if version is None:
            bad = [m for m in members if not re.fullmatch(r"[1-9][0-9]{0,15}", m)]
            if bad:
                self._r.zrem(vkey, *bad)
                if not self._r.zcard(vkey):
                    self._r.srem(self.key("pairs"), f"{device_type}:{workload}")
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
    def _knobs_error(self, exc: redis.ResponseError, info: ProfileInfo) -> PowerfleetError | None:
        if "powerfleet: knobs" not in str(exc):
            return None
        stored = str(exc).split("knobs", 1)[1].strip()
        return InvalidParameterError(f"profile for {pair_label(info.device_type, info.workload)}: knobs "
                                     f"{list(info.knobs)} differ from the stored profile's {stored}")

    @_redis_errors
    def append_profile_chunk(self, data: bytes) -> int:
        """Verify and append an encoded Profile to its pair (compacting the profile when it is long)."""
        data = bytes(data)
        info = self._inspect_chunk(data)
        token = f"{info.device_type}:{info.workload}"
        try:
            keys = [self.key("profiles"), self.key("profile", info.device_type, info.workload)]
            count, replaced = self._profile_script(keys=keys, args=[token, json.dumps(list(info.knobs)), data])
        except redis.ResponseError as exc:
            translated = self._knobs_error(exc, info)
            if translated is None:
                raise
            raise translated from None
        if replaced:
            self._index_problem(f"{self.key('profiles')} field {token!r}",
                                f"knobs={_s(replaced)[:40]!r} is not a JSON list of names", "rebuilt from the chunk")
        self._after_append(info.device_type, info.workload, int(count))
        return info.n_samples

    @_redis_errors
    def _raw_chunks(self, device_type: str, workload: str) -> list[tuple[str, bytes]]:
        key = self.key("profile", device_type, workload)
        return [(f"{key}[{i}]", bytes(raw)) for i, raw in enumerate(self._r.lrange(key, 0, -1))]

    @_redis_errors
    def _compact(self, device_type: str, workload: str, chunks: list[tuple[str, bytes]],
                 merged: list[bytes]) -> bool:
        sha1 = [hashlib.sha1(d, usedforsecurity=False).hexdigest() for _, d in chunks]
        done = self._compact_script(keys=[self.key("profile", device_type, workload)],
                                    args=[len(chunks), len(merged), *merged, *sha1])
        return bool(done)

    @_redis_errors
    def profile_pairs(self) -> list[tuple[str, str]]:
        """Pairs with a profile (malformed profiles-hash fields reported and skipped)."""
        return self._pair_tokens([_s(t) for t in self._r.hkeys(self.key("profiles"))], self.key("profiles"))

    # ------------------------------------------------------------------ import
    @_redis_errors
    def _import(self, artifacts: Sequence[tuple[ArtifactInfo, bytes, dict[str, str]]],
                chunks: Sequence[tuple[ProfileInfo, bytes]], stored_at: float,
                journal: bool = False) -> list[ArtifactMeta | None]:
        if journal:
            raise InvalidParameterError("the Redis store keeps no write-back journal")
        counts: dict[tuple[str, str], int] = {}
        for info, _, _ in artifacts:
            counts[(info.device_type, info.workload)] = counts.get((info.device_type, info.workload), 0) + 1
        next_version = {pair: self._allocate(*pair, n) for pair, n in counts.items()}
        keys: list[str] = []
        args: list[Any] = [len(artifacts), len(chunks)]
        metas = []
        for info, data, labels in artifacts:
            pair = (info.device_type, info.workload)
            v = next_version[pair]
            next_version[pair] = v + 1
            meta = ArtifactMeta.from_info(info, v, stored_at, labels)
            metas.append(meta)
            fields = _flat(meta)
            keys += self._pair_keys(*pair, v, meta.artifact_id)
            args += [v, data, f"{pair[0]}:{pair[1]}", f"{pair[0]}:{pair[1]}:{v}", len(fields), *fields]
        for pinfo, data in chunks:
            keys += [self.key("profiles"), self.key("profile", pinfo.device_type, pinfo.workload)]
            args += [f"{pinfo.device_type}:{pinfo.workload}", json.dumps(list(pinfo.knobs)), data]
        try:
            flags = self._import_script(keys=keys, args=args)
        except redis.ResponseError as exc:
            if chunks:
                translated = self._knobs_error(exc, chunks[0][0])
                if translated is not None:
                    raise translated from None
            raise StoreError(f"import into {self.url} refused, nothing written: {exc}") from None
        for pair in dict.fromkeys((p.device_type, p.workload) for p, _ in chunks):
            self._after_append(*pair, int(self._r.llen(self.key("profile", *pair))))
        return [m if int(f) else None for m, f in zip(metas, flags, strict=True)]

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


def _flat(meta: ArtifactMeta) -> list[str | int | float]:
    """A metadata record as HSET arguments: field, value, field, value, ..."""
    out: list[str | int | float] = []
    for k, v in _meta_fields(meta).items():
        out += [k, v]
    return out


def _meta_fields(meta: ArtifactMeta) -> dict[str, str | int | float]:
    return {"device_type": meta.device_type, "workload": meta.workload, "version": meta.version,
            "artifact_id": meta.artifact_id, "kind": meta.kind, "parent_id": meta.parent_id,
            "n_samples": meta.n_samples, "created_at": repr(meta.created_at),
            "stored_at": repr(meta.stored_at), "size_bytes": meta.size_bytes, "labels": meta.encode_labels()}


__all__ = ["DEFAULT_NAMESPACE", "RedisModelStore", "check_redis_userinfo", "redact_url"]
