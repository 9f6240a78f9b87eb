"""``BuiltinTask``: what the built-in tasks share - data options, partitioning, loading.

Every built-in task takes these options (``?key=value`` in a task reference):

* ``n_train``, ``n_test``: examples generated (ignored with a real data set);
* ``partitioner`` (``iid`` | ``dirichlet``) and ``alpha`` (Dirichlet concentration; smaller
  is more label-skewed) - how the training set is split across ``num_partitions`` nodes;
* ``workers``: DataLoader worker processes (default: the catalog row's; characterisation
  reports it as the workload's ``loader_workers``);
* ``dataset``: ``generated`` (default) or, where a task supports it, ``hf:<name>`` - a real
  data set through ``flwr-datasets`` (network access or ``HF_HUB_OFFLINE=1`` with a cache).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from powerfleet.protocol.tasks import Task, TaskError
from powerfleet.tasks.data import (
    GeneratedData,
    check_partitioner,
    load_hf_split,
    parse_dataset,
    partition_indices,
)
from powertrain.errors import InvalidParameterError, check_range


class BuiltinTask(Task):
    """Generated (or ``hf:``) data, partitioned IID or Dirichlet, loaded with ``workers`` processes."""

    #: The catalog row (``powertrain.workloads``) this task's default size matches.
    catalog_workload: ClassVar[str] = ""
    #: Whether ``dataset=hf:<name>`` is supported (vision and text tasks).
    supports_hf: ClassVar[bool] = False
    #: The label column of a real data set used for Dirichlet partitioning.
    default_label_key: ClassVar[str] = "label"

    def _init_data(self, *, n_train: int, n_test: int, partitioner: str, alpha: float, workers: int,
                   dataset: str = "generated", label_key: str = "") -> None:
        """Check and keep the data options (call from ``__init__``)."""
        self.n_train = int(check_range("n_train", n_train, low=1))
        self.n_test = int(check_range("n_test", n_test, low=1))
        self.partitioner = check_partitioner(str(partitioner))
        self.alpha = float(check_range("alpha", alpha, low=0, low_inclusive=False))
        self.workers = int(check_range("workers", workers, low=0, high=64))
        self.hf_name = parse_dataset(str(dataset))
        if self.hf_name is not None and not self.supports_hf:
            raise InvalidParameterError(f"dataset {dataset!r}: {type(self).__name__} takes generated data only")
        self.label_key = str(label_key) or self.default_label_key

    # ------------------------------------------------------------------ what each task gives
    @abc.abstractmethod
    def generate(self, n: int, seed: int, stream: int) -> GeneratedData:
        """``n`` generated examples; ``stream`` 0 is the training set, 1 the test set."""

    def from_hf(self, split: Any, ref: str) -> Dataset[Any]:
        """Wrap a ``datasets.Dataset`` split as this task's examples (tasks with ``supports_hf``)."""
        raise TaskError(f"task {self.name} cannot use {ref}")

    # ------------------------------------------------------------------ Task
    def train_data(self, partition_id: int, num_partitions: int, seed: int) -> Dataset[Any]:
        """Partition ``partition_id`` of ``num_partitions`` of the training set (see the options)."""
        if self.hf_name is not None:
            split = load_hf_split(self.hf_name, partition_id=partition_id, num_partitions=num_partitions,
                                  partitioner=self.partitioner, alpha=self.alpha, seed=seed,
                                  label_key=self.label_key)
            return self.from_hf(split, f"hf:{self.hf_name}")
        full = self.generate(self.n_train, seed, 0)
        idx = partition_indices(full.labels, partition_id, num_partitions, partitioner=self.partitioner,
                                alpha=self.alpha, seed=seed, min_size=int(self.batch_size))
        return Subset(full, np.asarray(idx).tolist())

    def test_data(self, seed: int) -> Dataset[Any]:
        """The held-out set (generated from another stream, or the data set's test split)."""
        if self.hf_name is not None:
            split = load_hf_split(self.hf_name, partition_id=None, num_partitions=1, partitioner="iid",
                                  alpha=self.alpha, seed=seed, label_key=self.label_key)
            return self.from_hf(split, f"hf:{self.hf_name}")
        return self.generate(self.n_test, seed, 1)

    def loader(self, data: Dataset[Any], seed: int) -> DataLoader[Any]:
        """Shuffled full minibatches, ``workers`` loader processes."""
        generator = torch.Generator().manual_seed(int(seed) % (2**63))
        return DataLoader(data, batch_size=int(self.batch_size), shuffle=True, drop_last=True,
                          generator=generator, num_workers=self.workers)

