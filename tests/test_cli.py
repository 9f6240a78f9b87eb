"""The ``powerfleet`` CLI: outputs, and one-line errors with no partial files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from powertrain.profile_io import read_profile


def test_modes_counts(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "modes.csv"
    code, _, err = cli("modes", "--device", "orin-agx", "--grid", "powertrain", "-o", str(out))
    assert code == 0, err
    assert len(pd.read_csv(out)) == 4368
    code, stdout, _ = cli("modes", "--device", "orin-nano", "--presets")
    assert code == 0 and "15W" in stdout and "7W" in stdout


def test_profile_writes_profile(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.csv"
    code, _, err = cli("profile", "--device", "sim:orin-agx?seed=1", "--workload",
                       "mobilenetv3-gld23k", "--modes", "12", "--strategy", "spacefill",
                       "--minibatches", "10", "-o", str(out))
    assert code == 0, err
    frame = read_profile(out)
    assert len(frame) == 12 and (frame.workload == "mobilenetv3-gld23k").all()


def test_profile_from_modes_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    modes = tmp_path / "m.csv"
    modes.write_text("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz\n6,1510.4,624.75,2133\n2,268.8,306,665.6\n")
    out = tmp_path / "p.csv"
    code, _, err = cli("profile", "--device", "sim:orin-nano", "--workload", "lstm-wikitext",
                       "--modes", str(modes), "--minibatches", "5", "-o", str(out))
    assert code == 0, err
    assert len(read_profile(out)) == 2


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_unknown_device_and_workload(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.csv"
    code, _, err = cli("profile", "--device", "sim:jetson-tx2", "--workload", "lstm-wikitext", "-o", str(out))
    _assert_one_line_error(code, err, "jetson-tx2", "orin-agx, xavier-agx, orin-nano")
    code, _, err = cli("profile", "--device", "sim:orin-agx", "--workload", "gpt", "-o", str(out))
    _assert_one_line_error(code, err, "'gpt'", "resnet18-imagenet")
    code, _, err = cli("modes", "--device", "orin-agx", "--grid", "coarse")
    _assert_one_line_error(code, err, "coarse", "full, powertrain")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_modes_file_and_knob_value(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    modes = tmp_path / "m.csv"
    modes.write_text("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz\n6,1510.4,624.75,2133\n6,1510.4,777,2133\n")
    out = tmp_path / "p.csv"
    code, _, err = cli("profile", "--device", "sim:orin-nano", "--workload", "lstm-wikitext",
                       "--modes", str(modes), "-o", str(out))
    _assert_one_line_error(code, err, "row 2", "gpu_mhz=777", "306, 408, 510, 624.75")
    modes.write_text("cpu_cores,cpu_mhz,gpu_mhz,mem_mhz\n6,1510.4,fast,2133\n")
    code, _, err = cli("profile", "--device", "sim:orin-nano", "--workload", "lstm-wikitext",
                       "--modes", str(modes), "-o", str(out))
    _assert_one_line_error(code, err, str(modes), "line 2", "column gpu_mhz")
    code, _, err = cli("profile", "--device", "sim:orin-nano", "--workload", "lstm-wikitext",
                       "--modes", "100000", "-o", str(out))
    _assert_one_line_error(code, err, "--modes 100000", "180")
    assert not out.exists()


def test_console_script_exit_code_and_no_traceback(tmp_path: Path) -> None:
    import shutil
    import sys

    exe = shutil.which("powerfleet", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "powerfleet"]
    proc = subprocess.run([*cmd, "profile", "--device", "sim:orin-agx", "--workload", "nope",
                           "-o", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: workload 'nope' is not known")
    assert "Traceback" not in proc.stderr


def test_unbounded_inputs_are_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.csv"
    base = ["profile", "--device", "sim:orin-nano", "--workload", "lstm-wikitext", "--modes", "2", "-o", str(out)]
    for option, value, needle in [("--warmup-s", "inf", "--warmup-s must be in [0, 3600]; got inf"),
                                  ("--warmup-s", "nan", "--warmup-s must be in [0, 3600]"),
                                  ("--minibatches", "0", "--minibatches must be in [1, 100000]"),
                                  ("--warmup-minibatches", "-1", "--warmup-minibatches must be in [0")]:
        code, _, err = cli(*base, option, value)
        _assert_one_line_error(code, err, needle)
    for value in ("nan", "inf", "-1", "0"):
        code, _, err = cli("device", "power", "--device", "sim:orin-nano", "--duration-s", value)
        _assert_one_line_error(code, err, "--duration-s must be in (0, 86400]")
    code, _, err = cli("device", "power", "--device", "sim:orin-nano", "--hz", "inf")
    _assert_one_line_error(code, err, "--hz must be in (0, 1000]")
    assert list(tmp_path.iterdir()) == []
