"""A parser for ``jetson_clocks --show``: the clocks, cores and power mode a board reports.

Used to turn recorded dumps into fake device trees for tests, and to compare a board with a
dump taken elsewhere. Frequencies keep the kernel's units (CPU kHz, GPU/EMC Hz).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from powertrain.devices.jetson.tables import parse_cpu_list
from powertrain.errors import DataFormatError


@dataclass(frozen=True)
class CpuClock:
    """One ``cpuN:`` line."""

    online: bool
    governor: str | None = None
    min_khz: int | None = None
    max_khz: int | None = None
    cur_khz: int | None = None


@dataclass(frozen=True)
class ClockRange:
    """The ``GPU``/``EMC`` lines. Units: Hz."""

    min_hz: int | None = None
    max_hz: int | None = None
    cur_hz: int | None = None
    override: int | None = None  # EMC FreqOverride (1 once jetson_clocks pinned it)


@dataclass(frozen=True)
class ClocksShow:
    """Everything parsed from one ``jetson_clocks --show`` output."""

    soc_family: str | None = None
    machine: str | None = None
    online_cpus: tuple[int, ...] = ()
    cpus: dict[int, CpuClock] = field(default_factory=dict)
    gpu: ClockRange | None = None
    emc: ClockRange | None = None
    power_mode: str | None = None
    active_gpu_tpcs: int | None = None


def _fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", text))


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def parse_clocks_show(text: str) -> ClocksShow:
    """Parse ``jetson_clocks --show`` output; raises DataFormatError if nothing is recognised."""
    soc = machine = mode = None
    online: tuple[int, ...] = ()
    cpus: dict[int, CpuClock] = {}
    gpu = emc = None
    tpcs = None
    for raw in text.splitlines():  # lines not listed here (FAN, ...) are skipped
        line = raw.strip()
        if not line:
            continue
        if m := re.match(r"SOC family:(\S+)\s+Machine:(.+)$", line):
            soc, machine = m.group(1), m.group(2).strip()
        elif m := re.match(r"Online CPUs:\s*(\S+)", line):
            online = tuple(parse_cpu_list(m.group(1)))
        elif m := re.match(r"cpu(\d+):\s*(.*)$", line):
            f = _fields(m.group(2))
            cpus[int(m.group(1))] = CpuClock(f.get("Online", "1") == "1", f.get("Governor"),
                                             _int(f.get("MinFreq")), _int(f.get("MaxFreq")),
                                             _int(f.get("CurrentFreq")))
        elif line.startswith(("GPU ", "EMC ")):
            f = _fields(line)
            rng = ClockRange(_int(f.get("MinFreq")), _int(f.get("MaxFreq")), _int(f.get("CurrentFreq")),
                             _int(f.get("FreqOverride")))
            if line.startswith("GPU"):
                gpu = rng
            else:
                emc = rng
        elif m := re.match(r"NV Power Mode:\s*(.+)$", line):
            mode = m.group(1).strip()
        elif m := re.match(r"Active GPU TPCs:\s*(\d+)", line):
            tpcs = int(m.group(1))
    if not (cpus or gpu or emc or machine):
        raise DataFormatError("jetson_clocks --show: no clock lines found")
    return ClocksShow(soc, machine, online, cpus, gpu, emc, mode, tpcs)
