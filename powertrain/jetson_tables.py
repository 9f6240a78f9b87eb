"""The real Jetson mode tables: frequencies, presets and the PowerTrain profiling grids.

Sources are in ``docs/simulator.md`` and the project research notes (``jetson-hw.md``):
CPU tables from ``scaling_available_frequencies``, GPU tables from devfreq
``available_frequencies`` (JetPack 5), EMC rates from BPMP ``possible_rates``, presets from
the NVIDIA nvpmodel ``.conf`` files. Frequencies are stored in MHz. A preset's caps are
resolved to table values the way cpufreq/devfreq do: the highest entry not above the cap.
"""

from __future__ import annotations

from powertrain.errors import UnknownNameError
from powertrain.space import JETSON_KNOBS, Knob, ModeSpace, Preset


def _khz(values: list[int]) -> tuple[float, ...]:
    return tuple(v / 1000.0 for v in values)


def _hz(values: list[int]) -> tuple[float, ...]:
    return tuple(v / 1e6 for v in values)


def _tegra_cpu_khz(top_step_khz: int, extra_top_khz: int | None = None) -> list[int]:
    """Tegra cpufreq tables: 115.2 MHz plus 76.8 MHz steps, optionally a non-step top value."""
    values = list(range(115200, top_step_khz + 1, 76800))
    if extra_top_khz is not None:
        values.append(extra_top_khz)
    return values


# ---------------------------------------------------------------- AGX Orin (p3701-0000/0005, JP5)
ORIN_AGX_CPU_KHZ = _tegra_cpu_khz(2188800, 2201600)  # 29 values [SCRIPT], max 2201600 [DEV]
ORIN_AGX_GPU_HZ = [
    114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 726750000,
    828750000, 930750000, 1032750000, 1134750000, 1236750000, 1300500000,
]  # 13 values, JetPack 5 devfreq table [SCRIPT + DEV]
ORIN_AGX_EMC_HZ = [204000000, 665600000, 2133000000, 3199000000]  # 4 values [SCRIPT + DEV]
# PowerTrain reference grid: even core counts, every other CPU step plus the maximum.
ORIN_AGX_GRID_CPU_KHZ = [*range(268800, 2112000 + 1, 153600), 2201600]  # 14 values [SCRIPT]


def _orin_agx() -> ModeSpace:
    cpu = _khz(ORIN_AGX_CPU_KHZ)
    gpu = _hz(ORIN_AGX_GPU_HZ)
    emc = _hz(ORIN_AGX_EMC_HZ)
    space = _space("orin-agx", range(1, 13), cpu, gpu, emc,
                   "Jetson AGX Orin 64GB / 32GB dev kit (p3701-0000/0005), JetPack 5")
    gpu_knob, cpu_knob = space.knob("gpu_mhz"), space.knob("cpu_mhz")
    # nvpmodel_p3701_0000.conf [CONF]. Its GPU caps (408/612/816 MHz) are JetPack 6 table
    # values; on the JP5 table they resolve to the highest entry not above the cap.
    presets = {
        "MAXN": Preset("MAXN", {"cpu_cores": 12, "cpu_mhz": cpu[-1], "gpu_mhz": gpu[-1],
                                "mem_mhz": emc[-1]}, 0, None, 8, "no cap; module up to 60 W"),
        "MODE_15W": Preset("MODE_15W", {"cpu_cores": 4, "cpu_mhz": cpu_knob.floor(1113.6),
                                        "gpu_mhz": gpu_knob.floor(408.0), "mem_mhz": 2133.0},
                           1, 15.0, 3, "TPC_PG_MASK 248"),
        "MODE_30W": Preset("MODE_30W", {"cpu_cores": 8, "cpu_mhz": cpu_knob.floor(1728.0),
                                        "gpu_mhz": gpu_knob.floor(612.0), "mem_mhz": emc[-1]},
                           2, 30.0, 4, "default; TPC_PG_MASK 240"),
        "MODE_50W": Preset("MODE_50W", {"cpu_cores": 12, "cpu_mhz": cpu_knob.floor(1497.6),
                                        "gpu_mhz": gpu_knob.floor(816.0), "mem_mhz": emc[-1]},
                           3, 50.0, 8, "TPC_PG_MASK 0"),
    }
    grids = {
        "powertrain": {
            "cpu_cores": (2.0, 4.0, 6.0, 8.0, 10.0, 12.0),
            "cpu_mhz": _khz(ORIN_AGX_GRID_CPU_KHZ),
            "gpu_mhz": gpu,
            "mem_mhz": emc,
        }
    }
    return ModeSpace(space.name, space.knobs, presets, grids, space.description)


