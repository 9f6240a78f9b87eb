"""Fleet fixtures: a store that already holds a (quickly fitted) reference predictor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coordinator.store import open_store
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.predictor import PowerTrainPredictor

#: Run settings that keep bootstraps short in tests.
FAST = {"transfer_samples": 9, "profile_minibatches": 5, "local_minibatches": 20, "min_minibatches": 5}


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store file holding a small orin-agx/resnet18 reference (fitted once)."""
    path = tmp_path_factory.mktemp("store") / "reference.sqlite"
    truth = SimulatedJetson("orin-agx").true_performance("resnet18-imagenet", get_space("orin-agx").modes("powertrain"))
    ref = PowerTrainPredictor(fit_steps=300, members=2, transfer_steps=80).fit(
        truth, device_type="orin-agx", workload="resnet18-imagenet")
    store = open_store(f"file://{path}")
    store.put(ref.to_state(), space=get_space("orin-agx"))
    store.close()
    return path


@pytest.fixture()
def store_url(reference_store: Path, tmp_path: Path) -> str:
    """A private copy of the reference store for one test."""
    path = tmp_path / "store.sqlite"
    shutil.copy(reference_store, path)
    return f"file://{path}"
