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
  curves flat below a knee and rising above it. Each CPU cluster brought online adds its own
  power (L3/DSU clock and leakage), and with clocks pinned a running GPU never drops below an
  activity floor.
* **Roughness**: a real board is not the smooth model. Each (board type, unit, mode) carries
  persistent deviations of time and power - a smooth random field over the log knobs plus a
  bounded per-mode term, part shared by every workload on the board and part per workload -
  derived by hashing, so every caller of :func:`evaluate` sees the same board.

Everything is vectorised over modes (numpy arrays), so a whole mode space is evaluated in
one call.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from powertrain.boards.spec import BoardPhysics
from powertrain.workloads import Workload

FloatArray = np.ndarray


@dataclass(frozen=True)
class RoughFactors:
    """Per-mode multipliers of one unit (see :class:`Roughness`)."""

    gpu: FloatArray  # GPU kernel time
    host: FloatArray  # host work time
    time: FloatArray  # minibatch time
    power: FloatArray  # board power



@dataclass(frozen=True)
class UnitVariation:
    """Multiplicative deviations of a unit from its type's nominal constants.

    Fields are scalars for one unit, or arrays (one entry per evaluated mode) to evaluate
    many units at once. ``unit`` identifies the physical board and keys its roughness; None
    is the smooth nominal model.
    """

    gpu_speed: float | np.ndarray = 1.0
    cpu_speed: float | np.ndarray = 1.0
    mem_speed: float | np.ndarray = 1.0
    dyn_power: float | np.ndarray = 1.0
    leakage: float | np.ndarray = 1.0
    base_power: float | np.ndarray = 1.0
    thermal_r: float | np.ndarray = 1.0
    unit: int | np.ndarray | None = None

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
            unit=int(unit),
        )

    @classmethod
    def stacked(cls, units: list[UnitVariation]) -> UnitVariation:
        """One variation whose fields are arrays over ``units`` (evaluate one mode per unit)."""
        values: dict[str, Any] = {n: np.array([float(getattr(u, n)) for u in units]) for n in _FACTORS}
        ids = [u.unit for u in units]
        values["unit"] = None if any(i is None for i in ids) else np.array([int(np.asarray(i)) for i in ids])
        return cls(**values)

    def take(self, rows: np.ndarray) -> UnitVariation:
        """The entries ``rows`` of a stacked variation (a scalar one is repeated)."""
        idx = np.asarray(rows, int)

        def pick(value: Any) -> np.ndarray:
            arr = np.asarray(value)
            return arr[idx] if arr.ndim else np.full(idx.shape, arr.item())

        values: dict[str, Any] = {n: pick(getattr(self, n)).astype(float) for n in _FACTORS}
        values["unit"] = None if self.unit is None else pick(self.unit).astype(np.int64)
        return UnitVariation(**values)

    def repeat(self, row: int, n: int) -> UnitVariation:
        """Entry ``row`` of a stacked variation repeated ``n`` times (many modes of one unit)."""
        return self.take(np.full(n, int(row)))


_FACTORS = tuple(f.name for f in fields(UnitVariation) if f.name != "unit")


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
    host_share: FloatArray | float = 0.0  # share of the step the main thread is busy


def _smax(a: FloatArray, b: FloatArray, p: float) -> FloatArray:
    """Smooth maximum: overlapping limits lose a little to imperfect overlap."""
    return np.asarray((a**p + b**p) ** (1.0 / p))


_U64 = np.uint64


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-mixed hash of uint64 arrays (wraps on overflow)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> _U64(31)))


def _salt(*parts: str) -> np.uint64:
    """A stable 64-bit salt from strings (independent of Python's hash seed)."""
    text = "/".join(parts).encode()
    return _U64((zlib.crc32(text) << 32) | zlib.crc32(text[::-1]))


def _uniform(keys: np.ndarray) -> np.ndarray:
    """Uniform in (0, 1) from hashed keys (53 bits)."""
    return np.asarray(((keys >> _U64(11)).astype(np.float64) + 0.5) / float(1 << 53))


