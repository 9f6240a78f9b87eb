"""The run configuration: one pydantic model, the single source of every run key.

Keys are kebab-case where users meet them - ``[tool.flwr.app.config]`` in ``pyproject.toml``,
``flwr run --run-config``, ``powerfleet simulate --run-config`` and its flags, a fleet file's
``[run]`` table - and snake_case attributes here. Types, defaults, ranges and help text live
in the field declarations below (a test checks pyproject's defaults against them). Every bad
value fails before any round starts, with one line naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from powerfleet.protocol.enums import Policy, Selection
from powerfleet.protocol.tasks import TaskError, parse_task_reference
from powertrain.errors import InvalidParameterError, check_choice, format_allowed
from powertrain.workloads import workload_names

#: The task a run trains when none is named: generated digits made hard (distortions, clutter,
#: Dirichlet alpha 0.3 label skew) so learning is visibly unfinished after five rounds of
#: mixed-12 (about 0.77 accuracy; 0.85 after ten), yet a round trains in seconds on two cores.
#: ``make run`` charges it as ResNet-18 (``cost-as``).
DEFAULT_TASK = "powerfleet.tasks.digits:Digits?alpha=0.3&difficulty=0.5"


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class RunConfig(BaseModel):
    """Everything a fleet run needs to know (defaults are the app's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=_kebab, populate_by_name=True,
                              allow_inf_nan=False, validate_default=True)

    num_server_rounds: int = Field(10, ge=1, le=100_000, description="FL rounds to run.")
    deadline_s: float = Field(20.0, gt=0, le=86_400.0,
                              description="Round deadline on each board's clock (s; device time in simulation).")
    power_cap_w: float = Field(25.0, gt=0, le=1000.0,
                               description="Power cap per board (W); fleet groups may set their own.")
    objective: Literal["energy", "time"] = Field("energy", description="What a node minimises under the caps.")
    fraction: float = Field(1.0, gt=0, le=1, description="Share of the eligible nodes selected per round.")
    local_minibatches: int = Field(50, ge=1, le=1_000_000, description="Local minibatches per round (full work).")
    min_minibatches: int = Field(10, ge=1, description="Least useful work; nodes that cannot do it are skipped.")
    task: str = Field(DEFAULT_TASK, description="The FL task: package.module:Class or path/file.py:Class, "
                                                "options after ?, e.g. powerfleet.tasks.vision:ResNet18?image_px=64.")
    cost_as: str = Field("", description="Simulation only: charge the boards a catalog workload's cost instead of "
                                         "the task's own (e.g. resnet18-imagenet); refused on real boards.")
    strategy: Literal["fedavg", "fedprox", "fedadam"] = Field(
        "fedavg", description="Flower strategy that aggregates the updates (flwr.serverapp.strategy).")
    proximal_mu: float = Field(0.01, ge=0, le=100, description="FedProx: weight of the proximal term.")
    server_lr: float = Field(0.1, gt=0, le=100, description="FedAdam: the server optimizer's learning rate.")
    target_accuracy: float = Field(0.8, gt=0, le=1,
                                   description="Accuracy the report measures time- and energy-to-accuracy at.")
    store: str = Field("", description="Predictor store URL; empty: $POWERFLEET_STORE, else the embedded store.")
    policy: Policy = Field(Policy.POWERTRAIN, description="How nodes choose their power mode.")
    selection: Selection = Field(Selection.DEADLINE, description="How the round's nodes and their work are chosen.")
    margin: Literal["conformal", "z"] = Field(
        "conformal", description="Safety margins: calibrated on held-out residuals (conformal), or margin-z.")
    deadline_miss_target: float = Field(0.02, gt=0, lt=0.5,
                                        description="Conformal margins: share of client-rounds allowed to be late.")
    cap_violation_target: float = Field(0.01, gt=0, lt=0.5,
                                        description="Conformal margins: share of client-rounds allowed over the cap.")
    margin_z: float = Field(2.0, ge=0, le=10,
                            description="Safety margin in predictor standard deviations (margin = z, and "
                                        "before a predictor has residuals).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Experiment seed.")
    dropout_rate: float = Field(0.0, ge=0, lt=1,
                                description="Chance a selected node crashes mid-round (simulation only).")
    lr: float = Field(0.05, gt=0, le=100, description="Local learning rate.")
    transfer_samples: int = Field(50, ge=3, le=10_000,
                                  description="Profiled modes to bootstrap a new (device type, workload) pair.")
    profile_minibatches: int = Field(60, ge=2, le=10_000,
                                     description="Most measured minibatches per profiled mode (a bootstrap stops "
                                                 "measuring a mode earlier once its mean is known).")
    refine_threshold_pct: float = Field(15.0, gt=0, le=1000,
                                        description="Rolling time error (%) that triggers a re-transfer.")
    round_timeout_s: float = Field(600.0, gt=0, le=7 * 86_400.0,
                                   description="Wall-clock limit of one round's replies (s).")
    reference_source: Literal["sim", "store"] = Field(
        "sim", description="Build a missing reference predictor on a simulated board, or demand one in the store.")
    out_dir: str = Field("", description="Report directory; empty: runs/<run id> under $POWERFLEET_RUNS_DIR.")
    fleet_file: str = Field("", description="Fleet TOML (simulation); deployed nodes report their own devices.")
    min_available_nodes: int = Field(1, ge=1, le=1_000_000,
                                     description="Nodes that must be connected before round 1.")
    node_wait_timeout_s: float = Field(300.0, gt=0, le=86_400.0,
                                       description="How long to wait for min-available-nodes before failing (s).")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools(cls, value: Any, info: ValidationInfo) -> Any:
        """``true``/``false`` are not numbers or names here (pydantic would read ``true`` as 1)."""
        if isinstance(value, bool):
            annotation = cls.model_fields[str(info.field_name)].annotation
            kind = {int: "int_type", float: "float_type"}.get(annotation, "string_type")  # type: ignore[arg-type]
            raise PydanticCustomError(kind, "a boolean is not a valid value here")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if self.min_minibatches > self.local_minibatches:
            raise ValueError(f"min-minibatches must be in [1, {self.local_minibatches}] (local-minibatches); "
                             f"got {self.min_minibatches}")
        if self.cost_as:
            check_choice("cost-as", self.cost_as, workload_names())
        parse_task_reference(self.task)
        return self

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], *, where: str = "run config") -> RunConfig:
        """Build from flat kebab-case keys (Flower's ``run_config``, CLI, fleet files); one line per error."""
        unknown = [k for k in run_config if _snake(k) not in cls.model_fields]
        if unknown:
            raise InvalidParameterError(f"{where} key {unknown[0]!r} is not known; valid keys: {', '.join(keys())}")
        try:
            return cls.model_validate({_kebab(_snake(k)): v for k, v in run_config.items()})
        except ValidationError as exc:
            raise InvalidParameterError(_one_line(exc.errors()[0], where)) from None
        except TaskError as exc:  # a ValueError pydantic passes through from the model validator
            raise InvalidParameterError(f"{where} task: {exc.message}") from None

    def with_overrides(self, overrides: Mapping[str, Any], *, where: str = "run config") -> RunConfig:
        """A copy with some keys (kebab or snake case) replaced, validated as a whole."""
        return RunConfig.from_run_config({**self.to_run_config(), **{_kebab(_snake(k)): v for k, v in
                                                                     overrides.items()}}, where=where)

    def to_run_config(self) -> dict[str, bool | float | int | str]:
        """The flat kebab-case form Flower carries."""
        return {_kebab(k): (str(v) if isinstance(v, str) else v) for k, v in self.model_dump().items()}


