"""The board's own tables: CPU topology, CPU/GPU/EMC frequencies, and the mode space built on them.

Frequencies are read from sysfs rather than trusted from :mod:`powertrain.jetson_tables`
(JetPack 6 changed the AGX Orin GPU table, the Orin Nano "Super" firmware raised its clocks);
each difference from the built-in table is reported as a warning and the board's table wins.
Presets are re-resolved from the raw nvpmodel caps (:data:`NVPMODEL_CAPS`) against the board's
tables, the way cpufreq/devfreq resolve a cap: the highest entry not above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.errors import DeviceError
from powertrain.jetson_tables import get_space
from powertrain.space import JETSON_KNOBS, Knob, ModeSpace, Preset

CPU_DIR = "/sys/devices/system/cpu"
#: GPU devfreq directories, newest layout first: JetPack 6 Orin, Orin JP5 (ga10b), Xavier (gv11b).
GPU_DEVFREQ_DIRS = (
    "/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu",
    "/sys/class/devfreq/17000000.gpu",
    "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b",
    "/sys/devices/gpu.0/devfreq/17000000.ga10b",
    "/sys/devices/17000000.gv11b/devfreq/17000000.gv11b",
    "/sys/devices/gpu.0/devfreq/17000000.gv11b",
)
EMC_BPMP_DIR = "/sys/kernel/debug/bpmp/debug/clk/emc"
EMC_POSSIBLE_RATES = "/sys/kernel/debug/bpmp/debug/emc/possible_rates"  # kHz
#: nvpmodel's EMC cap node: JetPack 5 and JetPack 6 ("KNEXT") names.
EMC_CAP_FILES = ("/sys/kernel/nvpmodel_emc_cap/emc_iso_cap", "/sys/kernel/nvpmodel_clk_cap/emc")


@dataclass(frozen=True)
class NvpmodelCap:
    """One nvpmodel preset as written in its ``.conf``: caps, -1 (or 0 for EMC) = no cap."""

    name: str
    nvpmodel_id: int
    budget_w: float | None
    cores: int
    cpu_max_khz: int
    gpu_max_hz: int
    emc_max_hz: int
    active_tpcs: int
    note: str = ""


#: Raw caps from the nvpmodel confs (jetson-hw.md §1.6): p3701_0000, t194, p3767_0003.
NVPMODEL_CAPS: dict[str, tuple[NvpmodelCap, ...]] = {
    "orin-agx": (
        NvpmodelCap("MAXN", 0, None, 12, -1, -1, -1, 8, "no cap; module up to 60 W"),
        NvpmodelCap("MODE_15W", 1, 15.0, 4, 1113600, 408000000, 2133000000, 3, "TPC_PG_MASK 248"),
        NvpmodelCap("MODE_30W", 2, 30.0, 8, 1728000, 612000000, -1, 4, "default; TPC_PG_MASK 240"),
        NvpmodelCap("MODE_50W", 3, 50.0, 12, 1497600, 816000000, -1, 8, "TPC_PG_MASK 0"),
    ),
    "xavier-agx": (
        NvpmodelCap("MAXN", 0, None, 8, -1, -1, 0, 4),
        NvpmodelCap("MODE_10W", 1, 10.0, 2, 1200000, 520000000, 1065600000, 2, "TPC mask 5"),
        NvpmodelCap("MODE_15W", 2, 15.0, 4, 1200000, 670000000, 1331200000, 4, "Linux default"),
        NvpmodelCap("MODE_30W_ALL", 3, 30.0, 8, 1200000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_30W_6CORE", 4, 30.0, 6, 1450000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_30W_4CORE", 5, 30.0, 4, 1780000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_30W_2CORE", 6, 30.0, 2, 2100000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_15W_DESKTOP", 7, 15.0, 4, 2188800, 670000000, 1331200000, 4),
    ),
    "orin-nano": (
        NvpmodelCap("15W", 0, 15.0, 6, -1, -1, 0, 4, "default"),
        NvpmodelCap("7W", 1, 7.0, 4, 960000, 408000000, 2133000000, 2, "TPC_PG_MASK 252"),
    ),
}


@dataclass(frozen=True)
class BoardTables:
    """What sysfs says the board can do (frequencies in the kernel's units: kHz / Hz)."""

    cpus: tuple[int, ...]  # present CPU ids
    clusters: tuple[tuple[int, ...], ...]  # CPU ids per cpufreq policy, ordered by policy id
    policy_ids: tuple[int, ...]
    cpu_khz: tuple[int, ...]
    gpu_devfreq_dir: str
    gpu_hz: tuple[int, ...]
    emc_hz: tuple[int, ...] | None  # None: possible_rates unreadable and no default given
    emc_method: str  # bpmp | cap | none (asked to leave EMC alone) | unavailable (no control node)
    emc_cap_file: str | None
    warnings: tuple[str, ...] = ()


def parse_cpu_list(text: str) -> list[int]:
    """``0-3,5,7-8`` -> ``[0, 1, 2, 3, 5, 7, 8]`` (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            cpus.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise DeviceError(f"malformed CPU list {text!r}") from None
    return cpus


def find_gpu_devfreq(fs: Sysfs) -> str:
    """The first GPU devfreq directory that exists (JetPack 6, Orin JP5, then Xavier layouts)."""
    for directory in GPU_DEVFREQ_DIRS:
        if fs.exists(f"{directory}/available_frequencies"):
            return directory
    raise DeviceError(
        f"no GPU devfreq directory under {fs.root}; looked for {', '.join(GPU_DEVFREQ_DIRS)}"
    )


def read_tables(fs: Sysfs, emc_method: str = "auto",
                default_emc_hz: tuple[int, ...] | None = None) -> BoardTables:
    """Read CPU topology and the CPU/GPU/EMC frequency tables from sysfs.

    ``default_emc_hz`` stands in when BPMP's ``possible_rates`` is unreadable (debugfs is root only).
    """
    present = fs.try_read(f"{CPU_DIR}/present")
    if present:
        cpus = parse_cpu_list(present)
    else:
        cpus = [int(m.group(1)) for p in fs.glob(f"{CPU_DIR}/cpu[0-9]*")
                if (m := re.search(r"cpu(\d+)$", p))]
    if not cpus:
        raise DeviceError(f"no CPUs listed under {fs.path(CPU_DIR)}")
    warnings: list[str] = []
    policies = list(fs.glob(f"{CPU_DIR}/cpufreq/policy[0-9]*"))
    if not policies:
        raise DeviceError(f"no cpufreq policies under {fs.path(CPU_DIR + '/cpufreq')}")
    policy_ids, clusters, tables = [], [], []
    for policy in policies:
        policy_ids.append(int(policy.rsplit("policy", 1)[1]))
        related = fs.try_read(f"{policy}/related_cpus") or fs.read(f"{policy}/affected_cpus")
        clusters.append(tuple(int(c) for c in related.split()))
        tables.append(tuple(sorted(set(fs.read_ints(f"{policy}/scaling_available_frequencies")))))
    cpu_khz = tables[0]
    for pid, table in zip(policy_ids[1:], tables[1:], strict=True):
        if table != cpu_khz:
            warnings.append(f"cpufreq policy{pid} lists other frequencies than policy{policy_ids[0]}; "
                            f"using policy{policy_ids[0]}'s")
    gpu_dir = find_gpu_devfreq(fs)
    gpu_hz = tuple(sorted(set(fs.read_ints(f"{gpu_dir}/available_frequencies"))))
    emc_text = fs.try_read(EMC_POSSIBLE_RATES)
    emc_hz = tuple(sorted({int(v) * 1000 for v in emc_text.split()})) if emc_text else default_emc_hz
    cap_file = next((f for f in EMC_CAP_FILES if fs.exists(f)), None)
    has_bpmp = fs.exists(f"{EMC_BPMP_DIR}/mrq_rate_locked") and fs.exists(f"{EMC_BPMP_DIR}/rate")
    if emc_method == "auto":
        method = "bpmp" if has_bpmp else ("cap" if cap_file else "unavailable")
    elif emc_method == "bpmp" and not has_bpmp:
        raise DeviceError(f"emc=bpmp but {fs.path(EMC_BPMP_DIR)} is missing; is debugfs mounted (root)?")
    elif emc_method == "cap" and cap_file is None:
        raise DeviceError(f"emc=cap but none of {', '.join(EMC_CAP_FILES)} exists")
    elif emc_method not in {"bpmp", "cap", "none"}:
        raise DeviceError(f"emc method {emc_method!r} is not known; valid: auto, bpmp, cap, none")
    else:
        method = emc_method
    return BoardTables(tuple(cpus), tuple(clusters), tuple(policy_ids), cpu_khz, gpu_dir, gpu_hz,
                       emc_hz, method, cap_file, tuple(warnings))


def _mhz(values: tuple[int, ...], scale: float) -> tuple[float, ...]:
    return tuple(round(v / scale, 6) for v in values)


def _describe(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}..{values[-1]:g} MHz, {len(values)} values"


def resolve_cap(cap: NvpmodelCap, knobs: dict[str, Knob]) -> Preset:
    """Turn raw nvpmodel caps into a mode of the given knob tables (highest entry not above a cap)."""

    def capped(knob: Knob, cap_value: int, scale: float) -> float:
        return knob.high if cap_value <= 0 else knob.floor(cap_value / scale)

    mode = {
        "cpu_cores": float(min(cap.cores, int(knobs["cpu_cores"].high))),
        "cpu_mhz": capped(knobs["cpu_mhz"], cap.cpu_max_khz, 1e3),
        "gpu_mhz": capped(knobs["gpu_mhz"], cap.gpu_max_hz, 1e6),
        "mem_mhz": capped(knobs["mem_mhz"], cap.emc_max_hz, 1e6),
    }
    return Preset(cap.name, mode, cap.nvpmodel_id, cap.budget_w, cap.active_tpcs, cap.note)


def board_space(device_type: str, tables: BoardTables) -> tuple[ModeSpace, list[str]]:
    """The mode space of this board, and one warning per table that differs from the built-in one.

    When every table matches, the built-in space itself is returned (same presets and grids).
    """
    builtin = get_space(device_type)
    board = {
        "cpu_cores": tuple(float(c) for c in range(1, len(tables.cpus) + 1)),
        "cpu_mhz": _mhz(tables.cpu_khz, 1e3),
        "gpu_mhz": _mhz(tables.gpu_hz, 1e6),
        "mem_mhz": _mhz(tables.emc_hz, 1e6) if tables.emc_hz else builtin.knob("mem_mhz").values,
    }
    warnings = list(tables.warnings)
    changed = []
    for name in JETSON_KNOBS:
        ours, theirs = builtin.knob(name).values, board[name]
        if len(ours) != len(theirs) or any(abs(a - b) > 1e-3 for a, b in zip(ours, theirs, strict=True)):
            changed.append(name)
            if name == "cpu_cores":
                warnings.append(f"this board has {len(theirs)} CPUs, the built-in {device_type} table "
                                f"{len(ours)}; using the board's")
            else:
                warnings.append(f"{name} table on this board ({_describe(theirs)}) differs from the "
                                f"built-in {device_type} table ({_describe(ours)}); using the board's")
    if not changed:
        return builtin, warnings
    knobs = {name: Knob(name, board[name], builtin.knob(name).unit) for name in JETSON_KNOBS}
    presets = {cap.name: resolve_cap(cap, knobs) for cap in NVPMODEL_CAPS[device_type]}
    grids: dict[str, dict[str, tuple[float, ...]]] = {}
    for grid_name, grid in builtin.grids.items():
        new_grid = {}
        for name, values in grid.items():
            if name not in changed:
                new_grid[name] = tuple(values)
            elif name == "cpu_cores":
                new_grid[name] = tuple(v for v in values if v <= knobs[name].high) or knobs[name].values
            else:
                new_grid[name] = knobs[name].values
        grids[grid_name] = new_grid
    space = ModeSpace(builtin.name, tuple(knobs[k] for k in JETSON_KNOBS), presets, grids,
                      f"{builtin.description} (tables read from the board)")
    return space, warnings
