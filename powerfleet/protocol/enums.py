"""The closed sets of names the coordinator and the nodes exchange, as ``StrEnum``.

Values are the strings users type and reports show (``--policy maxn``, ``status=on-time``);
as ``str`` subclasses they compare equal to those strings and serialise as them.
"""

from __future__ import annotations

from enum import StrEnum


class Policy(StrEnum):
    """How a node chooses its power mode each round."""

    @property
    def uses_predictor(self) -> bool:
        """Whether the policy consults the transferred predictor (only ``powertrain`` does; the
        baselines model fleets without it and never profile)."""
        return self is Policy.POWERTRAIN

    POWERTRAIN = "powertrain"  # the transferred predictor, under cap and deadline
    MAXN = "maxn"  # every knob at its maximum
    PRESET = "preset"  # the largest nvpmodel preset whose budget fits the cap
    BEST_PRESET = "best-preset"  # the cheapest preset meeting cap and deadline, with hindsight (simulated)
    RANDOM = "random"  # any mode
    ORACLE = "oracle"  # the simulator's ground truth (simulated boards only)


class Selection(StrEnum):
    """How the coordinator picks a round's nodes and their work."""

    DEADLINE = "deadline"  # predictor-aware: skip, partial or full work
    ALL = "all"  # every available node, full work


class WorkKind(StrEnum):
    """What a selected node was asked to do in a round."""

    FULL = "full"  # the full local work
    PARTIAL = "partial"  # only what fits the deadline
    ALL = "all"  # full work from a selection without predictors
    BOOTSTRAP = "bootstrap"  # profiling modes for a new predictor
    NONE = "none"  # not selected


class ChoiceKind(StrEnum):
    """Why a node ran the mode it ran."""

    FEASIBLE = "feasible"  # meets deadline and cap with margin
    TRIMMED = "trimmed"  # nothing feasible: fastest mode under the cap, work trimmed to fit
    BASELINE = "baseline"  # a baseline policy's fixed rule
    PROFILING = "profiling"  # a bootstrap round: only profiled modes ran
    NONE = "none"  # the node did not reply


class ClientStatus(StrEnum):
    """The outcome of one node in one round."""

    ON_TIME = "on-time"  # replied within the deadline
    LATE = "late"  # replied after the deadline (device time)
    DROPPED = "dropped"  # no reply, an error reply, or unavailable
    SKIPPED = "skipped"  # not selected

    @property
    def replied(self) -> bool:
        """Whether the node sent a result."""
        return self in (ClientStatus.ON_TIME, ClientStatus.LATE)
