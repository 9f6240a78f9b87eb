"""First-principles time and power model of DNN training on a Jetson board.

This is the ground truth of every simulated experiment, so it is built from mechanisms, not
fitted curves (constants and their sources: ``docs/simulator.md``):

* **GPU time**: a roofline per kernel class. Compute-bound kernels (conv/GEMM) and
  memory-bound kernels (norms, activations, optimizer) each take the soft maximum of their
  FLOP time on ``cuda_cores x 2 x f_gpu`` and their byte time on ``bus_bytes x f_emc``.
* **Host time**: kernel launches and framework work in the main thread scale with single-core
  speed (``f_cpu x IPC``, slowed by memory stalls at low EMC clocks); they overlap with GPU
  execution. A pipelined DataLoader is limited by worker count, online cores and CPU clock,
  and all CPU work together is limited by the online cores.
* **Power**: always-on base + CPU (per busy core ``f V(f)^2``, idle online cores leak) + GPU
  (activity x ``f V(f)^2`` per active TPC, plus temperature-dependent leakage) + memory
  (static with EMC clock, plus energy per byte of traffic). Voltages follow per-rail V/f
  curves flat below a knee and rising above it.

Everything is vectorised over modes (numpy arrays), so a whole mode space is evaluated in
one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from powertrain.boards.spec import BoardPhysics
from powertrain.workloads import Workload

FloatArray = np.ndarray


@dataclass(frozen=True)
class UnitVariation:
    """Multiplicative deviations of a unit from its type's nominal constants.

    Fields are scalars for one unit, or arrays (one entry per evaluated mode) to evaluate
    many units at once.
    """

    gpu_speed: float | np.ndarray = 1.0
    cpu_speed: float | np.ndarray = 1.0
    mem_speed: float | np.ndarray = 1.0
    dyn_power: float | np.ndarray = 1.0
    leakage: float | np.ndarray = 1.0
    base_power: float | np.ndarray = 1.0
    thermal_r: float | np.ndarray = 1.0

    @classmethod
    def for_unit(cls, device_type: str, unit: int) -> UnitVariation:
        """Deterministic variation of unit ``unit`` (independent of the experiment seed)."""
        type_id = sum(ord(c) * (i + 1) for i, c in enumerate(device_type))
        rng = np.random.default_rng([7919, type_id, int(unit)])
        n = rng.normal(size=7)
        return cls(
            gpu_speed=1 + 0.015 * n[0],
            cpu_speed=1 + 0.010 * n[1],
            mem_speed=1 + 0.010 * n[2],
            dyn_power=1 + 0.020 * n[3],
            leakage=1 + 0.080 * n[4],
            base_power=1 + 0.030 * n[5],
            thermal_r=1 + 0.050 * n[6],
        )

    @classmethod
    def stacked(cls, units: list[UnitVariation]) -> UnitVariation:
        """One variation whose fields are arrays over ``units`` (evaluate one mode per unit)."""
        names = ("gpu_speed", "cpu_speed", "mem_speed", "dyn_power", "leakage", "base_power", "thermal_r")
        return cls(**{n: np.array([float(getattr(u, n)) for u in units]) for n in names})


@dataclass
class Evaluation:
    """Noise-free time and power of a batch of modes, with the parts that explain them."""

    time_s: FloatArray
    power_w: FloatArray
    t_gpu_s: FloatArray
    t_host_s: FloatArray
    t_loader_s: FloatArray
    gpu_activity: FloatArray
    cpu_busy_cores: FloatArray
    parts_w: dict[str, FloatArray] = field(default_factory=dict)


def _smax(a: FloatArray, b: FloatArray, p: float) -> FloatArray:
    """Smooth maximum: overlapping limits lose a little to imperfect overlap."""
    return np.asarray((a**p + b**p) ** (1.0 / p))


def evaluate(
    board: BoardPhysics,
    workload: Workload,
    cpu_cores: FloatArray,
    cpu_mhz: FloatArray,
    gpu_mhz: FloatArray,
    mem_mhz: FloatArray,
    *,
    tpc_fraction: FloatArray | float = 1.0,
    temp_c: FloatArray | float = 25.0,
    unit: UnitVariation | None = None,
) -> Evaluation:
    """Steady-state minibatch time (s) and board power (W) for each mode."""
    u = unit or UnitVariation()
    cores = np.asarray(cpu_cores, float)
    f_c = np.asarray(cpu_mhz, float)
    f_g = np.asarray(gpu_mhz, float)
    f_m = np.asarray(mem_mhz, float)
    tpc = np.broadcast_to(np.asarray(tpc_fraction, float), f_g.shape)
    temp = np.broadcast_to(np.asarray(temp_c, float), f_g.shape)

    # ---- GPU: roofline per kernel class
    peak_flops = 2.0 * board.gpu_cuda_cores * tpc * f_g * 1e6 * board.gpu_arch_efficiency * u.gpu_speed
    bw = board.mem_bus_bytes * f_m * 1e6 * board.mem_efficiency * u.mem_speed
    t_dense = _smax(workload.dense_gflop * 1e9 / (peak_flops * workload.dense_efficiency),
                    workload.dense_gb * 1e9 / bw, 4.0)
    t_elem = _smax(workload.elem_gflop * 1e9 / (peak_flops * board.gpu_elem_efficiency),
                   workload.elem_gb * 1e9 / bw, 4.0)
    t_gpu = t_dense + t_elem

    # ---- host: launches + framework work in the main thread; memory stalls at low EMC
    stall = 1.0 + board.cpu_mem_stall * (board.max_mem_mhz / f_m - 1.0)
    core_hz = f_c * 1e6 * board.cpu_ipc * u.cpu_speed / stall
    t_issue = workload.kernels * board.launch_kcycles * 1e3 / core_hz
    t_fw = workload.framework_mcycles * 1e6 / core_hz
    t_step = _smax(t_gpu, t_issue, 3.0) + t_fw

    # ---- data loader
    loader_core_s = workload.loader_mcycles * 1e6 / core_hz  # core-seconds per minibatch
    main_core_s = t_issue + t_fw
    if workload.loader_workers > 0:
        parallel = np.minimum(float(workload.loader_workers), np.maximum(cores - 1.0, 0.5))
        t_loader = loader_core_s / parallel
        t_cpu_bound = (loader_core_s + main_core_s) / cores  # all CPU work shares the cores
        t_mb = _smax(_smax(t_step, t_loader, 6.0), t_cpu_bound, 6.0)
    else:
        t_loader = loader_core_s
        t_mb = t_step + loader_core_s

    # ---- power
    v_g = board.gpu_vf.volts(f_g)
    v_c = board.cpu_vf.volts(f_c)
    vg_rel = v_g / board.gpu_vf.v_max
    vc_rel = v_c / board.cpu_vf.v_max
    # Switching activity follows the achieved FLOP rate: a dense kernel at 60 % of peak keeps
    # the SMs fully busy, a latency-bound one (small GEMMs, depthwise convs) far less.
    achieved = workload.dense_gflop * 1e9 / (t_dense * peak_flops)
    dense_activity = 0.3 + 0.7 * np.clip(achieved / 0.6, 0.0, 1.0)
    activity = np.clip((t_dense * dense_activity + t_elem * 0.45) / t_mb, 0.0, 1.0)
    p_gpu_dyn = (board.gpu_dyn_w * u.dyn_power * tpc * activity
                 * (f_g / board.max_gpu_mhz) * vg_rel**2)
    leak_scale = 2.0 ** ((temp - 25.0) / board.leak_doubling_c)
    p_gpu_leak = board.gpu_leak_w * u.leakage * tpc * vg_rel**2.5 * leak_scale
    busy = np.minimum(cores, (loader_core_s + main_core_s) / t_mb)
    p_cpu_dyn = board.cpu_core_w * u.dyn_power * busy * (f_c / board.max_cpu_mhz) * vc_rel**2
    p_cpu_idle = board.cpu_idle_core_w * u.leakage * cores * vc_rel**2.5 * leak_scale
    traffic = workload.total_gb * 1e9 / t_mb  # bytes/s
    p_mem_static = board.mem_static_w_per_ghz * f_m / 1000.0
    p_mem_traffic = board.mem_pj_per_byte * 1e-12 * traffic
    p_mem = p_mem_static + p_mem_traffic
    p_base = board.base_w * u.base_power
    power = p_base + p_cpu_dyn + p_cpu_idle + p_gpu_dyn + p_gpu_leak + p_mem
    return Evaluation(
        time_s=t_mb, power_w=power, t_gpu_s=t_gpu, t_host_s=main_core_s, t_loader_s=t_loader,
        gpu_activity=activity, cpu_busy_cores=busy,
        parts_w={"base": np.broadcast_to(p_base, power.shape), "cpu": p_cpu_dyn + p_cpu_idle,
                 "gpu": p_gpu_dyn + p_gpu_leak, "mem": p_mem,
                 # the same total split by how each part responds to load and temperature:
                 "static": p_base + p_mem_static,
                 "leakage": p_gpu_leak + p_cpu_idle,
                 "dynamic": p_cpu_dyn + p_gpu_dyn + p_mem_traffic},
    )


def idle_power_w(board: BoardPhysics, cores: float, cpu_mhz: float, mem_mhz: float,
                 gpu_mhz: float | None = None, *, tpc_fraction: float = 1.0,
                 temp_c: float = 25.0, unit: UnitVariation | None = None) -> float:
    """Board power with nothing running in a mode; ``gpu_mhz=None`` means the GPU is rail-gated."""
    u = unit or UnitVariation()
    leak = 2.0 ** ((temp_c - 25.0) / board.leak_doubling_c)
    vc_rel = float(board.cpu_vf.volts(np.asarray(cpu_mhz))) / board.cpu_vf.v_max
    power = (board.base_w * u.base_power
             + board.cpu_idle_core_w * u.leakage * cores * vc_rel**2.5 * leak
             + board.mem_static_w_per_ghz * mem_mhz / 1000.0)
    if gpu_mhz is not None:
        vg_rel = float(board.gpu_vf.volts(np.asarray(gpu_mhz))) / board.gpu_vf.v_max
        power += board.gpu_leak_w * u.leakage * tpc_fraction * vg_rel**2.5 * leak
    return float(power)


def steady_temperature_c(board: BoardPhysics, power_w: FloatArray | float, ambient_c: float,
                         fan: str = "max", unit: UnitVariation | None = None) -> FloatArray:
    """Junction temperature a constant power settles to."""
    u = unit or UnitVariation()
    r = board.thermal_r_c_per_w if fan == "max" else board.thermal_r_quiet_c_per_w
    return np.asarray(ambient_c + r * u.thermal_r * np.asarray(power_w, float))
