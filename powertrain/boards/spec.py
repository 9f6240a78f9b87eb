"""``BoardSpec``: everything powerfleet knows about one Jetson board type, in one object.

A board type is its frequency tables (in the kernel's units), its nvpmodel presets as the raw
caps of the vendor ``.conf`` (resolved against the tables the way cpufreq/devfreq resolve a
cap), its profiling grids, its physical constants for the simulator, and how to recognise it
and reach its controls on a real board. The mode space, the simulator and the sysfs backend
all derive from it, so adding a board type is one new module in this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np

from powertrain.space import JETSON_KNOBS, Knob, ModeSpace, Preset

FloatArray = np.ndarray


@dataclass(frozen=True)
class VfCurve:
    """Voltage/frequency curve of one rail: flat ``v_min`` up to ``knee_mhz``, then rising."""

    knee_mhz: float
    max_mhz: float
    v_min: float
    v_max: float
    exponent: float = 1.3

    def volts(self, f_mhz: FloatArray) -> FloatArray:
        """Rail voltage (V) at frequency ``f_mhz``."""
        x = np.clip((np.asarray(f_mhz, float) - self.knee_mhz) / (self.max_mhz - self.knee_mhz), 0, 1)
        return self.v_min + (self.v_max - self.v_min) * x**self.exponent


@dataclass(frozen=True)
class Roughness:
    """Persistent per-mode deviations of a board from the smooth model (1 sigma, log units).

    Per mode, on top of the mechanisms:

    * GPU kernel time is scaled by ``exp(gpu_mode * e_gpu)`` (kernel selection, launch
      batching, cache behaviour at that clock combination) and host work (launches,
      framework, data loading) by ``exp(host_mode * e_host)`` (core placement, scheduler
      domains, cluster and interconnect clocks of that configuration); host-side effects are
      larger and less regular, which is why host-bound training is the hardest to predict;
    * the minibatch time by ``exp(time_field * F(z) + time_unit * e_unit)`` and board power
      by ``exp(power_field * F'(z) + power_mode * e_power + power_unit * e'_unit)``.

    ``F`` is a unit-variance smooth random field over the knobs - cores and CPU and GPU clocks
    as fractions of their maxima, the EMC clock in octaves - scaled by ``length`` (neighbouring
    modes see nearly the same field): what the smooth model gets wrong about the real
    workload. The
    ``e`` are independent standard normals per mode. All are clipped at ``clip`` sigmas, so a
    wrong-way step between neighbouring modes stays small. Everything except ``e_unit``
    belongs to the board type and workload - every unit of the type shares it ("minimal
    variability" across identical boards, SIGMETRICS) - and ``board_share`` of the per-mode
    variance is common to every workload on the type (the mode's clock and memory set-up).

    Separately, every entry of a clock table runs at its own achieved speed: the GPU and CPU
    clocks a DVFS table entry actually delivers and the DRAM efficiency of each EMC timing
    table differ from nominal by ``*_opp``; these act through the physics too (a slow GPU
    entry slows GPU-bound work only).
    """

    time_field: float = 0.04
    gpu_mode: float = 0.04
    host_mode: float = 0.06
    time_unit: float = 0.01
    power_field: float = 0.012
    power_mode: float = 0.012
    power_unit: float = 0.006
    gpu_opp: float = 0.025
    cpu_opp: float = 0.03
    mem_opp: float = 0.03
    length: float = 0.2
    board_share: float = 0.5
    clip: float = 2.0
    features: int = 32

    @classmethod
    def off(cls) -> Roughness:
        """The smooth model: no per-mode deviations."""
        return cls(time_field=0.0, gpu_mode=0.0, host_mode=0.0, time_unit=0.0, power_field=0.0, power_mode=0.0,
                   power_unit=0.0, gpu_opp=0.0, cpu_opp=0.0, mem_opp=0.0)

    @property
    def enabled(self) -> bool:
        """Whether any deviation is non-zero."""
        return any(getattr(self, f.name) > 0 for f in fields(self) if f.name.endswith(_SIGMAS))


_SIGMAS = ("_field", "_mode", "_unit", "_opp")



@dataclass(frozen=True)
class BoardPhysics:
    """Hardware constants of one Jetson board type (nominal unit) for the simulator."""

    name: str
    gpu_cuda_cores: int
    gpu_tpcs: int
    gpu_arch_efficiency: float  # achieved/peak FP32 ratio of the architecture (dual-issue etc.)
    gpu_elem_efficiency: float  # fraction of peak memory-bound kernels reach on their FLOPs
    mem_bus_bytes: float  # bytes per EMC clock: BW = bus_bytes * f_emc
    mem_efficiency: float  # achievable fraction of peak DRAM bandwidth
    cpu_ipc: float  # per-clock speed relative to Cortex-A78AE
    launch_kcycles: float  # host cycles per kernel launch (kcycles)
    cpu_mem_stall: float  # host slowdown per unit of (f_emc_max / f_emc - 1)
    gpu_vf: VfCurve
    cpu_vf: VfCurve
    base_w: float  # always-on SoC, IO and carrier rails
    cpu_core_w: float  # dynamic power of one fully busy core at max clock and voltage
    cpu_idle_core_w: float  # leakage of one online idle core at max voltage
    gpu_dyn_w: float  # GPU dynamic power at max clock, activity 1, all TPCs
    gpu_leak_w: float  # GPU leakage at max voltage and 25 C, all TPCs, when not rail-gated
    mem_static_w_per_ghz: float  # EMC/DRAM background power per GHz of EMC clock
    mem_pj_per_byte: float  # DRAM + controller energy per byte of traffic
    thermal_r_c_per_w: float  # junction-to-ambient resistance with the fan at max
    thermal_r_quiet_c_per_w: float  # ... with the quiet fan profile
    thermal_tau_s: float  # thermal time constant
    max_cpu_mhz: float = 0.0
    max_gpu_mhz: float = 0.0
    max_mem_mhz: float = 0.0
    leak_doubling_c: float = 35.0  # leakage doubles every this many degrees
    trip_c: float = 99.0  # passive throttling trip (cpu-thermal sw-throttle)
    release_c: float = 96.0  # throttling steps back below this (hysteresis)
    cpu_clusters: tuple[int, ...] = ()  # cores per CPU cluster, in onlining order (cpu0 first)
    cpu_cluster_w: float = 0.0  # one online cluster (L3/DSU) at max CPU clock and voltage, 25 C
    gpu_activity_floor: float = 0.0  # switching activity of a running GPU at pinned clocks when idle
    roughness: Roughness = field(default_factory=Roughness)

    def clusters_online(self, cpu_cores: FloatArray) -> FloatArray:
        """Clusters with at least one online core (cores are onlined in order, cpu0 first)."""
        cores = np.asarray(cpu_cores, float)
        if not self.cpu_clusters:
            return np.zeros_like(cores)
        starts = np.cumsum((0, *self.cpu_clusters[:-1]))
        return np.asarray((cores[..., None] > starts).sum(axis=-1), float)


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


@dataclass(frozen=True)
class SysfsLayout:
    """How a real board of this type is recognised and where its controls live."""

    soc_id: int  # tegra_chip_id: 25 = tegra194 (Xavier), 35 = tegra234 (Orin)
    #: module P-numbers (``p3701-0000``; ``p2888-*`` = every variant) -> a note for users
    modules: Mapping[str, str]
    #: lowercase fragments of ``/proc/device-tree/model`` when no P-number is listed
    model_fragments: tuple[str, ...]
    #: GPU devfreq directories, newest JetPack layout first
    gpu_devfreq_dirs: tuple[str, ...]
    cpu_clusters: tuple[int, ...]  # cores per cpufreq policy (cluster)


def resolve_cap(cap: NvpmodelCap, knobs: Mapping[str, Knob]) -> Preset:
    """Raw nvpmodel caps as a mode of the given knob tables (highest entry not above a cap)."""

    def capped(knob: Knob, cap_value: int, scale: float) -> float:
        return knob.high if cap_value <= 0 else knob.floor(cap_value / scale)

    mode = {
        "cpu_cores": float(min(cap.cores, int(knobs["cpu_cores"].high))),
        "cpu_mhz": capped(knobs["cpu_mhz"], cap.cpu_max_khz, 1e3),
        "gpu_mhz": capped(knobs["gpu_mhz"], cap.gpu_max_hz, 1e6),
        "mem_mhz": capped(knobs["mem_mhz"], cap.emc_max_hz, 1e6),
    }
    return Preset(cap.name, mode, cap.nvpmodel_id, cap.budget_w, cap.active_tpcs, cap.note)


@dataclass(frozen=True)
class BoardSpec:
    """One Jetson board type (see the module docstring). Frequencies in kHz (CPU) and Hz."""

    name: str
    description: str
    cpu_khz: tuple[int, ...]
    gpu_hz: tuple[int, ...]
    emc_hz: tuple[int, ...]
    nvpmodel: tuple[NvpmodelCap, ...]
    #: named profiling grids: knob -> values in MHz (cores as counts)
    grids: Mapping[str, Mapping[str, tuple[float, ...]]]
    physics: BoardPhysics
    sysfs: SysfsLayout
    sources: Mapping[str, str] = field(default_factory=dict)  # table -> where it comes from

    def __post_init__(self) -> None:
        if self.physics.cpu_clusters != self.sysfs.cpu_clusters:
            raise ValueError(f"{self.name}: physics and sysfs disagree on the CPU clusters "
                             f"({self.physics.cpu_clusters} vs {self.sysfs.cpu_clusters})")

    @property
    def cores(self) -> int:
        """CPU cores of the board."""
        return sum(self.sysfs.cpu_clusters)

    def knobs(self) -> dict[str, Knob]:
        """The four knob tables in MHz (cores as counts), keyed by knob name."""
        return {
            "cpu_cores": Knob("cpu_cores", tuple(float(c) for c in range(1, self.cores + 1)), "cores"),
            "cpu_mhz": Knob("cpu_mhz", tuple(v / 1e3 for v in self.cpu_khz), "MHz"),
            "gpu_mhz": Knob("gpu_mhz", tuple(v / 1e6 for v in self.gpu_hz), "MHz"),
            "mem_mhz": Knob("mem_mhz", tuple(v / 1e6 for v in self.emc_hz), "MHz"),
        }

    @cached_property
    def space(self) -> ModeSpace:
        """The board type's mode space: knob tables, resolved presets and grids."""
        knobs = self.knobs()
        presets = {cap.name: resolve_cap(cap, knobs) for cap in self.nvpmodel}
        grids = {g: {k: tuple(float(x) for x in v) for k, v in grid.items()} for g, grid in self.grids.items()}
        return ModeSpace(self.name, tuple(knobs[k] for k in JETSON_KNOBS), presets, grids, self.description)


def tegra_cpu_khz(top_step_khz: int, extra_top_khz: int | None = None) -> tuple[int, ...]:
    """Tegra cpufreq tables: 115.2 MHz plus 76.8 MHz steps, optionally a non-step top value."""
    values = list(range(115200, top_step_khz + 1, 76800))
    if extra_top_khz is not None:
        values.append(extra_top_khz)
    return tuple(values)


def mhz(khz: tuple[int, ...] | list[int]) -> tuple[float, ...]:
    """kHz values in MHz (for grids)."""
    return tuple(v / 1e3 for v in khz)
