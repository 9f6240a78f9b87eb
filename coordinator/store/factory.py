"""``open_store(url)``: the one place a store URL becomes a store.

=============================  ==========================================================
URL                            store
=============================  ==========================================================
``None``, ``""``, ``local``    :class:`LocalModelStore` at :func:`default_store_path`
``file:///path/store.sqlite``  :class:`LocalModelStore` at that path
``redis://[user:pw@]h:p/db``   :class:`RedisModelStore` (``rediss://`` for TLS), wrapped in
                               :class:`FallbackModelStore` unless ``fallback=False``
=============================  ==========================================================

A Redis URL may carry ``?namespace=...`` (default ``powerfleet:v1``). A Redis store that does
not answer when opened raises :class:`StoreUnavailableError` with one line saying so: a
misconfigured coordinator should stop at once, not silently run on a private store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from coordinator.store.base import ModelStore
from coordinator.store.errors import StoreUnavailableError
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore, default_store_path
from coordinator.store.redis_store import DEFAULT_NAMESPACE, RedisModelStore, redact_url
from powertrain.errors import InvalidParameterError

#: Environment variable naming the store when no ``--store`` is given.
STORE_ENV = "POWERFLEET_STORE"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def fallback_path(redis_url: str, namespace: str) -> Path:
    """The embedded fallback/journal file of one Redis store (one per URL and namespace)."""
    tag = hashlib.sha256(f"{redact_url(redis_url)}|{namespace}".encode()).hexdigest()[:12]
    return default_store_path().parent / f"fallback-{tag}.sqlite"


def check_redis_url(url: str) -> None:
    """Refuse a Redis URL redis-py would silently misread: a database that is not an integer
    (``/abc`` means DB 0 to redis-py), a bad port, or a duplicated query parameter."""
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
        redis_url, namespace = _split_namespace(text)
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
