"""Fleet files are validated strictly; caps are per board; the default fleets ship in the package."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coordinator.fleet import MAX_BOARDS, FleetSpec, builtin_fleets
from powertrain.errors import DataFormatError, InvalidParameterError

ROOT = Path(__file__).resolve().parents[2]
AGX = '[[group]]\ndevice = "sim:orin-agx"\n'


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (AGX + "count = true\n", "count=True must be an integer"),
        (AGX + "count = 2.0\n", "count=2.0 must be an integer"),
        (AGX + "first_unit = true\n", "first_unit=True must be an integer"),
        (AGX + "first_unit = -1\n", "first_unit=-1"),
        (AGX + "power_cap_w = true\n", "power_cap_w=True must be a number"),
        (AGX + "power_cap_w = inf\n", "power_cap_w=inf"),
        (AGX + "power_cap_w = nan\n", "power_cap_w=nan"),
        (AGX + "power_cap_w = 1e300\n", "power_cap_w=1e+300"),
        (AGX + "count = 100000000\n", f"count=100000000 must be an integer in [1, {MAX_BOARDS}]"),
        (AGX + "count = 60000\n" + AGX + "count = 60000\nfirst_unit = 60000\n", "at most 100000"),
        (AGX + "count = 2\n" + AGX + "first_unit = 1\n", "orin-agx unit 1 is also in group 1"),
        ('[[group]]\ndevice = "sim:orin-agx?unit=3"\n', "names a unit"),
        ("seed = true\n" + AGX, "seed=True must be an integer"),
        ("name = 5\n" + AGX, "name=5 must be a non-empty string"),
        ("colour = 1\n" + AGX, "unknown key 'colour'"),
        ("group = [1]\n", "group 1: must be a table"),
    ],
)
def test_fleet_files_are_validated_strictly(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises((InvalidParameterError, DataFormatError)) as exc:
        FleetSpec.load(path)
    assert time.perf_counter() - started < 2.0  # refused before building anything
    assert needle in str(exc.value) and "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_units_may_repeat_across_device_types() -> None:
    fleet = FleetSpec.from_groups("x", [{"device": "sim:orin-agx", "count": 2},
                                        {"device": "sim:orin-nano", "count": 2}], 0)
    assert [(n.device_type, n.unit) for n in fleet.nodes] == [("orin-agx", 0), ("orin-agx", 1),
                                                              ("orin-nano", 0), ("orin-nano", 1)]


def test_caps_are_per_board(tmp_path: Path) -> None:
    """Issue 16: the second group's cap of a device type was ignored."""
    path = tmp_path / "fleet.toml"
    path.write_text(AGX + "count = 2\npower_cap_w = 30.0\n" + AGX + "count = 2\nfirst_unit = 10\n"
                    "power_cap_w = 20\n" + '[[group]]\ndevice = "sim:orin-nano"\n')
    fleet = FleetSpec.load(path)
    assert [fleet.cap_of(n, 25.0) for n in fleet.nodes] == [30.0, 30.0, 20.0, 20.0, 25.0]
    assert fleet.node_caps(25.0) == {0: 30.0, 1: 30.0, 2: 20.0, 3: 20.0, 4: 25.0}
    assert fleet.cap_of(3, 25.0) == 20.0 and fleet.nodes[3].cap(25.0) == 20.0
    with pytest.raises(InvalidParameterError) as exc:  # no single answer: refused, never wrong
        fleet.cap_for("orin-agx", 25.0)
    assert "20 W, 30 W" in str(exc.value) and "cap_of" in str(exc.value)
    assert fleet.cap_for("orin-nano", 25.0) == 25.0 and fleet.cap_for("xavier-agx", 25.0) == 25.0
    same = FleetSpec.from_groups("y", [{"device": "sim:orin-agx", "power_cap_w": 25.0},
                                       {"device": "sim:orin-agx", "first_unit": 5}], 0)
    assert same.cap_for("orin-agx", 25.0) == 25.0  # an override equal to the default agrees


def test_default_fleets_ship_inside_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"mixed-12", "mixed-100", "mixed-10k"} <= set(builtin_fleets())
    monkeypatch.chdir(tmp_path)  # not the repository root
    fleet = FleetSpec.load("mixed-12")
    assert fleet.name == "mixed-12" and len(fleet.nodes) == 12 and FleetSpec.load("mixed-12.toml") == fleet
    assert FleetSpec.load(ROOT / "examples/fleets/mixed-12.toml") == fleet  # the example links to it
    with pytest.raises(DataFormatError) as exc:
        FleetSpec.load("mixed-13")
    assert "built-in fleet (mixed-100, mixed-10k, mixed-12)" in str(exc.value) or "mixed-12" in str(exc.value)
    (tmp_path / "mixed-12").mkdir()
    with pytest.raises(DataFormatError, match="is not a file"):
        FleetSpec.load(tmp_path / "mixed-12")
