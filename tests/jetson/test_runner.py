"""Real training on CPU: pure-torch workloads, warm-up dropped, timing, JetsonDevice.run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from powertrain.devices.jetson import JetsonDevice
from powertrain.devices.jetson.runner import (
    PURE_TORCH_WORKLOADS,
    TORCHVISION_WORKLOADS,
    WorkloadRunner,
    build_training_step,
    runnable_workloads,
    time_calls_ms,
    torchvision_available,
)
from powertrain.errors import DeviceError, UnknownNameError
from tests.jetson.fake_tree import BOARDS, build_tree


def _params(step: object) -> list[torch.Tensor]:
    return [p.detach().clone() for p in step.model.parameters()]  # type: ignore[attr-defined]


# Shrunk models: this machine's CPU is slow; the catalog shapes are checked in test_catalog_shapes.
SMALL = {"lstm-wikitext": {"vocab": 300, "dim": 32}, "kws-dscnn-speechcommands": {"width": 8, "blocks": 1}}


@pytest.mark.parametrize(("workload", "overrides"), [
    ("lstm-wikitext", SMALL["lstm-wikitext"]),
    ("kws-dscnn-speechcommands", SMALL["kws-dscnn-speechcommands"]),
    ("bert-base-squad", {"layers": 1, "hidden": 64, "heads": 4, "ff": 128, "vocab": 500, "seq": 32}),
])
def test_a_step_trains_the_model(workload: str, overrides: dict[str, int]) -> None:
    step = build_training_step(workload, "cpu", seed=1, overrides=overrides)
    before = _params(step)
    losses = []
    for _ in range(3):
        step()
        with torch.no_grad():
            losses.append(float(step.loss()))
    after = _params(step)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]  # the same minibatch thrice: the loss must go down


def test_catalog_shapes() -> None:
    lstm: Any = build_training_step("lstm-wikitext", "cpu").model
    assert lstm.decoder.weight is lstm.embed.weight  # tied embeddings
    assert lstm.embed.weight.shape == (33278, 256) and lstm.lstm.num_layers == 2
    kws: Any = build_training_step("kws-dscnn-speechcommands", "cpu").model
    assert kws.head.out_features == 12
    convs = [m for m in kws.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 * 4 and convs[1].groups == 64  # DS-CNN-S: 4 depthwise-separable blocks


def test_runner_drops_warmup_and_times_each_minibatch() -> None:
    runner = WorkloadRunner("kws-dscnn-speechcommands", torch_device="cpu", warmup_minibatches=2,
                            overrides=SMALL["kws-dscnn-speechcommands"])
    step = runner.build()
    calls = 0
    optimizer: Any = step.optimizer
    original = optimizer.step

    def counting_step(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    optimizer.step = counting_step
    times, timer = runner.time_minibatches_ms(5)
    assert timer == "perf_counter" and times.shape == (5,) and (times > 0).all()
    assert calls == 5 and runner.steps_run == 5  # warm-up ran in build(), untimed
    assert runner.build() is step  # built once


def test_time_calls_measures_each_call() -> None:
    import time

    sleeps_ms = [20.0, 60.0, 180.0]
    times, timer = time_calls_ms(lambda i: time.sleep(sleeps_ms[i] / 1000), 3, cuda=False)
    assert timer == "perf_counter"
    assert all(t >= s for t, s in zip(times, sleeps_ms, strict=True))  # sleep never returns early
    assert list(times) == sorted(times)  # each call timed on its own (3x apart: robust to load)


def test_non_runnable_workloads_say_why() -> None:
    with pytest.raises(DeviceError, match="ultralytics"):
        build_training_step("yolov8n-coco")
    with pytest.raises(UnknownNameError, match="'gpt'"):
        build_training_step("gpt")
    if torchvision_available():
        assert set(TORCHVISION_WORKLOADS) <= set(runnable_workloads())
    else:
        assert runnable_workloads() == list(PURE_TORCH_WORKLOADS)
        with pytest.raises(DeviceError, match="needs torchvision, which is not installed") as info:
            build_training_step("resnet18-imagenet")
        assert "\n" not in str(info.value)


def test_cuda_request_without_a_gpu() -> None:
    if torch.cuda.is_available():
        assert WorkloadRunner("lstm-wikitext", torch_device="cuda").build() is not None
    else:
        with pytest.raises(DeviceError, match="cuda"):
            WorkloadRunner("lstm-wikitext", torch_device="cuda").build()


def test_device_run_trains_for_real(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    with JetsonDevice(fs=board.fs, torch_device="cpu", warmup_minibatches=1, power_hz=50,
                      model_overrides=SMALL) as dev:
        dev.apply_preset("7W")
        result = dev.run("lstm-wikitext", 3)
        again = dev.run("lstm-wikitext", 2)
    assert result.n_minibatches == 3 and again.n_minibatches == 2
    assert result.extra["torch_device"] == "cpu" and result.extra["timer"] == "perf_counter"
    assert result.mode == {"cpu_cores": 4.0, "cpu_mhz": 960.0, "gpu_mhz": 408.0, "mem_mhz": 2133.0}
    assert result.mean_power_w == pytest.approx(5056 * 810 / 1e6)  # VDD_IN is the board total
    assert result.duration_s >= result.minibatch_time_ms.sum() / 1000 * 0.999
