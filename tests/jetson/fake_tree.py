"""Fake Jetson device trees in a temp dir, and a fake kernel that enforces sysfs rules.

``build_tree(tmp, BOARDS["orin-agx-jp5"])`` lays out every file the backend reads or writes
(device tree, SoC id, CPU hotplug, cpufreq policies, GPU devfreq, BPMP EMC clock, the nvpmodel
EMC cap, INA3221 hwmon/iio rails) with the initial clocks taken from a ``jetson_clocks --show``
dump (:mod:`tests.jetson.recorded`). :class:`FakeKernel` is a writer for
:class:`~powertrain.devices.jetson.sysfs.Sysfs` that, like the kernel, refuses min > max
(EINVAL, as older kernels do) and writes to a policy with no online CPU (EBUSY), logs every
attempted write in order, and can inject failures or store other values than written.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from powertrain.boards.orin_agx import CPU_KHZ as ORIN_AGX_CPU_KHZ
from powertrain.boards.orin_agx import EMC_HZ as ORIN_AGX_EMC_HZ
from powertrain.boards.orin_agx import GPU_HZ as ORIN_AGX_GPU_HZ
from powertrain.boards.orin_nano import CPU_KHZ as ORIN_NANO_CPU_KHZ
from powertrain.boards.orin_nano import EMC_HZ as ORIN_NANO_EMC_HZ
from powertrain.boards.orin_nano import GPU_HZ as ORIN_NANO_GPU_HZ
from powertrain.boards.xavier_agx import CPU_KHZ as XAVIER_AGX_CPU_KHZ
from powertrain.boards.xavier_agx import EMC_HZ as XAVIER_AGX_EMC_HZ
from powertrain.boards.xavier_agx import GPU_HZ as XAVIER_AGX_GPU_HZ
from powertrain.devices.jetson.clocks_show import parse_clocks_show
from powertrain.devices.jetson.sysfs import Sysfs
from tests.jetson import recorded

ORIN_AGX_GPU_HZ_JP6 = [306000000, 408000000, 510000000, 612000000, 714000000, 816000000, 918000000,
                       1020000000, 1122000000, 1224000000, 1300500000]  # jetson-hw.md §1.3


@dataclass(frozen=True)
class RailSpec:
    """One INA3221 channel: chip address, channel, label, bus mV, current mA."""

    chip: str
    channel: int
    label: str
    millivolts: int
    milliamps: int

    @property
    def power_mw(self) -> float:
        return self.millivolts * self.milliamps / 1000.0


@dataclass(frozen=True)
class FakeBoardSpec:
    """What a fake board looks like."""

    name: str
    device_type: str
    model: str
    compatible: tuple[str, ...]
    soc_id: str
    release: str
    clusters: tuple[tuple[int, ...], ...]
    cpu_khz: Sequence[int]
    gpu_dir: str
    gpu_hz: Sequence[int]
    emc_hz: Sequence[int]
    rails: tuple[RailSpec, ...]
    clocks_show: str
    gpu_alias: str | None = None  # /sys/class/devfreq symlink on JetPack 6

    @property
    def n_cpus(self) -> int:
        return sum(len(c) for c in self.clusters)


def _rails(chip_a: list[tuple[int, str, int, int]], chip_b: list[tuple[int, str, int, int]]) -> tuple[
        RailSpec, ...]:
    return tuple([RailSpec("1-0040", *r) for r in chip_a] + [RailSpec("1-0041", *r) for r in chip_b])


# Rail mV x mA chosen so the powers match the recorded idle tegrastats lines (§3.2).
_ORIN_RAILS = _rails([(1, "VDD_GPU_SOC", 5000, 478), (2, "VDD_CPU_CV", 4975, 160),
                      (3, "VIN_SYS_5V0", 5032, 700)],
                     [(1, "NC", 0, 0), (2, "VDDQ_VDD2_1V8AO", 1800, 167), (3, "NC", 0, 0)])
_RELEASE_JP5 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64"
_RELEASE_JP6 = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64"

BOARDS: dict[str, FakeBoardSpec] = {
    "orin-agx-jp5": FakeBoardSpec(
        "orin-agx-jp5", "orin-agx", "NVIDIA Jetson AGX Orin Developer Kit",
        ("nvidia,p3737-0000+p3701-0000", "nvidia,p3701-0000", "nvidia,tegra234"), "35", _RELEASE_JP5,
        ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)), ORIN_AGX_CPU_KHZ,
        "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b", ORIN_AGX_GPU_HZ, ORIN_AGX_EMC_HZ,
        _ORIN_RAILS, recorded.CLOCKS_SHOW_ORIN_JP5),
    "orin-agx-jp6": FakeBoardSpec(
        "orin-agx-jp6", "orin-agx", "NVIDIA Jetson AGX Orin Developer Kit",
        ("nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"), "jep106:036b:0023",
        _RELEASE_JP6, ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)), ORIN_AGX_CPU_KHZ,
        "/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu", ORIN_AGX_GPU_HZ_JP6,
        ORIN_AGX_EMC_HZ, _ORIN_RAILS, recorded.CLOCKS_SHOW_ORIN_JP6,
        gpu_alias="/sys/class/devfreq/17000000.gpu"),
    "xavier-agx": FakeBoardSpec(
        "xavier-agx", "xavier-agx", "NVIDIA Jetson AGX Xavier Developer Kit",
        ("nvidia,p2972-0000", "nvidia,tegra194"), "25", _RELEASE_JP5,
        ((0, 1), (2, 3), (4, 5), (6, 7)), XAVIER_AGX_CPU_KHZ,
        "/sys/devices/17000000.gv11b/devfreq/17000000.gv11b", XAVIER_AGX_GPU_HZ, XAVIER_AGX_EMC_HZ,
        _rails([(1, "GPU", 19000, 61), (2, "CPU", 19000, 20), (3, "SOC", 19000, 132)],
               [(1, "CV", 19000, 0), (2, "VDDRQ", 19000, 10), (3, "SYS5V", 5000, 538)]),
        recorded.CLOCKS_SHOW_XAVIER),
    "orin-nano": FakeBoardSpec(
        "orin-nano", "orin-nano", "NVIDIA Jetson Orin Nano Developer Kit",
        ("nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"), "35", _RELEASE_JP6,
        ((0, 1, 2, 3), (4, 5)), ORIN_NANO_CPU_KHZ,
        "/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu", ORIN_NANO_GPU_HZ,
        ORIN_NANO_EMC_HZ,
        _rails([(1, "VDD_IN", 5056, 810), (2, "VDD_CPU_GPU_CV", 5016, 160), (3, "VDD_SOC", 5020, 248)], []),
        recorded.CLOCKS_SHOW_ORIN_NANO, gpu_alias="/sys/class/devfreq/17000000.gpu"),
}

CPU = "/sys/devices/system/cpu"
EMC_CLK = "/sys/kernel/debug/bpmp/debug/clk/emc"


class FakeKernel:
    """A :data:`~powertrain.devices.jetson.sysfs.Writer` with kernel-like checks and a write log."""

    def __init__(self, root: Path, spec: FakeBoardSpec) -> None:
        self.root = root
        self.spec = spec
        self.attempts: list[tuple[str, str]] = []  # every write tried, in order
        self.fail: dict[str, OSError] = {}  # kernel path -> error raised on the next write to it
        self.fail_after: dict[str, int] = {}  # kernel path -> writes that succeed before failing
        self.mangle: dict[str, str] = {}  # kernel path -> value stored instead of the one written

    def _read(self, kernel_path: str) -> str:
        return (self.root / kernel_path.lstrip("/")).read_text().strip()

    def __call__(self, path: Path, value: str) -> None:
        kp = "/" + str(path.relative_to(self.root))
        self.attempts.append((kp, value))
        if kp in self.fail:
            if self.fail_after.get(kp, 0) > 0:
                self.fail_after[kp] -= 1
            else:
                raise self.fail.pop(kp)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        name = path.name
        if "/cpufreq/policy" in kp and name in {"scaling_min_freq", "scaling_max_freq"}:
            pid = int(path.parent.name.removeprefix("policy"))
            cluster = next(c for c in self.spec.clusters if c[0] == pid)
            if not any(c == 0 or self._read(f"{CPU}/cpu{c}/online") == "1" for c in cluster):
                raise OSError(errno.EBUSY, "Device or resource busy")
            self._check_range(path, name.startswith("scaling_min"), int(value), "scaling_min_freq",
                              "scaling_max_freq")
        elif kp.startswith(self.spec.gpu_dir) and name in {"min_freq", "max_freq"}:
            self._check_range(path, name == "min_freq", int(value), "min_freq", "max_freq")
        elif name == "online" and value not in {"0", "1"}:
            raise OSError(errno.EINVAL, "Invalid argument")
        path.write_text(self.mangle.get(kp, value) + "\n")

    @staticmethod
    def _check_range(path: Path, is_min: bool, value: int, min_name: str, max_name: str) -> None:
        other = int((path.parent / (max_name if is_min else min_name)).read_text())
        if (is_min and value > other) or (not is_min and value < other):
            raise OSError(errno.EINVAL, "Invalid argument")


@dataclass
class FakeBoard:
    """A built tree: its root, spec, kernel (writer) and a Sysfs bound to both."""

    root: Path
    spec: FakeBoardSpec
    kernel: FakeKernel
    fs: Sysfs = field(init=False)

    def __post_init__(self) -> None:
        self.fs = Sysfs(self.root, writer=self.kernel)

    def read(self, kernel_path: str) -> str:
        return (self.root / kernel_path.lstrip("/")).read_text().strip()

    def write(self, kernel_path: str, value: object) -> None:
        """Change a file behind the backend's back (as another tool would)."""
        (self.root / kernel_path.lstrip("/")).write_text(f"{value}\n")

    def snapshot(self) -> dict[str, str]:
        """Every regular file's content (stripped), by kernel path (symlinks not followed)."""
        out = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.is_symlink() and not any(p.is_symlink() for p in path.parents):
                out["/" + str(path.relative_to(self.root))] = path.read_text().strip()
        return out


