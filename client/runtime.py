"""A node's work for one round: profile (when bootstrapping), choose a mode, train, measure.

The runtime is independent of Flower: ``client/client_app.py`` feeds it decoded messages,
the analytic engine calls it directly. Time and power come from the node's ``Device``
(virtual clock on simulated boards), the model update from real torch training.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from client import policies
from client.protocol import NodeInfo, TrainResult, TrainTask
from client.task import BATCH_SIZE, Trainer, get_weights, new_model, node_data, set_weights
from powerfleet.serde import artifact_id, decode_predictor
from powertrain.devices.base import Device
from powertrain.errors import PowerfleetError
from powertrain.optimize import ModeTable
from powertrain.predictor import PowerTrainPredictor
from powertrain.profiler import ProfileSettings, profile

_TABLES: OrderedDict[tuple[str, str, str], ModeTable] = OrderedDict()
_TABLE_CACHE_SIZE = 8
#: minibatches at the start of the round's window kept out of the observed sample (warm-up)
OBSERVE_WARMUP = 3
#: minibatches a node runs once when it joins, before its first round
JOIN_WARMUP_MINIBATCHES = 10


class NodeFailureError(PowerfleetError):
    """A simulated node crash (dropout) in the middle of a round."""


def predictor_table(artifact: bytes, device: Device) -> tuple[str, ModeTable]:
    """Verify a predictor artifact and predict every mode of ``device`` (cached by artifact id)."""
    ident = artifact_id(artifact, "predictor from the coordinator")
    key = (ident, device.device_type, device.space.name)
    if key not in _TABLES:
        model = PowerTrainPredictor.from_state(decode_predictor(artifact, "predictor from the coordinator"))
        modes = device.space.modes("full")
        _TABLES[key] = ModeTable(modes, model.predict(modes), device.space.knob_names)
        while len(_TABLES) > _TABLE_CACHE_SIZE:
            _TABLES.popitem(last=False)
    _TABLES.move_to_end(key)
    return ident, _TABLES[key]


class NodeRuntime:
    """One node: its device, its data partition, and the round logic."""

    def __init__(self, device: Device, *, partition_id: int, num_partitions: int, device_spec: str) -> None:
        self.device = device
        self.partition_id = partition_id
        self.num_partitions = num_partitions
        self.device_spec = device_spec

    def warm_up(self, workload: str, minibatches: int = JOIN_WARMUP_MINIBATCHES) -> None:
        """Run a few untimed minibatches once when the node joins (framework start-up: cuDNN
        autotuning, allocator growth), so the first round is not charged for them."""
        self.device.run(workload, minibatches)

    def info(self, node_id: int, predictor_id: str, available: bool) -> NodeInfo:
        """The node's answer to a query."""
        idle = getattr(self.device, "steady_idle_power_w", None)
        return NodeInfo(node_id, self.device.device_type, self.device.unit, self.device_spec,
                        self.partition_id, predictor_id, available, float(idle()) if idle else 0.0)

    def train(self, node_id: int, task: TrainTask, weights: Mapping[str, np.ndarray] | None,
              table: ModeTable | None, predictor_id: str,
              *, real_training: bool = True) -> tuple[TrainResult, dict[str, np.ndarray]]:
        """Run the round; returns the result and the updated weights (empty without training)."""
        torch.set_num_threads(1)  # many nodes share few cores in simulation
        trainer = None
        if real_training:
            model = new_model(task.seed)
            if weights:
                set_weights(model, dict(weights))
            data = node_data(self.partition_id, self.num_partitions, task.seed)
            trainer = Trainer(model, data, lr=task.lr, seed=task.seed * 100_003 + task.round * 7 + self.partition_id)
        step = trainer.step if trainer is not None else None
        dev = self.device
        start_s, start_e = dev.now_s(), dev.energy_j()
        samples: list[pd.DataFrame] = []
        profiled = 0
        if task.profile_modes:
            modes = pd.DataFrame({k: list(v) for k, v in task.profile_modes.items()})
            run = profile(dev, task.workload, modes, ProfileSettings(task.profile_minibatches, 3, 1.0), step=step)
            profiled = run.total_minibatches
            samples.append(run.frame.assign(source="profile", device_unit=dev.unit))
        rng = np.random.default_rng([task.seed, task.round, self.partition_id, 99])
        remaining_s = max(task.deadline_s - (dev.now_s() - start_s), 1e-3)
        mode = dev.current_mode()
        decision = policies.Plan(mode, 0, 0.0, 0.0, "profiling only")
        window = None
        if task.work_minibatches > 0:
            decision = policies.plan(task.policy, dev, work=task.work_minibatches, deadline_s=remaining_s,
                                     power_cap_w=task.power_cap_w, objective=task.objective,
                                     margin_z=task.margin_z, table=table, rng=rng, workload=task.workload)
            mode = dev.apply_preset(decision.preset) if decision.preset else dev.apply_mode(decision.mode)
        work = decision.work
        if task.fail:  # a dropout: the node dies halfway through its work and never replies
            dev.run(task.workload, max(1, work // 2), step)
            raise NodeFailureError(f"node {node_id} dropped out in round {task.round} (simulated)")
        if work > 0:
            warm = min(OBSERVE_WARMUP, max(work - 3, 0))
            if warm:
                dev.run(task.workload, warm, step)
            window = dev.run(task.workload, work - warm, step)
            # A preset may power-gate TPCs: its knob values do not describe what ran, so it is
            # not a sample of that mode for the predictor.
            if window.n_minibatches >= 3 and decision.preset is None:
                samples.append(pd.DataFrame([{**mode, "time_ms": window.mean_time_ms,
                                              "power_w": window.mean_power_w, "device": dev.device_type,
                                              "workload": task.workload, "source": "round",
                                              "device_unit": dev.unit}]))
        elapsed = dev.now_s() - start_s
        energy = dev.energy_j() - start_e
        true_power = window.mean_power_w if window is not None else (energy / elapsed if elapsed > 0 else 0.0)
        truth_fn = getattr(dev, "true_performance", None)
        if truth_fn is not None and work > 0:  # judge the cap on the simulator's ground truth
            tpc = None
            if decision.preset is not None:
                preset = dev.space.preset(decision.preset)
                total = getattr(dev, "gpu_tpcs", None)
                tpc = (preset.active_tpcs / total) if (preset.active_tpcs and total) else None
            truth = truth_fn(task.workload, pd.DataFrame([mode]), **({"tpc_fraction": tpc} if tpc else {}))
            true_power = float(truth.power_w.iloc[0])
        result = TrainResult(
            node_id=node_id, device_type=dev.device_type, unit=dev.unit, policy=task.policy, mode=mode,
            work_assigned=task.work_minibatches, work_planned=work, work_done=work + profiled,
            examples=(work + profiled) * BATCH_SIZE, time_s=elapsed, energy_j=energy,
            mean_power_w=energy / elapsed if elapsed > 0 else 0.0,
            pred_time_s=decision.pred_time_ms * work / 1000.0, pred_power_w=decision.pred_power_w,
            pred_energy_j=decision.pred_time_ms * decision.pred_power_w * work / 1000.0,
            true_power_w=true_power, deadline_met=elapsed <= task.deadline_s,
            train_loss=float(np.mean(trainer.losses)) if trainer and trainer.losses else math.nan,
            profiling_minibatches=profiled, choice=decision.choice,
            samples=pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
            predictor_id=predictor_id,
        )
        return result, (get_weights(trainer.model) if trainer is not None else {})
