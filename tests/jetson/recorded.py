"""Recorded Jetson output from ``/work/shared/research/jetson-hw.md``, used as fixtures.

``TEGRASTATS`` holds every tegrastats line recorded there, verbatim (the JetPack 6 line is
truncated at its start in the source, with an ellipsis, and kept that way). ``CLOCKS_SHOW``
holds ``jetson_clocks --show`` outputs: the AGX Orin JetPack 6 one is verbatim; for the other
boards only single lines were recorded (quoted in the comments), so their dumps are composed
from those lines plus the board's tables and are marked COMPOSED.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- tegrastats (§3.2)
TEGRASTATS_ORIN_JP5 = (
    "01-03-2023 16:07:54 RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) CPU "
    "[2%@729,0%@729,1%@729,0%@729,3%@729,0%@729,0%@729,0%@729,1%@729,0%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@204 GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0 NVJPG1 729 VIC_FREQ 115 APE 233 CV0@-256C "
    "CPU@41.437C Tboard@29C SOC2@39.062C Tdiode@30.75C SOC0@39.031C CV1@-256C GPU@-256C "
    "tj@41.656C SOC1@38.937C CV2@-256C VDD_GPU_SOC 2390mW/2390mW VDD_CPU_CV 796mW/796mW "
    "VIN_SYS_5V0 3522mW/3522mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
TEGRASTATS_ORIN_JP6_LOAD = (
    "\u2026 CPU [100%@2201,\u2026] EMC_FREQ 1%@2133 GR3D_FREQ 14%@[407,407] VIC_FREQ 115 "
    "NVDLA0_FREQ @1600 APE 174 CV0@73.625C CPU@77.281C Tboard@62C SOC2@70C Tdiode@62.25C "
    "SOC0@69.531C CV1@72.5C GPU@69.125C tj@77.281C SOC1@68.968C CV2@67.25C VDD_GPU_SOC "
    "3150mW/2971mW VDD_CPU_CV 14312mW/12415mW VIN_SYS_5V0 4968mW/5048mW VDDQ_VDD2_1V8AO 1091mW/1091mW"
)
TEGRASTATS_ORIN_JP7 = (
    "07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) CPU [23%@2201,10%@2201,4%@2201,14%@2201,"
    "30%@2201,18%@2201,10%@2201,10%@2201,33%@2201,7%@2201,5%@2201,27%@2201] EMC_FREQ 3%@3199 "
    "GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off NVDLA0 "
    "off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.968C/52.968C soc2@48.406C/48.406C "
    "soc0@49.531C/49.531C gpu@47.625C/47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV "
    "3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW"
)
TEGRASTATS_ORIN_NANO = (
    "09-04-2026 19:40:47 RAM 1803/7486MB (lfb 8x4MB) CPU [64%@729,0%@729,0%@729,0%@729,0%@729,"
    "0%@729] EMC_FREQ 5%@665 GR3D_FREQ 12%@[306] NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off "
    "APE 200 cpu@47.562C/48C soc2@46.75C/46.906C soc0@45.843C/46.031C gpu@48C/48.125C "
    "tj@48C/48.125C soc1@46.937C/46.937C VDD_IN 4093mW/4463mW/4832mW VDD_CPU_GPU_CV "
    "802mW/1019mW/1236mW VDD_SOC 1243mW/1340mW/1437mW"
)
TEGRASTATS_XAVIER_JP4 = (
    "RAM 408/15823MB (lfb 3702x4MB) SWAP 0/7911MB (cached 0MB) CPU [5%@2265,3%@2265,0%@2265,"
    "1%@2265,0%@2265,0%@2265,2%@2265,0%@2265] EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 APE 150 MTS fg "
    "0% bg 0% AO@26.5C GPU@28C iwlwifi@30C Tdiode@31.25C PMIC@100C AUX@27C CPU@28C thermal@27.45C "
    "Tboard@27C GPU 1155/1155 CPU 385/385 SOC 2502/2502 CV 0/0 VDDRQ 192/192 SYS5V 2692/2692"
)
TEGRASTATS = {
    "orin-jp5": TEGRASTATS_ORIN_JP5,
    "orin-jp6-load": TEGRASTATS_ORIN_JP6_LOAD,
    "orin-jp7": TEGRASTATS_ORIN_JP7,
    "orin-nano": TEGRASTATS_ORIN_NANO,
    "xavier-jp4": TEGRASTATS_XAVIER_JP4,
}

# --------------------------------------------------------------------------- jetson_clocks (§2.6)
#: Verbatim: AGX Orin, JetPack 6 (recorded with only the cpu0 line).
CLOCKS_SHOW_ORIN_JP6 = """\
SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
FAN Dynamic Speed control=active hwmon2_pwm1=55
NV Power Mode: MAXN
"""


def _cpu_lines(cpus: range, online: range, min_khz: int, max_khz: int) -> str:
    return "".join(
        f"cpu{c}: Online={int(c in online)} Governor=schedutil MinFreq={min_khz} MaxFreq={max_khz} "
        f"CurrentFreq={max_khz} IdleStates: WFI=1 c7=1\n" for c in cpus)


#: COMPOSED: AGX Orin JetPack 5 in PowerTrain custom mode 14. Recorded line (LSTM_train/
#: log_file_pm_14): "GPU MinFreq=114750000 MaxFreq=114750000"; EMC line recorded after capping
#: at 665.6 MHz: "EMC MinFreq=204000000 MaxFreq=665600000 CurrentFreq=665600000 FreqOverride=1".
CLOCKS_SHOW_ORIN_JP5 = (
    "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\n"
    "Online CPUs: 0-7\n"
    + _cpu_lines(range(12), range(8), 1113600, 1113600)
    + "GPU MinFreq=114750000 MaxFreq=114750000 CurrentFreq=114750000\n"
    "EMC MinFreq=204000000 MaxFreq=665600000 CurrentFreq=665600000 FreqOverride=1\n"
    "NV Power Mode: MODE_14\n"
)

#: COMPOSED: AGX Xavier, Linux default MODE_15W (4 cores). Recorded: "MinFreq=1190400" (cpufreq
#: snapping the preset's 1.2 GHz floor); caps from nvpmodel_t194.conf resolved on the tables.
CLOCKS_SHOW_XAVIER = (
    "SOC family:tegra194  Machine:NVIDIA Jetson AGX Xavier Developer Kit\n"
    "Online CPUs: 0-3\n"
    + _cpu_lines(range(8), range(4), 1190400, 1190400)
    + "GPU MinFreq=114750000 MaxFreq=624750000 CurrentFreq=624750000\n"
    "EMC MinFreq=204000000 MaxFreq=1331200000 CurrentFreq=1331200000 FreqOverride=0\n"
    "NV Power Mode: MODE_15W\n"
)

#: COMPOSED: Orin Nano 8GB, 15W. Recorded: "GPU MinFreq=306000000 MaxFreq=624750000",
#: "EMC MinFreq=204000000 MaxFreq=2133000000", CPU "MaxFreq=1510400", "Active GPU TPCs: 4".
CLOCKS_SHOW_ORIN_NANO = (
    "SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit\n"
    "Online CPUs: 0-5\n"
    + _cpu_lines(range(6), range(6), 729600, 1510400)
    + "GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=306000000\n"
    "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=0\n"
    "NV Power Mode: 15W\n"
    "Active GPU TPCs: 4\n"
)

#: Model strings: the two Orin ones are recorded in jetson-hw.md (§1.0 and the jetson_clocks
#: Machine line); the Xavier one is the upstream tegra194-p2972-0000.dts model.
MODEL_STRINGS = {
    "NVIDIA Jetson AGX Orin Developer Kit": "orin-agx",
    "NVIDIA Jetson Orin Nano Developer Kit": "orin-nano",
    "NVIDIA Jetson AGX Xavier Developer Kit": "xavier-agx",
}
