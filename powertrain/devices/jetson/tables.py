"""The board's own tables: CPU topology, CPU/GPU/EMC frequencies, and the mode space built on them.

Frequencies are read from sysfs rather than trusted from the built-in tables of
:mod:`powertrain.boards` (JetPack 6 changed the AGX Orin GPU table, the Orin Nano "Super"
firmware raised its clocks); each difference from the built-in table is reported as a warning
and the board's table wins. Presets are re-resolved from the board type's raw nvpmodel caps
(``BoardSpec.nvpmodel``) against the board's tables, the way cpufreq/devfreq resolve a cap:
the highest entry not above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from powertrain.boards import BOARDS, get_board, resolve_cap
from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.errors import DeviceError
from powertrain.space import JETSON_KNOBS, Knob, ModeSpace

CPU_DIR = "/sys/devices/system/cpu"
#: GPU devfreq directories of every board type, newest layout first (JetPack 6 Orin, Orin JP5, Xavier).
GPU_DEVFREQ_DIRS = tuple(dict.fromkeys(d for b in BOARDS.values() for d in b.sysfs.gpu_devfreq_dirs))
EMC_BPMP_DIR = "/sys/kernel/debug/bpmp/debug/clk/emc"
EMC_POSSIBLE_RATES = "/sys/kernel/debug/bpmp/debug/emc/possible_rates"  # kHz
#: nvpmodel's EMC cap node: JetPack 5 and JetPack 6 ("KNEXT") names.
EMC_CAP_FILES = ("/sys/kernel/nvpmodel_emc_cap/emc_iso_cap", "/sys/kernel/nvpmodel_clk_cap/emc")


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


def board_space(device_type: str, tables: BoardTables) -> tuple[ModeSpace, list[str]]:
    """The mode space of this board, and one warning per table that differs from the built-in one.

    When every table matches, the built-in space itself is returned (same presets and grids).
    """
    board_type = get_board(device_type)
    builtin = board_type.space
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
    presets = {cap.name: resolve_cap(cap, knobs) for cap in board_type.nvpmodel}
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
