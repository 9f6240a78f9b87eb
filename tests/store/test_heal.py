"""A primary that lost its data is noticed and healed: a private redis-server is killed by PID
and restarted empty (no persistence) or with its data (append-only file) mid-use."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from coordinator.store.builder import RULE_HIT, get_or_build, plan_or_rebuild
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powertrain.predictor import PredictorState
from tests.procs import PrivateRedis, free_port
from tests.store.conftest import TINY_BUILD, collector, variant

pytestmark = pytest.mark.redis
REF = ("orin-agx", "resnet18-imagenet")
NANO = ("orin-nano", "lstm-wikitext")


def _fallback(server: PrivateRedis, path: Path) -> FallbackModelStore:
    primary = RedisModelStore(server.url, retries=1, connect_timeout_s=0.5)
    return FallbackModelStore(primary, LocalModelStore(path), retry_interval_s=0.1, epoch_check_s=60.0)


def test_redis_restarted_empty_is_noticed_and_what_this_host_built_is_republished(
        private_redis: PrivateRedis, tmp_path: Path, ref_state: PredictorState,
        caplog: pytest.LogCaptureFixture) -> None:
    store = _fallback(private_redis, tmp_path / "mirror.sqlite")
    ref = store.put(ref_state)
    built = get_or_build(store, *NANO, collector("orin-nano", boards=2), settings=TINY_BUILD)
    store.delete(*NANO, version=built.meta.version)  # numbering will differ after the wipe ...
    kept = store.put(built.state)  # ... NANO holds only v2 now
    assert kept.version == 2

    private_redis.kill()
    private_redis.start()  # empty, and no operation noticed the restart
    with caplog.at_level(logging.WARNING, logger="powerfleet.store"):
        got = store.get(*NANO, version=2)  # finds nothing, notices the new epoch, re-publishes, retries
    assert got.meta.artifact_id == kept.artifact_id and got.meta.version == 1  # translated through the id
    assert any("lost its data" in r.message for r in caplog.records)
    meta, _ = store.get_artifact(*NANO, version=2)
    assert meta.artifact_id == kept.artifact_id
    assert store.get(*REF).meta.artifact_id == ref.artifact_id
    check = RedisModelStore(private_redis.url)
    assert check.get(*REF).meta.artifact_id == ref.artifact_id  # back in Redis, not only served locally
    assert check.get(*NANO).meta.artifact_id == kept.artifact_id
    assert len(check.get_profile(*NANO)) == 12  # the samples are back too
    report = store.heal()
    assert report.epoch_changed and report.republished == 2 and report.republished_chunks >= 1
    assert not store.heal().changed  # reported once; nothing more to do
    assert plan_or_rebuild(store, *NANO, TINY_BUILD).rule == RULE_HIT  # nothing to profile again
    assert len(check.versions(*NANO)) == 1 and len(check.versions(*REF)) == 1  # no duplicates
    check.close()
    store.close()


def test_a_write_after_an_empty_restart_republishes_first(private_redis: PrivateRedis, tmp_path: Path,
                                                         ref_state: PredictorState,
                                                         ref_profile: object) -> None:
    store = _fallback(private_redis, tmp_path / "mirror.sqlite")
    ref = store.put(ref_state)
    private_redis.kill()
    private_redis.start()
    newer = store.put(variant(ref_state, created_at=77.0))  # writes check the epoch first
    check = RedisModelStore(private_redis.url)
    assert [m.artifact_id for m in check.versions(*REF)] == [ref.artifact_id, newer.artifact_id]
    assert check.meta(*REF).artifact_id == newer.artifact_id  # the newest stays latest
    check.close()
    store.close()


def test_persistent_restart_keeps_the_epoch_and_republishes_nothing(tmp_path: Path,
                                                                    ref_state: PredictorState) -> None:
    server = PrivateRedis(free_port(), tmp_path, persist=True)
    server.start()
    try:
        store = _fallback(server, tmp_path / "mirror.sqlite")
        meta = store.put(ref_state)
        epoch = store.epoch()
        server.kill()
        server.start()
        assert store.get(*REF).meta.artifact_id == meta.artifact_id
        assert store.epoch() == epoch and not store.heal().epoch_changed
        assert store.stats()["republished"] == 0 and store.stats()["epoch_changes"] == 0
        store.close()
    finally:
        if server.proc is not None:
            server.kill()


def test_a_coordinator_started_after_the_wipe_republishes_too(private_redis: PrivateRedis, tmp_path: Path,
                                                              ref_state: PredictorState) -> None:
    path = tmp_path / "mirror.sqlite"
    first = _fallback(private_redis, path)
    meta = first.put(ref_state)
    first.close()
    private_redis.kill()
    private_redis.start()
    second = _fallback(private_redis, path)  # the mirror file remembers the epoch it last saw
    assert second.get(*REF).meta.artifact_id == meta.artifact_id
    assert second.heal().epoch_changed
    second.close()
