"""Errors of the predictor store.

Every message is one line naming the pair, the version or the value involved, so the CLI can
print it as is. Library errors (redis-py, sqlite3, OSError) are translated into these at the
backend that sees them.
"""

from __future__ import annotations

from powerfleet.serde import ArtifactError
from powertrain.errors import PowerfleetError


class StoreError(PowerfleetError):
    """A store operation failed; nothing already stored was changed."""


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached (after retries)."""


class ArtifactNotFoundError(StoreError, KeyError):
    """No such pair, version or artifact in the store."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class CorruptArtifactError(StoreError, ArtifactError):
    """A stored value failed verification (digest, format, or it belongs to another pair).

    It is refused whole and counted in ``store.stats()["corrupt_refused"]``; nothing is built
    from it.
    """


class LockTimeoutError(StoreError):
    """Waiting for another builder of the same pair took longer than allowed."""


class LockBusyError(StoreError):
    """A lock is held by someone else right now (retried until it is free or the wait times out)."""

    def __init__(self, message: str = "lock held by another process") -> None:
        super().__init__(message)
