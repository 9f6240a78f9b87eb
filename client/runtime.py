"""A node's work for one round: profile (when bootstrapping), choose a mode, train, measure.

The runtime is independent of Flower: ``client/client_app.py`` feeds it decoded messages.
What trains is the run's task (its model, its data for this node's partition, its own
training step); time and power come from the node's ``Device``: measured on a real board,
where the timed step is the task's own; modelled on a simulated board, which is charged the
cost characterised from that step (or, asked for explicitly, a catalog workload's:
``cost-as``, refused on a real board). :func:`build_result` is the one place a round's result
is assembled from what was measured, for this runtime and for the analytic engine alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from cachetools import LRUCache, cached

from client import policies
from powerfleet.protocol.enums import ChoiceKind
from powerfleet.protocol.messages import NodeInfo, TrainResult, TrainTask
from powerfleet.protocol.tasks import Task, TaskError, Trainer, cached_task, seeded_model, set_weights
from powerfleet.serde import artifact_id, decode_predictor
from powerfleet.tasks.characterize import workload_for
from powertrain.devices.base import Device, RunResult, StepFn
from powertrain.errors import PowerfleetError
from powertrain.optimize import ModeTable
from powertrain.predictor import PowerTrainPredictor
from powertrain.profiler import ProfileRun, SequentialSettings, profile_within
from powertrain.workloads import Workload

#: minibatches at the start of the round's window kept out of the observed sample (warm-up)
OBSERVE_WARMUP = 3
#: minibatches a node runs once, off the clock, before its first round
JOIN_WARMUP_MINIBATCHES = 12
#: share of the deadline a bootstrap node profiles for (the rest absorbs a last window's overrun)
BOOTSTRAP_BUDGET_SHARE = 0.97


class NodeFailureError(PowerfleetError):
    """A node crashed in the middle of a round (simulated dropouts raise it too)."""


@cached(LRUCache(maxsize=8), key=lambda ident, artifact, device: (ident, device.device_type, device.space.name,
                                                                   device.space.description, device.space.size))
def _table(ident: str, artifact: bytes, device: Device) -> ModeTable:
    model = PowerTrainPredictor.from_state(decode_predictor(artifact, "predictor from the coordinator"))
    modes = device.space.modes("full")
    return ModeTable(modes, model.predict(modes), device.space.knob_names)


def predictor_table(artifact: bytes, device: Device) -> tuple[str, ModeTable]:
    """Verify a predictor artifact and predict every mode of ``device`` (cached by artifact id)."""
    ident = artifact_id(artifact, "predictor from the coordinator")
    return ident, _table(ident, artifact, device)


def profile_budget_s(task: TrainTask) -> float:
    """Device time a bootstrap node profiles for: its budget, never past the deadline's
    BOOTSTRAP_BUDGET_SHARE (the rest absorbs a last window's overrun)."""
    cap = task.deadline_s * BOOTSTRAP_BUDGET_SHARE
    return min(task.profile_budget_s, cap) if task.profile_budget_s > 0 else cap


def profile_share(dev: Device, workload: Workload, task: TrainTask, step: StepFn | None = None) -> ProfileRun:
    """A bootstrap node's profiling of the modes its task lists, with the task's estimates, budget
    and cap (one call for the Flower node and the analytic engine's boards alike)."""
    modes = pd.DataFrame({k: list(v) for k, v in task.profile_modes.items()})
    return profile_within(dev, workload, modes, profile_budget_s(task),
                          SequentialSettings(max_minibatches=task.profile_minibatches),
                          est_time_ms=task.profile_time_ms or None, est_power_w=task.profile_power_w or None,
                          power_cap_w=task.power_cap_w, step=step)


def build_result(*, node_id: int, device_type: str, unit: int, task: TrainTask, decision: policies.Plan,
                 work: int, profiled: int, time_s: float, energy_j: float, true_power_w: float,
                 train_loss: float, samples: pd.DataFrame, predictor_id: str, num_examples: int,
                 maxn: tuple[float, float] = (math.nan, math.nan)) -> TrainResult:
    """A node's round result from what it measured (``work`` planned minibatches, ``profiled``
    profiling minibatches, device time and energy); derived figures are computed here only."""
    return TrainResult(
        node_id=node_id, device_type=device_type, unit=unit, policy=task.policy, mode=dict(decision.mode),
        work_assigned=task.work_minibatches, work_planned=work, work_done=work + profiled,
        num_examples=num_examples, time_s=time_s, energy_j=energy_j,
        mean_power_w=energy_j / time_s if time_s > 0 else 0.0,
        pred_time_s=decision.pred_time_ms * work / 1000.0, pred_power_w=decision.pred_power_w,
        pred_energy_j=decision.pred_time_ms * decision.pred_power_w * work / 1000.0,
        true_power_w=true_power_w, deadline_met=time_s <= task.deadline_s, train_loss=train_loss,
        profiling_minibatches=profiled, choice_kind=decision.kind, choice=decision.choice,
        samples=samples, predictor_id=predictor_id, maxn_time_ms=maxn[0], maxn_power_w=maxn[1],
    )


class NodeRuntime:
    """One node: its device, its data partition, and the round logic."""

    def __init__(self, device: Device, *, partition_id: int, num_partitions: int, device_spec: str) -> None:
        self.device = device
        self.partition_id = partition_id
        self.num_partitions = num_partitions
        self.device_spec = device_spec

    def task(self, reference: str, cost_as: str) -> tuple[Task, Workload]:
        """The run's task and what this board is charged for one of its minibatches."""
        task = cached_task(reference)
        if cost_as and not self.device.simulated:
            raise TaskError(f"cost-as={cost_as!r} charges a simulated board another workload's cost; "
                            f"{self.device.device_type} unit {self.device.unit} is a real board, which runs and "
                            "measures the task's own step")
        return task, workload_for(task, cost_as)

    def warm_up(self, reference: str, cost_as: str, seed: int,
                minibatches: int = JOIN_WARMUP_MINIBATCHES) -> None:
        """Run a few untimed minibatches of the task once, before the node's first round (framework
        start-up: cuDNN autotuning, allocator growth), so that round is not charged for them."""
        task, workload = self.task(reference, cost_as)
        data = task.train_data(self.partition_id, self.num_partitions, seed)
        trainer = Trainer(task, seeded_model(task, seed), data, lr=1e-9, seed=seed)
        self.device.run(workload, minibatches, trainer.step)

    def evaluate(self, reference: str, seed: int, weights: Mapping[str, np.ndarray]) -> tuple[dict[str, float], int]:
        """The metrics of a global model on this node's own held-out data, and how many examples
        they cover (federated evaluation; off the device clock, as no board is charged for it)."""
        task = cached_task(reference)
        model = seeded_model(task, seed)
        set_weights(model, dict(weights))
        data = task.local_test_data(self.partition_id, self.num_partitions, seed)
        return task.evaluate(model, data), len(data)  # type: ignore[arg-type]

    def info(self, node_id: int, predictor_id: str, available: bool) -> NodeInfo:
        """The node's answer to a query."""
        idle = self.device.idle_power_w()
        return NodeInfo(node_id=node_id, device_type=self.device.device_type, unit=self.device.unit,
                        device_spec=self.device_spec, partition_id=self.partition_id, predictor_id=predictor_id,
                        available=available, idle_power_w=float(idle) if idle is not None else 0.0)

    def train(self, node_id: int, task: TrainTask, weights: Mapping[str, np.ndarray] | None,
              table: ModeTable | None, predictor_id: str) -> tuple[TrainResult, dict[str, np.ndarray]]:
        """Run the round; returns the result and the updated weights."""
        torch.set_num_threads(1)  # many nodes share few cores in simulation
        spec, workload = self.task(task.task, task.cost_as)
        model = seeded_model(spec, task.seed)
        if weights:
            set_weights(model, dict(weights))
        data = spec.train_data(self.partition_id, self.num_partitions, task.seed)
        trainer = Trainer(spec, model, data, lr=task.lr, seed=task.seed * 100_003 + task.round * 7 + self.partition_id,
                          proximal_mu=task.proximal_mu, update_after=task.update_minibatches)
        dev = self.device
        start_s, start_e = dev.now_s(), dev.energy_j()
        samples: list[pd.DataFrame] = []
        profiled = 0
        tried = measured = pd.DataFrame()  # modes profiling ran, and those it measured
        if task.profile_modes:  # bootstrap: profile as many modes as fit, as training steps
            run = profile_share(dev, workload, task, trainer.step)
            profiled = run.total_minibatches
            tried, measured = (run.tried if run.tried is not None else run.frame), run.frame
            samples.append(run.frame.drop(columns="windows")
                           .assign(workload=task.workload, source="profile", device_unit=dev.unit))
        rng = np.random.default_rng([task.seed, task.round, self.partition_id, 99])
        remaining_s = max(task.deadline_s - (dev.now_s() - start_s), 1e-3)
        decision = policies.Plan(dev.current_mode(), 0, 0.0, 0.0, ChoiceKind.PROFILING, "profiling only")
        window = None
        if task.work_minibatches > 0:
            decision = policies.plan(task.policy, dev, work=task.work_minibatches, deadline_s=remaining_s,
                                     power_cap_w=task.power_cap_w, objective=task.objective,
                                     margin_z=task.margin_z, table=table, rng=rng, workload=workload,
                                     margin_log=task.margin_log)
            applied = dev.apply_preset(decision.preset) if decision.preset else dev.apply_mode(decision.mode)
            decision = policies.Plan(applied, decision.work, decision.pred_time_ms, decision.pred_power_w,
                                     decision.kind, decision.choice, decision.preset)
        work = decision.work
        if work > 0:
            warm = min(OBSERVE_WARMUP, max(work - 3, 0))
            if warm:
                dev.run(workload, warm, trainer.step)
            window = dev.run(workload, work - warm, trainer.step)
            # A preset may power-gate TPCs: its knob values do not describe what ran, so it is
            # not a sample of that mode for the predictor.
            if window.n_minibatches >= 3 and decision.preset is None:
                samples.append(pd.DataFrame([{**decision.mode, "time_ms": window.mean_time_ms,
                                              "power_w": window.mean_power_w, "device": dev.device_type,
                                              "workload": task.workload, "source": "round",
                                              "device_unit": dev.unit}]))
        elapsed = dev.now_s() - start_s
        energy = dev.energy_j() - start_e
        true_power, maxn = self._truth(workload, decision, work, window, tried, measured, energy, elapsed)
        result = build_result(
            node_id=node_id, device_type=dev.device_type, unit=dev.unit, task=task, decision=decision, work=work,
            profiled=profiled, time_s=elapsed, energy_j=energy, true_power_w=true_power,
            train_loss=float(np.mean(trainer.losses)) if trainer.losses else math.nan,
            samples=pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
            predictor_id=predictor_id, num_examples=trainer.examples, maxn=maxn)
        return result, trainer.update()

    def _truth(self, workload: Workload, decision: policies.Plan, work: int, window: RunResult | None,
               profiled: pd.DataFrame, measured: pd.DataFrame, energy_j: float,
               elapsed_s: float) -> tuple[float, tuple[float, float]]:
        """The power the cap is judged on - the highest of the modes the round ran (the chosen one
        and every profiled one), from the ground truth where the board knows it (simulation),
        else as measured - and the board's MAXN ground truth (time ms, power W; NaN if unknown)."""
        dev = self.device
        maxn = dev.ground_truth(workload, pd.DataFrame([dev.space.max_mode()]))
        maxn_tp = ((float(maxn.frame.time_ms.iloc[0]), float(maxn.frame.power_w.iloc[0])) if maxn is not None
                   else (math.nan, math.nan))
        powers: list[float] = []
        if work > 0:
            truth = dev.ground_truth(workload, pd.DataFrame([decision.mode]), preset=decision.preset)
            powers.append(float(truth.frame.power_w.iloc[0]) if truth is not None
                          else window.mean_power_w if window is not None else energy_j / max(elapsed_s, 1e-9))
        if len(profiled):  # every mode profiling ran, abandoned ones included
            truth = dev.ground_truth(workload, profiled.loc[:, list(dev.space.knob_names)])
            if truth is not None:
                powers.append(float(truth.frame.power_w.max()))
            elif len(measured):
                powers.append(float(measured.power_w.max()))
        return (max(powers) if powers else energy_j / max(elapsed_s, 1e-9)), maxn_tp
