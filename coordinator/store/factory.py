"""``open_store(url)``: the one place a store URL becomes a store.

=============================  ==========================================================
URL                            store
=============================  ==========================================================
``None``, ``""``, ``local``    :class:`LocalModelStore` at :func:`default_store_path`
``file:///path/store.sqlite``  :class:`LocalModelStore` at that path
``redis://[user:pw@]h:p/db``   :class:`RedisModelStore` (``rediss://`` for TLS), wrapped in
                               :class:`FallbackModelStore` unless ``fallback=False``
=============================  ==========================================================

A Redis URL may carry ``?namespace=...`` (default ``powerfleet:v1``). A Redis URL without a
password takes it from the file named by ``$POWERFLEET_REDIS_PASSWORD_FILE`` (a compose secret,
say), percent-encoded here, so the secret is never in an environment variable or a command line. A Redis store that does
not answer when opened raises :class:`StoreUnavailableError` with one line saying so: a
misconfigured coordinator should stop at once, not silently run on a private store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from coordinator.store.base import ModelStore
from coordinator.store.errors import StoreUnavailableError
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore, default_store_path
from coordinator.store.redis_store import DEFAULT_NAMESPACE, RedisModelStore, check_redis_userinfo, redact_url
from powertrain.errors import InvalidParameterError

#: Environment variable naming the store when no ``--store`` is given.
STORE_ENV = "POWERFLEET_STORE"
#: Environment variable naming a file that holds the Redis password (one line) for URLs without one.
PASSWORD_FILE_ENV = "POWERFLEET_REDIS_PASSWORD_FILE"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def resolve_store_url(explicit: str | None) -> str:
    """The one store resolution of every entry point: an explicit URL, else ``$POWERFLEET_STORE``,
    else ``""`` (the embedded store)."""
    return (explicit or "").strip() or os.environ.get(STORE_ENV, "").strip()


def fallback_path(redis_url: str, namespace: str) -> Path:
    """The embedded fallback/journal file of one Redis store (one per URL and namespace)."""
    tag = hashlib.sha256(f"{redact_url(redis_url)}|{namespace}".encode()).hexdigest()[:12]
    return default_store_path().parent / f"fallback-{tag}.sqlite"


def with_password_file(url: str) -> str:
    """``url`` with the password read from ``$POWERFLEET_REDIS_PASSWORD_FILE`` if it names none."""
    path = os.environ.get(PASSWORD_FILE_ENV, "")
    parts = urlsplit(url)
    if not path or parts.password is not None:
        return url
    try:
        password = Path(path).read_text().replace("\r", "").replace("\n", "")  # as start-redis.sh does
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InvalidParameterError(f"{PASSWORD_FILE_ENV} {path!r} cannot be read: {reason}") from None
    if not password:
        raise InvalidParameterError(f"{PASSWORD_FILE_ENV} {path!r} is empty; it must hold the Redis password")
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_redis_url(url: str) -> None:
    """Refuse a Redis URL redis-py would silently misread: an unescaped password, a database that
    is not an integer (``/abc`` means DB 0 to redis-py), a bad port, a duplicated query parameter."""
    check_redis_userinfo(url)
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidParameterError(f"store URL {shown!r} is not valid: {exc}") from None
    if port is not None and not 1 <= port <= 65535:
        raise InvalidParameterError(f"store URL {shown!r}: port {port} must be in 1..65535")
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [k for k, _ in query]
    dupes = sorted({k for k in names if names.count(k) > 1})
    if dupes:
        raise InvalidParameterError(f"store URL {shown!r}: query parameter {dupes[0]!r} is given twice")
    dbs = [v for k, v in query if k == "db"]
    if parts.scheme.lower() != "unix":
        path = parts.path.strip("/")
        if path:
            dbs.append(path)
    for db in dbs:
        if not db.isdigit() or int(db) > 1_000_000:
            raise InvalidParameterError(f"store URL {shown!r}: database {db!r} must be a non-negative integer "
                                        "such as 0 (redis://host:6379/0)")
    if len({int(d) for d in dbs}) > 1:
        raise InvalidParameterError(f"store URL {shown!r}: the path and ?db= name different databases")


def _split_namespace(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = DEFAULT_NAMESPACE
    rest = []
    for k, v in query:
        if k == "namespace":
            namespace = v
        else:
            rest.append((k, v))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment)), namespace


def open_store(url: str | None = None, *, fallback: bool = True, local_path: str | Path | None = None,
               **options: Any) -> ModelStore:
    """Open the store named by ``url`` (see the module docstring); ``options`` go to the backend."""
    text = (url or "").strip()
    if text in ("", "local"):
        return LocalModelStore(local_path, **options)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "file":
        path = text[len("file://"):]
        if not path or path.endswith("/"):
            raise InvalidParameterError(f"store URL {text!r} must name a file, e.g. file:///var/lib/pf.sqlite")
        return LocalModelStore(path, **options)
    if scheme in _REDIS_SCHEMES:
        check_redis_url(text)
        redis_url, namespace = _split_namespace(with_password_file(text))
        store = RedisModelStore(redis_url, namespace=namespace, **options)
        try:
            store.ping()
        except StoreUnavailableError as exc:
            store.close()
            raise StoreUnavailableError(
                f"Redis store {store.url} does not answer ({_reason(str(exc))}); start it, fix --store / "
                f"{STORE_ENV}, or use --store local for the embedded store") from None
        if not fallback:
            return store
        local = LocalModelStore(local_path or fallback_path(redis_url, namespace))
        return FallbackModelStore(store, local)
    raise InvalidParameterError(f"store URL {redact_url(text)!r} is not supported; use local, "
                                "file:///path/store.sqlite, redis://[user:password@]host:port/db or rediss://...")


def _reason(message: str) -> str:
    """The part of an 'unreachable' message after the URL."""
    return message.split(": ", 1)[1] if ": " in message else message
