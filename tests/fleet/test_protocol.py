"""The round protocol survives Flower's record encoding unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from coordinator.rounds import Replies, federated_evaluation
from powerfleet.protocol import messages as protocol
from powerfleet.protocol.enums import ChoiceKind, Policy
from powerfleet.protocol.messages import NodeInfo, NodeQuery, TrainResult, TrainTask


def test_query_and_info_round_trip() -> None:
    q = NodeQuery(round=3, task="powerfleet.tasks.text:TiedLSTM?seq_len=8", cost_as="lstm-wikitext",
                  fleet=("sim:orin-agx?unit=1", "sim:orin-nano?unit=2"))
    assert protocol.query_from_records(protocol.query_to_records(q)) == q
    info = NodeInfo(node_id=17, device_type="orin-nano", unit=2, device_spec="sim:orin-nano?unit=2", partition_id=1,
                    predictor_id="sha256:ab", available=True, idle_power_w=4.1)
    assert protocol.info_from_records(protocol.info_to_records(info), 17) == info


def test_task_and_result_round_trip() -> None:
    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.float32)}
    task = TrainTask(round=4, task="/tmp/my_task.py:MyTask?width=2", workload="my-task+0123456789",
                     update_minibatches=30, proximal_mu=0.01, work_minibatches=30, min_minibatches=5, deadline_s=20.0,
                     power_cap_w=25.0, objective="energy", policy=Policy.POWERTRAIN, margin_z=2.0, seed=1,
                     predictor_id="sha256:x", predictor_bytes=b"\x00\x01artifact",
                     profile_modes={"cpu_cores": [2.0, 4.0], "gpu_mhz": [306.0, 510.0]})
    back, w = protocol.task_from_records(protocol.task_to_records(task, weights))
    assert back == task
    assert all(np.array_equal(w[k], weights[k]) for k in weights)
    samples = pd.DataFrame({"cpu_cores": [2.0], "cpu_mhz": [268.8], "time_ms": [12.5], "power_w": [7.25],
                            "source": ["round"]})
    res = TrainResult(node_id=5, device_type="orin-nano", unit=2, policy=Policy.POWERTRAIN,
                      mode={"cpu_cores": 2.0, "gpu_mhz": 306.0}, work_assigned=30, work_planned=28, work_done=28,
                      num_examples=448, time_s=19.5, energy_j=140.0, mean_power_w=7.2, pred_time_s=18.0,
                      pred_power_w=7.0, pred_energy_j=126.0, true_power_w=7.1, deadline_met=True, train_loss=0.9,
                      profiling_minibatches=0, choice_kind=ChoiceKind.FEASIBLE, choice="feasible", samples=samples,
                      predictor_id="sha256:x", received_loss=1.25, received_accuracy=0.625, received_examples=64)
    back_res, _ = protocol.result_from_records(protocol.result_to_records(res, weights), 5)
    pd.testing.assert_frame_equal(back_res.samples, samples)
    assert back_res.metrics() == res.metrics() and back_res.mode == res.mode and back_res.choice == "feasible"
    assert back_res.choice_kind is ChoiceKind.FEASIBLE and back_res.policy is Policy.POWERTRAIN
    assert (back_res.received_accuracy, back_res.received_examples) == (0.625, 64)
    records = protocol.result_to_records(res, weights)
    assert records.metric_records["metrics"]["num-examples"] == 448  # Flower's aggregation weight


def test_the_received_models_evaluation_is_averaged_by_examples() -> None:
    """Nodes evaluate the model they receive before training; the round's figure weights each
    node by its examples, and failures or nodes that did not evaluate count for nothing."""
    base = TrainResult(node_id=1, device_type="orin-nano", unit=0, policy=Policy.POWERTRAIN, mode={},
                       work_assigned=1, work_planned=1, work_done=1, num_examples=8, time_s=1.0, energy_j=1.0,
                       mean_power_w=1.0, pred_time_s=1.0, pred_power_w=1.0, pred_energy_j=1.0, true_power_w=1.0,
                       deadline_met=True, train_loss=1.0, profiling_minibatches=0, choice_kind=ChoiceKind.FEASIBLE,
                       choice="", samples=pd.DataFrame())
    replies: Replies = {1: (replace(base, received_accuracy=0.5, received_loss=2.0, received_examples=30), {}),
               2: (replace(base, node_id=2, received_accuracy=0.9, received_loss=1.0, received_examples=10), {}),
               3: (base, {}), 4: "node died"}
    acc, loss, examples = federated_evaluation(replies)
    assert acc == pytest.approx(0.6) and loss == pytest.approx(1.75) and examples == 40
    assert federated_evaluation({3: (base, {}), 4: "node died"})[2] == 0
