"""Board power: INA3221 rails per board, window averaging, the sampler threads."""

from __future__ import annotations

import math
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from powertrain.devices.jetson import JetsonDevice
from powertrain.devices.jetson.power import (
    Ina3221,
    PolledSampler,
    PowerMeter,
    board_total_mw,
    trace_energy_j,
    window_mean_power_w,
)
from powertrain.devices.jetson.tegrastats import TegrastatsSampler
from powertrain.errors import DeviceError
from tests.jetson.fake_tree import BOARDS, FakeBoard, build_tree, rail_path
from tests.jetson.recorded import TEGRASTATS_ORIN_JP5

EXPECTED_RAILS = {
    "orin-agx-jp5": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"),
    "orin-agx-jp6": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"),
    "orin-nano": ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"),
    "xavier-agx": ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"),
}


# --------------------------------------------------------------------------- averaging
def test_window_mean_of_a_hand_computed_trace() -> None:
    t, p = [0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 20.0, 0.0]
    # 0.5..1: 15->20 (17.5 x 0.5) + 1..2: 20 + 2..2.5: 20->10 (15 x 0.5) = 36.25 J over 2 s
    assert window_mean_power_w(t, p, 0.5, 2.5) == pytest.approx(18.125, abs=1e-12)
    assert trace_energy_j(t, p, 0.0, 3.0) == pytest.approx(15 + 20 + 10, abs=1e-12)
    # outside the samples the trace is held at its end values
    assert window_mean_power_w(t, p, -1.0, 0.0) == pytest.approx(10.0)
    assert window_mean_power_w(t, p, 3.0, 5.0) == pytest.approx(0.0)
    with pytest.raises(DeviceError, match="positive length"):
        window_mean_power_w(t, p, 1.0, 1.0)
    with pytest.raises(DeviceError, match="no power samples"):
        window_mean_power_w([], [], 0.0, 1.0)


def test_synthetic_rail_trace_sampled_at_20_hz() -> None:
    """A training-like trace (bursty GPU rail over a constant base) averaged per window."""
    rng = np.random.default_rng(7)
    t = np.arange(0.0, 30.0, 0.05)
    gpu_w = np.where((t % 0.4) < 0.3, 18.0, 6.0) + rng.normal(0, 0.3, t.size)
    base_w = np.full(t.size, 7.0)
    meter = PowerMeter(clock=lambda: 0.0)
    for ti, g, b in zip(t, gpu_w, base_w, strict=True):
        meter.add(g + b, {"VDD_GPU_SOC": g * 1000, "VIN_SYS_5V0": b * 1000}, t_s=ti)
    total = gpu_w + base_w
    for i, j in [(0, t.size - 1), (60, 260), (101, 107), (250, 580)]:
        start, end = t[i], t[j]  # windows on sample times: the trapezoid rule is then exact
        expected = np.trapezoid(total[i:j + 1], t[i:j + 1]) / (end - start)
        assert meter.mean_power_w(start, end) == pytest.approx(expected, rel=1e-12)
    assert meter.energy_j() == pytest.approx(np.trapezoid(total, t), rel=1e-12)
    # the 3:1 duty cycle of 18/6 W over 7 W averages to 22 W (noise and ramps aside)
    assert meter.mean_power_w(0.0, 28.0) == pytest.approx(22.0, abs=0.25)
    rails = meter.mean_rails_mw(3.0, 13.0)
    assert rails["VIN_SYS_5V0"] == pytest.approx(7000.0)
    assert rails["VDD_GPU_SOC"] / 1000 + 7.0 == pytest.approx(meter.mean_power_w(3.0, 13.0))


def test_meter_history_is_bounded_but_energy_is_not() -> None:
    meter = PowerMeter(history_s=1.0, clock=lambda: 0.0)
    for i in range(101):
        meter.add(5.0, t_s=i * 0.1)
    assert meter.n_samples <= 12
    assert meter.energy_j() == pytest.approx(50.0)
    meter.add(100.0, t_s=5.0)  # out of order: dropped
    assert meter.latest() is not None and meter.latest().power_w == 5.0  # type: ignore[union-attr]


def test_board_total_rule() -> None:
    assert board_total_mw({"VDD_IN": 4000, "VDD_SOC": 1000}) == 4000
    assert board_total_mw({"POM_5V_IN": 9000, "POM_5V_GPU": 1000}) == 9000
    assert board_total_mw({"GPU": 1, "CPU": 2, "NC": 50}) == 3


# --------------------------------------------------------------------------- INA3221 rails
def test_rails_of_each_board(board: FakeBoard) -> None:
    ina = Ina3221.discover(board.fs)
    assert ina is not None
    assert ina.rail_names == EXPECTED_RAILS[board.spec.name]
    rails = ina.read_rails_mw()
    for spec in board.spec.rails:
        if spec.label != "NC":
            assert rails[spec.label] == spec.power_mw
    expected_total = (rails["VDD_IN"] if "VDD_IN" in rails
                      else sum(r.power_mw for r in board.spec.rails if r.label != "NC"))
    assert board_total_mw(rails) == expected_total


