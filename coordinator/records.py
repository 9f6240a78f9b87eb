"""What a run records: one row per client-round, one per round, and the run summary.

Rates are fractions in [0, 1] over the client-rounds that replied, **every round counted**:
bootstrap rounds, where new predictors are profiled inside the deadline, are rounds like any
other. The same figures without them carry a ``_steady`` suffix. Power-cap violations are
judged on the highest power of any mode a board ran in the round (the chosen one and every
profiled one): the simulator's ground truth when the board is simulated, else as measured.
Energy is every joule the selected boards drew while working, profiling included
(``energy_j_total``); ``idle_energy_j`` is what those that finished early drew waiting at
idle for the round to close, and ``energy_j_total_with_idle`` is both. ``maxn_*`` figures are
the same client-rounds on a fleet without predictors running everything at maximum (from the
boards' ground truth; NaN on real boards), and ``breakeven_round`` is the first round from
which this run's cumulative energy with idle stays at or below that fleet's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from typing import Any

from powerfleet.protocol.enums import ChoiceKind, ClientStatus, WorkKind


@dataclass(frozen=True, kw_only=True)
class ClientRecord:
    """One node in one round."""

    round: int
    node_id: int
    device_type: str
    unit: int
    status: ClientStatus
    bootstrap: bool
    work_kind: WorkKind = WorkKind.NONE
    reason: str = ""  # why it was selected, skipped or dropped, in words
    policy: str = ""
    mode: str = ""
    work_assigned: int = 0
    work_planned: int = 0
    work_done: int = 0
    time_s: float = math.nan
    energy_j: float = math.nan
    mean_power_w: float = math.nan
    pred_time_s: float = math.nan
    pred_power_w: float = math.nan
    pred_energy_j: float = math.nan
    true_power_w: float = math.nan
    power_cap_w: float = math.nan
    deadline_s: float = math.nan
    profiling_minibatches: int = 0
    profiled_modes: int = 0
    choice_kind: ChoiceKind = ChoiceKind.NONE
    choice: str = ""
    idle_power_w: float = 0.0  # the board's idle power (0: unknown)
    idle_energy_j: float = 0.0  # waiting at idle from its finish to the round's close
    maxn_time_ms: float = math.nan  # the board's MAXN minibatch time and power (ground truth)
    maxn_power_w: float = math.nan
    maxn_energy_j: float = math.nan  # this client-round on the MAXN fleet, idle wait included

    @property
    def over_cap_w(self) -> float:
        """How far the (true) power was above the cap; 0 if under or unknown."""
        if math.isnan(self.true_power_w) or math.isnan(self.power_cap_w):
            return 0.0
        return max(self.true_power_w - self.power_cap_w, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """A flat dict for CSV/JSON."""
        return {**asdict(self), "over_cap_w": self.over_cap_w}


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One round of the fleet."""

    round: int
    bootstrap: bool
    selected: int
    completed: int  # updates used: replied on time
    on_time: int  # replied within the deadline
    late: int
    dropped: int
    skipped: int
    energy_j: float  # drawn by the selected boards while working (profiling included)
    mean_power_w: float
    duration_s: float  # device time until the last reply (bounded by the deadline): the round's close
    wall_s: float
    accuracy: float
    loss: float
    profiling_minibatches: int
    predictor_versions: str  # "type=vN,..."
    #: federated evaluation: the model the nodes received this round, on their own held-out data
    #: (before they trained; ``accuracy`` is the central evaluation after aggregation)
    federated_accuracy: float = math.nan
    federated_loss: float = math.nan
    federated_examples: int = 0
    idle_energy_j: float = 0.0  # selected boards waiting at idle for the close
    maxn_energy_j: float = math.nan  # the same client-rounds on the MAXN fleet, idle included
    energy_by_type_j: dict[str, float] = field(default_factory=dict)
    duration_by_type_s: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A flat dict for CSV/JSON (per-type figures as their own columns)."""
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, dict)}
        out.update({f"energy_j_{k}": v for k, v in self.energy_by_type_j.items()})
        out.update({f"duration_s_{k}": v for k, v in self.duration_by_type_s.items()})
        return out


def _rate(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def breakeven_round(rounds: Sequence[RoundRecord]) -> float:
    """First round from which the cumulative energy with idle stays at or below the MAXN
    fleet's (NaN if it never does, or the MAXN figures are unknown)."""
    ours = list(accumulate(r.energy_j + r.idle_energy_j for r in rounds))
    theirs = list(accumulate(r.maxn_energy_j for r in rounds))
    if not rounds or any(math.isnan(v) for v in theirs):
        return math.nan
    for i in range(len(rounds)):
        if all(o <= t for o, t in zip(ours[i:], theirs[i:], strict=True)):
            return float(rounds[i].round)
    return math.nan


