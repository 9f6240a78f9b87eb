"""Sample collectors: who profiles the modes a new predictor needs.

:class:`SampleCollector` is the protocol the builder uses: ``boards()`` and ``collect(workload,
modes)``. :class:`DeviceCollector` is **fleet-parallel profiling** over boards of one device
type: the modes are dealt round-robin across the boards, every board profiles its share (in
its own thread, as real boards run at the same time), so the profiling cost per board -
minibatches run and device seconds - falls with the fleet size. The Flower coordinator uses
the two-phase ``plan``/``complete`` API instead and collects the samples inside FL rounds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pandas as pd

from powertrain.devices.base import Device
from powertrain.errors import InvalidParameterError
from powertrain.profiler import ProfileRun, ProfileSettings, profile


@runtime_checkable
class SampleCollector(Protocol):
    """Profiles modes of one device type for the builder."""

    def boards(self) -> int:
        """How many boards share the profiling (1 for a single board)."""

    def collect(self, workload: str, modes: pd.DataFrame) -> pd.DataFrame:
        """Profile ``workload`` at every row of ``modes``; one row per mode, in the same order,
        with the knob columns, ``time_ms``, ``power_w`` and optionally ``device_unit``,
        ``timestamp`` and ``source``."""


@dataclass(frozen=True)
class ProfilingCost:
    """What profiling a set of modes cost, per board (``board_*`` tuples are per board)."""

    modes: int
    board_units: tuple[int, ...]
    board_modes: tuple[int, ...]
    board_minibatches: tuple[int, ...]  # warm-up included
    board_device_s: tuple[float, ...]
    board_energy_j: tuple[float, ...]
    wall_s: float

    @property
    def boards(self) -> int:
        """Boards that took part."""
        return len(self.board_units)

    @property
    def max_board_minibatches(self) -> int:
        """Minibatches run by the busiest board: the fleet's profiling latency in minibatches."""
        return max(self.board_minibatches, default=0)

    @property
    def max_board_device_s(self) -> float:
        """Device seconds of the busiest board."""
        return max(self.board_device_s, default=0.0)

    @property
    def total_minibatches(self) -> int:
        """Minibatches run by all boards together."""
        return sum(self.board_minibatches)

    @property
    def total_device_s(self) -> float:
        """Device seconds of all boards together."""
        return float(sum(self.board_device_s))

    def labels(self) -> dict[str, str]:
        """Store labels summarising the cost."""
        return {"profiled_modes": str(self.modes), "boards": str(self.boards),
                "max_board_minibatches": str(self.max_board_minibatches),
                "max_board_device_s": f"{self.max_board_device_s:.1f}",
                "total_minibatches": str(self.total_minibatches)}


class DeviceCollector:
    """Fleet-parallel profiling on boards of one device type (see the module docstring)."""

    def __init__(self, devices: Sequence[Device], settings: ProfileSettings | None = None, *,
                 parallel: bool = True) -> None:
        if not devices:
            raise InvalidParameterError("DeviceCollector needs at least one device")
        types = sorted({d.device_type for d in devices})
        if len(types) != 1:
            raise InvalidParameterError(
                f"DeviceCollector boards must share one device type; got {', '.join(types)}")
        units = [d.unit for d in devices]
        if len(set(units)) != len(units):
            raise InvalidParameterError(f"DeviceCollector boards must be distinct units; got units {units}")
        self.devices = list(devices)
        self.settings = settings or ProfileSettings()
        self.parallel = parallel
        self.last_cost: ProfilingCost | None = None
        self._busy = threading.Lock()  # a board profiles one thing at a time

    @property
    def device_type(self) -> str:
        """The boards' device type."""
        return self.devices[0].device_type

    def boards(self) -> int:
        """Number of boards."""
        return len(self.devices)

    def shares(self, modes: pd.DataFrame) -> list[pd.DataFrame]:
        """The round-robin split of ``modes`` over the boards (board i gets rows i, i+n, ...)."""
        n = len(self.devices)
        return [modes.iloc[i::n] for i in range(n)]

    def collect(self, workload: str, modes: pd.DataFrame) -> pd.DataFrame:
        """Profile ``modes`` across the boards; rows come back in input order."""
        modes = modes.reset_index(drop=True)
        shares = self.shares(modes)
        work = [(d, s) for d, s in zip(self.devices, shares, strict=True) if len(s)]
        t0 = time.perf_counter()

        def run(item: tuple[Device, pd.DataFrame]) -> ProfileRun:
            dev, share = item
            return profile(dev, workload, share, self.settings)

        with self._busy:
            if self.parallel and len(work) > 1:
                with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="profile") as pool:
                    runs = list(pool.map(run, work))
            else:
                runs = [run(item) for item in work]
        now = time.time()
        frames = []
        for (dev, share), r in zip(work, runs, strict=True):
            f = r.frame.copy()
            f.index = share.index
            f["device_unit"] = dev.unit
            f["timestamp"] = now
            f["source"] = "profile"
            frames.append(f)
        out = pd.concat(frames).sort_index() if frames else pd.DataFrame()
        self.last_cost = ProfilingCost(
            modes=len(modes), board_units=tuple(d.unit for d, _ in work),
            board_modes=tuple(len(s) for _, s in work),
            board_minibatches=tuple(r.total_minibatches for r in runs),
            board_device_s=tuple(r.device_seconds for r in runs),
            board_energy_j=tuple(r.energy_j for r in runs), wall_s=time.perf_counter() - t0)
        return out.reset_index(drop=True)
