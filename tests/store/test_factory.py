"""open_store: URL forms, the embedded default, and one-line failures."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from coordinator.store.errors import StoreError, StoreUnavailableError
from coordinator.store.factory import open_store
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powertrain.errors import InvalidParameterError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_local_default_lives_in_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for url in (None, "", "local"):
        store = open_store(url)
        assert isinstance(store, LocalModelStore)
        assert store.path == tmp_path / "cache" / "powerfleet" / "store.sqlite" and store.path.exists()
        store.close()
    explicit = open_store(f"file://{tmp_path}/elsewhere.sqlite")
    assert isinstance(explicit, LocalModelStore) and explicit.path == tmp_path / "elsewhere.sqlite"


def test_bad_urls_and_files_fail_in_one_line(tmp_path: Path) -> None:
    for url, needle in [("ftp://host/x", "not supported"), ("file://", "must name a file"),
                        ("redis://h:notaport/0", "not valid"),
                        ("redis://127.0.0.1:6379/abc", "database 'abc' must be a non-negative integer"),
                        ("redis://127.0.0.1:6379/-1", "database '-1'"),
                        ("redis://127.0.0.1:6379/0?db=x", "database 'x'"),
                        ("redis://127.0.0.1:6379/1?db=2", "name different databases"),
                        ("redis://127.0.0.1:6379/0?namespace=a&namespace=b", "given twice"),
                        ("redis://127.0.0.1:0/0", "port 0")]:
        with pytest.raises(InvalidParameterError) as exc:
            open_store(url)
        assert needle in str(exc.value) and "\n" not in str(exc.value)
    not_db = tmp_path / "notes.sqlite"
    not_db.write_text("hello, not a database\n" * 100)
    with pytest.raises(StoreError) as err:
        open_store(f"file://{not_db}")
    assert str(not_db) in str(err.value) and "\n" not in str(err.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailableError) as unavailable:
        open_store(f"file://{blocker}/sub/store.sqlite")
    assert "cannot create its directory" in str(unavailable.value)


def test_unreachable_redis_at_start_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as exc:
        open_store(f"redis://:secret@127.0.0.1:{port}/0")
    assert time.monotonic() - t0 < 5
    text = str(exc.value)
    assert "\n" not in text and f"127.0.0.1:{port}" in text and "does not answer" in text
    assert "secret" not in text
    assert not list(tmp_path.glob("powerfleet/fallback-*"))  # nothing created for a dead store


@pytest.mark.redis
def test_redis_url_opens_with_fallback_and_namespace(redis_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ns = f"powerfleet:test:{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in redis_url else "?"
    store = open_store(f"{redis_url}{sep}namespace={ns}")
    assert isinstance(store, FallbackModelStore) and isinstance(store.primary, RedisModelStore)
    assert store.primary.ns == ns and store.local.path.parent == tmp_path / "powerfleet"
    plain = open_store(f"{redis_url}{sep}namespace={ns}", fallback=False)
    assert isinstance(plain, RedisModelStore) and plain.list_pairs() == []
    plain.drop_namespace()
    store.close()
    plain.close()
