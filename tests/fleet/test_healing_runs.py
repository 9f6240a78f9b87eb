"""Issue 16, "Measured now", at the level of whole runs (the store-level cases are in tests/store):
a pair whose latest is gone or refused is rebuilt instead of looping through no-op bootstrap
rounds, and Redis restarted empty mid-run loses no round (with and without dropouts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec
from coordinator.records import RoundRecord
from coordinator.store import open_store
from coordinator.store.base import BackendStore
from powerfleet.protocol.enums import ClientStatus
from powerfleet.sim.engines import simulate
from tests.fleet.conftest import FAST
from tests.procs import PrivateRedis, free_port
from tests.store.tampering import tamper

NANO = ("orin-nano", "resnet18-imagenet")
FLEET = [{"device": "sim:orin-agx", "count": 2, "first_unit": 0}, {"device": "sim:orin-nano", "count": 2,
                                                                    "first_unit": 10}]


def _no_idle_success(report_clients: list, rounds: list[RoundRecord]) -> None:  # type: ignore[type-arg]
    """No client is on time without work, and every round used some updates or profiled modes."""
    on_time = [c for c in report_clients if c.status == ClientStatus.ON_TIME]
    assert on_time and all(c.work_done > 0 for c in on_time)
    for r in rounds:
        assert r.completed > 0 or r.profiling_minibatches > 0, r


@pytest.fixture(scope="module")
def nano_store(reference_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose Orin Nano predictor a run bootstrapped through the fleet (once per module)."""
    path = tmp_path_factory.mktemp("nano") / "store.sqlite"
    shutil.copy(reference_store, path)
    first = simulate(RunConfig(num_server_rounds=10, store=f"file://{path}", refine_threshold_pct=0.1, **FAST),
                     FleetSpec.from_groups("agx-nano", FLEET, 0), engine="analytic")  # refined: versions to swap
    assert int(first.predictors["orin-nano"]["version"]) >= 2  # type: ignore[call-overload]
    return path


@pytest.mark.parametrize("damage", ["rm-all", "blob-flip", "id-swapped"])  # the other damage kinds: tests/store
def test_a_pair_without_a_valid_latest_is_rebuilt_not_looped(damage: str, nano_store: Path, tmp_path: Path) -> None:
    fleet = FleetSpec.from_groups("agx-nano", FLEET, 0)
    shutil.copy(nano_store, tmp_path / "store.sqlite")
    store_url = f"file://{tmp_path / 'store.sqlite'}"
    store = open_store(store_url)
    assert isinstance(store, BackendStore)
    metas = store.versions(*NANO)
    if damage == "rm-all":
        store.delete(*NANO)  # what `store rm PAIR --all` does: the samples stay
    else:
        assert len(metas) >= 2  # two versions to swap
        tamper(store, damage, metas[0], metas[-1])
    store.close()
    again = simulate(RunConfig(num_server_rounds=3, store=store_url, **FAST), fleet, engine="analytic")
    # rebuilt from the stored samples before the first round: no bootstrap round, no 0-mode loop
    assert not any(r.bootstrap for r in again.rounds), [r.notes for r in again.rounds]
    assert "rebuilt" in str(again.predictors["orin-nano"]["how"]) or int(again.predictors["orin-nano"]["version"]) > 1  # type: ignore[call-overload]
    assert sum(r.profiling_minibatches for r in again.rounds) == 0
    _no_idle_success(again.clients, again.rounds)
    with open_store(store_url) as check:
        meta, _ = check.get_artifact(*NANO)
        assert meta.version == again.predictors["orin-nano"]["version"]


@pytest.mark.redis
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_redis_restarted_empty_mid_run_loses_no_round(dropout: float, reference_store: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the fallback's local file
    server = PrivateRedis(free_port(), tmp_path, persist=False)  # keeps nothing on disk, as many deployments
    server.start()
    try:
        with open_store(f"file://{reference_store}") as local, open_store(server.url) as remote:
            remote.put(local.get("orin-agx", "resnet18-imagenet").state)
        fleet = FleetSpec.from_groups("agx-nano", FLEET, 0)
        cfg = RunConfig(num_server_rounds=9, store=server.url, dropout_rate=dropout, **FAST)
        wiped: list[int] = []

        def wipe(r: RoundRecord) -> None:
            if not r.bootstrap and not wiped:  # the Nano predictor is built: Redis dies and returns empty
                server.kill()
                server.start()
                wiped.append(r.round)

        report = simulate(cfg, fleet, engine="analytic", on_round=wipe, out_dir=tmp_path / "report")
        assert wiped and wiped[0] < 9, "the bootstrap never ended"
        assert [r.round for r in report.rounds] == list(range(1, 10))  # every round ran and was recorded
        assert len(pd.read_csv(tmp_path / "report" / "rounds.csv")) == 9
        assert all(r.completed > 0 for r in report.rounds[wiped[0]:])
        assert not any(r.bootstrap for r in report.rounds[wiped[0]:])  # no bootstrap again after the wipe
        with open_store(server.url) as back:  # what the run held was published again
            pairs = {m.pair for m in back.list_pairs()}
            assert {("orin-agx", "resnet18-imagenet"), NANO} <= pairs
    finally:
        if server.proc is not None:
            server.kill()
