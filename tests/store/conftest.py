"""Fixtures of the store suite: both backends, tiny predictors, simulated boards.

Every backend test runs twice: on the embedded SQLite store (a temp file) and on the real
Redis at ``REDIS_URL`` in a namespace of its own, dropped afterwards.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coordinator.store.base import BackendStore
from coordinator.store.builder import BuildSettings
from coordinator.store.collect import DeviceCollector, ProfilingCost
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.predictor import PowerTrainPredictor, PredictorState
from powertrain.profiler import ProfileSettings, profile
from powertrain.sampling import sample_modes
from tests.store.tampering import (  # the fault catalogue, shared with bench/faults.py
    TAMPER_KINDS,
    craft,
    nan_weight,
    overwrite_blob,
    raw_blob,
    tamper,
    wrong_architecture,
    wrong_shape,
)

__all__ = ["TAMPER_KINDS", "craft", "nan_weight", "overwrite_blob", "raw_blob", "tamper", "wrong_architecture",
           "wrong_shape"]

#: Small enough that a reference fit takes well under a second.
TINY_PARAMS: dict[str, Any] = {"fit_steps": 60, "members": 2, "hidden": (16, 8), "transfer_steps": 30,
                               "cv_folds": 3}
FAST_PROFILE = ProfileSettings(minibatches=5, warmup_minibatches=1, warmup_s=0)
TINY_BUILD = BuildSettings(k=12, reference_k=100, predictor_params=TINY_PARAMS,
                           poll_s=0.02)


def collector(device_type: str, boards: int = 1, first_unit: int = 0) -> DeviceCollector:
    """Simulated boards of one type."""
    return DeviceCollector([SimulatedJetson(device_type, unit=first_unit + u, seed=1) for u in range(boards)],
                           FAST_PROFILE)


class CountingCollector:
    """A collector that counts its calls (and can be slowed down to widen races)."""

    def __init__(self, inner: DeviceCollector, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.calls = 0
        self.delay_s = delay_s
        self.device_type = inner.device_type
        self.last_cost: ProfilingCost | None = None

    def boards(self) -> int:
        return self.inner.boards()

    def collect(self, workload: str, modes: pd.DataFrame) -> pd.DataFrame:
        import time

        self.calls += 1
        time.sleep(self.delay_s)
        frame = self.inner.collect(workload, modes)
        self.last_cost = self.inner.last_cost
        return frame


@pytest.fixture(scope="session")
def ref_profile() -> pd.DataFrame:
    """100 profiled modes of the reference pair."""
    modes = sample_modes(get_space("orin-agx").modes("powertrain"), 100, strategy="spacefill")
    return profile(SimulatedJetson("orin-agx", seed=1), "resnet18-imagenet", modes, FAST_PROFILE).frame


@pytest.fixture(scope="session")
def ref_state(ref_profile: pd.DataFrame) -> PredictorState:
    """A tiny reference predictor (orin-agx / resnet18-imagenet)."""
    return PowerTrainPredictor(**TINY_PARAMS).fit(ref_profile).to_state()


def variant(state: PredictorState, device_type: str | None = None, workload: str | None = None,
            **changes: Any) -> PredictorState:
    """A copy of ``state`` for another pair (a distinct artifact: created_at differs)."""
    return dataclasses.replace(state, device_type=device_type or state.device_type,
                               workload=workload or state.workload,
                               created_at=changes.pop("created_at", state.created_at + 1.0 + len(changes)),
                               **changes)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend name; ``make_store`` opens stores of it."""
    return str(request.param)


@pytest.fixture()
def make_store(backend: str, tmp_path: Path, redis_url: str) -> Iterator[Callable[..., BackendStore]]:
    """Open a store of the current backend (same file / namespace on every call)."""
    namespace = f"powerfleet:test:{uuid.uuid4().hex[:12]}"
    opened: list[BackendStore] = []

    def make(**options: Any) -> BackendStore:
        store: BackendStore
        if backend == "local":
            store = LocalModelStore(tmp_path / "store.sqlite", **options)
        else:
            store = RedisModelStore(redis_url, namespace=namespace, **options)
        opened.append(store)
        return store

    yield make
    if backend == "redis":
        cleaner = RedisModelStore(redis_url, namespace=namespace)
        cleaner.drop_namespace()
        assert not list(cleaner.client.scan_iter(match=f"{namespace}:*")), "namespace not cleaned up"
        cleaner.close()
    for s in opened:
        s.close()


@pytest.fixture()
def store(make_store: Callable[..., BackendStore]) -> BackendStore:
    """A fresh, empty store of the current backend."""
    return make_store()


@pytest.fixture(scope="session")
def nano_profile() -> pd.DataFrame:
    """12 profiled modes of orin-nano / lstm-wikitext (the builder's k in TINY_BUILD)."""
    modes = sample_modes(get_space("orin-nano").modes("powertrain"), 12, strategy="spacefill")
    return profile(SimulatedJetson("orin-nano", seed=1), "lstm-wikitext", modes, FAST_PROFILE).frame