def _put(root: Path, kernel_path: str, content: str | bytes) -> None:
    path = root / kernel_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if content.endswith("\n") else content + "\n")


def build_tree(root: Path, spec: FakeBoardSpec, *, emc: str = "both", rails: str = "hwmon") -> FakeBoard:
    """Lay out ``spec`` under ``root``.

    ``emc``: both, bpmp, cap or none (which EMC control nodes exist); ``rails``: hwmon, iio or none.
    """
    dump = parse_clocks_show(spec.clocks_show)
    n = spec.n_cpus
    online = set(dump.online_cpus)
    _put(root, "/proc/device-tree/model", spec.model.encode() + b"\0")
    _put(root, "/proc/device-tree/compatible", b"\0".join(c.encode() for c in spec.compatible) + b"\0")
    soc = spec.soc_id if spec.soc_id.isdigit() else str(int(spec.soc_id.rsplit(":", 1)[1], 16))
    _put(root, "/sys/module/tegra_fuse/parameters/tegra_chip_id", soc)
    _put(root, "/sys/devices/soc0/soc_id", spec.soc_id)
    _put(root, "/etc/nv_tegra_release", spec.release)
    _put(root, f"{CPU}/present", f"0-{n - 1}")
    _put(root, f"{CPU}/possible", f"0-{n - 1}")
    for cpu in range(n):
        (root / f"{CPU}/cpu{cpu}".lstrip("/")).mkdir(parents=True, exist_ok=True)
        if cpu:
            _put(root, f"{CPU}/cpu{cpu}/online", "1" if cpu in online else "0")
    table = " ".join(map(str, spec.cpu_khz))
    for cluster in spec.clusters:
        pol = f"{CPU}/cpufreq/policy{cluster[0]}"
        line = dump.cpus.get(cluster[0]) or dump.cpus[0]
        policy_files: dict[str, object] = {
            "related_cpus": " ".join(map(str, cluster)),
            "affected_cpus": " ".join(str(c) for c in cluster if c in online or c == 0),
            "scaling_available_frequencies": table, "scaling_min_freq": line.min_khz,
            "scaling_max_freq": line.max_khz, "scaling_cur_freq": line.cur_khz,
            "cpuinfo_min_freq": spec.cpu_khz[0], "cpuinfo_max_freq": spec.cpu_khz[-1],
            "scaling_governor": line.governor or "schedutil"}
        for name, item in policy_files.items():
            _put(root, f"{pol}/{name}", str(item))
        for cpu in cluster:
            link = root / f"{CPU}/cpu{cpu}/cpufreq".lstrip("/")
            link.symlink_to(f"../cpufreq/policy{cluster[0]}")
    assert dump.gpu is not None and dump.emc is not None
    gpu_files: dict[str, object] = {
        "available_frequencies": " ".join(map(str, spec.gpu_hz)), "min_freq": dump.gpu.min_hz,
        "max_freq": dump.gpu.max_hz, "cur_freq": dump.gpu.cur_hz, "governor": "nvhost_podgov"}
    for name, item in gpu_files.items():
        _put(root, f"{spec.gpu_dir}/{name}", str(item))
    if spec.gpu_alias:
        alias = root / spec.gpu_alias.lstrip("/")
        alias.parent.mkdir(parents=True, exist_ok=True)
        alias.symlink_to(os.path.relpath(root / spec.gpu_dir.lstrip("/"), alias.parent))  # relative, as in sysfs
    if emc in {"both", "bpmp"}:
        _put(root, "/sys/kernel/debug/bpmp/debug/emc/possible_rates",
             " ".join(str(v // 1000) for v in spec.emc_hz))
        emc_files: dict[str, object] = {
            "rate": dump.emc.cur_hz, "min_rate": spec.emc_hz[0], "max_rate": spec.emc_hz[-1],
            "mrq_rate_locked": dump.emc.override or 0, "state": 1}
        for name, item in emc_files.items():
            _put(root, f"{EMC_CLK}/{name}", str(item))
    if emc in {"both", "cap"}:
        cap = 0 if dump.emc.max_hz == spec.emc_hz[-1] else dump.emc.max_hz
        _put(root, "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap", str(cap))
    if rails == "hwmon":
        for rail in spec.rails:
            hw = f"/sys/bus/i2c/drivers/ina3221/{rail.chip}/hwmon/hwmon{3 + int(rail.chip[-1])}"
            _put(root, f"{hw}/name", "ina3221")
            _put(root, f"{hw}/in{rail.channel}_label", rail.label)
            _put(root, f"{hw}/in{rail.channel}_input", str(rail.millivolts))
            _put(root, f"{hw}/curr{rail.channel}_input", str(rail.milliamps))
            _put(root, f"{hw}/in{rail.channel + 3}_input", "0")  # shunt voltage, not a rail
    elif rails == "iio":
        for rail in spec.rails:
            iio = f"/sys/bus/i2c/drivers/ina3221x/{rail.chip}/iio:device{int(rail.chip[-1])}"
            ch = rail.channel - 1
            _put(root, f"{iio}/rail_name_{ch}", rail.label)
            _put(root, f"{iio}/in_voltage{ch}_input", str(rail.millivolts))
            _put(root, f"{iio}/in_current{ch}_input", str(rail.milliamps))
            _put(root, f"{iio}/in_power{ch}_input", str(round(rail.power_mw)))
    board = FakeBoard(root, spec, FakeKernel(root, spec))
    return board


def rail_path(board: FakeBoard, label: str, kind: str) -> str:
    """Kernel path of a rail's ``in`` (mV) or ``curr`` (mA) file in the hwmon layout."""
    rail = next(r for r in board.spec.rails if r.label == label)
    return (f"/sys/bus/i2c/drivers/ina3221/{rail.chip}/hwmon/hwmon{3 + int(rail.chip[-1])}/"
            f"{kind}{rail.channel}_input")
