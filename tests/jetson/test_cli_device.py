"""``powerfleet device info|set|power`` on fake trees: outputs, persistence, one-line errors."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from powertrain.devices.jetson import sysfs
from tests.jetson.fake_tree import BOARDS, CPU, FakeBoard, build_tree

Cli = Callable[..., tuple[int, str, str]]


def one_line_error(code: int, stderr: str, *needles: str) -> str:
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_info_text_and_json(cli: Cli, board: FakeBoard) -> None:
    code, stdout, stderr = cli("device", "info", "--sysfs-root", str(board.root))
    assert code == 0, stderr
    assert f"device: {board.spec.device_type} (jetson, unit 0)" in stdout
    assert board.spec.model in stdout and board.spec.gpu_dir in stdout
    assert "power source: ina3221" in stdout and "emc control: bpmp" in stdout
    assert ("warning: gpu_mhz table" in stderr) == (board.spec.name == "orin-agx-jp6")
    code, stdout, _ = cli("device", "info", "--sysfs-root", str(board.root), "--json")
    payload = json.loads(stdout)
    assert payload["details"]["model"] == board.spec.model
    assert payload["tables"]["cpu_cores"]["high"] == board.spec.n_cpus
    assert payload["details"]["mode_now"]["cpu_cores"] == len(
        [c for c in range(board.spec.n_cpus) if c == 0 or board.read(f"{CPU}/cpu{c}/online") == "1"])


def test_set_preset_and_partial_mode_persist(cli: Cli, tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp6"])
    code, stdout, stderr = cli("device", "set", "MODE_15W", "--sysfs-root", str(board.root))
    assert code == 0, stderr
    assert stdout.strip() == "set orin-agx to MODE_15W: cpu_cores=4 cpu_mhz=1113.6 gpu_mhz=408 mem_mhz=2133"
    assert "TPC power gating" in stderr
    assert board.read(f"{CPU}/cpu4/online") == "0"  # left in force after the command exits
    code, stdout, stderr = cli("device", "set", "gpu_mhz=816, cpu_cores=6", "--device",
                               f"jetson:orin-agx?root={board.root}")
    assert code == 0, stderr
    assert "cpu_cores=6 cpu_mhz=1113.6 gpu_mhz=816 mem_mhz=2133" in stdout
    assert board.read(f"{BOARDS['orin-agx-jp6'].gpu_dir}/max_freq") == "816000000"


def test_environment_variable_root(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    monkeypatch.setenv("POWERFLEET_SYSFS_ROOT", str(board.root))
    code, stdout, stderr = cli("device", "set", "7W")
    assert code == 0, stderr
    assert "cpu_cores=4" in stdout
    assert board.read(f"{CPU}/cpu5/online") == "0"


def test_power(cli: Cli, tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["xavier-agx"])
    code, stdout, stderr = cli("device", "power", "--sysfs-root", str(board.root), "--duration-s", "0.3",
                               "--hz", "50", "--json")
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["source"] == "ina3221" and payload["samples"] >= 5
    assert payload["total_w"] == pytest.approx(sum(r.power_mw for r in board.spec.rails) / 1000)
    assert set(payload["rails_mw"]) == {"GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"}
    code, stdout, _ = cli("device", "power", "--sysfs-root", str(board.root), "--duration-s", "0.1")
    assert code == 0 and "board total" in stdout


def test_permission_denied_preflight(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    before = board.snapshot()
    monkeypatch.setattr(sysfs, "default_access", lambda path: False)  # as a normal user
    code, _, stderr = cli("device", "set", "MAXN", "--sysfs-root", str(board.root))
    one_line_error(code, stderr, "needs root", f"{board.root}{CPU}/cpu8/online")
    assert board.snapshot() == before


def test_permission_refused_mid_way_rolls_back(cli: Cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    before = board.snapshot()
    real = sysfs.default_writer

    def writer(path: Path, value: str) -> None:  # debugfs refuses, as when not mounted for us
        if "debug" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        real(path, value)

    monkeypatch.setattr(sysfs, "default_writer", writer)
    code, _, stderr = cli("device", "set", "MAXN", "--sysfs-root", str(board.root))
    one_line_error(code, stderr, "needs root", "clk/emc/rate", "previous mode was restored")
    assert board.snapshot() == before


def test_bad_inputs_are_one_line_errors(cli: Cli, tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    root = str(board.root)
    one_line_error(*cli("device", "set", "fast", "--sysfs-root", root)[::2], "'fast'", "15W, 7W")
    one_line_error(*cli("device", "set", "gpu_mhz=700", "--sysfs-root", root)[::2], "gpu_mhz=700",
                   "306, 408, 510, 624.75")
    one_line_error(*cli("device", "set", "turbo=1", "--sysfs-root", root)[::2], "'turbo=1'")
    one_line_error(*cli("device", "info", "--device", "sim:orin-nano", "--sysfs-root", root)[::2],
                   "--sysfs-root applies to jetson")
    one_line_error(*cli("device", "info", "--device", f"jetson:auto?root={root}&colour=red")[::2],
                   "'colour'", "unit, root")
    one_line_error(*cli("device", "info", "--sysfs-root", str(tmp_path / "nope"))[::2], "not a directory")


def test_console_script_on_a_non_jetson(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "powerfleet"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "powerfleet"]
    env = {**os.environ, "POWERFLEET_SYSFS_ROOT": str(tmp_path)}
    proc = subprocess.run([*cmd, "device", "info"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no Jetson found under") and proc.stderr.count("\n") == 1
