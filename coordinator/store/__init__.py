"""The predictor store: one predictor per (device type, workload), versioned and verified.

``open_store(url)`` gives a :class:`ModelStore` (embedded SQLite by default, Redis for a
fleet); ``coordinator.store.builder`` reuses or builds predictors through transfer.
"""

from coordinator.store.base import ArtifactMeta, HistoryEntry, LineageEntry, ModelStore, StoredPredictor
from coordinator.store.errors import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    LockTimeoutError,
    StoreError,
    StoreUnavailableError,
)
from coordinator.store.factory import STORE_ENV, open_store, resolve_store_url
from coordinator.store.fallback import FallbackModelStore
from coordinator.store.local_store import LocalModelStore, default_store_path
from coordinator.store.redis_store import RedisModelStore, redact_url

__all__ = [
    "STORE_ENV",
    "ArtifactMeta",
    "ArtifactNotFoundError",
    "CorruptArtifactError",
    "FallbackModelStore",
    "HistoryEntry",
    "LineageEntry",
    "LocalModelStore",
    "LockTimeoutError",
    "ModelStore",
    "RedisModelStore",
    "StoreError",
    "StoreUnavailableError",
    "StoredPredictor",
    "default_store_path",
    "open_store",
    "redact_url",
    "resolve_store_url",
]