# ---------------------------------------------------------------- AGX Xavier (p2888, JP4/5)
XAVIER_AGX_CPU_KHZ = _tegra_cpu_khz(2265600)  # 29 values [SCRIPT, two sources]
XAVIER_AGX_GPU_HZ = [
    114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 675750000,
    828750000, 905250000, 1032750000, 1198500000, 1236750000, 1338750000, 1377000000,
]  # 14 values [SCRIPT]
XAVIER_AGX_EMC_HZ = [
    204000000, 408000000, 665600000, 800000000, 1065600000, 1331200000, 1600000000,
    1866000000, 2133000000,
]  # 9 values [SCRIPT]; the nvpmodel EMC caps are members [CONF]


def _xavier_agx() -> ModeSpace:
    cpu = _khz(XAVIER_AGX_CPU_KHZ)
    gpu = _hz(XAVIER_AGX_GPU_HZ)
    emc = _hz(XAVIER_AGX_EMC_HZ)
    space = _space("xavier-agx", range(1, 9), cpu, gpu, emc, "Jetson AGX Xavier (p2888)")
    c, g = space.knob("cpu_mhz"), space.knob("gpu_mhz")

    def preset(name: str, pid: int, budget: float | None, cores: int, cpu_cap: float,
               gpu_cap: float, emc_mhz: float, tpcs: int, note: str = "") -> Preset:
        mode = {"cpu_cores": float(cores), "cpu_mhz": c.floor(cpu_cap),
                "gpu_mhz": g.floor(gpu_cap), "mem_mhz": emc_mhz}
        return Preset(name, mode, pid, budget, tpcs, note)

    # nvpmodel_t194.conf [CONF]; caps not in the tables resolve to the entry below them.
    presets = {
        "MAXN": preset("MAXN", 0, None, 8, 2265.6, 1377.0, 2133.0, 4),
        "MODE_10W": preset("MODE_10W", 1, 10.0, 2, 1200.0, 520.0, 1065.6, 2, "TPC mask 5"),
        "MODE_15W": preset("MODE_15W", 2, 15.0, 4, 1200.0, 670.0, 1331.2, 4, "Linux default"),
        "MODE_30W_ALL": preset("MODE_30W_ALL", 3, 30.0, 8, 1200.0, 900.0, 1600.0, 4),
        "MODE_30W_6CORE": preset("MODE_30W_6CORE", 4, 30.0, 6, 1450.0, 900.0, 1600.0, 4),
        "MODE_30W_4CORE": preset("MODE_30W_4CORE", 5, 30.0, 4, 1780.0, 900.0, 1600.0, 4),
        "MODE_30W_2CORE": preset("MODE_30W_2CORE", 6, 30.0, 2, 2100.0, 900.0, 1600.0, 4),
        "MODE_15W_DESKTOP": preset("MODE_15W_DESKTOP", 7, 15.0, 4, 2188.8, 670.0, 1331.2, 4),
    }
    # Our evaluation grid for Xavier (PowerTrain's own Xavier modes are not published):
    # even core counts, every other CPU step plus the maximum, all GPU and EMC values.
    grid_cpu = (*_khz(list(range(268800, 2112000 + 1, 153600))), 2265.6)
    grids = {"powertrain": {"cpu_cores": (2.0, 4.0, 6.0, 8.0), "cpu_mhz": grid_cpu,
                            "gpu_mhz": gpu, "mem_mhz": emc}}
    return ModeSpace(space.name, space.knobs, presets, grids, space.description)


