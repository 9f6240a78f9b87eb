"""Real ``powerfleet simulate`` processes for interrupt and concurrency tests (and bench/faults.py):
started with a fleet file and a store, signalled and waited for by PID; a store audit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.report import PROGRESS_FILE
from coordinator.rounds import bootstrap_lock
from coordinator.store import open_store
from coordinator.store.builder import lock_name
from powerfleet.serde import verify_predictor
from powertrain.errors import PowerfleetError

#: Settings that keep bootstraps short (as tests/fleet/conftest.py FAST), as CLI flags.
FAST_FLAGS = ("--transfer-samples", "9", "--profile-minibatches", "5", "--local-minibatches", "20",
              "--min-minibatches", "5", "--cost-as", "resnet18-imagenet")


def fleet_file(path: Path, groups: list[tuple[str, int, int]], name: str = "test-fleet") -> Path:
    """A fleet file of ``(device, count, first unit)`` groups."""
    text = [f'name = "{name}"']
    for device, count, first in groups:
        text += ["[[group]]", f'device = "{device}"', f"count = {count}", f"first_unit = {first}"]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


@dataclass
class SimRun:
    """One ``powerfleet simulate`` process (its own session, output in files)."""

    proc: subprocess.Popen[bytes]
    out: Path
    stderr: Path
    stdout: Path
    signalled_at: float = 0.0
    exited_at: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def progress(self) -> int:
        """Rounds finished so far (lines of the report directory's progress file)."""
        try:
            return len((self.out / PROGRESS_FILE).read_text(encoding="utf-8").splitlines())
        except OSError:
            return 0

    def wait_rounds(self, rounds: int, timeout_s: float) -> bool:
        """Wait until ``rounds`` rounds are finished (True), the process ends or the time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.progress() >= rounds:
                return True
            time.sleep(0.1)
        return False

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (only it: its children are in sessions of their own)."""
        self.signalled_at = time.monotonic()
        os.kill(self.pid, sig)

    def wait(self, timeout_s: float) -> int:
        """The exit code (the process is killed by PID if it outlives ``timeout_s``)."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.exited_at = time.monotonic()
        return code

    @property
    def stop_s(self) -> float:
        """Seconds from the signal to the exit."""
        return self.exited_at - self.signalled_at

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def summary(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.out / "summary.json").read_text())
        return data


def start_simulate(workdir: Path, name: str, fleet: Path, store: str, rounds: int, *extra: str,
                   engine: str = "analytic") -> SimRun:
    """Start ``python -m powerfleet simulate`` writing to ``workdir/name``."""
    out = workdir / name
    stdout, stderr = workdir / f"{name}.out", workdir / f"{name}.err"
    args = [sys.executable, "-m", "powerfleet", "simulate", "--engine", engine, "--fleet", str(fleet),
            "--store", store, "--rounds", str(rounds), "--out", str(out), *FAST_FLAGS, *extra]
    with stdout.open("wb") as so, stderr.open("wb") as se:
        proc = subprocess.Popen(args, stdout=so, stderr=se, start_new_session=True, cwd=workdir,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return SimRun(proc, out, stderr, stdout)


@dataclass
class StoreAudit:
    """What a store holds after runs: versions per pair and anything wrong with them."""

    versions: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def audit_store(url: str) -> StoreAudit:
    """Every version of every pair loads and verifies, numbers and artifact ids are unique, the
    latest pointer is the highest version, and no build or bootstrap lock is left held."""
    audit = StoreAudit()
    store = open_store(url)
    try:
        for dt, wl in store.pair_names():
            metas = store.versions(dt, wl)
            numbers = [m.version for m in metas]
            ids = [m.artifact_id for m in metas]
            audit.versions[(dt, wl)] = numbers
            audit.artifacts[(dt, wl)] = ids
            if len(set(numbers)) != len(numbers) or len(set(ids)) != len(ids):
                audit.problems.append(f"{dt}/{wl}: duplicate versions {numbers} / ids {ids}")
            if numbers and store.latest_version(dt, wl) != max(numbers):
                audit.problems.append(f"{dt}/{wl}: latest {store.latest_version(dt, wl)} is not v{max(numbers)}")
            for m in metas:
                try:
                    meta, data = store.get_artifact(dt, wl, m.version)
                    if verify_predictor(data).artifact_id != meta.artifact_id:
                        audit.problems.append(f"{dt}/{wl} v{m.version}: bytes of another artifact")
                except PowerfleetError as exc:
                    audit.problems.append(f"{dt}/{wl} v{m.version}: {exc}")
            for lock in (lock_name(dt, wl), bootstrap_lock(dt, wl)):
                handle = store.acquire_lock(lock, ttl_s=5, renew=False)
                if handle is None:
                    audit.problems.append(f"lock {lock} still held")
                else:
                    handle.release()
    finally:
        store.close()
    return audit
