"""Module detection: recorded model strings, compatible lists, SoC ids, and the fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from powertrain.devices.jetson.detect import (
    detect_board,
    identify,
    module_from_compatible,
    parse_l4t_release,
    parse_soc_id,
)
from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.errors import DeviceError
from tests.jetson.fake_tree import BOARDS, FakeBoard, build_tree
from tests.jetson.recorded import CLOCKS_SHOW_ORIN_JP6, MODEL_STRINGS


@pytest.mark.parametrize(("model", "expected"), sorted(MODEL_STRINGS.items()))
def test_recorded_model_strings(model: str, expected: str) -> None:
    soc = 25 if expected == "xavier-agx" else 35
    assert identify(model + "\0", soc_id=soc).device_type == expected
    assert identify(model).device_type == expected  # the SoC id only confirms


def test_machine_line_of_recorded_jetson_clocks_dump() -> None:
    machine = CLOCKS_SHOW_ORIN_JP6.splitlines()[0].split("Machine:")[1]
    assert identify(machine, soc_id=35).device_type == "orin-agx"


@pytest.mark.parametrize(("compatible", "module", "expected"), [
    (["nvidia,p3737-0000+p3701-0000", "nvidia,p3701-0000", "nvidia,tegra234"], "p3701-0000", "orin-agx"),
    (["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"], "p3701-0005", "orin-agx"),
    (["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"], "p3767-0005", "orin-nano"),
    (["nvidia,p3768-0000+p3767-0003", "nvidia,tegra234"], "p3767-0003", "orin-nano"),
    (["nvidia,p2822-0000+p2888-0001", "nvidia,tegra194"], "p2888-0001", "xavier-agx"),
    (["nvidia,p3768-0000+p3767-0000", "nvidia,tegra234"], "p3767-0000", None),  # Orin NX
    (["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"], "p3668-0001", None),  # Xavier NX
])
def test_module_from_compatible(compatible: list[str], module: str, expected: str | None) -> None:
    assert module_from_compatible(compatible) == module
    ident = identify("some board", compatible)
    assert ident.device_type == expected
    if expected is None:
        assert "no built-in tables" in ident.note


def test_compatible_wins_over_a_misleading_model_string() -> None:
    ident = identify("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                     ["nvidia,p3768-0000+p3767-0005"], 35)
    assert ident.device_type == "orin-nano"


def test_unsupported_jetsons_have_no_type() -> None:
    orin_nx = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    assert identify(orin_nx, soc_id=35).device_type is None
    assert identify("NVIDIA Jetson Xavier NX Developer Kit (SD-card)", soc_id=25).device_type is None
    assert identify("Raspberry Pi 4 Model B Rev 1.4").device_type is None


def test_soc_id_contradicting_the_model_is_an_error() -> None:
    with pytest.raises(DeviceError, match=r"SoC id 25 .*contradicts"):
        identify("NVIDIA Jetson AGX Orin Developer Kit", soc_id=25)


def test_soc_id_formats() -> None:
    assert parse_soc_id("35\n") == 35
    assert parse_soc_id("jep106:036b:0023") == 35
    assert parse_soc_id("jep106:036b:0019") == 25
    assert parse_soc_id("garbage") is None


def test_l4t_release() -> None:
    text = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64"
    assert parse_l4t_release(text) == "R36.3.0"
    assert parse_l4t_release("nothing") is None


def test_detect_each_fake_tree(board: FakeBoard) -> None:
    ident = detect_board(board.fs)
    assert ident.device_type == board.spec.device_type
    assert ident.model == board.spec.model
    assert ident.soc == ("tegra194" if board.spec.device_type == "xavier-agx" else "tegra234")
    assert ident.l4t_release in {"R35.4.1", "R36.3.0"}


def test_detect_on_a_non_jetson_says_so(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        detect_board(Sysfs(tmp_path))
    message = str(info.value)
    assert "no Jetson found" in message and "\n" not in message


def test_explicit_type_must_match_the_board(tmp_path: Path) -> None:
    from powertrain.devices.jetson import JetsonDevice

    board = build_tree(tmp_path, BOARDS["orin-nano"])
    with pytest.raises(DeviceError, match="does not match this board"):
        JetsonDevice("orin-agx", fs=board.fs, power="none")
    with JetsonDevice("orin-nano", fs=board.fs, power="none") as dev:
        assert dev.device_type == "orin-nano"


def test_importing_the_backend_is_cheap_and_safe(tmp_path: Path) -> None:
    """No torch, no hardware access at import: safe on any machine (here: an empty root)."""
    import os
    import subprocess
    import sys

    code = ("import sys, powertrain.devices, powertrain.devices.jetson; "
            "print('torch' in sys.modules, 'torchvision' in sys.modules)")
    env = {**os.environ, "POWERFLEET_SYSFS_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