def keys() -> list[str]:
    """Every run-config key, kebab-case, in declaration order."""
    return [_kebab(k) for k in RunConfig.model_fields]


def field_help(key: str) -> str:
    """The help text of a kebab-case key."""
    field = RunConfig.model_fields[_snake(key)]
    return field.description or ""


def _snake(key: str) -> str:
    return str(key).replace("-", "_")


def _bounds(name: str) -> str:
    """``[1, 100000]``-style interval of a numeric field, from its declared constraints."""
    low, high, low_closed, high_closed = "-inf", "inf", False, False
    for meta in RunConfig.model_fields[name].metadata:
        if isinstance(meta, Ge):
            low, low_closed = f"{meta.ge:g}", True
        elif isinstance(meta, Gt):
            low = f"{meta.gt:g}"
        elif isinstance(meta, Le):
            high, high_closed = f"{meta.le:g}", True
        elif isinstance(meta, Lt):
            high = f"{meta.lt:g}"
    return f"{'[' if low_closed else '('}{low}, {high}{']' if high_closed else ')'}"


def _choices(name: str) -> list[str]:
    """The allowed values of an enum or Literal field."""
    annotation: Any = RunConfig.model_fields[name].annotation
    args = getattr(annotation, "__args__", None)
    return [str(c) for c in (args if args else list(annotation))]


def _one_line(error: ErrorDetails, where: str) -> str:
    """A pydantic error as the project's one-line message: key, value, what is allowed."""
    loc = [str(part) for part in error.get("loc", ())]
    kind = error["type"]
    value = error.get("input")
    if not loc:  # a model-level check (e.g. min-minibatches vs local-minibatches)
        return str(error["msg"]).removeprefix("Value error, ")
    key = loc[0]
    name = _snake(key)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        return f"{key} must be in {_bounds(name)}; got {value!r}"
    if kind in ("enum", "literal_error"):
        return f"{key} {value!r} is not known; valid names: {format_allowed(_choices(name))}"
    expected = {"int_parsing": "an integer", "int_from_float": "an integer", "int_type": "an integer",
                "float_parsing": "a number", "float_type": "a number", "string_type": "a string"}.get(kind)
    if expected is not None:
        return f"{where} {key}={value!r} must be {expected}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where} {key}={value!r}: {message}" if not (isinstance(value, float) and math.isnan(value)) \
        else f"{key} must be a finite number; got nan"
