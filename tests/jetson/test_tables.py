"""Board tables: read from sysfs, compared with the built-in tables, presets from nvpmodel caps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from powertrain.boards import board_names, get_board, get_space
from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.devices.jetson.tables import (
    board_space,
    parse_cpu_list,
    read_tables,
)
from powertrain.errors import DeviceError
from tests.jetson.fake_tree import BOARDS, FakeBoard, build_tree


@pytest.mark.parametrize("device_type", board_names())
def test_presets_resolve_raw_caps_like_cpufreq(device_type: str) -> None:
    """Each preset is its nvpmodel caps resolved to the highest table entry not above the cap."""
    board = get_board(device_type)
    space = board.space
    assert [c.name for c in board.nvpmodel] == list(space.presets)
    for cap in board.nvpmodel:
        preset = space.presets[cap.name]
        assert space.contains(preset.mode), cap.name
        for knob, cap_value, scale in (("cpu_mhz", cap.cpu_max_khz, 1e3), ("gpu_mhz", cap.gpu_max_hz, 1e6),
                                       ("mem_mhz", cap.emc_max_hz, 1e6)):
            values = space.knob(knob).values
            if cap_value <= 0:
                assert preset.mode[knob] == values[-1], (cap.name, knob)
            else:
                above = [v for v in values if v > preset.mode[knob]]
                assert preset.mode[knob] <= cap_value / scale + 1e-3, (cap.name, knob)
                assert not above or above[0] > cap_value / scale, (cap.name, knob)
        assert (preset.nvpmodel_id, preset.budget_w, preset.active_tpcs) == (
            cap.nvpmodel_id, cap.budget_w, cap.active_tpcs)
    # one pinned value per board, from the nvpmodel confs and the JP5 tables
    pinned = {"orin-agx": ("MODE_30W", {"cpu_cores": 8, "cpu_mhz": 1728.0, "gpu_mhz": 522.75, "mem_mhz": 3199.0}),
              "xavier-agx": ("MODE_10W", {"cpu_cores": 2, "cpu_mhz": 1190.4, "gpu_mhz": 420.75, "mem_mhz": 1065.6}),
              "orin-nano": ("7W", {"cpu_cores": 4, "cpu_mhz": 960.0, "gpu_mhz": 408.0, "mem_mhz": 2133.0})}
    name, mode = pinned[device_type]
    assert space.presets[name].mode == pytest.approx(mode)


def test_read_tables_of_each_board(board: FakeBoard) -> None:
    tables = read_tables(board.fs)
    spec = board.spec
    assert tables.cpus == tuple(range(spec.n_cpus))
    assert tables.clusters == spec.clusters
    assert tables.cpu_khz == tuple(spec.cpu_khz)
    assert tables.gpu_hz == tuple(spec.gpu_hz)
    assert tables.emc_hz == tuple(spec.emc_hz)
    assert tables.gpu_devfreq_dir == spec.gpu_dir
    assert tables.emc_method == "bpmp"


def test_builtin_space_is_used_when_tables_match(board: FakeBoard) -> None:
    space, warnings = board_space(board.spec.device_type, read_tables(board.fs))
    if board.spec.name == "orin-agx-jp6":
        assert len(warnings) == 1 and "gpu_mhz table" in warnings[0] and "11 values" in warnings[0]
        assert space is not get_space("orin-agx")
    else:
        assert warnings == [] and space is get_space(board.spec.device_type)


def test_jetpack6_orin_space_uses_the_board_table_and_conf_caps(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp6"])
    space, _ = board_space("orin-agx", read_tables(board.fs))
    assert space.knob("gpu_mhz").values == tuple(v / 1e6 for v in BOARDS["orin-agx-jp6"].gpu_hz)
    assert space.size == 12 * 29 * 11 * 4  # jetson-hw.md §1.7: 15,312
    # on the JetPack 6 table the conf's GPU caps are table entries (408/612/816 MHz)
    assert [space.presets[n].mode["gpu_mhz"] for n in ("MODE_15W", "MODE_30W", "MODE_50W")] == [
        408.0, 612.0, 816.0]
    grid = space.grid_values("powertrain")
    assert grid["gpu_mhz"] == space.knob("gpu_mhz").values
    assert grid["cpu_mhz"] == get_space("orin-agx").grid_values("powertrain")["cpu_mhz"]


def test_fewer_cpus_than_the_builtin_table(tmp_path: Path) -> None:
    """An 8-core AGX Orin module (p3701-0004): cores knob and presets follow the board."""
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    for cpu in range(8, 12):
        (board.root / f"sys/devices/system/cpu/cpu{cpu}/online").unlink()
    (board.root / "sys/devices/system/cpu/present").write_text("0-7\n")
    import shutil

    shutil.rmtree(board.root / "sys/devices/system/cpu/cpufreq/policy8")
    space, warnings = board_space("orin-agx", read_tables(board.fs))
    assert space.knob("cpu_cores").high == 8
    assert space.presets["MAXN"].mode["cpu_cores"] == 8
    assert any("8 CPUs" in w for w in warnings)


def test_cpu_list_format() -> None:
    assert parse_cpu_list("0-3,5,7-8") == [0, 1, 2, 3, 5, 7, 8]
    assert parse_cpu_list("0") == [0]
    with pytest.raises(DeviceError, match="malformed"):
        parse_cpu_list("0-x")


def test_missing_gpu_devfreq_names_the_paths(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["xavier-agx"])
    import shutil

    shutil.rmtree(board.root / "sys/devices/17000000.gv11b")
    with pytest.raises(DeviceError, match="no GPU devfreq directory") as info:
        read_tables(Sysfs(board.root))
    assert "17000000.gv11b" in str(info.value)


def test_emc_method_choice(tmp_path: Path) -> None:
    bpmp = build_tree(tmp_path / "a", BOARDS["orin-nano"], emc="both")
    assert read_tables(bpmp.fs, "cap").emc_method == "cap"
    cap_only = build_tree(tmp_path / "b", BOARDS["orin-nano"], emc="cap")
    tables = read_tables(cap_only.fs, default_emc_hz=(1, 2))
    assert tables.emc_method == "cap" and tables.emc_hz == (1, 2)  # possible_rates is in debugfs
    with pytest.raises(DeviceError, match="debugfs"):
        read_tables(cap_only.fs, "bpmp")
    with pytest.raises(DeviceError, match="valid: auto, bpmp, cap, none"):
        read_tables(cap_only.fs, "fast")


def test_unreachable_debugfs_falls_back_to_the_cap_node(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a normal user, stat() below /sys/kernel/debug fails with EACCES (not ENOENT)."""
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    real_exists = Path.exists

    def exists(self: Path, *args: object, **kwargs: object) -> bool:
        if "/sys/kernel/debug/" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    real_open = os.open

    def open_(path: str | os.PathLike[str], flags: int, *args: int, **kwargs: object) -> int:
        if "/sys/kernel/debug/" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    tables = read_tables(board.fs, default_emc_hz=(7,))
    assert tables.emc_method == "cap" and tables.emc_hz == (7,)