def _normal(keys: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Standard normal per key (Box-Muller on two hashed uniforms)."""
    u1 = _uniform(_mix64(keys ^ salt))
    u2 = _uniform(_mix64(keys ^ _mix64(np.atleast_1d(salt))[0]))
    return np.asarray(np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))


def _mode_keys(base: np.ndarray, knobs: tuple[np.ndarray, ...]) -> np.ndarray:
    """Hash of ``base`` (per row) with the knob values (to 0.001 of their unit)."""
    h = base
    for values in knobs:
        h = _mix64(h ^ np.round(values * 1000.0).astype(np.int64).astype(np.uint64))
    return h


def _field(salt: np.uint64, z: np.ndarray, features: int) -> np.ndarray:
    """A unit-variance smooth random field at points ``z`` (rows), a pure function of ``salt``.

    Random Fourier features: ``sqrt(2/M) * sum_i cos(w_i . z + b_i)`` with ``w`` uniform of
    unit variance per dimension and ``b`` uniform in [0, 2 pi), drawn by hashing
    (salt, feature, dimension).
    """
    dims = z.shape[1]
    index = np.arange(features * (dims + 1), dtype=np.uint64)
    draws = _uniform(_mix64(index * _U64(0x9E3779B97F4A7C15) ^ salt)).reshape(features, dims + 1)
    omega = (2.0 * draws[:, :dims] - 1.0) * np.sqrt(3.0)
    phase = 2.0 * np.pi * draws[:, dims]
    return np.asarray(np.sqrt(2.0 / features) * np.cos(z @ omega.T + phase).sum(axis=1))


def opp_factors(board: BoardPhysics, knob: str, values: FloatArray) -> FloatArray:
    """Achieved speed of each clock-table entry relative to nominal (``gpu``, ``cpu``, ``mem``).

    A pure function of (board type, knob, value): every unit of the type shares its tables.
    """
    r = board.roughness
    sigma = {"gpu": r.gpu_opp, "cpu": r.cpu_opp, "mem": r.mem_opp}[knob]
    v = np.atleast_1d(np.asarray(values, float))
    if sigma <= 0:
        return np.ones_like(v)
    keys = _mix64(np.round(v * 1000.0).astype(np.int64).astype(np.uint64) ^ _salt(board.name, knob, "opp"))
    return np.asarray(np.exp(sigma * np.clip(_normal(keys, _salt(knob, "opp")), -r.clip, r.clip)))


def roughness_factors(board: BoardPhysics, workload: str, unit: int | np.ndarray,
                      knobs: tuple[FloatArray, FloatArray, FloatArray, FloatArray]) -> RoughFactors:
    """Multiplicative deviations of ``unit`` from the smooth model per mode.

    A pure function of (board type, unit, workload, knob values): the simulated board, its
    noise-free truth and the analytic engine all see the same rough board.
    """
    r = board.roughness
    arrays = tuple(np.atleast_1d(np.asarray(k, float)) for k in knobs)
    n = max(a.size for a in arrays)
    cols = tuple(np.broadcast_to(a, (n,)) for a in arrays)
    units = np.broadcast_to(np.atleast_1d(np.asarray(unit, np.int64)), (n,)).astype(np.uint64)
    type_keys = _mode_keys(np.full(n, _salt(board.name, "type")), cols)
    work_keys = _mode_keys(np.full(n, _salt(board.name, "workload", workload)), cols)
    unit_keys = _mode_keys(_mix64(units ^ _salt(board.name, "unit", workload)), cols)
    share, own = np.sqrt(r.board_share), np.sqrt(1.0 - r.board_share)
    # field coordinates: cores and CPU/GPU clocks as fractions of their maxima (their tables
    # step evenly), the EMC clock in octaves below its maximum over 4 octaves (its table is
    # geometric), with twice the correlation length (its few levels are distinct set-ups)
    maxima = (float(sum(board.cpu_clusters)) or float(np.max(cols[0])), board.max_cpu_mhz, board.max_gpu_mhz)
    z = np.column_stack([*(c / m for c, m in zip(cols[:3], maxima, strict=True)),
                         0.5 * np.log2(board.max_mem_mhz / np.maximum(cols[3], 1e-9)) / 4.0]) / max(r.length, 1e-9)

    def bounded(e: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(e, -r.clip, r.clip))

    def per_mode(name: str) -> np.ndarray:
        return bounded(share * _normal(type_keys, _salt(name, "type")) + own * _normal(work_keys, _salt(name, "wl")))

    # the field depends on the mode only: evaluate it once per distinct mode (many units often
    # share a mode, as in the analytic fleet engine)
    _, first, z_index = np.unique(type_keys, return_index=True, return_inverse=True)
    z_unique = z[first]

    def field_of(name: str) -> np.ndarray:
        return bounded(_field(_salt(board.name, workload, name, "field"), z_unique, r.features)[z_index.ravel()])

    gpu = r.gpu_mode * per_mode("gpu") if r.gpu_mode > 0 else np.zeros(n)
    host = r.host_mode * per_mode("host") if r.host_mode > 0 else np.zeros(n)
    time = np.zeros(n)
    if r.time_field > 0:
        time += r.time_field * field_of("time")
    if r.time_unit > 0:
        time += r.time_unit * bounded(_normal(unit_keys, _salt("time", "unit")))
    power = np.zeros(n)
    if r.power_field > 0:
        power += r.power_field * field_of("power")
    if r.power_mode > 0:
        power += r.power_mode * per_mode("power")
    if r.power_unit > 0:
        power += r.power_unit * bounded(_normal(unit_keys, _salt("power", "unit")))
    return RoughFactors(np.exp(gpu), np.exp(host), np.exp(time), np.exp(power))


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
    rf: RoughFactors | None = None
    opp_g: FloatArray | float = 1.0
    opp_c: FloatArray | float = 1.0
    opp_m: FloatArray | float = 1.0
    if u.unit is not None and board.roughness.enabled:  # the board's persistent deviations
        rf = roughness_factors(board, workload.name, u.unit, (cores, f_c, f_g, f_m))
        opp_g, opp_c, opp_m = (opp_factors(board, "gpu", f_g), opp_factors(board, "cpu", f_c),
                               opp_factors(board, "mem", f_m))
    gpu_rough = rf.gpu if rf is not None else 1.0
    host_rough = rf.host if rf is not None else 1.0

    # ---- GPU: roofline per kernel class
    peak_flops = (2.0 * board.gpu_cuda_cores * tpc * f_g * 1e6 * board.gpu_arch_efficiency * u.gpu_speed
                  * opp_g)
    bw = board.mem_bus_bytes * f_m * 1e6 * board.mem_efficiency * u.mem_speed * opp_m
    t_dense = _smax(workload.dense_gflop * 1e9 / (peak_flops * workload.dense_efficiency),
                    workload.dense_gb * 1e9 / bw, 4.0)
    t_elem = _smax(workload.elem_gflop * 1e9 / (peak_flops * board.gpu_elem_efficiency),
                   workload.elem_gb * 1e9 / bw, 4.0)
    t_dense = t_dense * gpu_rough
    t_elem = t_elem * gpu_rough
    t_gpu = t_dense + t_elem

    # ---- host: launches + framework work in the main thread; memory stalls at low EMC
    stall = 1.0 + board.cpu_mem_stall * (board.max_mem_mhz / f_m - 1.0)
    core_hz = f_c * 1e6 * board.cpu_ipc * u.cpu_speed * opp_c / (stall * host_rough)
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

    # the smooth model's error on the whole step: a slower step does the same work, so its
    # power spreads thinner below
    if rf is not None:
        t_mb = t_mb * rf.time

    # ---- power
    v_g = board.gpu_vf.volts(f_g)
    v_c = board.cpu_vf.volts(f_c)
    vg_rel = v_g / board.gpu_vf.v_max
    vc_rel = v_c / board.cpu_vf.v_max
    # Switching activity follows the achieved FLOP rate: a dense kernel at 60 % of peak keeps
    # the SMs fully busy, a latency-bound one (small GEMMs, depthwise convs) far less. With
    # clocks pinned (jetson_clocks, as profiling harnesses run) a GPU waiting on the host
    # keeps its clock tree toggling: activity never drops below the floor while a job runs.
    achieved = workload.dense_gflop * 1e9 / (t_dense * peak_flops)
    dense_activity = 0.3 + 0.7 * np.clip(achieved / 0.6, 0.0, 1.0)
    busy_activity = np.clip((t_dense * dense_activity + t_elem * 0.45) / t_mb, 0.0, 1.0)
    floor = board.gpu_activity_floor
    activity = floor + (1.0 - floor) * busy_activity
    p_gpu_dyn = (board.gpu_dyn_w * u.dyn_power * tpc * activity
                 * (f_g / board.max_gpu_mhz) * vg_rel**2)
    leak_scale = 2.0 ** ((temp - 25.0) / board.leak_doubling_c)
    p_gpu_leak = board.gpu_leak_w * u.leakage * tpc * vg_rel**2.5 * leak_scale
    busy = np.minimum(cores, (loader_core_s + main_core_s) / t_mb)
    p_cpu_dyn = board.cpu_core_w * u.dyn_power * busy * (f_c / board.max_cpu_mhz) * vc_rel**2
    p_cpu_idle = board.cpu_idle_core_w * u.leakage * cores * vc_rel**2.5 * leak_scale
    p_cluster_clock, p_cluster_leak = _cluster_power(board, cores, f_c, vc_rel, leak_scale, u)
    traffic = workload.total_gb * 1e9 / t_mb  # bytes/s
    p_mem_static = board.mem_static_w_per_ghz * f_m / 1000.0
    p_mem_traffic = board.mem_pj_per_byte * 1e-12 * traffic
    p_mem = p_mem_static + p_mem_traffic
    p_base = np.broadcast_to(board.base_w * u.base_power, t_mb.shape)
    parts = {"base": p_base, "cpu": p_cpu_dyn + p_cpu_idle + p_cluster_clock + p_cluster_leak,
             "gpu": p_gpu_dyn + p_gpu_leak, "mem": p_mem,
             # the same total split by how each part responds to load and temperature:
             "static": p_base + p_mem_static + p_cluster_clock,
             "leakage": p_gpu_leak + p_cpu_idle + p_cluster_leak,
             "dynamic": p_cpu_dyn + p_gpu_dyn + p_mem_traffic}
    if rf is not None:
        parts = {k: np.asarray(v * rf.power) for k, v in parts.items()}
    power = parts["static"] + parts["leakage"] + parts["dynamic"]
    return Evaluation(
        time_s=t_mb, power_w=power, t_gpu_s=t_gpu, t_host_s=main_core_s, t_loader_s=t_loader,
        gpu_activity=activity, cpu_busy_cores=busy, parts_w=parts,
        host_share=np.clip((main_core_s + (loader_core_s if workload.loader_workers == 0 else 0.0)) / t_mb, 0, 1),
    )


CLUSTER_CLOCK_SHARE = 0.8  # of cpu_cluster_w: L3/DSU clock power while a job keeps the cluster awake


def _cluster_power(board: BoardPhysics, cores: FloatArray, cpu_mhz: FloatArray, vc_rel: FloatArray,
                   leak_scale: FloatArray | float, unit: UnitVariation) -> tuple[FloatArray, FloatArray]:
    """Power of the online CPU clusters (shared L3/DSU): (clock power while running, leakage)."""
    clusters = board.clusters_online(cores)
    clock = (CLUSTER_CLOCK_SHARE * board.cpu_cluster_w * unit.dyn_power * clusters
             * (np.asarray(cpu_mhz, float) / board.max_cpu_mhz) * vc_rel**2)
    leak = (1.0 - CLUSTER_CLOCK_SHARE) * board.cpu_cluster_w * unit.leakage * clusters * vc_rel**2.5 * leak_scale
    return np.asarray(clock), np.asarray(leak)


def idle_power_w(board: BoardPhysics, cores: float, cpu_mhz: float, mem_mhz: float,
                 gpu_mhz: float | None = None, *, tpc_fraction: float = 1.0,
                 temp_c: float = 25.0, unit: UnitVariation | None = None) -> float:
    """Board power with nothing running in a mode; ``gpu_mhz=None`` means the GPU is rail-gated.

    No job holds the GPU, so the pinned-clock activity floor of :func:`evaluate` does not apply.
    """
    u = unit or UnitVariation()
    leak = 2.0 ** ((temp_c - 25.0) / board.leak_doubling_c)
    vc_rel = float(board.cpu_vf.volts(np.asarray(cpu_mhz))) / board.cpu_vf.v_max
    # idle clusters are clock-gated: only their leakage remains
    _, cluster_leak = _cluster_power(board, np.asarray([cores], float), np.asarray([cpu_mhz], float),
                                     np.asarray([vc_rel]), leak, u)
    power = (board.base_w * u.base_power
             + board.cpu_idle_core_w * u.leakage * cores * vc_rel**2.5 * leak
             + float(cluster_leak[0])
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


def with_overrides(board: BoardPhysics, **changes: Any) -> BoardPhysics:
    """A copy of ``board`` with some constants changed (for sensitivity studies)."""
    return replace(board, **changes)
