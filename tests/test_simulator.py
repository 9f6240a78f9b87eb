"""The simulated Jetson: physical properties, calibration anchors, noise, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powertrain.boards import board_names, get_board, get_space
from powertrain.devices import NoiseModel, SimulatedJetson, make_device
from powertrain.devices.physics import UnitVariation, idle_power_w
from powertrain.errors import InvalidParameterError, ModeError, UnknownNameError
from powertrain.workloads import get_workload, workload_names

GPU_HEAVY = ["resnet18-imagenet", "bert-base-squad", "vit-s16-imagenet"]


def _truth(device: str, workload: str, modes: list[dict[str, float]]) -> pd.DataFrame:
    """The smooth nominal model: the mechanisms themselves (roughness is tested in test_calibration)."""
    dev = SimulatedJetson(device, noise=NoiseModel.off(), rough=False)
    return dev.true_performance(workload, pd.DataFrame(modes))


@st.composite
def mode_pairs(draw: st.DrawFn, knob: str) -> tuple[str, str, dict[str, float], list[float]]:
    device = draw(st.sampled_from(board_names()))
    workload = draw(st.sampled_from(GPU_HEAVY))
    space = get_space(device)
    mode = {k.name: draw(st.sampled_from(k.values)) for k in space.knobs}
    return device, workload, mode, list(space.knob(knob).values)


@settings(max_examples=60, deadline=None)
@given(mode_pairs("gpu_mhz"))
def test_time_non_increasing_in_gpu_clock(case: tuple[str, str, dict[str, float], list[float]]) -> None:
    device, workload, mode, values = case
    truth = _truth(device, workload, [{**mode, "gpu_mhz": v} for v in values])
    assert np.all(np.diff(truth.time_ms.to_numpy()) <= 1e-9)


@settings(max_examples=60, deadline=None)
@given(mode_pairs("mem_mhz"))
def test_time_non_increasing_in_emc_clock(case: tuple[str, str, dict[str, float], list[float]]) -> None:
    device, workload, mode, values = case
    truth = _truth(device, workload, [{**mode, "mem_mhz": v} for v in values])
    assert np.all(np.diff(truth.time_ms.to_numpy()) <= 1e-9)


@settings(max_examples=60, deadline=None)
@given(mode_pairs("gpu_mhz"), st.sampled_from(workload_names()))
def test_power_non_decreasing_in_gpu_clock(
    case: tuple[str, str, dict[str, float], list[float]], workload: str
) -> None:
    device, _, mode, values = case
    truth = _truth(device, workload, [{**mode, "gpu_mhz": v} for v in values])
    assert np.all(np.diff(truth.power_w.to_numpy()) >= -1e-9)


def test_gpu_clock_matters_little_for_cpu_bound_workload() -> None:
    space = get_space("orin-agx")
    top = space.max_mode()
    low = {**top, "gpu_mhz": space.knob("gpu_mhz").low}
    kws = _truth("orin-agx", "kws-dscnn-speechcommands", [top, low]).time_ms.to_numpy()
    resnet = _truth("orin-agx", "resnet18-imagenet", [top, low]).time_ms.to_numpy()
    assert kws[1] / kws[0] < 1.5
    assert resnet[1] / resnet[0] > 6


def test_idle_power_through_the_device_matches_the_model() -> None:
    """Idle metering on the virtual clock equals the model's idle power (anchors: test_calibration)."""
    for device in board_names():
        dev = SimulatedJetson(device, noise=NoiseModel.off())
        space = dev.space
        dev.apply_mode({**space.max_mode(), "cpu_mhz": space.knob("cpu_mhz").floor(729.6),
                        "mem_mhz": space.knob("mem_mhz").low})
        dev.idle(600.0)  # settle thermally
        e0, t0 = dev.energy_j(), dev.now_s()
        dev.idle(10.0)
        idle_w = (dev.energy_j() - e0) / (dev.now_s() - t0)
        mode = dev.current_mode()
        expected = idle_power_w(get_board(device).physics, mode["cpu_cores"], mode["cpu_mhz"], mode["mem_mhz"],
                                mode["gpu_mhz"], temp_c=dev.temperature_c, unit=UnitVariation.for_unit(device, 0))
        assert idle_w == pytest.approx(expected, rel=1e-3), device


