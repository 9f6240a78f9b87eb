"""tegrastats and jetson_clocks --show parsing of every recorded line."""

from __future__ import annotations

from datetime import datetime

import pytest

from powertrain.devices.jetson.clocks_show import parse_clocks_show
from powertrain.devices.jetson.tegrastats import parse_tegrastats_line
from powertrain.errors import DataFormatError
from tests.jetson import recorded


def test_orin_jetpack5_idle() -> None:
    s = parse_tegrastats_line(recorded.TEGRASTATS_ORIN_JP5)
    assert s.timestamp == datetime(2023, 1, 3, 16, 7, 54)
    assert (s.ram_used_mb, s.ram_total_mb, s.lfb_blocks, s.lfb_block_mb) == (2257, 30536, 5392, 4.0)
    assert (s.swap_used_mb, s.swap_total_mb, s.swap_cached_mb) == (0, 15268, 0)
    assert len(s.cpus) == 12 and all(c.online and c.freq_mhz == 729 for c in s.cpus)
    assert [c.load_pct for c in s.cpus[:5]] == [2, 0, 1, 0, 3]
    assert s.engines["EMC"].load_pct == 0 and s.engines["EMC"].freq_mhz == (204,)
    assert s.engines["GR3D"].freq_mhz == (0,) and s.engines["GR3D2"].freq_mhz == (0,)
    assert s.engines["NVJPG1"].freq_mhz == (729,) and s.engines["VIC"].freq_mhz == (115,)
    assert s.engines["APE"].freq_mhz == (233,)
    assert s.temperatures_c["CPU"] == 41.437 and s.temperatures_c["tj"] == 41.656
    assert s.temperatures_c["CV0"] is None and s.temperatures_c["GPU"] is None  # -256: off
    assert set(s.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "NC", "VDDQ_VDD2_1V8AO"}
    assert s.rails["VDD_GPU_SOC"].cur_mw == 2390 and s.rails["VDD_GPU_SOC"].max_mw is None
    assert s.total_power_mw == 2390 + 796 + 3522 + 301  # ≈ 7.0 W idle (jetson-hw.md)


def test_orin_jetpack6_truncated_line_under_load() -> None:
    s = parse_tegrastats_line(recorded.TEGRASTATS_ORIN_JP6_LOAD)
    assert s.timestamp is None and s.ram_used_mb is None
    assert len(s.cpus) == 1 and s.cpus[0].load_pct == 100 and s.cpus[0].freq_mhz == 2201
    assert s.engines["GR3D"].load_pct == 14 and s.engines["GR3D"].freq_mhz == (407, 407)
    assert s.engines["NVDLA0"].load_pct is None and s.engines["NVDLA0"].freq_mhz == (1600,)
    assert s.engines["EMC"].freq_mhz == (2133,)
    assert s.temperatures_c["CV0"] == 73.625
    assert s.rails["VDD_CPU_CV"].cur_mw == 14312 and s.rails["VDD_CPU_CV"].avg_mw == 12415
    assert s.total_power_mw == 3150 + 14312 + 4968 + 1091


def test_orin_jetpack7_three_value_rails_and_temperatures() -> None:
    s = parse_tegrastats_line(recorded.TEGRASTATS_ORIN_JP7)
    assert s.timestamp == datetime(2026, 7, 25, 9, 8, 28)
    assert (s.lfb_blocks, s.lfb_block_mb) == (1, 2.0) and s.swap_total_mb is None
    assert len(s.cpus) == 12 and s.cpus[-1].load_pct == 27
    assert s.engines["GR3D"].freq_mhz == (1300, 1300)
    for name in ("NVENC0", "NVDEC0", "NVJPG0", "NVJPG1", "VIC", "OFA", "NVDLA0", "NVDLA1", "PVA0"):
        assert s.engines[name].off, name
    assert s.temperatures_c["cpu"] == 52.968 and s.temperatures_max_c["gpu"] == 47.625
    assert s.rails["VIN_SYS_5V0"].max_mw == 5500
    assert s.total_power_mw == 5139 + 3268 + 5500


def test_orin_nano_uses_the_input_rail_as_total() -> None:
    s = parse_tegrastats_line(recorded.TEGRASTATS_ORIN_NANO)
    assert len(s.cpus) == 6 and s.cpus[0].load_pct == 64
    assert s.engines["GR3D"].freq_mhz == (306,) and s.engines["EMC"].freq_mhz == (665,)
    assert s.rails["VDD_IN"] == type(s.rails["VDD_IN"])(4093, 4463, 4832)
    assert s.temperatures_max_c["cpu"] == 48.0
    assert s.total_power_mw == 4093  # VDD_IN is the module input; not the sum


