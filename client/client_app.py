"""The Flower ClientApp (thin): decode the message, run the node's round, encode the reply.

The node's device comes from ``node_config["device"]`` on a deployed SuperNode, or - in a
simulated fleet - from the fleet the coordinator broadcasts, indexed by the node's partition
id. Only simulated (``sim:``) boards are taken from the broadcast: a real board (and its
``root=``) is local configuration that nothing sent by the coordinator can choose, so a node
without a device of its own refuses a ``jetson:`` spec from the fleet list. Per-node state that
must survive between rounds (the predictor artifact, a simulated board's clock and temperature)
lives in ``context.state``; the logic is in ``client/runtime.py``. :func:`build_client_app`
lets the simulation wrap the device (fault injection); the deployed ``app`` uses it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from client.runtime import NodeFailureError, NodeRuntime, predictor_table
from powerfleet.protocol import messages
from powerfleet.protocol.messages import TrainTask
from powertrain.devices import Device, make_device, parse_device_spec
from powertrain.errors import DeviceError

_NODE = "powerfleet.node"
_DEVICE = "powerfleet.device"
_PREDICTOR = "powerfleet.predictor"

#: Wraps a node's device for one train task: (device, task, the node's context) -> device.
DeviceHook = Callable[[Device, TrainTask, Context], Device]


def _runtime(context: Context) -> NodeRuntime:
    node = context.state.config_records.get(_NODE)
    if node is None:
        raise DeviceError("node was not queried before training; no device is known")
    device = make_device(str(node["spec"]))
    saved = context.state.config_records.get(_DEVICE)
    if saved is not None:
        device.restore({k: v for k, v in saved.items() if isinstance(v, bool | int | float | str)})
    return NodeRuntime(device, partition_id=_int(node["partition-id"]),
                       num_partitions=_int(node["num-partitions"]), device_spec=str(node["spec"]))


def _int(value: object) -> int:
    if isinstance(value, bool | int | float | str):
        return int(value)
    raise DeviceError(f"node state field {value!r} is not an integer")


def node_device_spec(node_config: Mapping[str, object], fleet: Sequence[str], partition: int,
                     node_id: int) -> str:
    """The node's device: its own ``device`` setting, else a ``sim:`` spec from the broadcast fleet."""
    if "device" in node_config:
        return str(node_config["device"])
    spec = fleet[partition] if 0 <= partition < len(fleet) else ""
    if not spec:
        raise DeviceError(f"node {node_id} has no device: set node_config device=... or run it in a "
                          "simulated fleet")
    if parse_device_spec(spec)[0] != "sim":
        raise DeviceError(f"node {node_id} has no device of its own and refuses device {spec!r} from the "
                          "coordinator's fleet list (only sim: boards come from there); set node_config "
                          'device="jetson:auto?unit=N" on the SuperNode')
    return spec


def query(msg: Message, context: Context) -> Message:
    """Report device type, unit, held predictor version and availability.

    Cheap on purpose (the coordinator waits for it before round 1): the task is loaded and the
    board checked against it, so a node that cannot run it refuses the run now, but nothing
    trains; the warm-up waits for the node's first round."""
    q = messages.query_from_records(msg.content)
    cfg = context.node_config
    partition = _int(cfg.get("partition-id", 0))
    spec = node_device_spec(cfg, q.fleet, partition, context.node_id)
    context.state[_NODE] = ConfigRecord({
        "spec": spec, "partition-id": partition,
        "num-partitions": _int(cfg.get("num-partitions", max(len(q.fleet), 1)))})
    node = _runtime(context)
    node.task(q.task, q.cost_as)  # a task that does not load here, or cost-as on a real board: refused
    with node.device:  # a real board is restored to its own settings when the handler ends
        held = context.state.config_records.get(_PREDICTOR)
        info = node.info(context.node_id, str(held["id"]) if held else "", True)
    return Message(messages.info_to_records(info), reply_to=msg)


def train(msg: Message, context: Context, device_hook: DeviceHook | None = None) -> Message:
    """Choose a mode, train for real, measure, and reply with weights, metrics, samples and the
    received model's evaluation on this node's held-out data."""
    task, weights = messages.task_from_records(msg.content)
    node = _runtime(context)
    table = None
    pid = ""
    if task.predictor_bytes:
        pid, table = predictor_table(task.predictor_bytes, node.device)
        context.state[_PREDICTOR] = ConfigRecord({"id": pid, "artifact": task.predictor_bytes})
    elif (held := context.state.config_records.get(_PREDICTOR)) is not None and task.predictor_id:
        artifact = held["artifact"]
        if isinstance(artifact, bytes):
            pid, table = predictor_table(artifact, node.device)
    if _DEVICE not in context.state.config_records:  # the node's first round: warm up once, off the clock
        with node.device:
            node.warm_up(task.task, task.cost_as, seed=0)
        context.state[_DEVICE] = ConfigRecord(dict(node.device.snapshot()))
    received = node.evaluate(task.task, task.seed, weights) if weights else None
    if device_hook is not None:
        node.device = device_hook(node.device, task, context)
    try:
        with node.device:  # the mode is held only while the node trains
            try:
                result, new_weights = node.train(context.node_id, task, weights, table, pid)
            finally:  # a simulated board's clock and energy advance even when the node dies
                context.state[_DEVICE] = ConfigRecord(dict(node.device.snapshot()))
    except NodeFailureError as exc:  # a node that died mid-round: an error reply of one line, no traceback
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=exc.message), reply_to=msg)
    if received is not None:
        metrics, examples = received
        result = replace(result, received_loss=metrics.get("loss", math.nan),
                         received_accuracy=metrics.get("accuracy", math.nan), received_examples=examples)
    return Message(messages.result_to_records(result, new_weights), reply_to=msg)


def build_client_app(device_hook: DeviceHook | None = None) -> ClientApp:
    """A ClientApp answering ``query`` and ``train``; ``device_hook`` wraps the device per train
    task."""
    client_app = ClientApp()

    @client_app.query()
    def _query(msg: Message, context: Context) -> Message:
        return query(msg, context)

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, device_hook)

    return client_app


app = build_client_app()
