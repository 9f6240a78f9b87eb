"""Redis specifics: ACL users and passwords in the URL, namespacing, no KEYS, bad URLs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from coordinator.store.errors import StoreUnavailableError
from coordinator.store.redis_store import RedisModelStore, redact_url
from powertrain.errors import InvalidParameterError
from powertrain.predictor import PredictorState
from tests.store.conftest import variant

pytestmark = pytest.mark.redis


@pytest.fixture()
def acl_user(redis_url: str) -> Iterator[tuple[str, str, str]]:
    """A Redis ACL user confined to one namespace and denied KEYS and SCAN."""
    admin: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    user, password = f"pf-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    ns = f"powerfleet:acl:{uuid.uuid4().hex[:8]}"
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{ns}:*", "+@all", "-keys",
                          "-scan", "-flushall", "-flushdb")
    yield user, password, ns
    admin.execute_command("ACL", "DELUSER", user)
    for k in admin.scan_iter(match=f"{ns}:*"):
        admin.delete(k)
    admin.close()


def _url_with_user(redis_url: str, user: str, password: str) -> str:
    scheme, rest = redis_url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest.split('@')[-1]}"


def test_acl_user_in_url_without_keys_or_scan(redis_url: str, acl_user: tuple[str, str, str],
                                              ref_state: PredictorState) -> None:
    user, password, ns = acl_user
    url = _url_with_user(redis_url, user, password)
    store = RedisModelStore(url, namespace=ns)
    assert password not in store.url and f"{user}:***@" in store.url
    store.put(ref_state)
    store.put(variant(ref_state, "orin-nano", "lstm-wikitext"))
    # every command stayed inside the namespace (the ACL allows no other key) and listing
    # worked although KEYS and SCAN are denied
    assert [m.pair for m in store.list_pairs()] == [("orin-agx", "resnet18-imagenet"),
                                                     ("orin-nano", "lstm-wikitext")]
    lock = store.acquire_lock("build:a:b")
    assert lock is not None
    assert lock.release()  # (a held lock renews itself in the background until released)
    store.delete("orin-nano", "lstm-wikitext")
    assert len(store.list_pairs()) == 1
    with pytest.raises(redis.ResponseError):  # the denial is real
        store.client.keys("*")
    bad = RedisModelStore(_url_with_user(redis_url, user, "wrong"), namespace=ns, retries=0)
    with pytest.raises(StoreUnavailableError) as exc:
        bad.ping()
    assert "wrong" not in str(exc.value) and "\n" not in str(exc.value)


def test_namespaces_isolate_stores(redis_url: str, ref_state: PredictorState) -> None:
    a = RedisModelStore(redis_url, namespace=f"powerfleet:test:{uuid.uuid4().hex[:8]}")
    b = RedisModelStore(redis_url, namespace=f"powerfleet:test:{uuid.uuid4().hex[:8]}")
    try:
        a.put(ref_state)
        assert b.list_pairs() == [] and b.latest("orin-agx", "resnet18-imagenet") is None
        keys = [k.decode() for k in a.client.scan_iter(match=f"{a.ns}:*")]
        assert keys and all(k.startswith(a.ns + ":") for k in keys)
        assert {k.split(":")[3] for k in keys} >= {"pairs", "pair", "versions", "meta", "blob", "id"}
    finally:
        assert a.drop_namespace() > 0
        b.drop_namespace()


def test_injected_client_and_bad_urls(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    store = RedisModelStore(client=client, namespace=f"powerfleet:test:{uuid.uuid4().hex[:8]}")
    store.ping()
    assert store.list_pairs() == []
    with pytest.raises(InvalidParameterError) as exc:
        RedisModelStore(client=redis.Redis.from_url(redis_url, decode_responses=True))  # type: ignore[arg-type]
    assert "decode_responses" in str(exc.value)
    with pytest.raises(InvalidParameterError) as exc:
        RedisModelStore("http://localhost:6379")
    assert "redis://" in str(exc.value)
    with pytest.raises(InvalidParameterError):
        RedisModelStore(redis_url, namespace="bad namespace:")
    assert redact_url("rediss://me:s3cret@h:6380/2") == "rediss://me:***@h:6380/2"



SECRET_PIECES = ("Zq7", "K9m", "xR2", "Yt5", "wP0")


@pytest.mark.parametrize("password", ["Zq7/K9m", "Zq7#K9m", "Zq7@K9m", "Zq7:K9m", "Zq7?K9m", "Zq7[K9m]",
                                      "Zq7/K9m#xR2@Yt5:wP0", "Zq7%2FK9m%23xR2%40Yt5%3AwP0"])
@pytest.mark.parametrize("template", ["redis://:{}@h:6379/0", "rediss://me:{}@h:6380/2?namespace=powerfleet:x",
                                      "unix://me:{}@/run/redis.sock?db=0", "me:{}@h:6379"])
def test_redaction_hides_any_password(password: str, template: str) -> None:
    url = template.format(password)
    redacted = redact_url(url)
    assert "***" in redacted and not any(piece in redacted for piece in SECRET_PIECES), redacted
    assert redacted.endswith(url.rsplit("@", 1)[1])  # host, port, db and query are kept


@pytest.mark.parametrize("password", ["Zq7/K9m", "Zq7#K9m", "Zq7@K9m", "Zq7:K9m", "Zq7?K9m#xR2@Yt5:wP0/"])
def test_store_cli_never_prints_the_password(cli, password: str) -> None:  # type: ignore[no-untyped-def]
    """`store ls` on a bad or unreachable URL: one line, exit 2, no piece of the password."""
    code, stdout, stderr = cli("store", "ls", "--store", f"redis://:{password}@127.0.0.1:1/0")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr
    assert not any(piece in stdout + stderr for piece in SECRET_PIECES), stderr
    assert "redis://:***@127.0.0.1:1/0" in lines[0]


def test_redaction_keeps_plain_user_names_only() -> None:
    assert redact_url("redis://powerfleet@redis:6379/0") == "redis://powerfleet@redis:6379/0"  # no password
    assert redact_url("redis://powerfleet:pw@redis:6379/0") == "redis://powerfleet:***@redis:6379/0"
    assert redact_url("redis://Zq7/K9m@h/0") == "redis://***@h/0"  # not a user name: hidden whole
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
