"""The run configuration: Flower's flat ``run_config`` turned into one validated object.

Keys are kebab-case in ``pyproject.toml`` (``[tool.flwr.app.config]``) and on the command
line, snake_case here. Every bad value fails before any round starts, with one line naming
the key, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from powertrain.errors import InvalidParameterError, check_choice, check_range
from powertrain.optimize import OBJECTIVES
from powertrain.workloads import get_workload

POLICIES = ("powertrain", "maxn", "preset", "random", "oracle")
SELECTIONS = ("deadline", "all")


@dataclass(frozen=True)
class RunConfig:
    """Everything a fleet run needs to know (defaults are the app's defaults)."""

    num_server_rounds: int = 10
    deadline_s: float = 20.0
    power_cap_w: float = 25.0
    objective: str = "energy"
    fraction: float = 1.0  # share of the eligible nodes selected per round
    local_minibatches: int = 50
    min_minibatches: int = 10
    workload: str = "resnet18-imagenet"
    store: str = ""  # "" = $POWERFLEET_STORE of the ServerApp's host, else the embedded store
    policy: str = "powertrain"
    selection: str = "deadline"
    margin_z: float = 2.0
    seed: int = 0
    dropout_rate: float = 0.0
    lr: float = 0.05
    transfer_samples: int = 50  # k profiled modes to bootstrap a new (device type, workload)
    profile_minibatches: int = 20  # measured minibatches per bootstrap mode
    refine_threshold_pct: float = 15.0  # rolling time error that triggers a re-transfer
    round_timeout_s: float = 600.0  # wall-clock limit of one round's replies
    reference_source: str = "sim"  # build a missing reference on a simulated board, or "store"
    out_dir: str = ""  # where the ServerApp writes its report ("" = no report)
    fleet_file: str = ""  # fleet TOML (simulation); deployed nodes report their own devices

    def __post_init__(self) -> None:
        check_range("num-server-rounds", self.num_server_rounds, low=1)
        check_range("deadline-s", self.deadline_s, low=0, low_inclusive=False)
        check_range("power-cap-w", self.power_cap_w, low=0, low_inclusive=False)
        check_choice("objective", self.objective, OBJECTIVES)
        check_range("fraction", self.fraction, low=0, high=1, low_inclusive=False)
        check_range("local-minibatches", self.local_minibatches, low=1)
        check_range("min-minibatches", self.min_minibatches, low=1, high=self.local_minibatches)
        get_workload(self.workload)
        check_choice("policy", self.policy, POLICIES)
        check_choice("selection", self.selection, SELECTIONS)
        check_range("margin-z", self.margin_z, low=0)
        check_range("dropout-rate", self.dropout_rate, low=0, high=1, high_inclusive=False)
        check_range("lr", self.lr, low=0, low_inclusive=False)
        check_range("transfer-samples", self.transfer_samples, low=3)
        check_range("profile-minibatches", self.profile_minibatches, low=1)
        check_range("refine-threshold-pct", self.refine_threshold_pct, low=0, low_inclusive=False)
        check_range("round-timeout-s", self.round_timeout_s, low=0, low_inclusive=False)
        check_choice("reference-source", self.reference_source, ["sim", "store"])

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's flat kebab-case config; unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise InvalidParameterError(
                    f"run config key {key!r} is not known; valid keys: "
                    f"{', '.join(sorted(k.replace('_', '-') for k in known))}")
            default = getattr(cls, name) if hasattr(cls, name) else None
            values[name] = _coerce(key, value, type(default))
        return cls(**values)

    def to_run_config(self) -> dict[str, bool | float | int | str]:
        """The flat kebab-case form Flower carries."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def _coerce(key: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"run config {key}={value!r} must be a {kind.__name__}") from None