def test_determinism_by_seed_and_unit() -> None:
    def trace(spec: str) -> tuple[np.ndarray, float]:
        dev = make_device(spec)
        dev.apply_mode(dev.space.preset("MODE_30W").mode)
        r = dev.run("mobilenetv3-gld23k", 30)
        return r.minibatch_time_ms, r.mean_power_w

    a, pa = trace("sim:orin-agx?seed=5&unit=1")
    b, pb = trace("sim:orin-agx?seed=5&unit=1")
    c, _ = trace("sim:orin-agx?seed=6&unit=1")
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)


def test_unit_variation_is_small_but_real() -> None:
    modes = get_space("orin-agx").modes("powertrain").sample(200, random_state=0)
    t0 = SimulatedJetson("orin-agx", unit=0).true_performance("resnet18-imagenet", modes)
    t1 = SimulatedJetson("orin-agx", unit=1).true_performance("resnet18-imagenet", modes)
    rel_t = np.abs(t1.time_ms / t0.time_ms - 1)
    rel_p = np.abs(t1.power_w / t0.power_w - 1)
    assert 0 < rel_t.max() < 0.06
    assert 0 < rel_p.max() < 0.08


def test_noise_statistics_within_bounds() -> None:
    dev = SimulatedJetson("orin-agx", seed=11)
    dev.apply_mode(dev.space.preset("MODE_50W").mode)
    dev.run("resnet18-imagenet", 60)  # warm up
    windows = [dev.run("resnet18-imagenet", 40) for _ in range(80)]
    times = np.array([w.mean_time_ms for w in windows])
    powers = np.array([w.mean_power_w for w in windows])
    cv_t = times.std() / times.mean()
    cv_p = powers.std() / powers.mean()
    assert 0.01 <= cv_t <= 0.04, cv_t
    assert 0.005 <= cv_p <= 0.025, cv_p
    truth = dev.true_performance("resnet18-imagenet", pd.DataFrame([dev.current_mode()]))
    assert abs(np.median(times) / truth.time_ms.iloc[0] - 1) < 0.03
    assert abs(np.median(powers) / truth.power_w.iloc[0] - 1) < 0.04


def test_warmup_transient_after_mode_change() -> None:
    dev = SimulatedJetson("orin-agx", seed=2)
    dev.run("resnet18-imagenet", 50)
    dev.apply_mode(dev.space.preset("MODE_30W").mode)
    times = dev.run("resnet18-imagenet", 30).minibatch_time_ms
    assert times[0] > 1.3 * np.median(times[10:])
    again = dev.run("resnet18-imagenet", 30).minibatch_time_ms  # same mode: no new transient
    assert again[0] < 1.2 * np.median(again)


def test_virtual_clock_and_energy_counter() -> None:
    exact = SimulatedJetson("orin-nano", seed=1, noise=NoiseModel.off())
    t0, e0 = exact.now_s(), exact.energy_j()
    r = exact.run("resnet18-imagenet", 25)
    assert exact.now_s() - t0 == pytest.approx(r.minibatch_time_ms.sum() / 1000)
    assert exact.energy_j() - e0 == pytest.approx(r.energy_j)  # continuous metering is exact
    assert r.energy_j == pytest.approx(r.mean_power_w * r.duration_s)
    assert exact.true_energy_j() == pytest.approx(exact.energy_j())
    exact.idle(100.0)
    assert exact.now_s() == pytest.approx(t0 + r.duration_s + 100.0)