def test_jetpack4_iio_layout(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["xavier-agx"], rails="iio")
    ina = Ina3221.discover(board.fs)
    assert ina is not None and ina.rail_names == EXPECTED_RAILS["xavier-agx"]
    assert ina.read_rails_mw()["SYS5V"] == round(5000 * 538 / 1000)


def test_no_rails_found(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"], rails="none")
    assert Ina3221.discover(board.fs) is None
    with pytest.raises(DeviceError, match="no INA3221 rails"):
        JetsonDevice(fs=board.fs, power="ina3221")


def test_polled_sampler_follows_changing_rails(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    ina = Ina3221.discover(board.fs)
    assert ina is not None
    meter = PowerMeter()
    sampler = PolledSampler(meter, ina.read_rails_mw, rate_hz=50)
    volt = rail_path(board, "VDD_IN", "in")
    sampler.start()
    try:
        t0 = time.monotonic()
        time.sleep(0.4)
        t1 = time.monotonic()
        board.write(volt, 10112)  # the input rail doubles: 4.095 W -> 8.191 W
        time.sleep(0.15)
        t2 = time.monotonic()
        time.sleep(0.4)
        t3 = time.monotonic()
    finally:
        sampler.stop()
    assert len(meter.samples(t0, t3)) >= 20  # 50 Hz over ~0.95 s, generously
    low, high = 5056 * 810 / 1e6, 10112 * 810 / 1e6
    assert meter.mean_power_w(t0 + 0.05, t1 - 0.05) == pytest.approx(low)
    assert meter.mean_power_w(t2, t3) == pytest.approx(high)
    assert low < meter.mean_power_w(t0, t3) < high


def test_device_run_window_power_with_real_sampler(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    calls: list[int] = []

    def step(i: int) -> None:
        calls.append(i)
        time.sleep(0.02)

    with JetsonDevice(fs=board.fs, power_hz=50) as dev:
        assert dev.power_source == "ina3221"
        e0 = dev.energy_j()
        result = dev.run("lstm-wikitext", 4, step=step)
        sample = dev.power_now()
    expected_w = sum(r.power_mw for r in BOARDS["orin-agx-jp5"].rails) / 1000
    assert calls == [0, 1, 2, 3]
    assert result.minibatch_time_ms.shape == (4,) and (result.minibatch_time_ms >= 19).all()
    assert result.mean_power_w == pytest.approx(expected_w)
    assert result.energy_j == pytest.approx(expected_w * result.duration_s)
    assert result.extra["timer"] == "perf_counter" and result.extra["power_samples"] >= 2
    assert result.mode == {"cpu_cores": 8.0, "cpu_mhz": 1113.6, "gpu_mhz": 114.75, "mem_mhz": 665.6}
    assert sample is not None and sample.power_w == pytest.approx(expected_w)
    assert e0 >= 0


def test_no_power_source_gives_nan(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    with JetsonDevice(fs=board.fs, power="none") as dev:
        result = dev.run("lstm-wikitext", 1, step=lambda i: None)
        assert math.isnan(result.mean_power_w) and math.isnan(dev.energy_j())


# --------------------------------------------------------------------------- tegrastats fallback
def _fake_tegrastats(tmp_path: Path) -> Path:
    exe = tmp_path / "bin" / "tegrastats"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n# fake: replays a recorded line; args: --interval MS\n"
                   f"while true; do echo '{TEGRASTATS_ORIN_JP5}'; echo 'garbage line'; sleep 0.05; done\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_tegrastats_sampler_replays_a_recorded_line(tmp_path: Path) -> None:
    exe = _fake_tegrastats(tmp_path)
    meter = PowerMeter()
    sampler = TegrastatsSampler(meter, interval_ms=50, executable=str(exe))
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while sampler.lines < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = sampler._proc.pid  # type: ignore[union-attr]
    finally:
        sampler.stop()
    assert sampler.lines >= 4 and sampler.bad_lines >= 3
    samples = meter.samples()
    assert all(s.power_w == pytest.approx(7.009) for s in samples)
    assert samples[0].rails_mw["VDD_GPU_SOC"] == 2390 and "NC" not in samples[0].rails_mw
    assert _live_members(pid) == []  # the whole process group is gone (zombies aside)


def _live_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (PID 1 here may not reap orphans)."""
    live = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat_file.parent.name))
    return live


def test_device_falls_back_to_tegrastats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _fake_tegrastats(tmp_path)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    board = build_tree(tmp_path / "root", BOARDS["orin-agx-jp5"], rails="none")
    with JetsonDevice(fs=board.fs) as dev:
        assert dev.power_source == "tegrastats"
        deadline = time.monotonic() + 10
        while dev.meter.n_samples < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        result = dev.run("lstm-wikitext", 3, step=lambda i: time.sleep(0.1))
    assert result.mean_power_w == pytest.approx(7.009)
