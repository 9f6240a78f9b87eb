"""Data helpers shared by the built-in tasks: federated partitioning, generated data sets,
and real data sets through ``flwr-datasets``.

* :func:`partition` (Dirichlet label skew) and :func:`iid_partition` split a training set's
  indices across ``num_partitions`` nodes; :func:`partition_indices` picks one node's share
  by the ``partitioner`` option (``iid`` or ``dirichlet``).
* :class:`GeneratedData` is a map-style data set whose examples are produced on access from
  ``(seed, index)``: nothing is held in memory or downloaded, and the per-minibatch CPU work a
  data loader does is real (it is what characterisation measures).
* :func:`cached_arrays` keeps a generated data set in the user cache as plain arrays: Flower
  starts a fresh ClientApp process for every message, which would otherwise generate it anew.
* :func:`load_hf_split` loads a Hugging Face data set through ``flwr_datasets``
  (``FederatedDataset`` with ``IidPartitioner`` or ``DirichletPartitioner``), imported lazily;
  an unreachable or unknown data set is one :class:`TaskError` line naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch.utils.data import Dataset

from powerfleet.protocol.tasks import TaskError
from powertrain.errors import InvalidParameterError, check_range
from powertrain.outputs import OutputError, atomic_output, user_cache_dir

PARTITIONERS = ("iid", "dirichlet")
#: ``dataset=`` values: ``generated`` (the default) or ``hf:<name or local directory>``.
HF_PREFIX = "hf:"
#: How long the Hub may take to accept a connection before the data set counts as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0


# ---------------------------------------------------------------- generated data, cached
def cached_arrays(key: str, build: Callable[[], dict[str, np.ndarray]],
                  valid: Callable[[dict[str, np.ndarray]], bool],
                  cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The arrays ``build`` makes, kept as ``<key>.npz`` under ``cache_dir`` (default: the user
    cache, ``data``). The file holds plain arrays, read without pickles; one that is damaged or
    fails ``valid`` is rebuilt; an unwritable cache only costs the rebuild. ``key`` must change
    whenever what ``build`` makes does."""
    path = (cache_dir or user_cache_dir("data")) / f"{key}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        if valid(arrays):
            return arrays
    arrays = build()
    with contextlib.suppress(OSError, OutputError):  # whole or not at all, a temporary file per writer
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, what="cache file") as tmp, open(tmp, "wb") as out:
            np.savez(out, **arrays)  # type: ignore[arg-type]
    return arrays


# ---------------------------------------------------------------- partitioning
def check_partitioner(name: str) -> str:
    """``name`` if it is a known partitioner, else a one-line error naming the allowed ones."""
    if name not in PARTITIONERS:
        raise InvalidParameterError(f"partitioner {name!r} is not known; valid: {', '.join(PARTITIONERS)}")
    return name


def partition(labels: np.ndarray, num_partitions: int, alpha: float, seed: int,
              *, min_size: int = 16) -> list[np.ndarray]:
    """Dirichlet label-skew split: smaller ``alpha`` means more skewed partitions.

    Each class's examples are divided among the partitions in Dirichlet(``alpha``) shares; a
    partition left with fewer than ``min_size`` examples (one minibatch) is topped up with
    random examples so that every node can train.
    """
    rng = np.random.default_rng([seed, 314159])
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for c in range(int(labels.max()) + 1 if labels.size else 0):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].extend(chunk.tolist())
    out = []
    for members in parts:
        arr = np.array(sorted(members), dtype=np.int64)
        if arr.size < min_size:  # every node needs at least one minibatch
            extra = rng.choice(len(labels), min(min_size - arr.size, len(labels)), replace=False)
            arr = np.concatenate([arr, extra])
        out.append(arr)
    return out


def iid_partition(n: int, num_partitions: int, seed: int, *, min_size: int = 16) -> list[np.ndarray]:
    """A uniformly random split of ``n`` examples into near-equal shares (topped up to ``min_size``)."""
    rng = np.random.default_rng([seed, 161803])
    out = []
    for chunk in np.array_split(rng.permutation(n), num_partitions):
        arr = np.sort(chunk).astype(np.int64)
        if arr.size < min_size:
            arr = np.concatenate([arr, rng.choice(n, min(min_size - arr.size, n), replace=False)])
        out.append(arr)
    return out


def partition_indices(labels: np.ndarray, partition_id: int, num_partitions: int, *, partitioner: str,
                      alpha: float, seed: int, min_size: int = 16) -> np.ndarray:
    """The indices of partition ``partition_id`` of ``num_partitions`` under ``partitioner``."""
    check_partitioner(partitioner)
    check_range("num_partitions", num_partitions, low=1)
    check_range("partition_id", partition_id, low=0)
    if partitioner == "iid":
        parts = iid_partition(len(labels), num_partitions, seed, min_size=min_size)
    else:
        parts = partition(labels, num_partitions, alpha, seed, min_size=min_size)
    return parts[partition_id % num_partitions]


# ---------------------------------------------------------------- generated data
Example = tuple[torch.Tensor, ...]