def test_xavier_jetpack4_unitless_rails() -> None:
    s = parse_tegrastats_line(recorded.TEGRASTATS_XAVIER_JP4)
    assert s.timestamp is None and (s.ram_used_mb, s.lfb_blocks) == (408, 3702)
    assert len(s.cpus) == 8 and all(c.freq_mhz == 2265 for c in s.cpus)
    assert s.engines["GR3D"].freq_mhz == (1377,) and "MTS" not in s.engines
    assert s.temperatures_c["PMIC"] == 100 and s.temperatures_c["thermal"] == 27.45
    assert list(s.rails) == ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]
    assert s.total_power_mw == 1155 + 385 + 2502 + 0 + 192 + 2692  # ≈ 6.9 W idle


@pytest.mark.parametrize("name", sorted(recorded.TEGRASTATS))
def test_every_recorded_line_yields_rails(name: str) -> None:
    sample = parse_tegrastats_line(recorded.TEGRASTATS[name])
    assert sample.rails and sample.total_power_mw > 1000


def test_non_root_and_old_formats() -> None:
    s = parse_tegrastats_line("RAM 1/2MB CPU [10%,off,5%]@1190 EMC_FREQ 0% GR3D_FREQ 42% GPU 1/2")
    assert [c.online for c in s.cpus] == [True, False, True] and s.cpus[0].freq_mhz == 1190
    assert s.engines["EMC"] == type(s.engines["EMC"])(0.0, ()) and s.engines["GR3D"].load_pct == 42


def test_garbage_is_a_data_format_error() -> None:
    with pytest.raises(DataFormatError, match="not a tegrastats line"):
        parse_tegrastats_line("hello world")


@pytest.mark.parametrize(("text", "cpus", "gpu_max", "emc_max"), [
    (recorded.CLOCKS_SHOW_ORIN_JP6, 1, 1300500000, 3199000000),
    (recorded.CLOCKS_SHOW_ORIN_JP5, 12, 114750000, 665600000),
    (recorded.CLOCKS_SHOW_XAVIER, 8, 624750000, 1331200000),
    (recorded.CLOCKS_SHOW_ORIN_NANO, 6, 624750000, 2133000000),
])
def test_clocks_show(text: str, cpus: int, gpu_max: int, emc_max: int) -> None:
    dump = parse_clocks_show(text)
    assert len(dump.cpus) == cpus
    assert dump.gpu is not None and dump.gpu.max_hz == gpu_max
    assert dump.emc is not None and dump.emc.max_hz == emc_max


def test_recorded_orin_jetpack6_dump_verbatim() -> None:
    dump = parse_clocks_show(recorded.CLOCKS_SHOW_ORIN_JP6)
    assert dump.soc_family == "tegra234" and dump.machine == "NVIDIA Jetson AGX Orin Developer Kit"
    assert dump.online_cpus == tuple(range(12)) and dump.power_mode == "MAXN"
    cpu0 = dump.cpus[0]
    assert (cpu0.online, cpu0.governor, cpu0.min_khz, cpu0.max_khz, cpu0.cur_khz) == (
        True, "schedutil", 729600, 2201600, 2201600)
    assert dump.emc is not None and dump.emc.override == 1 and dump.emc.min_hz == 204000000
    assert parse_clocks_show(recorded.CLOCKS_SHOW_ORIN_NANO).active_gpu_tpcs == 4
    with pytest.raises(DataFormatError):
        parse_clocks_show("nothing here")


def test_fake_tree_matches_its_dump(board) -> None:  # type: ignore[no-untyped-def]
    """The backend reads back the clocks the dump recorded (tree builder and reader agree)."""
    from powertrain.devices.jetson import JetsonDevice

    dump = parse_clocks_show(board.spec.clocks_show)
    assert dump.gpu is not None and dump.emc is not None
    with JetsonDevice(fs=board.fs, power="none") as dev:
        state = dev.control.read_state()
        assert dev.control.mode_of(state)["cpu_cores"] == len(dump.online_cpus)
        assert state.gpu_hz == (dump.gpu.min_hz, dump.gpu.max_hz)
        assert state.emc is not None and state.emc.rate_hz == dump.emc.cur_hz
        assert state.cpu_khz[0] == (dump.cpus[0].min_khz, dump.cpus[0].max_khz)
