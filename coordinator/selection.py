"""Which nodes work in a round, and how much: pluggable selection policies.

``DeadlineAwareSelection`` (the default) uses each device type's predictor: a node whose
fastest mode under its cap cannot finish even ``min_minibatches`` before the deadline is
skipped; a slow node that can finish some but not all of the local work gets partial work
instead of being dropped. ``AllSelection`` gives every available node the full work (a fleet
without predictors). Both then keep a ``fraction`` of the eligible nodes at random.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from powerfleet.protocol.enums import Selection, WorkKind
from powerfleet.protocol.messages import NodeInfo
from powertrain.errors import check_choice
from powertrain.optimize import Choice, ModeTable


@dataclass(frozen=True)
class Assignment:
    """A selected node and its local work."""

    node_id: int
    work: int
    kind: WorkKind
    reason: str  # in words: "full", "partial: 12 of 50 minibatches fit", ...


@dataclass(frozen=True)
class Skip:
    """A node left out of the round, and why."""

    node_id: int
    reason: str


@dataclass(frozen=True)
class SelectionInput:
    """What a policy decides from."""

    nodes: Sequence[NodeInfo]  # available nodes
    tables: Mapping[str, ModeTable]  # predictions per device type (missing: no predictor yet)
    caps_w: Mapping[int, float]  # power cap per node id (fleet groups may differ within a type)
    deadline_s: float
    local_minibatches: int
    min_minibatches: int
    margin_z: float
    fraction: float
    #: calibrated (time, power) log margins per device type; a type without them uses margin_z
    margins: Mapping[str, tuple[float, float]] = field(default_factory=dict)


class SelectionPolicy(Protocol):
    """Chooses the round's nodes and their work."""

    name: Selection

    def select(self, inp: SelectionInput, rng: np.random.Generator) -> tuple[list[Assignment], list[Skip]]:
        """Selected nodes with their work, and the skipped ones with reasons."""


def _sample(assignments: list[Assignment], skipped: list[Skip], fraction: float,
            rng: np.random.Generator) -> tuple[list[Assignment], list[Skip]]:
    if fraction >= 1.0 or not assignments:
        return assignments, skipped
    keep = max(1, math.ceil(fraction * len(assignments)))
    chosen = set(rng.choice(len(assignments), size=keep, replace=False).tolist())
    out = [a for i, a in enumerate(assignments) if i in chosen]
    skipped = skipped + [Skip(a.node_id, f"not sampled (fraction {fraction:g})")
                         for i, a in enumerate(assignments) if i not in chosen]
    return out, skipped


class DeadlineAwareSelection:
    """Skip nodes that cannot do the minimum work in time; give slow nodes partial work."""

    name = Selection.DEADLINE

    def select(self, inp: SelectionInput, rng: np.random.Generator) -> tuple[list[Assignment], list[Skip]]:
        """See the module docstring."""
        per_group: dict[tuple[str, float], tuple[int, WorkKind, str]] = {}  # (device type, cap): decision
        for dtype, cap in {(n.device_type, inp.caps_w[n.node_id]) for n in inp.nodes}:
            table = inp.tables.get(dtype)
            if table is None:
                per_group[dtype, cap] = (inp.local_minibatches, WorkKind.FULL, "full (no predictor in use)")
                continue
            res = table.choose(power_cap_w=cap, objective="time", margin_z=inp.margin_z,
                               margin_log=inp.margins.get(dtype))
            if not isinstance(res, Choice):
                per_group[dtype, cap] = (0, WorkKind.NONE, f"no mode under {cap:g} W: {res.reason}")
                continue
            fit = math.floor(inp.deadline_s * 1000.0 / res.time_ms_upper)
            if fit < inp.min_minibatches:
                per_group[dtype, cap] = (0, WorkKind.NONE, f"fastest mode under {cap:g} W needs "
                                         f"{res.time_ms_upper:.0f} ms/minibatch: {fit} < {inp.min_minibatches} "
                                         f"minibatches fit in {inp.deadline_s:g} s")
            elif fit < inp.local_minibatches:
                per_group[dtype, cap] = (fit, WorkKind.PARTIAL,
                                         f"partial: {fit} of {inp.local_minibatches} minibatches fit")
            else:
                per_group[dtype, cap] = (inp.local_minibatches, WorkKind.FULL, "full")
        chosen: list[Assignment] = []
        skipped: list[Skip] = []
        for n in inp.nodes:
            work, kind, reason = per_group[n.device_type, inp.caps_w[n.node_id]]
            if work > 0:
                chosen.append(Assignment(n.node_id, work, kind, reason))
            else:
                skipped.append(Skip(n.node_id, reason))
        return _sample(chosen, skipped, inp.fraction, rng)


class AllSelection:
    """Every available node, full local work (no predictor in the loop)."""

    name = Selection.ALL

    def select(self, inp: SelectionInput, rng: np.random.Generator) -> tuple[list[Assignment], list[Skip]]:
        """See the module docstring."""
        chosen = [Assignment(n.node_id, inp.local_minibatches, WorkKind.ALL, "all") for n in inp.nodes]
        return _sample(chosen, [], inp.fraction, rng)


SELECTIONS: dict[Selection, type[DeadlineAwareSelection] | type[AllSelection]] = {
    Selection.DEADLINE: DeadlineAwareSelection, Selection.ALL: AllSelection}


def make_selection(name: Selection | str) -> SelectionPolicy:
    """The selection policy called ``name``."""
    return SELECTIONS[Selection(check_choice("selection", str(name), list(Selection)))]()
