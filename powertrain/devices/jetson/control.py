"""Setting a power mode through sysfs: cores, CPU clusters, GPU devfreq and EMC, with rollback.

A mode becomes a :class:`BoardState` (the value of every file that defines it) and
:meth:`BoardControl.converge` writes the board towards it in an order the kernel accepts:

1. bring needed cores online (ascending; cpu0 is never touched), so their policies exist;
2. per cpufreq policy with an online core: ``scaling_max_freq``/``scaling_min_freq``, max
   first when the range moves up, min first when it moves down (older kernels reject
   min > max with EINVAL; newer ones clamp silently and may keep the wrong value);
3. take surplus cores offline (descending);
4. GPU devfreq ``max_freq``/``min_freq`` with the same ordering rule;
5. EMC: BPMP debugfs (``mrq_rate_locked`` = 1, then ``rate``), or nvpmodel's EMC cap node.

Files that already hold their target value are not written. Everything is read back and
verified; on any failure (a refused write, a read-back mismatch) the board is converged back
to the state read before the change and the error says so. :meth:`BoardControl.apply` is
the only entry point that changes the board.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.devices.jetson.tables import CPU_DIR, EMC_BPMP_DIR, BoardTables
from powertrain.errors import DeviceError, DevicePermissionError, ModeError
from powertrain.space import Mode


@dataclass(frozen=True)
class EmcSetting:
    """The EMC control files' values: BPMP (locked, rate) or the nvpmodel cap (0 = no cap)."""

    locked: int | None = None
    rate_hz: int | None = None
    cap_hz: int | None = None


@dataclass(frozen=True)
class BoardState:
    """The value of every file that defines a power mode (kernel units: kHz, Hz)."""

    online: Mapping[int, bool] = field(default_factory=dict)  # hot-pluggable CPUs, i.e. not cpu0
    cpu_khz: Mapping[int, tuple[int | None, int | None]] = field(default_factory=dict)  # policy id
    gpu_hz: tuple[int | None, int | None] | None = None
    emc: EmcSetting | None = None


@dataclass(frozen=True)
class Mismatch:
    """A file whose read-back value is not the one written."""

    path: str
    expected: int
    actual: int | None

    def __str__(self) -> str:
        return f"{self.path} holds {self.actual}, expected {self.expected}"


