"""The coordinator's Redis as deployed: ACL users, the password from a secret file.

A private ``redis-server`` is started (and killed) by PID through the compose entrypoint
``deploy/coordinator/redis/start-redis.sh`` with the shipped ``redis.conf``, on a loopback port.
The store contract suite runs against it as the ``powerfleet`` user, so every operation the
store performs is allowed by the ACL; what that user must not do (other keys, FLUSHALL, CONFIG,
KEYS, new Lua, ...) is refused, the default user is off, and the password is in no argv,
environment or config file.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import yaml  # type: ignore[import-untyped]  # PyYAML ships with flwr; no stubs installed

from coordinator.store.errors import StoreError
from coordinator.store.factory import PASSWORD_FILE_ENV, open_store
from coordinator.store.redis_store import RedisModelStore
from powertrain.errors import InvalidParameterError
from tests.procs import free_port

# The contract suite, run here again against the ACL-restricted user (see `backend` below).
from tests.store.test_contract import (  # noqa: F401
    test_artifact_size_is_bounded,
    test_bad_names_labels_and_versions,
    test_cache_is_keyed_by_artifact_id,
    test_concurrent_puts_get_distinct_versions,
    test_delete_moves_latest_and_never_reuses_numbers,
    test_delete_pair_keeps_samples_unless_asked,
    test_history_follows_parents_across_pairs,
    test_locks_expire_and_release_only_with_token,
    test_metadata_list_and_find,
    test_profiles_append_and_read_back,
    test_put_appends_immutable_versions,
    test_tampered_value_is_refused_and_counted,
)

ROOT = Path(__file__).resolve().parents[2]
COORDINATOR = ROOT / "deploy/coordinator"
PASSWORD = "a/b#c@d:e%f?g"  # every character that used to break URLs and redaction
pytestmark = pytest.mark.redis


def redis_service() -> dict:  # type: ignore[type-arg]
    spec = yaml.safe_load((COORDINATOR / "compose.yaml").read_text())
    return spec["services"]["redis"]  # type: ignore[no-any-return]


def host_path(service: dict, container_path: str) -> Path:  # type: ignore[type-arg]
    """The repository file compose mounts at ``container_path``."""
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == container_path and source.startswith("./"):
            return COORDINATOR / str(source)
    raise AssertionError(f"nothing is mounted at {container_path}")


class AclRedis:
    """The compose ``redis`` service's entrypoint and config, run as a local process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.secret = workdir / "redis.password"
        self.secret.write_text(PASSWORD + "\n")
        self.conf = workdir / "redis.conf"
        service = redis_service()
        entrypoint = list(service["entrypoint"])
        assert entrypoint[0] == "sh" and service["secrets"] == ["redis_password"]
        self.argv = ["sh", str(host_path(service, entrypoint[1])), *service.get("command", []),
                     "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD_FILE": str(self.secret),
                    "REDIS_CONF_TEMPLATE": str(host_path(service, "/usr/local/etc/redis/redis.conf.in")),
                    "REDIS_CONF": str(self.conf)}
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=workdir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as probe:
                    probe.ping()
            except redis.AuthenticationError:  # NOAUTH: it answers, and wants a user
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None, "start-redis.sh exited"
                assert time.monotonic() < deadline, "redis did not answer"
                time.sleep(0.05)

    def url(self, user: str = "powerfleet", password: str | None = PASSWORD) -> str:
        auth = f"{user}:{quote(password, safe='')}@" if password is not None else f"{user}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, password: str = PASSWORD) -> redis.Redis[bytes]:
        return redis.Redis(port=self.port, username="powerfleet", password=password)

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)  # exec'd: the PID is redis-server's
        self.proc.wait(10)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    server = AclRedis(tmp_path_factory.mktemp("acl-redis"))
    yield server
    server.stop()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """Only the Redis backend here (the contract tests imported above run on it)."""
    return str(request.param)


@pytest.fixture()
def redis_url(acl_redis: AclRedis) -> str:
    """The ACL user's URL, password percent-encoded, for ``make_store``."""
    return acl_redis.url()


def test_the_server_runs_the_shipped_config(acl_redis: AclRedis) -> None:
    pid = acl_redis.proc.pid
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server"  # exec'd, not a shell child
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
    conf = acl_redis.conf.read_text()
    for text in (cmdline, environ, conf):
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text
    assert "#" + hashlib.sha256(PASSWORD.encode()).hexdigest() in conf  # only the hash is written
    assert acl_redis.conf.stat().st_mode & 0o077 == 0
    with acl_redis.client() as client:
        assert client.ping()


def test_the_store_user_cannot_leave_its_keys_or_administer(acl_redis: AclRedis) -> None:
    with acl_redis.client() as client:
        assert client.set("powerfleet:v1:probe", b"1") and client.delete("powerfleet:v1:probe") == 1
        for command in (("SET", "other:key", "1"), ("GET", "other:key"), ("DEL", "session:1"),
                        ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "dir"), ("CONFIG", "SET", "dir", "/tmp"),
                        ("KEYS", "*"), ("EVAL", "return 1", "0"), ("ACL", "LIST"),
                        ("SHUTDOWN", "NOSAVE"), ("MODULE", "LIST"), ("SAVE",), ("MONITOR",), ("PUBLISH", "c", "m"),
                        ("EVALSHA", "0" * 40, "1", "other:key")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
    with redis.Redis(port=acl_redis.port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.get("powerfleet:v1:pairs")  # the default user is off
    with acl_redis.client(password="wrong") as wrong, pytest.raises(redis.AuthenticationError):
        wrong.ping()


def test_a_namespace_outside_powerfleet_is_refused_in_one_line(acl_redis: AclRedis) -> None:
    store = RedisModelStore(acl_redis.url(), namespace="elsewhere:v1")
    try:
        with pytest.raises(StoreError) as info:
            store.list_pairs()
        assert "no permissions" in str(info.value) and "\n" not in str(info.value)
        assert "a/b" not in str(info.value) and "***" in str(info.value)
    finally:
        store.close()


def test_open_store_reads_the_password_from_a_file(acl_redis: AclRedis, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The compose ServerApp's set-up: a URL with a user and no password, the password in a secret file."""
    namespace = f"powerfleet:test:{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(acl_redis.secret))
    store = open_store(f"{acl_redis.url(password=None)}?namespace={namespace}", fallback=False)
    try:
        assert store.list_pairs() == []
        handle = store.acquire_lock("probe", ttl_s=5)
        assert handle is not None
        handle.release()
        assert PASSWORD not in store.url and "a/b" not in store.url
    finally:
        assert isinstance(store, RedisModelStore)
        store.drop_namespace()
        store.close()
    missing = tmp_path / "missing"
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(missing))
    with pytest.raises(InvalidParameterError, match=f"{PASSWORD_FILE_ENV} '{missing}' cannot be read"):
        open_store(acl_redis.url(password=None), fallback=False)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "empty"))
    with pytest.raises(InvalidParameterError, match="is empty"):
        open_store(acl_redis.url(password=None), fallback=False)
