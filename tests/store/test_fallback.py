"""Redis stopped mid-run: a private redis-server is killed by PID and restarted on its port."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from coordinator.store.builder import RULE_REFERENCE, get_or_build
from coordinator.store.errors import StoreUnavailableError
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powertrain.predictor import PredictorState
from tests.procs import PrivateRedis
from tests.store.conftest import TINY_BUILD, collector, variant

pytestmark = pytest.mark.redis
REF = ("orin-agx", "resnet18-imagenet")
NANO = ("orin-nano", "lstm-wikitext")


def test_redis_outage_falls_back_and_writes_back(private_redis: PrivateRedis, tmp_path: Path,
                                                 ref_state: PredictorState,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    primary = RedisModelStore(private_redis.url, namespace="powerfleet:v1", retries=1, connect_timeout_s=0.5)
    store = FallbackModelStore(primary, LocalModelStore(tmp_path / "fallback.sqlite"), retry_interval_s=0.2)
    ref = store.put(ref_state)  # healthy: on Redis, mirrored locally
    assert primary.meta(*REF).artifact_id == ref.artifact_id and store.stats()["mirrored"] == 1

    private_redis.kill()  # Redis dies mid-run
    with caplog.at_level(logging.WARNING, logger="powerfleet.store"):
        extra = store.put(variant(ref_state, "xavier-agx", "resnet18-imagenet"))
    assert store.degraded and any("falling back to the embedded store" in r.message for r in caplog.records)
    # keeps running: builds a new pair from the mirrored reference, stores predictor and samples
    built = get_or_build(store, *NANO, collector("orin-nano", boards=2), settings=TINY_BUILD)
    assert built.rule == RULE_REFERENCE and built.source is not None
    assert built.source.artifact_id == ref.artifact_id
    assert store.get(*NANO).meta.artifact_id == built.meta.artifact_id
    assert {m.pair for m in store.list_pairs()} == {REF, NANO, ("xavier-agx", "resnet18-imagenet")}
    assert store.stats()["pending"] == 3  # two predictors and one profile chunk journaled
    with pytest.raises(StoreUnavailableError) as exc:
        store.delete(*NANO)
    assert "while it is unreachable" in str(exc.value)

    private_redis.start()  # back on the same port, empty (no persistence)
    time.sleep(0.25)
    with caplog.at_level(logging.WARNING, logger="powerfleet.store"):
        assert store.sync() == 4  # the 3 journaled values (re-published from the mirror), and the lost reference
    assert not store.degraded and store.stats()["pending"] == 0 and store.stats()["written_back"] == 3
    assert store.stats()["epoch_changes"] == 1 and store.stats()["republished"] == 3
    assert any("is back; wrote back 4" in r.message for r in caplog.records)
    assert any("lost its data" in r.message for r in caplog.records)
    check = RedisModelStore(private_redis.url, namespace="powerfleet:v1")
    assert check.get(*NANO).meta.artifact_id == built.meta.artifact_id  # nothing lost
    assert check.get(*REF).meta.artifact_id == ref.artifact_id  # written before the outage: re-published
    assert check.get("xavier-agx", "resnet18-imagenet").meta.artifact_id == extra.artifact_id
    assert len(check.get_profile(*NANO)) == 12
    assert store.sync() == 0  # replaying again writes nothing twice
    assert len(check.versions(*NANO)) == 1 and len(check.profile_chunks(*NANO)) == 1
    # new writes go to Redis again
    again = store.put(variant(ref_state, created_at=42.0))
    assert check.meta(*REF).artifact_id == again.artifact_id
    check.close()
    store.close()


def test_write_back_survives_a_restart_of_the_coordinator(private_redis: PrivateRedis, tmp_path: Path,
                                                          ref_state: PredictorState) -> None:
    path = tmp_path / "fallback.sqlite"
    primary = RedisModelStore(private_redis.url, retries=0, connect_timeout_s=0.5)
    store = FallbackModelStore(primary, LocalModelStore(path), retry_interval_s=0.1)
    private_redis.kill()
    meta = store.put(ref_state)
    store.close()  # the coordinator stops while Redis is down
    private_redis.start()
    reopened = FallbackModelStore(RedisModelStore(private_redis.url), LocalModelStore(path),
                                  retry_interval_s=0.1)
    assert reopened.degraded and reopened.stats()["pending"] == 1  # it knows it owes a write-back
    assert reopened.get(*REF).meta.artifact_id == meta.artifact_id  # the probe writes back first
    assert not reopened.degraded and reopened.primary.meta(*REF).artifact_id == meta.artifact_id
    reopened.close()


def test_short_outage_is_absorbed_by_retries(private_redis: PrivateRedis, ref_state: PredictorState) -> None:
    patient = RedisModelStore(private_redis.url, retries=6, connect_timeout_s=0.5)  # ~1.5 s of backoff
    impatient = RedisModelStore(private_redis.url, retries=0, connect_timeout_s=0.5)
    patient.ping()
    impatient.ping()
    private_redis.kill()
    with pytest.raises(StoreUnavailableError):
        impatient.put(ref_state)
    restart = threading.Timer(0.2, private_redis.start)
    restart.start()
    try:
        meta = patient.put(ref_state)  # fails, backs off, succeeds once the server is back
    finally:
        restart.join()  # so the fixture stops the restarted server whatever happened
    assert meta.version == 1 and patient.meta(*REF).artifact_id == meta.artifact_id
