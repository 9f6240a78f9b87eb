"""The round protocol between the coordinator and a node, independent of Flower.

Typed messages - :class:`NodeQuery`/:class:`NodeInfo` (query), :class:`TrainTask` and
:class:`TrainResult` (train) - and their encoding into Flower records. The Flower apps only
call ``*_to_records``/``*_from_records``; the analytic engine passes the dataclasses directly.
Predictor artifacts travel as protobuf bytes (``powerfleet/serde.py``), never pickled.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from powerfleet.protocol.enums import ChoiceKind, Policy
from powertrain.errors import DataFormatError


@dataclass(frozen=True, kw_only=True)
class NodeQuery:
    """What the coordinator asks every node before a round."""

    round: int
    task: str  # the task reference every node trains (powerfleet.protocol.tasks.load_task)
    cost_as: str = ""  # simulation only: the catalog workload a simulated board is charged
    #: device specs of a simulated fleet, indexed by the node's partition id (simulation only;
    #: a deployed node's own ``node_config["device"]`` wins)
    fleet: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """A node's answer: what it is and whether it can work this round."""

    node_id: int
    device_type: str
    unit: int
    device_spec: str
    partition_id: int
    predictor_id: str  # artifact id of the predictor it holds ("" if none)
    available: bool
    idle_power_w: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TrainTask:
    """One node's assignment for a round."""

    round: int
    task: str  # the task reference (its model, data and training step)
    workload: str  # the store key of the work: the task's fingerprint, or ``cost_as``
    work_minibatches: int  # assigned local work (possibly partial)
    min_minibatches: int
    deadline_s: float
    power_cap_w: float
    objective: str
    policy: Policy
    margin_z: float
    seed: int
    lr: float = 0.05
    predictor_id: str = ""
    predictor_bytes: bytes = b""  # sent only when the node lacks ``predictor_id``
    #: bootstrap: modes to profile, in priority order (knob name -> values); their minibatches
    #: are training steps, measured until known well enough, as many as fit the deadline
    profile_modes: Mapping[str, Sequence[float]] = field(default_factory=dict)
    #: the coordinator's estimate of each profile mode's minibatch time (ms), to plan the budget
    profile_time_ms: Sequence[float] = ()
    profile_power_w: Sequence[float] = ()  # ... and of its board power (W), to stay under the cap
    profile_budget_s: float = 0.0  # device time it may profile for (0: the deadline)
    profile_minibatches: int = 60  # most measured minibatches per profiled mode
    #: the update sent back is the model after at most this many minibatches (profiling runs
    #: more; a bootstrap node's update must not outweigh a normal one); 0: after all of them
    update_minibatches: int = 0
    cost_as: str = ""  # simulation only (see NodeQuery)
    proximal_mu: float = 0.0  # FedProx: pull of the local model towards the global one
    #: calibrated log margins (time, power) that replace ``margin_z``; None: use ``margin_z``
    margin_log: tuple[float, float] | None = None


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a node reports after training."""

    node_id: int
    device_type: str
    unit: int
    policy: Policy
    mode: Mapping[str, float]
    work_assigned: int
    work_planned: int
    work_done: int
    num_examples: int  # examples in the update sent back (Flower's aggregation weight)
    time_s: float  # device time of the round's training (virtual on simulated boards)
    energy_j: float
    mean_power_w: float
    pred_time_s: float
    pred_power_w: float
    pred_energy_j: float
    true_power_w: float  # ground-truth steady power of the chosen mode (simulated boards), else measured
    deadline_met: bool
    train_loss: float
    profiling_minibatches: int
    choice_kind: ChoiceKind
    choice: str  # why, in words: the binding constraint, the baseline's rule, ...
    samples: pd.DataFrame  # observed (mode, time_ms, power_w) rows: profiled and in-round
    predictor_id: str = ""
    #: the board's ground truth at MAXN for this workload (simulated boards; NaN on real ones):
    #: what the same round would have cost on a fleet that runs everything at maximum
    maxn_time_ms: float = float("nan")
    maxn_power_w: float = float("nan")
    #: federated evaluation without a message of its own: the global model as the node received
    #: it this round, evaluated on the node's own held-out data before it trained (NaN, 0: not run)
    received_loss: float = float("nan")
    received_accuracy: float = float("nan")
    received_examples: int = 0

    def metrics(self) -> dict[str, float]:
        """Scalar metrics for records and reports (``num-examples`` under Flower's name)."""
        out = {k: float(v) for k, v in asdict(self).items()
               if isinstance(v, int | float | bool) and k not in ("node_id", "unit", "num_examples")}
        return {"num-examples": float(self.num_examples), **out}


# ---------------------------------------------------------------- encoding
def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def query_to_records(q: NodeQuery) -> RecordDict:
    """Encode a query."""
    return RecordDict({"config": ConfigRecord({
        "round": q.round, "task": q.task, "cost-as": q.cost_as, "fleet": _json(list(q.fleet))})})


def query_from_records(rd: RecordDict) -> NodeQuery:
    """Decode a query."""
    c = _config(rd, "config")
    return NodeQuery(round=_i(c["round"]), task=str(c["task"]), cost_as=str(c["cost-as"]),
                     fleet=tuple(json.loads(str(c["fleet"]))))


def info_to_records(info: NodeInfo) -> RecordDict:
    """Encode a node's answer."""
    return RecordDict({"info": ConfigRecord({
        "node-id": info.node_id, "device-type": info.device_type, "unit": info.unit,
        "device-spec": info.device_spec, "partition-id": info.partition_id,
        "predictor-id": info.predictor_id, "available": info.available, "idle-power-w": info.idle_power_w})})


def info_from_records(rd: RecordDict, node_id: int) -> NodeInfo:
    """Decode a node's answer (``node_id`` from the message metadata wins)."""
    c = _config(rd, "info")
    return NodeInfo(node_id=node_id, device_type=str(c["device-type"]), unit=_i(c["unit"]),
                    device_spec=str(c["device-spec"]), partition_id=_i(c["partition-id"]),
                    predictor_id=str(c["predictor-id"]), available=bool(c["available"]),
                    idle_power_w=_f(c["idle-power-w"]))


def task_to_records(task: TrainTask, weights: Mapping[str, np.ndarray]) -> RecordDict:
    """Encode a train task with the global weights."""
    config = ConfigRecord({
        "round": task.round, "task": task.task, "workload": task.workload, "cost-as": task.cost_as,
        "work-minibatches": task.work_minibatches, "update-minibatches": task.update_minibatches,
        "proximal-mu": task.proximal_mu,
        "min-minibatches": task.min_minibatches, "deadline-s": task.deadline_s,
        "power-cap-w": task.power_cap_w, "objective": task.objective, "policy": task.policy,
        "margin-z": task.margin_z, "seed": task.seed, "lr": task.lr, "predictor-id": task.predictor_id,
        "profile-modes": _json({k: list(map(float, v)) for k, v in task.profile_modes.items()}),
        "profile-time-ms": [float(v) for v in task.profile_time_ms],
        "profile-power-w": [float(v) for v in task.profile_power_w],
        "profile-budget-s": task.profile_budget_s,
        "profile-minibatches": task.profile_minibatches,
        "margin-log": [float(v) for v in task.margin_log] if task.margin_log is not None else [],
    })
    records: dict[str, Any] = {"arrays": _arrays(weights), "config": config}
    if task.predictor_bytes:
        records["predictor"] = ConfigRecord({"artifact": task.predictor_bytes})
    return RecordDict(records)


def task_from_records(rd: RecordDict) -> tuple[TrainTask, dict[str, np.ndarray]]:
    """Decode a train task and the global weights."""
    c = _config(rd, "config")
    artifact = b""
    if "predictor" in rd:
        raw = _config(rd, "predictor")["artifact"]
        if not isinstance(raw, bytes):
            raise DataFormatError("train task: predictor artifact is not bytes")
        artifact = raw
    task = TrainTask(
        round=_i(c["round"]), task=str(c["task"]), workload=str(c["workload"]), cost_as=str(c["cost-as"]),
        work_minibatches=_i(c["work-minibatches"]), update_minibatches=_i(c["update-minibatches"]),
        proximal_mu=_f(c["proximal-mu"]),
        min_minibatches=_i(c["min-minibatches"]), deadline_s=_f(c["deadline-s"]),
        power_cap_w=_f(c["power-cap-w"]), objective=str(c["objective"]), policy=_policy(c["policy"]),
        margin_z=_f(c["margin-z"]), seed=_i(c["seed"]), lr=_f(c["lr"]),
        predictor_id=str(c["predictor-id"]), predictor_bytes=artifact,
        profile_modes=json.loads(str(c["profile-modes"])), profile_minibatches=_i(c["profile-minibatches"]),
        profile_time_ms=tuple(_f(v) for v in _list(c["profile-time-ms"])),
        profile_power_w=tuple(_f(v) for v in _list(c["profile-power-w"])), margin_log=_pair(c["margin-log"]),
        profile_budget_s=_f(c["profile-budget-s"]),
    )
    arrays = rd.array_records["arrays"]
    weights = {k: arrays[k].numpy() for k in arrays}
    return task, weights


def result_to_records(res: TrainResult, weights: Mapping[str, np.ndarray]) -> RecordDict:
    """Encode a node's result with its updated weights."""
    metrics = MetricRecord(dict(res.metrics()))
    meta = ConfigRecord({"device-type": res.device_type, "unit": res.unit, "policy": str(res.policy),
                         "mode": _json(dict(res.mode)), "choice-kind": str(res.choice_kind), "choice": res.choice,
                         "predictor-id": res.predictor_id,
                         "samples": res.samples.to_json(orient="split", double_precision=15)})
    return RecordDict({"arrays": _arrays(weights), "metrics": metrics, "meta": meta})


def result_from_records(rd: RecordDict, node_id: int) -> tuple[TrainResult, dict[str, np.ndarray]]:
    """Decode a node's result (JSON and numbers only; nothing is unpickled)."""
    m = rd.metric_records["metrics"]
    meta = _config(rd, "meta")
    samples = pd.read_json(io.StringIO(str(meta["samples"])), orient="split", dtype=False)
    res = TrainResult(
        node_id=node_id, device_type=str(meta["device-type"]), unit=_i(meta["unit"]),
        policy=_policy(meta["policy"]), mode=json.loads(str(meta["mode"])),
        work_assigned=_i(m["work_assigned"]), work_planned=_i(m["work_planned"]),
        work_done=_i(m["work_done"]), num_examples=_i(m["num-examples"]), time_s=_f(m["time_s"]),
        energy_j=_f(m["energy_j"]), mean_power_w=_f(m["mean_power_w"]),
        pred_time_s=_f(m["pred_time_s"]), pred_power_w=_f(m["pred_power_w"]),
        pred_energy_j=_f(m["pred_energy_j"]), true_power_w=_f(m["true_power_w"]),
        deadline_met=bool(m["deadline_met"]), train_loss=_f(m["train_loss"]),
        profiling_minibatches=_i(m["profiling_minibatches"]), choice_kind=_enum(ChoiceKind, meta["choice-kind"]),
        choice=str(meta["choice"]),
        samples=samples, predictor_id=str(meta["predictor-id"]),
        maxn_time_ms=_f(m["maxn_time_ms"]), maxn_power_w=_f(m["maxn_power_w"]),
        received_loss=_f(m["received_loss"]), received_accuracy=_f(m["received_accuracy"]),
        received_examples=_i(m["received_examples"]),
    )
    arrays = rd.array_records["arrays"]
    return res, {k: arrays[k].numpy() for k in arrays}


E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], value: object) -> E:
    try:
        return kind(str(value))
    except ValueError:
        raise DataFormatError(f"message field {value!r} is not one of {', '.join(kind)}") from None


def _policy(value: object) -> Policy:
    return _enum(Policy, value)


def _f(value: object) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    raise DataFormatError(f"message field {value!r} is not a number")


def _i(value: object) -> int:
    if isinstance(value, bool | int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise DataFormatError(f"message field {value!r} is not an integer")


def _list(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    raise DataFormatError(f"message field {value!r} is not a list")


def _pair(value: object) -> tuple[float, float] | None:
    items = _list(value)
    if not items:
        return None
    if len(items) != 2:
        raise DataFormatError(f"message field {value!r} is not a (time, power) pair")
    return _f(items[0]), _f(items[1])


def _arrays(weights: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})


def _config(rd: RecordDict, key: str) -> ConfigRecord:
    if key not in rd.config_records:
        raise DataFormatError(f"message is missing its {key!r} record")
    return rd.config_records[key]