def summarize(policy: str, rounds: Sequence[RoundRecord], clients: Sequence[ClientRecord],
              extra: dict[str, Any] | None = None, *, target_accuracy: float = math.nan) -> dict[str, Any]:
    """The run summary other tools read (see the module docstring for the definitions).

    Time and energy to ``target_accuracy`` add up every round (bootstrap rounds included) until
    the first whose global model reaches it; NaN if none does.
    """
    replied = [c for c in clients if c.status.replied]
    steady_c = [c for c in replied if not c.bootstrap]
    steady = [r for r in rounds if not r.bootstrap]
    over = [c.over_cap_w for c in replied]
    final = next((r for r in reversed(rounds) if not math.isnan(r.accuracy)), None)
    energy = float(sum(r.energy_j for r in rounds))
    idle = float(sum(r.idle_energy_j for r in rounds))
    maxn = float(sum(r.maxn_energy_j for r in rounds))
    summary: dict[str, Any] = {
        "policy": policy,
        "rounds": len(rounds),
        "client_rounds": len(replied),
        "deadline_hit_rate": _rate(sum(c.status == ClientStatus.ON_TIME for c in replied), len(replied)),
        "deadline_hit_rate_steady": _rate(sum(c.status == ClientStatus.ON_TIME for c in steady_c), len(steady_c)),
        "energy_j_total": energy,
        "idle_energy_j": idle,
        "energy_j_total_with_idle": energy + idle,
        "energy_j_per_round": energy / len(rounds) if rounds else math.nan,
        "energy_j_per_round_steady": (float(sum(r.energy_j for r in steady)) / len(steady)) if steady else math.nan,
        "bootstrap_energy_j": float(sum(c.energy_j for c in replied if c.profiling_minibatches > 0)),
        "maxn_energy_j_total_with_idle": maxn,
        "energy_vs_maxn": (energy + idle) / maxn if maxn > 0 else math.nan,
        "breakeven_round": breakeven_round(rounds),
        "power_cap_violation_rate": _rate(sum(o > 0 for o in over), len(over)),
        "power_cap_violation_rate_steady": _rate(sum(c.over_cap_w > 0 for c in steady_c), len(steady_c)),
        "max_power_over_cap_w": max(over, default=0.0),
        "final_accuracy": final.accuracy if final else math.nan,
        "profiling_minibatches": int(sum(r.profiling_minibatches for r in rounds)),
        "minibatches_trained": int(sum(c.work_done for c in replied)),  # profiled ones are training steps too
        "profiled_modes": int(sum(c.profiled_modes for c in replied)),
        "bootstrap_rounds": sum(r.bootstrap for r in rounds),
        "dropped_client_rounds": sum(c.status == ClientStatus.DROPPED for c in clients),
        "skipped_client_rounds": sum(c.status == ClientStatus.SKIPPED for c in clients),
        "partial_work_client_rounds": sum(c.work_kind == WorkKind.PARTIAL for c in replied),
        "trimmed_client_rounds": sum(c.choice_kind == ChoiceKind.TRIMMED for c in replied),
        "mean_power_w": (energy / sum(c.time_s for c in replied))
        if replied and sum(c.time_s for c in replied) > 0 else math.nan,
    }
    reached = next((i for i, r in enumerate(rounds) if not math.isnan(r.accuracy) and r.accuracy >= target_accuracy),
                   None)
    summary["target_accuracy"] = target_accuracy
    summary["rounds_to_accuracy"] = rounds[reached].round if reached is not None else math.nan
    summary["time_to_accuracy_s"] = float(sum(r.duration_s for r in rounds[:reached + 1])) \
        if reached is not None else math.nan
    summary["energy_to_accuracy_j"] = float(sum(r.energy_j + r.idle_energy_j for r in rounds[:reached + 1])) \
        if reached is not None else math.nan
    if extra:
        summary.update(extra)
    return summary


def describe_round(record: RoundRecord, clients: Sequence[ClientRecord], rounds: int) -> str:
    """One line per round for logs (``flwr run --stream``, ``flwr log``): outcomes, the modes
    run per board type, energy and accuracy."""
    modes: dict[str, dict[str, int]] = {}
    for c in clients:
        if c.status.replied and c.mode and c.choice_kind != ChoiceKind.PROFILING:
            per_type = modes.setdefault(c.device_type, {})
            per_type[_short_mode(c.mode)] = per_type.get(_short_mode(c.mode), 0) + 1
    mode_text = "; ".join(f"{t} " + ", ".join(f"{m} x{n}" for m, n in sorted(ms.items(), key=lambda kv: -kv[1])[:2])
                          for t, ms in sorted(modes.items())) or "none"
    acc = "" if math.isnan(record.accuracy) else f", accuracy {record.accuracy:.3f}"
    if not math.isnan(record.federated_accuracy):
        acc += f", {record.federated_accuracy:.3f} on the nodes' data before training"
    boot = " (bootstrap)" if record.bootstrap else ""
    return (f"powerfleet round {record.round}/{rounds}{boot}: {record.selected} selected, {record.on_time} on time, "
            f"{record.late} late, {record.dropped} dropped, {record.skipped} skipped; modes {mode_text}; "
            f"energy {record.energy_j:.0f} J{acc}")


def _short_mode(mode: str) -> str:
    """``cpu_cores=8,cpu_mhz=1728,gpu_mhz=624.75,mem_mhz=3199`` -> ``8c/1728/625/3199``."""
    values = [v.split("=", 1)[1] for v in mode.split(",") if "=" in v]
    if len(values) != 4:
        return mode
    return f"{float(values[0]):g}c/" + "/".join(f"{float(v):.0f}" for v in values[1:])