class GeneratedData(Dataset[Example]):
    """``n`` examples made on access by ``make(rng, label)``; the labels are drawn up front.

    Example ``i`` is a pure function of ``(seed, i)``: every node and every epoch sees the same
    example, and partitioning needs only :attr:`labels`.
    """

    def __init__(self, labels: np.ndarray, seed: int, make: Callable[[np.random.Generator, int], Example]) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.seed = int(seed)
        self.make = make

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, 97, int(index)])
        return self.make(rng, int(self.labels[index]))


def draw_labels(n: int, classes: int, seed: int, stream: int) -> np.ndarray:
    """``n`` uniformly drawn class labels; ``stream`` separates train (0) from test (1) draws."""
    return np.random.default_rng([seed, 2718, stream]).integers(0, classes, size=n)


def smooth_pattern(rng: np.random.Generator, channels: int, px: int, cells: int) -> np.ndarray:
    """A smooth random pattern ``(channels, px, px)`` in [-1, 1]: a ``cells x cells`` grid upsampled
    bilinearly (the class prototypes of the generated image tasks)."""
    grid = rng.uniform(-1.0, 1.0, size=(channels, cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, px)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = grid[:, i0, :] * (1 - f)[None, :, None] + grid[:, i0 + 1, :] * f[None, :, None]
    out: np.ndarray = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    return out


# ---------------------------------------------------------------- real data sets (flwr-datasets)
def parse_dataset(value: str) -> str | None:
    """``generated`` -> None; ``hf:<name>`` -> ``<name>``; anything else is a one-line error."""
    text = str(value).strip()
    if text in ("", "generated"):
        return None
    if text.startswith(HF_PREFIX) and len(text) > len(HF_PREFIX):
        return text[len(HF_PREFIX):]
    raise InvalidParameterError(f"dataset {value!r} is not known; valid: generated, hf:<dataset name or directory>")


_FEDERATED: dict[tuple[Any, ...], Any] = {}


def load_hf_split(name: str, *, partition_id: int | None, num_partitions: int, partitioner: str,
                  alpha: float, seed: int, label_key: str, split: str = "train") -> Any:
    """One partition of the ``split`` split (``partition_id`` given) or the whole held-out split
    (``partition_id=None``: ``test``, else ``validation``) of the Hugging Face data set ``name``.

    ``name`` is a Hub id (``uoft-cs/cifar10``) or a local directory of data files. Returns a
    ``datasets.Dataset``. A data set that cannot be reached or has no such split is one
    :class:`TaskError` naming it; without network access set ``HF_HUB_OFFLINE=1`` to use a
    cached copy.
    """
    check_partitioner(partitioner)
    ref = f"{HF_PREFIX}{name}"
    try:
        import datasets
        from flwr_datasets import FederatedDataset
        from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner
    except ImportError:
        raise TaskError(f"dataset {ref}: needs flwr-datasets; install powerfleet[datasets]") from None
    if not Path(name).expanduser().exists() and not _hub_offline():
        _probe_hub(ref)
    key = (name, num_partitions, partitioner, float(alpha), int(seed), label_key, split)
    try:
        with _quiet_hub():
            datasets.disable_progress_bars()
            fds = _FEDERATED.get(key)
            if fds is None:
                part: Any = (IidPartitioner(num_partitions) if partitioner == "iid" else
                             DirichletPartitioner(num_partitions, partition_by=label_key, alpha=alpha,
                                                  min_partition_size=0, seed=seed))
                local = Path(name).expanduser()
                fds = FederatedDataset(dataset=str(local) if local.exists() else name, partitioners={split: part},
                                       seed=seed)
                _FEDERATED[key] = fds
            if partition_id is not None:
                return fds.load_partition(int(partition_id) % num_partitions, split)
            missing = ""
            for held_out in ("test", "validation"):
                try:
                    return fds.load_split(held_out)
                except ValueError as exc:  # not a split of this data set
                    missing = str(exc)
            raise TaskError(f"dataset {ref} has no test or validation split: {missing}")
    except TaskError:
        raise
    except Exception as exc:  # the hub, the network, the file formats: one line naming the data set
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskError(f"dataset {ref} cannot be loaded: {first[:300]}") from None


def hf_column(dataset: Any, wanted: str, fallbacks: tuple[str, ...], ref: str, role: str) -> str:
    """The column of ``dataset`` to use for ``role`` (``wanted`` or the first of ``fallbacks``)."""
    columns = list(dataset.column_names)
    for name in (wanted, *fallbacks):
        if name and name in columns:
            return name
    raise TaskError(f"dataset {ref} has no {role} column {wanted or fallbacks[0]!r} (columns: {', '.join(columns)})")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _probe_hub(ref: str) -> None:
    """Fail fast (one line) when the Hub does not accept a connection: the hub client would
    otherwise retry for half a minute, printing a warning per try."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise TaskError(f"dataset {ref} cannot be reached: no connection to {host} ({exc.strerror or exc}); "
                        "set HF_HUB_OFFLINE=1 to use a cached copy") from None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence the hub and datasets loggers (retries, progress) while loading."""
    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "datasets", "fsspec")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def hashed_tokens(text: str, vocab: int, reserved: int) -> list[int]:
    """Whitespace words mapped to ids in ``[reserved, vocab)`` by a stable hash (no tokenizer
    files are downloaded; ids below ``reserved`` are the task's special tokens)."""
    import zlib

    span = vocab - reserved
    return [reserved + zlib.crc32(w.lower().encode()) % span for w in text.split()]
