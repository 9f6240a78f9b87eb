"""Fleet fixtures: a store that already holds a (quickly fitted) reference predictor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: Run settings that keep bootstraps short in tests; the boards are charged ResNet-18's cost, so
#: the store's reference pair is the run's own.
FAST = {"transfer_samples": 9, "profile_minibatches": 5, "local_minibatches": 20, "min_minibatches": 5,
        "cost_as": "resnet18-imagenet"}


@pytest.fixture()
def store_url(reference_store: Path, tmp_path: Path) -> str:
    """A private copy of the reference store for one test."""
    path = tmp_path / "store.sqlite"
    shutil.copy(reference_store, path)
    return f"file://{path}"