def test_power_is_sampled_like_tegrastats() -> None:
    """About one reading per second: a short window averages few samples (or none), the meter
    integrates the readings, and both stay close to the physical energy over a long run."""
    dev = SimulatedJetson("orin-agx", seed=3)
    dev.apply_mode(dev.space.preset("MODE_50W").mode)
    dev.run("resnet18-imagenet", 60)
    long = dev.run("resnet18-imagenet", 400)
    assert abs(long.extra["power_samples"] - long.duration_s) <= 0.25 * long.duration_s + 1
    assert long.energy_j == pytest.approx(long.mean_power_w * long.duration_s)
    assert long.mean_power_w == pytest.approx(long.extra["true_mean_power_w"], rel=0.03)
    e0, true0 = dev.energy_j(), dev.true_energy_j()
    dev.run("resnet18-imagenet", 600)
    assert dev.energy_j() - e0 == pytest.approx(dev.true_energy_j() - true0, rel=0.03)
    # short windows: at most one sample each, often none; their mean power is far noisier
    counts, short_w, long_w = [], [], []
    for _ in range(60):
        short = dev.run("resnet18-imagenet", 5)
        counts.append(short.extra["power_samples"])
        short_w.append(short.mean_power_w / short.extra["true_mean_power_w"])
        long_w.append(dev.run("resnet18-imagenet", 300).mean_power_w)
    assert max(counts) <= 1 and 0 in counts and 1 in counts
    assert np.std(short_w) > 2 * np.std(np.array(long_w) / np.mean(long_w))


def test_step_callback_runs_once_per_minibatch() -> None:
    calls: list[int] = []
    dev = SimulatedJetson("xavier-agx")
    dev.run("lstm-wikitext", 7, calls.append)
    assert calls == list(range(7))


def test_thermal_throttling_is_switchable() -> None:
    def hot(throttle: bool) -> SimulatedJetson:
        dev = SimulatedJetson("orin-agx", fan="quiet", ambient_c=35, throttle=throttle)
        dev.apply_mode(dev.space.max_mode())
        for _ in range(6):
            dev.run("bert-base-squad", 100)
        return dev

    throttled, free = hot(True), hot(False)
    assert throttled.throttle_level > 0
    assert free.throttle_level == 0 and free.temperature_c > throttled.temperature_c
    assert throttled.temperature_c < 105


def test_presets_gate_tpcs() -> None:
    dev = SimulatedJetson("orin-agx", noise=NoiseModel.off())
    dev.apply_preset("MODE_15W")
    gated = dev.run("resnet18-imagenet", 60).minibatch_time_ms[-1]
    dev.apply_mode(dev.space.preset("MODE_15W").mode)  # same clocks, all TPCs
    full = dev.run("resnet18-imagenet", 60).minibatch_time_ms[-1]
    assert gated > 1.5 * full


def test_factory_errors() -> None:
    with pytest.raises(UnknownNameError, match="valid backends: sim"):
        make_device("gpu:orin-agx")
    with pytest.raises(UnknownNameError, match="valid devices"):
        make_device("sim:orin-tx2")
    with pytest.raises(InvalidParameterError, match="allowed: seed, unit"):
        make_device("sim:orin-agx?colour=red")
    with pytest.raises(InvalidParameterError, match="integer"):
        make_device("sim:orin-agx?seed=x")
    with pytest.raises(InvalidParameterError, match="backend prefix"):
        make_device("orin-agx")
    dev = make_device("sim:orin-nano?seed=3&unit=2")
    assert (dev.device_type, dev.unit) == ("orin-nano", 2)
    with pytest.raises(ModeError):
        dev.apply_mode({**dev.space.max_mode(), "gpu_mhz": 1300.5})
    assert dev.current_mode() == dev.space.max_mode()  # a refused mode changes nothing


def test_workload_catalog() -> None:
    names = workload_names()
    for required in ["resnet18-imagenet", "mobilenetv3-gld23k", "yolov8n-coco",
                     "bert-base-squad", "lstm-wikitext"]:
        assert required in names
    assert len(names) >= 7
    assert all(get_workload(n).batch_size == 16 for n in names)
    with pytest.raises(UnknownNameError, match="valid workloads"):
        get_workload("gpt-5")
