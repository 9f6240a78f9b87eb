"""Mode spaces: the real Jetson tables, presets, grids and knob validation."""

from __future__ import annotations

import pytest

from powertrain.boards import board_names, get_space
from powertrain.errors import ModeError, UnknownNameError
from powertrain.space import JETSON_KNOBS, ModeSpace


@pytest.mark.parametrize(
    ("device", "cores", "cpu", "gpu", "emc", "size"),
    [
        ("orin-agx", 12, 29, 13, 4, 18_096),
        ("xavier-agx", 8, 29, 14, 9, 29_232),
        ("orin-nano", 6, 20, 4, 3, 1_440),
    ],
)
def test_full_space_counts(device: str, cores: int, cpu: int, gpu: int, emc: int, size: int) -> None:
    space = get_space(device)
    assert [len(k.values) for k in space.knobs] == [cores, cpu, gpu, emc]
    assert space.size == size
    assert len(space.modes("full")) == size
    assert len(space.modes("full").drop_duplicates()) == size


@pytest.mark.parametrize(("device", "size"), [("orin-agx", 4_368), ("orin-nano", 180)])
def test_powertrain_grids(device: str, size: int) -> None:
    space = get_space(device)
    grid = space.modes("powertrain")
    assert len(grid) == size == space.grid_size("powertrain")
    space.validate_frame(grid)  # every grid mode is a member of the full space


def test_orin_grid_values() -> None:
    grid = get_space("orin-agx").grid_values("powertrain")
    assert grid["cpu_cores"] == (2, 4, 6, 8, 10, 12)
    assert len(grid["cpu_mhz"]) == 14
    assert grid["cpu_mhz"][0] == pytest.approx(268.8)
    assert grid["cpu_mhz"][-1] == pytest.approx(2201.6)


def test_table_endpoints() -> None:
    orin = get_space("orin-agx")
    assert orin.knob("cpu_mhz").values[0] == pytest.approx(115.2)
    assert orin.knob("cpu_mhz").high == pytest.approx(2201.6)
    assert orin.knob("gpu_mhz").high == pytest.approx(1300.5)
    assert orin.knob("mem_mhz").values == (204.0, 665.6, 2133.0, 3199.0)
    assert get_space("xavier-agx").knob("cpu_mhz").high == pytest.approx(2265.6)
    assert get_space("orin-nano").knob("cpu_mhz").high == pytest.approx(1510.4)


@pytest.mark.parametrize("device", board_names())
def test_every_preset_is_a_member(device: str) -> None:
    space = get_space(device)
    assert space.presets, f"{device} has no presets"
    for preset in space.presets.values():
        assert space.contains(preset.mode), preset.name
        assert space.preset(preset.name) is preset


def test_preset_lookup_is_forgiving_about_spelling() -> None:
    orin = get_space("orin-agx")
    assert orin.preset("maxn").name == "MAXN"
    assert orin.preset("30W").name == "MODE_30W"
    assert orin.preset("mode-50w").name == "MODE_50W"
    with pytest.raises(UnknownNameError, match="MODE_15W"):
        orin.preset("70W")


def test_maxn_is_the_top_of_every_table() -> None:
    for device in board_names():
        space = get_space(device)
        assert space.preset("MAXN" if "MAXN" in space.presets else "15W").mode == space.max_mode()


def test_value_outside_table_names_knob_value_and_allowed() -> None:
    space = get_space("orin-agx")
    mode = {"cpu_cores": 12, "cpu_mhz": 2201.6, "gpu_mhz": 1000.0, "mem_mhz": 3199}
    with pytest.raises(ModeError) as info:
        space.validate(mode)
    msg = str(info.value)
    assert "gpu_mhz=1000" in msg
    assert "1300.5" in msg and "114.75" in msg
    assert "\n" not in msg


def test_missing_and_unknown_knobs() -> None:
    space = get_space("orin-nano")
    with pytest.raises(ModeError, match="missing knob"):
        space.validate({"cpu_cores": 2})
    with pytest.raises(ModeError, match="unknown knob"):
        space.validate({**space.max_mode(), "dla_mhz": 1.0})


def test_validate_snaps_within_tolerance() -> None:
    space = get_space("orin-agx")
    mode = space.validate({"cpu_cores": 4, "cpu_mhz": 2201.6000001, "gpu_mhz": 114.75, "mem_mhz": 204})
    assert mode["cpu_mhz"] == pytest.approx(2201.6)


def test_unknown_device_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="orin-agx, xavier-agx, orin-nano"):
        get_space("tx2")


def test_generic_space_from_values() -> None:
    space = ModeSpace.from_values("tpu", {"cores": [1, 2, 4], "freq_mhz": [500, 1000]})
    assert space.size == 6
    assert space.knob_names == ("cores", "freq_mhz")
    assert list(space.modes().columns) == ["cores", "freq_mhz"]
    assert JETSON_KNOBS == ("cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz")
