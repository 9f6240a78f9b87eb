"""Aggregating the round's updates with Flower's own strategies (``flwr.serverapp.strategy``).

The coordinator keeps its round loop (deadline-aware selection, per-node work and power caps,
predictor shipping), so it does not call ``Strategy.start``; it hands the round's on-time
replies to the chosen strategy's ``aggregate_train`` as Flower messages (one ``ArrayRecord``
and one ``MetricRecord`` weighted by ``num-examples``). FedAvg and FedProx average (FedProx's
proximal term is applied by the nodes' trainer); FedAdam treats the average as a
pseudo-gradient for a server-side Adam step from the current global model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from powertrain.errors import check_choice

STRATEGIES = ("fedavg", "fedprox", "fedadam")


class Aggregator:
    """One Flower strategy, fed the round's updates (see the module docstring)."""

    def __init__(self, name: str, *, proximal_mu: float = 0.01, server_lr: float = 0.1) -> None:
        check_choice("strategy", name, STRATEGIES)
        self.name = name
        self.proximal_mu = proximal_mu if name == "fedprox" else 0.0
        strategy: Strategy
        if name == "fedprox":
            strategy = FedProx(proximal_mu=proximal_mu)
        elif name == "fedadam":
            strategy = FedAdam(eta=server_lr)
        else:
            strategy = FedAvg()
        self.strategy = strategy

    def aggregate(self, server_round: int, current: Mapping[str, np.ndarray],
                  updates: Sequence[tuple[int, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
        """The new global weights from ``updates`` (examples trained, weights) and ``current``."""
        if not updates:
            return dict(current)
        if hasattr(self.strategy, "current_arrays"):  # FedAdam & co: the step starts from the global model
            self.strategy.current_arrays = {k: np.asarray(v) for k, v in current.items()}
        replies = [Message(RecordDict({"arrays": ArrayRecord({k: Array(np.ascontiguousarray(v))
                                                              for k, v in weights.items()}),
                                       "metrics": MetricRecord({"num-examples": int(n)})}),
                           dst_node_id=0, message_type=MessageType.TRAIN) for n, weights in updates]
        arrays, _ = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return dict(current)
        return {k: np.asarray(arrays[k].numpy(), dtype=np.asarray(current[k]).dtype) for k in current}
