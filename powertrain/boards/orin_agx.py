"""Jetson AGX Orin 64GB / 32GB developer kit (p3701-0000/0005), JetPack 5.

Tables: CPU from ``scaling_available_frequencies`` [SCRIPT, DEV], GPU from devfreq
``available_frequencies`` (JetPack 5) [SCRIPT + DEV], EMC from BPMP ``possible_rates``
[SCRIPT + DEV]; presets from ``nvpmodel_p3701_0000.conf`` [CONF] (its GPU caps 408/612/816 MHz
are JetPack 6 values and resolve to the JP5 table entry below them). Physics constants and
their sources: ``docs/simulator.md``. Tags refer to the research notes (``jetson-hw.md``).
"""

from __future__ import annotations

from powertrain.boards.spec import BoardPhysics, BoardSpec, NvpmodelCap, SysfsLayout, VfCurve, mhz, tegra_cpu_khz

CPU_KHZ = tegra_cpu_khz(2188800, 2201600)  # 29 values, max 2201600
GPU_HZ = (114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 726750000,
          828750000, 930750000, 1032750000, 1134750000, 1236750000, 1300500000)
EMC_HZ = (204000000, 665600000, 2133000000, 3199000000)
#: PowerTrain reference grid: even core counts, every other CPU step plus the maximum.
GRID_CPU_KHZ = (*range(268800, 2112000 + 1, 153600), 2201600)  # 14 values [SCRIPT]

CPU_CLUSTERS = (4, 4, 4)  # cores per cluster (cpufreq policy), cpu0 first

BOARD = BoardSpec(
    name="orin-agx",
    description="Jetson AGX Orin 64GB / 32GB dev kit (p3701-0000/0005), JetPack 5",
    cpu_khz=CPU_KHZ,
    gpu_hz=GPU_HZ,
    emc_hz=EMC_HZ,
    nvpmodel=(
        NvpmodelCap("MAXN", 0, None, 12, -1, -1, -1, 8, "no cap; module up to 60 W"),
        NvpmodelCap("MODE_15W", 1, 15.0, 4, 1113600, 408000000, 2133000000, 3, "TPC_PG_MASK 248"),
        NvpmodelCap("MODE_30W", 2, 30.0, 8, 1728000, 612000000, -1, 4, "default; TPC_PG_MASK 240"),
        NvpmodelCap("MODE_50W", 3, 50.0, 12, 1497600, 816000000, -1, 8, "TPC_PG_MASK 0"),
    ),
    grids={"powertrain": {"cpu_cores": (2.0, 4.0, 6.0, 8.0, 10.0, 12.0), "cpu_mhz": mhz(GRID_CPU_KHZ),
                          "gpu_mhz": tuple(v / 1e6 for v in GPU_HZ), "mem_mhz": tuple(v / 1e6 for v in EMC_HZ)}},
    physics=BoardPhysics(
        name="orin-agx", gpu_cuda_cores=2048, gpu_tpcs=8, gpu_arch_efficiency=0.85,
        gpu_elem_efficiency=0.25, mem_bus_bytes=64.0, mem_efficiency=0.75, cpu_ipc=1.0,
        launch_kcycles=40.0, cpu_mem_stall=0.02,
        gpu_vf=VfCurve(420.0, 1300.5, 0.72, 0.98), cpu_vf=VfCurve(730.0, 2201.6, 0.70, 1.00, 2.0),
        base_w=6.65, cpu_core_w=1.08, cpu_idle_core_w=0.03, gpu_dyn_w=35.0, gpu_leak_w=1.3,
        mem_static_w_per_ghz=0.45, mem_pj_per_byte=45.0,
        thermal_r_c_per_w=0.95, thermal_r_quiet_c_per_w=1.9, thermal_tau_s=90.0,
        max_cpu_mhz=2201.6, max_gpu_mhz=1300.5, max_mem_mhz=3199.0,
        cpu_clusters=CPU_CLUSTERS, cpu_cluster_w=0.45, gpu_activity_floor=0.45,
    ),
    sysfs=SysfsLayout(
        soc_id=35,
        modules={"p3701-0000": "", "p3701-0005": "",
                 "p3701-0004": "8-core AGX Orin 32GB production module: built-in presets are those of p3701-0000",
                 "p3701-0008": "AGX Orin Industrial: built-in presets are those of p3701-0000"},
        model_fragments=("agx orin",),
        gpu_devfreq_dirs=("/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu",  # JetPack 6
                          "/sys/class/devfreq/17000000.gpu",
                          "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b",  # JetPack 5
                          "/sys/devices/gpu.0/devfreq/17000000.ga10b"),
        cpu_clusters=CPU_CLUSTERS,
    ),
)
