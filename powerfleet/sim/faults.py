"""Simulated dropouts: nodes that die mid-round, injected only by the simulation.

:class:`DropoutPlan` decides, reproducibly from the seed, which node fails in which round.
On the Flower engine the simulated ClientApp wraps a failing node's device in a
:class:`CrashingDevice`, which runs half the round's work (the board's clock and energy
advance) and then raises, so the coordinator sees an error reply exactly as from a real crash.
On the analytic engine :class:`DropoutBackend` answers for the failed nodes. Nothing in the
coordinator or the deployed client knows about any of this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from flwr.app import Context

from client.runtime import NodeFailureError
from coordinator.rounds import FleetBackend, Replies
from powerfleet.protocol.messages import NodeInfo, NodeQuery, TrainTask
from powertrain.devices.base import Device, DeviceInfo, GroundTruth, RunResult, StepFn
from powertrain.errors import check_range
from powertrain.space import Mode
from powertrain.workloads import Workload


@dataclass(frozen=True)
class DropoutPlan:
    """Each selected node fails a round with probability ``rate``, drawn from (seed, round, node)."""

    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("dropout-rate", self.rate, low=0, high=1, high_inclusive=False)

    def fails(self, round_: int, partition_id: int) -> bool:
        """Whether node ``partition_id`` dies in round ``round_``."""
        if self.rate <= 0:
            return False
        return bool(np.random.default_rng([self.seed, round_, partition_id, 0xD0]).random() < self.rate)

    @staticmethod
    def message(round_: int, partition_id: int) -> str:
        """The failure every engine reports for a simulated dropout."""
        return f"node {partition_id} dropped out in round {round_} (simulated)"

    def crash_if_failing(self, device: Device, task: TrainTask, partition_id: int) -> Device:
        """A device that crashes halfway through a failing node's work (else ``device`` itself)."""
        if not self.fails(task.round, partition_id):
            return device
        return CrashingDevice(device, max(1, task.work_minibatches // 2), self.message(task.round, partition_id))


class CrashingDevice(Device):
    """A device that runs ``after_minibatches`` minibatches and then raises :class:`NodeFailureError`."""

    def __init__(self, inner: Device, after_minibatches: int, reason: str) -> None:
        super().__init__(inner.space, inner.unit)
        self.inner = inner
        self.simulated = inner.simulated
        self.remaining = int(after_minibatches)
        self.reason = reason

    def apply_mode(self, mode: Mapping[str, float]) -> Mode:
        """Delegated."""
        return self.inner.apply_mode(mode)

    def apply_preset(self, name: str) -> Mode:
        """Delegated."""
        return self.inner.apply_preset(name)

    def current_mode(self) -> Mode:
        """Delegated."""
        return self.inner.current_mode()

    def run(self, workload: Workload | str, n_minibatches: int, step: StepFn | None = None) -> RunResult:
        """Run until the budget is spent, then crash."""
        if self.remaining <= 0:
            raise NodeFailureError(self.reason)
        done = min(int(n_minibatches), self.remaining)
        result = self.inner.run(workload, done, step)
        self.remaining -= done
        if done < n_minibatches:
            raise NodeFailureError(self.reason)
        return result

    def energy_j(self) -> float:
        """Delegated."""
        return self.inner.energy_j()

    def now_s(self) -> float:
        """Delegated."""
        return self.inner.now_s()

    def idle(self, duration_s: float) -> None:
        """Delegated."""
        self.inner.idle(duration_s)

    def idle_power_w(self) -> float | None:
        """Delegated."""
        return self.inner.idle_power_w()

    def ground_truth(self, workload: Workload | str, modes: pd.DataFrame, *,
                     preset: str | None = None) -> GroundTruth | None:
        """Delegated."""
        return self.inner.ground_truth(workload, modes, preset=preset)

    def info(self) -> DeviceInfo:
        """Delegated."""
        return self.inner.info()

    def snapshot(self) -> dict[str, float | int | str | bool]:
        """Delegated: the board's clock and energy advance even when the node dies."""
        return self.inner.snapshot()

    def close(self) -> None:
        """Delegated."""
        self.inner.close()


class DropoutBackend:
    """The analytic engine's nodes with simulated dropouts: failing nodes never reach ``inner``."""

    def __init__(self, inner: FleetBackend, plan: DropoutPlan, partition_of: Mapping[int, int]) -> None:
        self.inner = inner
        self.plan = plan
        self.partition_of = dict(partition_of)
        self.real_training = inner.real_training
        self.refusals = inner.refusals

    def node_ids(self) -> list[int]:
        """Delegated."""
        return self.inner.node_ids()

    def query(self, query: NodeQuery, node_ids: Sequence[int]) -> list[NodeInfo]:
        """Delegated."""
        return self.inner.query(query, node_ids)

    def train(self, tasks: Mapping[int, TrainTask], weights: Mapping[str, np.ndarray], timeout_s: float) -> Replies:
        """Failing nodes reply with the dropout reason; the others train as usual."""
        failed = {n: t for n, t in tasks.items() if self.plan.fails(t.round, self.partition_of[n])}
        out: Replies = {n: self.plan.message(t.round, self.partition_of[n]) for n, t in failed.items()}
        rest = {n: t for n, t in tasks.items() if n not in failed}
        if rest:
            out.update(self.inner.train(rest, weights, timeout_s))
        return out


def dropout_hook(device: Device, task: TrainTask, context: Context) -> Device:
    """The simulated ClientApp's device hook: dropouts as the run config's ``dropout-rate`` and
    ``seed`` say, drawn per node (its partition id) and round."""
    rate = float(context.run_config.get("dropout-rate", 0.0))
    if rate <= 0:
        return device
    plan = DropoutPlan(rate, int(context.run_config.get("seed", 0)))
    return plan.crash_if_failing(device, task, int(context.node_config.get("partition-id", 0)))
