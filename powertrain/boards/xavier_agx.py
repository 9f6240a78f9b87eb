"""Jetson AGX Xavier (p2888), JetPack 4/5.

Tables: CPU [SCRIPT, two sources], GPU [SCRIPT], EMC [SCRIPT] (the nvpmodel EMC caps are
members); presets from ``nvpmodel_t194.conf`` [CONF]. PowerTrain's own Xavier modes are not
published, so the ``powertrain`` grid is ours: even core counts, every other CPU step plus the
maximum, all GPU and EMC values. Physics: ``docs/simulator.md``.
"""

from __future__ import annotations

from powertrain.boards.spec import BoardPhysics, BoardSpec, NvpmodelCap, SysfsLayout, VfCurve, mhz, tegra_cpu_khz

CPU_KHZ = tegra_cpu_khz(2265600)  # 29 values
GPU_HZ = (114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 675750000,
          828750000, 905250000, 1032750000, 1198500000, 1236750000, 1338750000, 1377000000)
EMC_HZ = (204000000, 408000000, 665600000, 800000000, 1065600000, 1331200000, 1600000000,
          1866000000, 2133000000)

CPU_CLUSTERS = (2, 2, 2, 2)  # cores per cluster (cpufreq policy), cpu0 first

BOARD = BoardSpec(
    name="xavier-agx",
    description="Jetson AGX Xavier (p2888)",
    cpu_khz=CPU_KHZ,
    gpu_hz=GPU_HZ,
    emc_hz=EMC_HZ,
    nvpmodel=(
        NvpmodelCap("MAXN", 0, None, 8, -1, -1, 0, 4),
        NvpmodelCap("MODE_10W", 1, 10.0, 2, 1200000, 520000000, 1065600000, 2, "TPC mask 5"),
        NvpmodelCap("MODE_15W", 2, 15.0, 4, 1200000, 670000000, 1331200000, 4, "Linux default"),
        NvpmodelCap("MODE_30W_ALL", 3, 30.0, 8, 1200000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_30W_6CORE", 4, 30.0, 6, 1450000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_30W_4CORE", 5, 30.0, 4, 1780000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_30W_2CORE", 6, 30.0, 2, 2100000, 900000000, 1600000000, 4),
        NvpmodelCap("MODE_15W_DESKTOP", 7, 15.0, 4, 2188800, 670000000, 1331200000, 4),
    ),
    grids={"powertrain": {"cpu_cores": (2.0, 4.0, 6.0, 8.0),
                          "cpu_mhz": (*mhz(list(range(268800, 2112000 + 1, 153600))), 2265.6),
                          "gpu_mhz": tuple(v / 1e6 for v in GPU_HZ), "mem_mhz": tuple(v / 1e6 for v in EMC_HZ)}},
    physics=BoardPhysics(
        name="xavier-agx", gpu_cuda_cores=512, gpu_tpcs=4, gpu_arch_efficiency=1.0,
        gpu_elem_efficiency=0.25, mem_bus_bytes=64.2, mem_efficiency=0.70, cpu_ipc=0.75,
        launch_kcycles=40.0, cpu_mem_stall=0.02,
        gpu_vf=VfCurve(520.0, 1377.0, 0.60, 1.05), cpu_vf=VfCurve(800.0, 2265.6, 0.60, 1.05),
        base_w=4.10, cpu_core_w=1.35, cpu_idle_core_w=0.03, gpu_dyn_w=22.0, gpu_leak_w=1.1,
        mem_static_w_per_ghz=0.55, mem_pj_per_byte=60.0,
        thermal_r_c_per_w=1.3, thermal_r_quiet_c_per_w=2.6, thermal_tau_s=90.0,
        max_cpu_mhz=2265.6, max_gpu_mhz=1377.0, max_mem_mhz=2133.0,
        cpu_clusters=CPU_CLUSTERS, cpu_cluster_w=0.30, gpu_activity_floor=0.45,
    ),
    sysfs=SysfsLayout(
        soc_id=25,
        modules={"p2888-*": ""},
        model_fragments=("agx xavier", "jetson-agx"),  # jetson-agx: L4T r32 downstream device tree
        gpu_devfreq_dirs=("/sys/devices/17000000.gv11b/devfreq/17000000.gv11b",
                          "/sys/devices/gpu.0/devfreq/17000000.gv11b"),
        cpu_clusters=CPU_CLUSTERS,
    ),
)
