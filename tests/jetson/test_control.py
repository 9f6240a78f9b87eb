"""Setting modes on fake trees: exact writes in exact order, read-back, rollback, restore."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from powertrain.devices import make_device
from powertrain.devices.jetson import JetsonDevice
from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.errors import DeviceError, DevicePermissionError, ModeError
from powertrain.space import Mode
from tests.jetson.fake_tree import BOARDS, CPU, EMC_CLK, FakeBoard, FakeBoardSpec, build_tree

ROOT = Path(__file__).resolve().parents[2]
EMC_CAP = "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap"


# --------------------------------------------------------------------------- the oracle
def expected_writes(files: dict[str, str], spec: FakeBoardSpec, mode: Mode, emc: str) -> list[tuple[str, str]]:
    """The writes the issue's rules call for, from the tree's current file contents.

    Online needed cores ascending; per cluster with an online core in the target, max then min
    when the range rises, min then max when it falls; offline surplus cores descending; GPU the
    same way; EMC lock then rate (or the cap, 0 = no cap). Files already right are not written.
    """
    def val(path: str) -> str:
        return files[path]

    out: list[tuple[str, str]] = []
    cores = int(mode["cpu_cores"])
    online = {c: val(f"{CPU}/cpu{c}/online") == "1" for c in range(1, spec.n_cpus)}
    for c in range(1, cores):
        if not online[c]:
            out.append((f"{CPU}/cpu{c}/online", "1"))

    def pair(lo_path: str, hi_path: str, value: int) -> None:
        lo, hi = int(val(lo_path)), int(val(hi_path))
        order = [(hi_path, hi), (lo_path, lo)] if value >= hi else [(lo_path, lo), (hi_path, hi)]
        out.extend((path, str(value)) for path, cur in order if cur != value)

    khz = round(mode["cpu_mhz"] * 1000)
    for cluster in spec.clusters:
        if cluster[0] < cores:
            pol = f"{CPU}/cpufreq/policy{cluster[0]}"
            pair(f"{pol}/scaling_min_freq", f"{pol}/scaling_max_freq", khz)
    for c in range(spec.n_cpus - 1, 0, -1):
        if c >= cores and online[c]:
            out.append((f"{CPU}/cpu{c}/online", "0"))
    pair(f"{spec.gpu_dir}/min_freq", f"{spec.gpu_dir}/max_freq", round(mode["gpu_mhz"] * 1e6))
    hz = round(mode["mem_mhz"] * 1e6)
    if emc == "bpmp":
        if val(f"{EMC_CLK}/mrq_rate_locked") != "1":
            out.append((f"{EMC_CLK}/mrq_rate_locked", "1"))
        if int(val(f"{EMC_CLK}/rate")) != hz:
            out.append((f"{EMC_CLK}/rate", str(hz)))
    else:
        cap = 0 if hz == spec.emc_hz[-1] else hz
        if int(val(EMC_CAP)) != cap:
            out.append((EMC_CAP, str(cap)))
    return out


def apply_and_check(board: FakeBoard, dev: JetsonDevice, mode: Mode) -> list[tuple[str, str]]:
    """Apply ``mode``; assert the exact write sequence and that nothing else changed."""
    before = board.snapshot()
    expected = expected_writes(before, board.spec, dev.space.validate(mode), dev.tables.emc_method)
    start = len(board.kernel.attempts)
    applied = dev.apply_mode(mode)
    got = board.kernel.attempts[start:]
    assert got == expected
    after = board.snapshot()
    changed = {p for p in after if after[p] != before[p]}
    assert changed == {p for p, _ in expected}
    for path, value in expected:
        assert after[path] == value
    assert dev.current_mode() == applied
    return got


def sample_modes(dev: JetsonDevice, k: int, seed: int) -> list[Mode]:
    rng = np.random.default_rng(seed)
    return [{knob.name: float(rng.choice(knob.values)) for knob in dev.space.knobs} for _ in range(k)]


# --------------------------------------------------------------------------- presets and modes
def test_every_preset_then_restore(board: FakeBoard, device: JetsonDevice) -> None:
    original = board.snapshot()
    for name in device.space.presets:
        apply_and_check(board, device, device.space.preset(name).mode)
    device.close()
    assert board.snapshot() == original


@pytest.mark.parametrize("emc", ["bpmp", "cap"])
def test_sample_of_custom_modes(tmp_path: Path, emc: str) -> None:
    for i, name in enumerate(sorted(BOARDS)):
        board = build_tree(tmp_path / name, BOARDS[name], emc=emc)
        original = board.snapshot()
        with JetsonDevice(fs=board.fs, power="none") as dev:
            assert dev.tables.emc_method == emc
            for mode in sample_modes(dev, 12, seed=i):
                apply_and_check(board, dev, mode)
            apply_and_check(board, dev, dev.space.min_mode())
            apply_and_check(board, dev, dev.space.max_mode())
        assert board.snapshot() == original


def test_exact_sequence_orin_jp5_pm14_to_maxn_and_15w(tmp_path: Path) -> None:
    """Hand-derived sequences from the recorded custom-mode-14 state (8 cores at 1113.6 MHz)."""
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    pol = f"{CPU}/cpufreq/policy"
    gpu = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
    with JetsonDevice(fs=board.fs, power="none") as dev:
        dev.apply_preset("MAXN")
        assert board.kernel.attempts == [
            (f"{CPU}/cpu8/online", "1"), (f"{CPU}/cpu9/online", "1"),
            (f"{CPU}/cpu10/online", "1"), (f"{CPU}/cpu11/online", "1"),
            (f"{pol}0/scaling_max_freq", "2201600"), (f"{pol}0/scaling_min_freq", "2201600"),
            (f"{pol}4/scaling_max_freq", "2201600"), (f"{pol}4/scaling_min_freq", "2201600"),
            (f"{pol}8/scaling_max_freq", "2201600"), (f"{pol}8/scaling_min_freq", "2201600"),
            (f"{gpu}/max_freq", "1300500000"), (f"{gpu}/min_freq", "1300500000"),
            (f"{EMC_CLK}/rate", "3199000000"),  # already locked (FreqOverride=1)
        ]
        board.kernel.attempts.clear()
        dev.apply_preset("MODE_15W")
        assert board.kernel.attempts == [
            (f"{pol}0/scaling_min_freq", "1113600"), (f"{pol}0/scaling_max_freq", "1113600"),
            *[(f"{CPU}/cpu{c}/online", "0") for c in range(11, 3, -1)],
            (f"{gpu}/min_freq", "318750000"), (f"{gpu}/max_freq", "318750000"),
            (f"{EMC_CLK}/rate", "2133000000"),
        ]
        board.kernel.attempts.clear()
        dev.apply_preset("MODE_15W")
        assert board.kernel.attempts == []  # nothing to change


def test_reonlined_cluster_gets_its_clocks(tmp_path: Path) -> None:
    """A cluster brought back online is set even though it was skipped while offline."""
    board = build_tree(tmp_path, BOARDS["orin-agx-jp6"])
    with JetsonDevice(fs=board.fs, power="none") as dev:
        dev.apply_mode({"cpu_cores": 4, "cpu_mhz": 1497.6, "gpu_mhz": 612, "mem_mhz": 2133})
        dev.apply_mode({"cpu_cores": 4, "cpu_mhz": 729.6, "gpu_mhz": 612, "mem_mhz": 2133})
        assert board.read(f"{CPU}/cpufreq/policy4/scaling_max_freq") == "2201600"  # offline: untouched
        apply_and_check(board, dev, {"cpu_cores": 6, "cpu_mhz": 729.6, "gpu_mhz": 612, "mem_mhz": 2133})
        assert board.read(f"{CPU}/cpufreq/policy4/scaling_max_freq") == "729600"


def test_fake_kernel_rejects_wrong_order(tmp_path: Path) -> None:
    """The fake kernel is strict: writing min above max fails, so the ordering tests mean something."""
    board = build_tree(tmp_path, BOARDS["orin-agx-jp6"])
    with pytest.raises(DeviceError, match="Invalid argument"):
        board.fs.write(f"{CPU}/cpufreq/policy0/scaling_min_freq", 2201600 + 1)
    board.fs.write(f"{CPU}/cpu4/online", 0)
    for c in (5, 6, 7):
        board.fs.write(f"{CPU}/cpu{c}/online", 0)
    with pytest.raises(DeviceError, match="busy"):
        board.fs.write(f"{CPU}/cpufreq/policy4/scaling_max_freq", 729600)


def test_invalid_modes_write_nothing(board: FakeBoard, device: JetsonDevice) -> None:
    with pytest.raises(ModeError, match="gpu_mhz=777"):
        device.apply_mode({**device.space.max_mode(), "gpu_mhz": 777})
    with pytest.raises(ModeError, match="missing knob"):
        device.apply_mode({"cpu_cores": 2})
    assert board.kernel.attempts == []


# --------------------------------------------------------------------------- failure handling
def test_readback_mismatch_rolls_back(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    gpu = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
    with JetsonDevice(fs=board.fs, power="none") as dev:
        before = board.snapshot()
        board.kernel.mangle[f"{gpu}/min_freq"] = "114750000"  # e.g. a clamp by a thermal cap
        with pytest.raises(DeviceError) as info:
            dev.apply_preset("MAXN")
        message = str(info.value)
        assert "read-back mismatch" in message and "min_freq holds 114750000, expected 1300500000" in message
        assert "previous mode was restored" in message and "\n" not in message
        assert board.snapshot() == before
        # the forward writes happened, then the rollback undid them in reverse-safe order
        paths = [p for p, _ in board.kernel.attempts]
        assert paths.index(f"{CPU}/cpu8/online") < paths.index(f"{CPU}/cpu11/online")
        assert (f"{CPU}/cpu11/online", "0") in board.kernel.attempts


def test_permission_error_mid_way_rolls_back_and_names_file(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["xavier-agx"])
    with JetsonDevice(fs=board.fs, power="none") as dev:
        before = board.snapshot()
        board.kernel.fail[f"{EMC_CLK}/mrq_rate_locked"] = PermissionError(errno.EACCES, "Permission denied")
        with pytest.raises(DevicePermissionError) as info:
            dev.apply_preset("MAXN")
        message = str(info.value)
        assert "needs root" in message and f"{board.root}{EMC_CLK}/mrq_rate_locked" in message
        assert "previous mode was restored" in message and "\n" not in message
        assert board.snapshot() == before
        assert len(board.kernel.attempts) > 2  # writes happened before the refusal and were undone


def test_permission_error_on_first_write_changes_nothing(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    with JetsonDevice(fs=board.fs, power="none") as dev:
        before = board.snapshot()
        board.kernel.fail[f"{CPU}/cpufreq/policy0/scaling_min_freq"] = PermissionError(errno.EPERM, "nope")
        with pytest.raises(DevicePermissionError, match="nothing was changed"):
            dev.apply_preset("7W")
        assert board.snapshot() == before


def test_permission_preflight_refuses_before_any_write(tmp_path: Path) -> None:
    """As a normal user (os.access says no) the first unwritable file is named before writing."""
    spec = BOARDS["orin-agx-jp6"]
    board = build_tree(tmp_path, spec)
    kernel = board.kernel
    fs = Sysfs(board.root, writer=kernel, access=lambda path: "cpufreq" not in str(path))
    with JetsonDevice(fs=fs, power="none") as dev:
        with pytest.raises(DevicePermissionError) as info:
            dev.apply_preset("MODE_15W")
        assert str(info.value).startswith(
            f"writing {board.root}{CPU}/cpufreq/policy0/scaling_max_freq needs root (permission denied)")
        assert kernel.attempts == []


def test_failing_rollback_says_the_board_may_be_mixed(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp5"])
    before = board.snapshot()
    gpu = "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
    with JetsonDevice(fs=board.fs, power="none") as dev:
        board.kernel.fail[f"{gpu}/max_freq"] = OSError(errno.EIO, "Input/output error")
        board.kernel.fail_after[f"{gpu}/max_freq"] = 0
        board.kernel.fail[f"{CPU}/cpu11/online"] = OSError(errno.EIO, "Input/output error")
        board.kernel.fail_after[f"{CPU}/cpu11/online"] = 1  # onlining works, offlining fails
        with pytest.raises(DeviceError) as info:
            dev.apply_preset("MAXN")
        assert "rolling back also failed" in str(info.value) and "mixed mode" in str(info.value)
        assert board.snapshot() != before
    assert board.snapshot() == before  # closing still restores the original settings


def test_emc_without_any_control_node(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-agx-jp6"], emc="none")
    with JetsonDevice(fs=board.fs, power="none") as dev:
        assert dev.tables.emc_method == "unavailable"
        with pytest.raises(DeviceError, match="BPMP debugfs"):
            dev.apply_preset("MAXN")
        assert board.kernel.attempts == []
        with pytest.raises(DeviceError, match="mem_mhz cannot be read"):
            dev.current_mode()
    with JetsonDevice(fs=board.fs, power="none", emc="none") as dev:  # explicitly leave EMC alone
        dev.apply_preset("MODE_15W")
        assert board.kernel.attempts and not any("emc" in p for p, _ in board.kernel.attempts)


# --------------------------------------------------------------------------- restoring
def test_restore_false_keeps_the_mode(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    dev = make_device(f"jetson:auto?root={board.root}&restore=0&power=none")
    assert isinstance(dev, JetsonDevice)
    dev.apply_preset("7W")
    dev.close()
    assert board.read(f"{CPU}/cpu5/online") == "0"


def test_exception_inside_with_block_restores(tmp_path: Path) -> None:
    board = build_tree(tmp_path, BOARDS["orin-nano"])
    before = board.snapshot()
    with pytest.raises(RuntimeError), JetsonDevice(fs=board.fs, power="none") as dev:
        dev.apply_preset("7W")
        raise RuntimeError("training crashed")
    assert board.snapshot() == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_restores_original_settings(tmp_path: Path, sig: int) -> None:
    board = build_tree(tmp_path / "root", BOARDS["orin-agx-jp6"])
    before = board.snapshot()
    script = textwrap.dedent(f"""
        import signal, sys, time
        signal.signal({int(sig)}, signal.SIG_DFL)  # not inherited (nohup'd runners ignore SIGHUP)
        sys.path.insert(0, {str(ROOT)!r})
        from powertrain.devices import make_device
        dev = make_device("jetson:auto?power=none")
        dev.apply_preset("MODE_15W")
        print("applied", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "POWERFLEET_SYSFS_ROOT": str(board.root)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "applied"
        assert board.read(f"{CPU}/cpu11/online") == "0"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == -sig  # the default disposition still ends the process
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert board.snapshot() == before
