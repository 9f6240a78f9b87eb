"""Jetson Orin Nano 8GB (p3767-0003), original firmware.

Tables: CPU max 1510400 kHz [DEV]; GPU min 306 and max 624.75 MHz [DEV], 510 MHz from the
PowerTrain Nano sweep [SCRIPT], 408 MHz UNVERIFIED (inferred from the 102 MHz JetPack 6 step
and the 7W preset cap); EMC ``possible_rates`` [DEV]; presets from
``nvpmodel_p3767_0003.conf`` [CONF]; the ``powertrain`` grid is PowerTrain's Nano sweep,
3 cores x 10 CPU x 3 GPU x 2 EMC = 180 modes [SCRIPT]. Physics: ``docs/simulator.md``.
"""

from __future__ import annotations

from powertrain.boards.spec import BoardPhysics, BoardSpec, NvpmodelCap, SysfsLayout, VfCurve, mhz, tegra_cpu_khz

CPU_KHZ = tegra_cpu_khz(1497600, 1510400)  # 20 values
GPU_HZ = (306000000, 408000000, 510000000, 624750000)
EMC_HZ = (204000000, 665600000, 2133000000)
GRID_CPU_KHZ = (*range(268800, 1497600 + 1, 153600), 1510400)  # 10 values [SCRIPT]

CPU_CLUSTERS = (4, 2)  # cores per cluster (cpufreq policy), cpu0 first

BOARD = BoardSpec(
    name="orin-nano",
    description="Jetson Orin Nano 8GB (p3767-0003), original firmware",
    cpu_khz=CPU_KHZ,
    gpu_hz=GPU_HZ,
    emc_hz=EMC_HZ,
    nvpmodel=(
        NvpmodelCap("15W", 0, 15.0, 6, -1, -1, 0, 4, "default"),
        NvpmodelCap("7W", 1, 7.0, 4, 960000, 408000000, 2133000000, 2, "TPC_PG_MASK 252"),
    ),
    grids={"powertrain": {"cpu_cores": (2.0, 4.0, 6.0), "cpu_mhz": mhz(GRID_CPU_KHZ),
                          "gpu_mhz": (306.0, 510.0, 624.75), "mem_mhz": (665.6, 2133.0)}},
    physics=BoardPhysics(
        name="orin-nano", gpu_cuda_cores=1024, gpu_tpcs=4, gpu_arch_efficiency=0.85,
        gpu_elem_efficiency=0.25, mem_bus_bytes=32.0, mem_efficiency=0.75, cpu_ipc=1.0,
        launch_kcycles=40.0, cpu_mem_stall=0.02,
        gpu_vf=VfCurve(306.0, 624.75, 0.72, 0.82), cpu_vf=VfCurve(730.0, 1510.4, 0.70, 0.88, 2.0),
        base_w=3.95, cpu_core_w=0.62, cpu_idle_core_w=0.02, gpu_dyn_w=6.5, gpu_leak_w=0.45,
        mem_static_w_per_ghz=0.35, mem_pj_per_byte=40.0,
        thermal_r_c_per_w=3.0, thermal_r_quiet_c_per_w=5.5, thermal_tau_s=60.0,
        max_cpu_mhz=1510.4, max_gpu_mhz=624.75, max_mem_mhz=2133.0,
        cpu_clusters=CPU_CLUSTERS, cpu_cluster_w=0.25, gpu_activity_floor=0.45,
    ),
    sysfs=SysfsLayout(
        soc_id=35,
        modules={"p3767-0003": "", "p3767-0004": "", "p3767-0005": ""},
        model_fragments=("orin nano",),
        gpu_devfreq_dirs=("/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu",
                          "/sys/class/devfreq/17000000.gpu",
                          "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b",
                          "/sys/devices/gpu.0/devfreq/17000000.ga10b"),
        cpu_clusters=CPU_CLUSTERS,
    ),
)