# ---------------------------------------------------------------- Orin Nano 8GB (p3767-0003), original
ORIN_NANO_CPU_KHZ = _tegra_cpu_khz(1497600, 1510400)  # 20 values; MaxFreq=1510400 [DEV]
# GPU: min 306 and max 624.75 MHz are [DEV]; 510 is in the PowerTrain Nano sweep [SCRIPT];
# 408 is UNVERIFIED (inferred from the 102 MHz JP6 step and the 7W preset cap of 408 MHz).
ORIN_NANO_GPU_HZ = [306000000, 408000000, 510000000, 624750000]
ORIN_NANO_EMC_HZ = [204000000, 665600000, 2133000000]  # possible_rates [DEV]
ORIN_NANO_GRID_CPU_KHZ = [*range(268800, 1497600 + 1, 153600), 1510400]  # 10 values [SCRIPT]


def _orin_nano() -> ModeSpace:
    cpu = _khz(ORIN_NANO_CPU_KHZ)
    gpu = _hz(ORIN_NANO_GPU_HZ)
    emc = _hz(ORIN_NANO_EMC_HZ)
    space = _space("orin-nano", range(1, 7), cpu, gpu, emc,
                   "Jetson Orin Nano 8GB (p3767-0003), original firmware")
    c, g = space.knob("cpu_mhz"), space.knob("gpu_mhz")
    # nvpmodel_p3767_0003.conf [CONF]
    presets = {
        "15W": Preset("15W", {"cpu_cores": 6.0, "cpu_mhz": cpu[-1], "gpu_mhz": gpu[-1],
                              "mem_mhz": 2133.0}, 0, 15.0, 4, "default"),
        "7W": Preset("7W", {"cpu_cores": 4.0, "cpu_mhz": c.floor(960.0), "gpu_mhz": g.floor(408.0),
                            "mem_mhz": 2133.0}, 1, 7.0, 2, "TPC_PG_MASK 252"),
    }
    # PowerTrain Nano sweep: 3 cores x 10 CPU x 3 GPU x 2 EMC = 180 modes [SCRIPT]
    grids = {"powertrain": {"cpu_cores": (2.0, 4.0, 6.0), "cpu_mhz": _khz(ORIN_NANO_GRID_CPU_KHZ),
                            "gpu_mhz": (306.0, 510.0, 624.75), "mem_mhz": (665.6, 2133.0)}}
    return ModeSpace(space.name, space.knobs, presets, grids, space.description)


def _space(name: str, cores: range, cpu: tuple[float, ...], gpu: tuple[float, ...],
           emc: tuple[float, ...], description: str) -> ModeSpace:
    knobs = (
        Knob("cpu_cores", tuple(float(c) for c in cores), "cores"),
        Knob("cpu_mhz", cpu, "MHz"),
        Knob("gpu_mhz", gpu, "MHz"),
        Knob("mem_mhz", emc, "MHz"),
    )
    assert tuple(k.name for k in knobs) == JETSON_KNOBS
    return ModeSpace(name, knobs, {}, {}, description)


_BUILDERS = {"orin-agx": _orin_agx, "xavier-agx": _xavier_agx, "orin-nano": _orin_nano}
_CACHE: dict[str, ModeSpace] = {}


def device_types() -> list[str]:
    """Names of the Jetson device types with built-in tables."""
    return list(_BUILDERS)


def get_space(device_type: str) -> ModeSpace:
    """The mode space of a Jetson device type; unknown names list the valid ones."""
    if device_type not in _BUILDERS:
        raise UnknownNameError(
            f"device {device_type!r} is not known; valid devices: {', '.join(_BUILDERS)}"
        )
    if device_type not in _CACHE:
        _CACHE[device_type] = _BUILDERS[device_type]()
    return _CACHE[device_type]
