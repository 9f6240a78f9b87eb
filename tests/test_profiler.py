"""Profiler, sampling strategies and the profile CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from powertrain.boards import get_space
from powertrain.devices import NoiseModel, SimulatedJetson
from powertrain.errors import DataFormatError, ModeError
from powertrain.profile_io import PROFILE_COLUMNS, read_profile, write_profile
from powertrain.profiler import ProfileSettings, profile
from powertrain.sampling import sample_modes


def test_profiler_drops_warmup() -> None:
    dev = SimulatedJetson("orin-agx", seed=4)
    modes = get_space("orin-agx").modes("powertrain").sample(5, random_state=1)
    run = profile(dev, "resnet18-imagenet", modes, ProfileSettings(minibatches=40))
    truth = dev.true_performance("resnet18-imagenet", modes)
    err = np.abs(run.frame.time_ms.to_numpy() / truth.time_ms.to_numpy() - 1)
    assert err.max() < 0.08, err  # within noise: warm-up is not in the measurement
    assert run.warmup_minibatches >= 5 * 5
    assert run.measured_minibatches == 5 * 40
    # Without dropping the warm-up, the cold start shows up in the first mode.
    raw = SimulatedJetson("orin-agx", seed=4)
    raw_run = profile(raw, "resnet18-imagenet", modes.iloc[:1],
                      ProfileSettings(minibatches=10, warmup_minibatches=0, warmup_s=0))
    assert raw_run.frame.time_ms.iloc[0] > 1.3 * truth.time_ms.iloc[0]


def test_profile_rows_follow_input_and_schema() -> None:
    dev = SimulatedJetson("orin-nano", noise=NoiseModel.off())
    modes = get_space("orin-nano").modes("powertrain").iloc[[5, 0, 99]]
    run = profile(dev, "mobilenetv3-gld23k", modes, ProfileSettings(minibatches=5))
    assert list(run.frame.columns) == [*PROFILE_COLUMNS, "device", "workload"]
    assert np.allclose(run.frame.gpu_mhz.to_numpy(), modes.gpu_mhz.to_numpy())
    assert (run.frame.device == "orin-nano").all()
    assert run.device_seconds > 0 and run.energy_j > 0


def test_profile_rejects_mode_outside_table() -> None:
    dev = SimulatedJetson("orin-agx")
    bad = pd.DataFrame([{"cpu_cores": 12, "cpu_mhz": 2201.6, "gpu_mhz": 999.0, "mem_mhz": 3199}])
    with pytest.raises(ModeError, match="gpu_mhz=999"):
        profile(dev, "resnet18-imagenet", bad)


@pytest.mark.parametrize("strategy", ["random", "spacefill", "maxmin"])
def test_sampling_is_distinct_deterministic_and_in_pool(strategy: str) -> None:
    pool = get_space("orin-agx").modes("powertrain")
    a = sample_modes(pool, 50, strategy=strategy, seed=3)
    b = sample_modes(pool, 50, strategy=strategy, seed=3)
    assert len(a) == 50 and len(a.drop_duplicates()) == 50
    pd.testing.assert_frame_equal(a, b)
    assert len(a.merge(pool)) == 50


def test_maxmin_reaches_every_knob_extreme() -> None:
    pool = get_space("orin-agx").modes("powertrain")
    picked = sample_modes(pool, 20, strategy="maxmin", seed=0)
    for knob in pool.columns:
        assert picked[knob].min() == pool[knob].min()
        assert picked[knob].max() == pool[knob].max()


def test_spacefill_spreads_over_every_knob() -> None:
    pool = get_space("orin-agx").modes("powertrain")
    for k in (10, 20, 50):
        picked = sample_modes(pool, k, strategy="spacefill", seed=1)
        for knob in pool.columns:
            levels = pool[knob].nunique()
            assert picked[knob].nunique() >= 0.7 * min(levels, k), (k, knob)
    # every level of every knob gets its share, end levels included (k / levels, +-1)
    for seed in range(3):
        picked = sample_modes(pool, 50, strategy="spacefill", seed=seed)
        for knob in pool.columns:
            counts = picked[knob].value_counts()
            levels = pool[knob].nunique()
            assert len(counts) == levels and counts.max() - counts.min() <= 2, (knob, counts.to_dict())
    random_pick = sample_modes(pool, 10, strategy="random", seed=1)
    lhs_pick = sample_modes(pool, 10, strategy="spacefill", seed=1)
    assert lhs_pick.gpu_mhz.nunique() >= random_pick.gpu_mhz.nunique()


def test_csv_round_trip(tmp_path: Path) -> None:
    dev = SimulatedJetson("xavier-agx", seed=1)
    modes = get_space("xavier-agx").modes("powertrain").sample(12, random_state=0)
    frame = profile(dev, "yolov8n-coco", modes, ProfileSettings(minibatches=4)).frame
    path = tmp_path / "p.csv"
    write_profile(frame, path)
    back = read_profile(path)
    assert list(back.columns[:6]) == list(PROFILE_COLUMNS)
    for col in PROFILE_COLUMNS:
        assert np.allclose(back[col], frame[col], rtol=1e-5)
    assert (back.workload == "yolov8n-coco").all()


def test_csv_column_order_may_vary(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("power_w,gpu_mhz,time_ms,mem_mhz,cpu_mhz,cpu_cores\n20.5,1300.5,90,3199,2201.6,12\n")
    frame = read_profile(path)
    assert frame.loc[0, "gpu_mhz"] == 1300.5 and frame.loc[0, "power_w"] == 20.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "line 1: file is empty"),
        ("cpu_cores,cpu_mhz,gpu_mhz,time_ms,power_w\n", "missing column(s) mem_mhz"),
        ("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w\n12,2201.6,1300.5,3199,abc,30\n",
         "line 2, column time_ms: 'abc' is not a number"),
        ("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w\n12,2201.6,1300.5,3199,90,30\n"
         "12,2201.6,1300.5,3199,-1,30\n", "line 3, column time_ms: -1 must be > 0"),
        ("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w\n12,2201.6,1300.5,3199,90,nan\n",
         "line 2, column power_w: 'nan' is not finite"),
        ("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w\n12,2201.6,1300.5,3199,90\n",
         "line 2: expected 6 fields, found 5"),
        ("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w\n12,,1300.5,3199,90,3\n",
         "line 2, column cpu_mhz: empty value"),
    ],
)
def test_malformed_csv_names_file_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        read_profile(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(DataFormatError, match="not a UTF-8"):
        read_profile(path)
