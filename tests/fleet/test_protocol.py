"""The round protocol survives Flower's record encoding unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from client import protocol
from client.protocol import NodeInfo, NodeQuery, TrainResult, TrainTask


def test_query_and_info_round_trip() -> None:
    q = NodeQuery(3, "lstm-wikitext", 9, ("sim:orin-agx?unit=1", "sim:orin-nano?unit=2"), 0.1)
    assert protocol.query_from_records(protocol.query_to_records(q)) == q
    info = NodeInfo(17, "orin-nano", 2, "sim:orin-nano?unit=2", 1, "sha256:ab", True, 4.1)
    assert protocol.info_from_records(protocol.info_to_records(info), 17) == info


def test_task_and_result_round_trip() -> None:
    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.float32)}
    task = TrainTask(4, "resnet18-imagenet", 30, 5, 20.0, 25.0, "energy", "powertrain", 2.0, 1,
                     predictor_id="sha256:x", predictor_bytes=b"\x00\x01artifact",
                     profile_modes={"cpu_cores": [2.0, 4.0], "gpu_mhz": [306.0, 510.0]}, fail=True)
    back, w = protocol.task_from_records(protocol.task_to_records(task, weights))
    assert back == task
    assert all(np.array_equal(w[k], weights[k]) for k in weights)
    samples = pd.DataFrame({"cpu_cores": [2.0], "cpu_mhz": [268.8], "time_ms": [12.5], "power_w": [7.25],
                            "source": ["round"]})
    res = TrainResult(5, "orin-nano", 2, "powertrain", {"cpu_cores": 2.0, "gpu_mhz": 306.0}, 30, 28, 28, 448,
                      19.5, 140.0, 7.2, 18.0, 7.0, 126.0, 7.1, True, 0.9, 0, "feasible", samples, "sha256:x")
    back_res, _ = protocol.result_from_records(protocol.result_to_records(res, weights), 5)
    pd.testing.assert_frame_equal(back_res.samples, samples)
    assert back_res.metrics() == res.metrics() and back_res.mode == res.mode and back_res.choice == "feasible"
