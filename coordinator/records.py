"""What a run records: one row per client-round, one per round, and the run summary.

Rates are fractions in [0, 1]. Power-cap violations are judged on the simulator's ground
truth (the chosen mode's true steady power) when the board is simulated, else on the
measured mean power. The deadline hit rate and the cap violation rate count client-rounds
that replied outside the bootstrap rounds, in which new predictors are profiled (profiling
deliberately visits modes above the cap and takes longer than a round; those client-rounds
are reported separately).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    choice_kind: ChoiceKind = ChoiceKind.NONE
    choice: str = ""

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
    completed: int  # updates used: replied on time (or, in a bootstrap round, replied at all)
    on_time: int  # replied within the deadline
    late: int
    dropped: int
    skipped: int
    energy_j: float
    mean_power_w: float
    duration_s: float  # device time until the last reply used (bounded by the deadline)
    wall_s: float
    accuracy: float
    loss: float
    profiling_minibatches: int
    predictor_versions: str  # "type=vN,..."
    energy_by_type_j: dict[str, float] = field(default_factory=dict)
    duration_by_type_s: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A flat dict for CSV/JSON (per-type figures as their own columns)."""
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, dict)}
        out.update({f"energy_j_{k}": v for k, v in self.energy_by_type_j.items()})
        out.update({f"duration_s_{k}": v for k, v in self.duration_by_type_s.items()})
        return out


def summarize(policy: str, rounds: Sequence[RoundRecord], clients: Sequence[ClientRecord],
              extra: dict[str, Any] | None = None, *, target_accuracy: float = math.nan) -> dict[str, Any]:
    """The run summary other tools read (see the module docstring for the definitions).

    Time and energy to ``target_accuracy`` add up every round (bootstrap rounds included) until
    the first whose global model reaches it; NaN if none does.
    """
    replied = [c for c in clients if c.status.replied]
    scored = [c for c in replied if not c.bootstrap]
    hits = sum(c.status == ClientStatus.ON_TIME for c in scored)
    over = [c.over_cap_w for c in scored]  # bootstrap profiling explores modes above the cap on purpose
    steady = [r for r in rounds if not r.bootstrap]
    final = next((r for r in reversed(rounds) if not math.isnan(r.accuracy)), None)
    summary: dict[str, Any] = {
        "policy": policy,
        "rounds": len(rounds),
        "client_rounds": len(replied),
        "deadline_hit_rate": hits / len(scored) if scored else math.nan,
        "energy_j_total": float(sum(r.energy_j for r in rounds)),
        "energy_j_per_round": (float(sum(r.energy_j for r in steady)) / len(steady)) if steady else math.nan,
        "power_cap_violation_rate": (sum(o > 0 for o in over) / len(over)) if over else math.nan,
        "max_power_over_cap_w": max(over, default=0.0),
        "final_accuracy": final.accuracy if final else math.nan,
        "profiling_minibatches": int(sum(r.profiling_minibatches for r in rounds)),
        "bootstrap_rounds": sum(r.bootstrap for r in rounds),
        "bootstrap_client_rounds_over_cap": sum(c.over_cap_w > 0 for c in replied if c.bootstrap),
        "dropped_client_rounds": sum(c.status == ClientStatus.DROPPED for c in clients),
        "skipped_client_rounds": sum(c.status == ClientStatus.SKIPPED for c in clients),
        "partial_work_client_rounds": sum(c.work_kind == WorkKind.PARTIAL for c in replied),
        "trimmed_client_rounds": sum(c.choice_kind == ChoiceKind.TRIMMED for c in replied),
        "mean_power_w": (float(sum(c.energy_j for c in replied)) / sum(c.time_s for c in replied))
        if replied and sum(c.time_s for c in replied) > 0 else math.nan,
    }
    reached = next((i for i, r in enumerate(rounds) if not math.isnan(r.accuracy) and r.accuracy >= target_accuracy),
                   None)
    summary["target_accuracy"] = target_accuracy
    summary["rounds_to_accuracy"] = rounds[reached].round if reached is not None else math.nan
    summary["time_to_accuracy_s"] = float(sum(r.duration_s for r in rounds[:reached + 1])) \
        if reached is not None else math.nan
    summary["energy_to_accuracy_j"] = float(sum(r.energy_j for r in rounds[:reached + 1])) \
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