class BoardControl:
    """Reads, writes, verifies and rolls back the power-mode files of one board."""

    def __init__(self, fs: Sysfs, tables: BoardTables) -> None:
        self.fs = fs
        self.tables = tables
        self._lock = threading.RLock()
        #: Each policy's (min, max) before we first wrote it. A cluster that is offline cannot be
        #: read (EBUSY), so its original limits are captured when it first comes online.
        self.pristine_cpu_khz: dict[int, tuple[int | None, int | None]] = {}
        self._last_cpu_khz: dict[int, tuple[int | None, int | None]] = {}  # after our last write
        self.hotplug_cpus = tuple(c for c in tables.cpus if c != 0 and fs.exists(self.online_path(c)))

    # ------------------------------------------------------------------ paths
    @staticmethod
    def online_path(cpu: int) -> str:
        """``cpuN/online``."""
        return f"{CPU_DIR}/cpu{cpu}/online"

    @staticmethod
    def policy_path(policy: int, name: str) -> str:
        """A file of cpufreq ``policyN`` (one policy per cluster)."""
        return f"{CPU_DIR}/cpufreq/policy{policy}/{name}"

    def gpu_path(self, name: str) -> str:
        """A file of the GPU devfreq directory."""
        return f"{self.tables.gpu_devfreq_dir}/{name}"

    @property
    def emc_files(self) -> dict[str, str]:
        """The EMC control files of the chosen method."""
        if self.tables.emc_method == "bpmp":
            return {"locked": f"{EMC_BPMP_DIR}/mrq_rate_locked", "rate": f"{EMC_BPMP_DIR}/rate"}
        if self.tables.emc_method == "cap" and self.tables.emc_cap_file:
            return {"cap": self.tables.emc_cap_file}
        return {}

    # ------------------------------------------------------------------ reading
    def is_online(self, cpu: int) -> bool:
        """Whether ``cpu`` is online (cpu0 and CPUs without an ``online`` file always are)."""
        if cpu not in self.hotplug_cpus:
            return True
        return self.fs.read_int(self.online_path(cpu)) == 1

    def _active_policies(self, online: Mapping[int, bool]) -> list[int]:
        return [pid for pid, cluster in zip(self.tables.policy_ids, self.tables.clusters, strict=True)
                if any(online.get(c, c not in self.hotplug_cpus) for c in cluster)]

    def read_state(self) -> BoardState:
        """The current values of every mode-defining file (None where unreadable)."""
        with self._lock:
            online = {c: self.is_online(c) for c in self.hotplug_cpus}
            cpu = {pid: (self.fs.try_read_int(self.policy_path(pid, "scaling_min_freq")),
                         self.fs.try_read_int(self.policy_path(pid, "scaling_max_freq")))
                   for pid in self._active_policies(online)}
            gpu = (self.fs.try_read_int(self.gpu_path("min_freq")),
                   self.fs.try_read_int(self.gpu_path("max_freq")))
            return BoardState(online, cpu, gpu, self._read_emc())

    def _read_emc(self) -> EmcSetting | None:
        files = self.emc_files
        if "locked" in files:
            return EmcSetting(locked=self.fs.try_read_int(files["locked"]),
                              rate_hz=self.fs.try_read_int(files["rate"]))
        if "cap" in files:
            return EmcSetting(cap_hz=self.fs.try_read_int(files["cap"]))
        return None

    def mode_of(self, state: BoardState) -> dict[str, float | None]:
        """The mode a state amounts to: online cores, cpu0's cluster cap, GPU cap, EMC rate or cap."""
        cores = sum(1 for c in self.tables.cpus if state.online.get(c, c not in self.hotplug_cpus))
        first = self.tables.policy_ids[0]
        cpu_max = state.cpu_khz.get(first, (None, None))[1]
        gpu_max = state.gpu_hz[1] if state.gpu_hz else None
        mem: float | None = None
        if state.emc is not None:
            if state.emc.rate_hz is not None:
                mem = state.emc.rate_hz / 1e6
            elif state.emc.cap_hz is not None:
                top = self.tables.emc_hz[-1] if self.tables.emc_hz else None
                hz = state.emc.cap_hz if state.emc.cap_hz > 0 else top
                mem = hz / 1e6 if hz is not None else None
        return {"cpu_cores": float(cores),
                "cpu_mhz": cpu_max / 1e3 if cpu_max is not None else None,
                "gpu_mhz": gpu_max / 1e6 if gpu_max is not None else None,
                "mem_mhz": mem}

    # ------------------------------------------------------------------ targets
    def target_for(self, mode: Mode) -> BoardState:
        """The file values of a (validated) mode: cores 0..n-1 online, every clock pinned min = max."""
        cores = round(mode["cpu_cores"])
        if cores < 1 or cores > len(self.tables.cpus) or any(c not in self.tables.cpus for c in range(cores)):
            raise ModeError(f"cpu_cores={cores} is not possible on this board; CPUs present: "
                            f"{', '.join(map(str, self.tables.cpus))}")
        online = {c: c < cores for c in self.hotplug_cpus}
        cpu_khz = _table_value(self.tables.cpu_khz, mode["cpu_mhz"] * 1e3, "cpu_mhz")
        gpu_hz = _table_value(self.tables.gpu_hz, mode["gpu_mhz"] * 1e6, "gpu_mhz")
        policies = dict.fromkeys(self._active_policies(online), (cpu_khz, cpu_khz))
        method = self.tables.emc_method
        emc_hz = (_table_value(self.tables.emc_hz, mode["mem_mhz"] * 1e6, "mem_mhz")
                  if self.tables.emc_hz else round(mode["mem_mhz"] * 1e6))
        emc: EmcSetting | None
        if method == "bpmp":
            emc = EmcSetting(locked=1, rate_hz=emc_hz)
        elif method == "cap":
            top = self.tables.emc_hz[-1] if self.tables.emc_hz else None
            emc = EmcSetting(cap_hz=0 if emc_hz == top else emc_hz)
        else:
            emc = None
        return BoardState(online, policies, (gpu_hz, gpu_hz), emc)

    # ------------------------------------------------------------------ writing
    def planned_files(self, current: BoardState, target: BoardState) -> list[str]:
        """Files a change from ``current`` to ``target`` would write (for the permission preflight)."""
        files = [self.online_path(c) for c, on in target.online.items() if current.online.get(c) != on]
        for pid, values in target.cpu_khz.items():
            if current.cpu_khz.get(pid) != values:
                files += [self.policy_path(pid, "scaling_max_freq"),
                          self.policy_path(pid, "scaling_min_freq")]
        if target.gpu_hz is not None and current.gpu_hz != target.gpu_hz:
            files += [self.gpu_path("max_freq"), self.gpu_path("min_freq")]
        if target.emc is not None and current.emc != target.emc:
            files += list(self.emc_files.values())
        return files

    def converge(self, target: BoardState,
                 seen: dict[int, tuple[int | None, int | None]] | None = None) -> None:
        """Write the board towards ``target`` in kernel-safe order, skipping files already right.

        ``seen`` collects each cpufreq policy's limits as found just before this call wrote it.
        """
        with self._lock:
            for cpu in sorted(target.online):
                if target.online[cpu] and not self.is_online(cpu):
                    self.fs.write(self.online_path(cpu), 1)
            online_now = {c: self.is_online(c) for c in self.hotplug_cpus}
            for pid in self._active_policies(online_now):
                if pid in target.cpu_khz:
                    lo_path = self.policy_path(pid, "scaling_min_freq")
                    hi_path = self.policy_path(pid, "scaling_max_freq")
                    found = (self.fs.try_read_int(lo_path), self.fs.try_read_int(hi_path))
                    self.pristine_cpu_khz.setdefault(pid, found)
                    if seen is not None:
                        seen.setdefault(pid, found)
                    self._write_range(lo_path, hi_path, target.cpu_khz[pid])
                    self._last_cpu_khz[pid] = (self.fs.try_read_int(lo_path), self.fs.try_read_int(hi_path))
            for cpu in sorted(target.online, reverse=True):
                if not target.online[cpu] and self.is_online(cpu):
                    self.fs.write(self.online_path(cpu), 0)
            if target.gpu_hz is not None:
                self._write_range(self.gpu_path("min_freq"), self.gpu_path("max_freq"), target.gpu_hz)
            if target.emc is not None:
                self._write_emc(target.emc)

    def _write_range(self, min_path: str, max_path: str, target: tuple[int | None, int | None]) -> None:
        want_min, want_max = target
        cur_min, cur_max = self.fs.try_read_int(min_path), self.fs.try_read_int(max_path)
        order = [(max_path, want_max, cur_max), (min_path, want_min, cur_min)]
        if cur_max is not None and want_max is not None and want_max < cur_max:
            order.reverse()  # lowering: min first, so min never exceeds max
        for path, want, current in order:
            if want is not None and want != current:
                self.fs.write(path, want)

    def _write_emc(self, target: EmcSetting) -> None:
        files = self.emc_files
        if "locked" in files:
            locked = self.fs.try_read_int(files["locked"])
            if target.locked == 1:
                if locked != 1:
                    self.fs.write(files["locked"], 1)
                if target.rate_hz is not None and self.fs.try_read_int(files["rate"]) != target.rate_hz:
                    self.fs.write(files["rate"], target.rate_hz)
            elif target.locked is not None and locked != target.locked:
                # back to the rate it had, then unlock: EMC DVFS carries on from there
                if target.rate_hz is not None and self.fs.try_read_int(files["rate"]) != target.rate_hz:
                    self.fs.write(files["rate"], target.rate_hz)
                self.fs.write(files["locked"], target.locked)
        elif ("cap" in files and target.cap_hz is not None
              and self.fs.try_read_int(files["cap"]) != target.cap_hz):
            self.fs.write(files["cap"], target.cap_hz)

    def verify(self, target: BoardState) -> list[Mismatch]:
        """Read back every file ``target`` defines; the ones that differ."""
        bad: list[Mismatch] = []

        def check(path: str, want: int | None) -> None:
            if want is None:
                return
            got = self.fs.try_read_int(path)
            if got != want:
                bad.append(Mismatch(str(self.fs.path(path)), want, got))

        for cpu, on in sorted(target.online.items()):
            check(self.online_path(cpu), int(on))
        active = set(self._active_policies(target.online))
        for pid, (lo, hi) in sorted(target.cpu_khz.items()):
            if pid not in active:
                continue  # an offline cluster's policy cannot be read back (EBUSY)
            check(self.policy_path(pid, "scaling_min_freq"), lo)
            check(self.policy_path(pid, "scaling_max_freq"), hi)
        if target.gpu_hz is not None:
            check(self.gpu_path("min_freq"), target.gpu_hz[0])
            check(self.gpu_path("max_freq"), target.gpu_hz[1])
        if target.emc is not None:
            files = self.emc_files
            if "locked" in files:
                check(files["locked"], target.emc.locked)
                if target.emc.locked == 1:
                    check(files["rate"], target.emc.rate_hz)
            elif "cap" in files:
                check(files["cap"], target.emc.cap_hz)
        return bad

    def apply(self, target: BoardState) -> BoardState:
        """Change the board to ``target``; on any failure roll back, then raise. Returns the prior state.

        A permission problem is found before the first write when the OS reports it
        (``os.access``); a write refused later is rolled back like any other failure.
        """
        with self._lock:
            previous = self.read_state()
            if self.tables.emc_method == "unavailable":
                raise DeviceError("setting mem_mhz needs the BPMP debugfs (/sys/kernel/debug, root) or "
                                  "nvpmodel's EMC cap node; neither exists on this board (emc=none "
                                  "leaves EMC alone)")
            for path in self.planned_files(previous, target):
                self.fs.check_writable(path)
            start = len(self.fs.writes)
            seen: dict[int, tuple[int | None, int | None]] = {}
            try:
                self.converge(target, seen)
                bad = self.verify(target)
                if bad:
                    raise DeviceError(f"read-back mismatch after setting the mode: {bad[0]}")
            except DeviceError as exc:
                # clusters this call brought online go back to the limits they had before it
                previous = replace(previous, cpu_khz={**seen, **previous.cpu_khz})
                raise self._rolled_back(exc, previous, len(self.fs.writes) - start) from None
            return previous

    def _rolled_back(self, exc: DeviceError, previous: BoardState, n_written: int) -> DeviceError:
        cls = DevicePermissionError if isinstance(exc, DevicePermissionError) else DeviceError
        if n_written == 0 and not self.verify(previous):
            return cls(f"{exc.message}; nothing was changed")
        try:
            self.converge(previous)
            left = self.verify(previous)
        except DeviceError as again:
            return DeviceError(f"{exc.message}; rolling back also failed: {again.message}; "
                               "the board may be in a mixed mode")
        if left:
            return DeviceError(f"{exc.message}; rolling back left {left[0]}; "
                               "the board may be in a mixed mode")
        return cls(f"{exc.message}; the previous mode was restored")

    def restore(self, original: BoardState) -> None:
        """Converge back to ``original`` (best effort, no rollback); raise if it did not stick.

        Clusters that were offline in ``original`` get back the limits they had when we first
        brought them online, before they are taken offline again.
        """
        with self._lock:
            original = replace(original, cpu_khz={**self.pristine_cpu_khz, **original.cpu_khz})
            # An offline cluster we left with other limits is briefly brought online to reset them
            # (its policy cannot be written while offline); converge takes it offline again.
            online_now = {c: self.is_online(c) for c in self.hotplug_cpus}
            active = set(self._active_policies(online_now))
            for pid, cluster in zip(self.tables.policy_ids, self.tables.clusters, strict=True):
                stale = self._last_cpu_khz.get(pid, original.cpu_khz.get(pid)) != original.cpu_khz.get(pid)
                if pid not in active and pid in original.cpu_khz and stale:
                    self.fs.write(self.online_path(cluster[0]), 1)
            self.converge(original)
            left = self.verify(original)
            if left:
                raise DeviceError(f"restoring the original settings left {left[0]}")


def _table_value(table: tuple[int, ...] | None, value: float, knob: str) -> int:
    """The table entry (kernel units) equal to ``value`` within 1 kHz."""
    if not table:
        return round(value)
    best = min(table, key=lambda v: abs(v - value))
    if abs(best - value) > 1000:
        raise ModeError(f"{knob}={value:g} is not in this board's table")
    return best
