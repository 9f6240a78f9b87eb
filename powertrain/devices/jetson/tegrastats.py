"""``tegrastats`` lines: a parser for every recorded format, and a power source that runs it.

Formats handled (fixtures in ``tests/jetson/recorded.py``):

* JetPack 4 AGX Xavier: rails without units, ``cur/avg`` (``GPU 1155/1155``);
* JetPack 5 AGX Orin: ``VDD_GPU_SOC 2390mW/2390mW``, temperatures ``CPU@41.437C`` (-256 = off);
* JetPack 6: per-GPC GPU clocks ``GR3D_FREQ 14%@[407,407]``, ``NVDLA0_FREQ @1600``;
* JetPack 6/7 recent: rails ``cur/avg/max``, temperatures ``cpu@52.968C/52.968C`` (cur/max).

Rail names are arbitrary words, so rails are recognised by their ``cur/avg[/max]`` value, not
by a list of names. Tokens the parser does not know are skipped, so a truncated or future
line still yields what it can. The board total follows jetson-stats
(:func:`~powertrain.devices.jetson.power.board_total_mw`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from powertrain.devices.jetson.power import PowerMeter, board_total_mw
from powertrain.errors import DataFormatError, DeviceError, check_range

logger = logging.getLogger(__name__)

_NUM = r"-?\d+(?:\.\d+)?"
_RAIL_VALUE = re.compile(r"^(\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?$")
_TEMP = re.compile(rf"^([A-Za-z][\w-]*)@({_NUM})C(?:/({_NUM})C)?$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ENGINE_VALUES = (
    re.compile(r"^(?P<load>\d+)%@(?P<freq>\d+)$"),
    re.compile(r"^(?P<load>\d+)%@\[(?P<freqs>[\d,]+)\]$"),
    re.compile(r"^@\[?(?P<freqs>[\d,]+)\]?$"),
    re.compile(r"^(?P<load>\d+)%$"),
    re.compile(r"^(?P<off>off)$"),
    re.compile(r"^(?P<freq>\d+)$"),
)
_CPU_ENTRY = re.compile(r"^(?:(?P<off>off)|(?P<load>\d+)%(?:@(?P<freq>\d+))?)$")
_SIZE_MB = {"MB": 1.0, "kB": 1.0 / 1024.0, "GB": 1024.0}


@dataclass(frozen=True)
class RailReading:
    """One rail: instantaneous, running-average and (newer releases) maximum power. Units: mW."""

    cur_mw: float
    avg_mw: float
    max_mw: float | None = None


@dataclass(frozen=True)
class CpuCore:
    """One core: online, load and clock (None when not printed)."""

    online: bool
    load_pct: float | None = None
    freq_mhz: float | None = None


@dataclass(frozen=True)
class EngineReading:
    """An engine (EMC, GR3D, VIC, APE, NVDLA0, ...): load, clocks (one per GPC on Orin), or off."""

    load_pct: float | None = None
    freq_mhz: tuple[float, ...] = ()
    off: bool = False


@dataclass(frozen=True)
class TegrastatsSample:
    """Everything parsed from one tegrastats line."""

    timestamp: datetime | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    lfb_blocks: int | None = None
    lfb_block_mb: float | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    swap_cached_mb: int | None = None
    cpus: tuple[CpuCore, ...] = ()
    engines: dict[str, EngineReading] = field(default_factory=dict)
    temperatures_c: dict[str, float | None] = field(default_factory=dict)  # None: sensor off
    temperatures_max_c: dict[str, float] = field(default_factory=dict)
    rails: dict[str, RailReading] = field(default_factory=dict)

    @property
    def rails_mw(self) -> dict[str, float]:
        """Instantaneous rail powers (NC channels dropped). Units: mW."""
        return {k: v.cur_mw for k, v in self.rails.items() if "NC" not in k.split("_")}

    @property
    def total_power_mw(self) -> float:
        """Board total as jetson-stats reports it. Units: mW."""
        return board_total_mw(self.rails_mw)


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    """Parse one tegrastats line; raises DataFormatError when it holds nothing recognisable."""
    tokens = line.split()
    values: dict[str, Any] = {}
    cpus: list[CpuCore] = []
    engines: dict[str, EngineReading] = {}
    temps: dict[str, float | None] = {}
    temps_max: dict[str, float] = {}
    rails: dict[str, RailReading] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if i == 0 and re.fullmatch(r"\d{2}-\d{2}-\d{4}", tok) and re.fullmatch(r"\d{2}:\d{2}:\d{2}", nxt):
            values["timestamp"] = datetime.strptime(f"{tok} {nxt}", "%m-%d-%Y %H:%M:%S")
            i += 2
            continue
        if tok in {"RAM", "SWAP"} and (m := re.fullmatch(r"(\d+)/(\d+)MB", nxt)):
            key = tok.lower()
            values[f"{key}_used_mb"], values[f"{key}_total_mb"] = int(m.group(1)), int(m.group(2))
            i += 2
            rest = " ".join(tokens[i:i + 2])
            if m2 := re.match(r"\(lfb (\d+)x(\d+)(MB|kB|GB)\)", rest):
                values["lfb_blocks"] = int(m2.group(1))
                values["lfb_block_mb"] = int(m2.group(2)) * _SIZE_MB[m2.group(3)]
                i += 2
            elif m2 := re.match(r"\(cached (\d+)MB\)", rest):
                values["swap_cached_mb"] = int(m2.group(1))
                i += 2
            continue
        if tok == "CPU" and nxt.startswith("["):
            cpus = _parse_cpus(nxt)
            i += 2
            continue
        if tok == "MTS":  # Xavier: "MTS fg 0% bg 0%"
            i += 5
            continue
        if m := _TEMP.match(tok):
            value = float(m.group(2))
            temps[m.group(1)] = None if value <= -256 else value
            if m.group(3) is not None:
                temps_max[m.group(1)] = float(m.group(3))
            i += 1
            continue
        if _NAME.match(tok) and (m := _RAIL_VALUE.match(nxt)):
            rails[tok] = RailReading(float(m.group(1)), float(m.group(2)),
                                     float(m.group(3)) if m.group(3) else None)
            i += 2
            continue
        if _NAME.match(tok) and (engine := _parse_engine(nxt)) is not None:
            engines[tok.removesuffix("_FREQ")] = engine
            i += 2
            continue
        i += 1  # unknown token (e.g. an ellipsis in a truncated line)
    if not (rails or cpus or engines or "ram_used_mb" in values):
        raise DataFormatError(f"not a tegrastats line: {line[:80]!r}")
    return TegrastatsSample(cpus=tuple(cpus), engines=engines, temperatures_c=temps,
                            temperatures_max_c=temps_max, rails=rails, **values)


def _parse_cpus(token: str) -> list[CpuCore]:
    body, _, after = token.partition("]")
    shared = re.fullmatch(r"@(\d+)", after)
    cores = []
    for entry in body.lstrip("[").split(","):
        m = _CPU_ENTRY.match(entry.strip())
        if not m:
            continue
        if m.group("off"):
            cores.append(CpuCore(False))
            continue
        freq = m.group("freq") or (shared.group(1) if shared else None)
        cores.append(CpuCore(True, float(m.group("load")), float(freq) if freq else None))
    return cores


def _parse_engine(token: str) -> EngineReading | None:
    for pattern in _ENGINE_VALUES:
        m = pattern.match(token)
        if not m:
            continue
        groups = m.groupdict()
        if groups.get("off"):
            return EngineReading(off=True)
        freqs: tuple[float, ...] = ()
        if groups.get("freq"):
            freqs = (float(groups["freq"]),)
        elif groups.get("freqs"):
            freqs = tuple(float(f) for f in groups["freqs"].split(",") if f)
        load = float(groups["load"]) if groups.get("load") else None
        return EngineReading(load, freqs)
    return None


class TegrastatsSampler:
    """Runs ``tegrastats --interval <ms>`` and feeds each line's board total into a meter.

    The fallback power source when no INA3221 rails are readable. The process runs in its own
    session and is stopped by its process group id.
    """

    def __init__(self, meter: PowerMeter, interval_ms: int = 100, executable: str = "tegrastats") -> None:
        check_range("interval_ms", interval_ms, low=10)
        self.meter = meter
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self.lines = 0
        self.bad_lines = 0

    @staticmethod
    def available(executable: str = "tegrastats") -> bool:
        """Whether the executable is on PATH."""
        return shutil.which(executable) is not None

    def start(self) -> None:
        """Start tegrastats and the reader thread (idempotent)."""
        if self._proc is not None:
            return
        exe = shutil.which(self.executable)
        if exe is None:
            raise DeviceError(f"{self.executable} is not on PATH; it ships with L4T (/usr/bin/tegrastats)")
        self._proc = subprocess.Popen([exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self._thread = threading.Thread(target=self._read, name="powerfleet-tegrastats", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.strip():
                continue
            try:
                sample = parse_tegrastats_line(line)
            except DataFormatError:
                self.bad_lines += 1
                continue
            if sample.rails:
                self.lines += 1
                self.meter.add(sample.total_power_mw / 1000.0, sample.rails_mw)

    def stop(self) -> None:
        """Stop tegrastats (its whole process group) and join the reader."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=2.0)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
