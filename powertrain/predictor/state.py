"""The persisted form of a predictor: plain arrays plus metadata, no code and no pickle.

A :class:`PredictorState` is what ``PowerTrainPredictor.to_state()`` returns and
``from_state()`` accepts. ``powerfleet/serde.py`` turns it into the versioned protobuf artifact
(with a sha256 digest) that the store keeps and the CLI writes as ``.model`` files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from powertrain.errors import DataFormatError

#: Bump when the meaning of any field changes; loaders refuse other versions. Version 2 adds
#: linear (ridge) components and component labels; a version-1 artifact (networks only) reads
#: unchanged.
STATE_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

#: Most held-out residuals a target keeps (for calibrated margins).
MAX_RESIDUALS = 512

KNOB_TRANSFORMS = ("log", "linear")
TARGET_TRANSFORMS = ("log",)
ACTIVATIONS = ("relu", "silu")
#: How a target model was made.
METHODS = ("reference", "finetune", "scratch", "blend", "rescale", "ridge")
#: Feature sets of linear components: ``poly2`` = each knob as the model transforms it (log or
#: linear), the reciprocal of each log knob, and all squares and pairwise products of the
#: transformed knobs.
FEATURE_SETS = ("poly2",)


def poly2_width(knob_transforms: tuple[str, ...]) -> int:
    """Number of ``poly2`` features for knobs with these transforms (see ``model.poly2_features``)."""
    k = len(knob_transforms)
    return k + sum(t == "log" for t in knob_transforms) + k * (k + 1) // 2


@dataclass(frozen=True)
class NetworkState:
    """An ensemble of identical MLPs stored as stacked layers.

    ``weights[i]`` has shape ``(members, fan_in, fan_out)`` and ``biases[i]`` shape
    ``(members, fan_out)``; the activation is applied between layers, not after the last.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise DataFormatError(f"network activation {self.activation!r} not one of {ACTIVATIONS}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise DataFormatError("network needs as many bias vectors as weight matrices (>= 1)")
        members = self.weights[0].shape[0]
        fan_in = self.weights[0].shape[1]
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 3 or b.ndim != 2:
                raise DataFormatError(f"layer {i}: weight must be 3-D and bias 2-D")
            if w.shape[0] != members or b.shape[0] != members:
                raise DataFormatError(f"layer {i}: member count differs from layer 0")
            if w.shape[1] != fan_in or b.shape[1] != w.shape[2]:
                raise DataFormatError(f"layer {i}: shapes {w.shape} and {b.shape} do not chain")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise DataFormatError(f"layer {i}: non-finite weights")
            fan_in = w.shape[2]
        if fan_in != 1:
            raise DataFormatError("the last layer must have one output")

    @property
    def members(self) -> int:
        """Ensemble size."""
        return int(self.weights[0].shape[0])

    @property
    def n_inputs(self) -> int:
        """Input width."""
        return int(self.weights[0].shape[1])

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden layer widths."""
        return tuple(int(w.shape[2]) for w in self.weights[:-1])


@dataclass(frozen=True)
class LinearState:
    """A ridge regression on engineered knob features, predicting the normalised log target.

    ``output = intercept + ((features(knobs) - feature_mean) / feature_std) . coef``.
    """

    features: str
    feature_mean: np.ndarray
    feature_std: np.ndarray
    coef: np.ndarray
    intercept: float

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SETS:
            raise DataFormatError(f"linear features {self.features!r} not one of {FEATURE_SETS}")
        n = self.coef.shape
        if len(n) != 1 or self.feature_mean.shape != n or self.feature_std.shape != n:
            raise DataFormatError("linear component: coef, feature_mean and feature_std must be equal-length vectors")
        if not (np.all(np.isfinite(self.coef)) and np.all(np.isfinite(self.feature_mean))
                and np.all(self.feature_std > 0) and np.isfinite(self.intercept)):
            raise DataFormatError("linear component: non-finite coefficients or non-positive scales")


@dataclass(frozen=True)
class ComponentState:
    """One term of a target model: ``weight * (scale * model(x) + shift)`` in normalised space.

    ``model`` is an MLP ensemble (``network``) or a ridge regression (``linear``), exactly one
    of them. A fine-tuned or scratch model is one component with weight 1; a blend has
    several; the rescaled-reference baseline is the reference network with a fitted ``shift``.
    A network may carry weight 0: it is kept as the base later transfers fine-tune from.
    """

    weight: float
    network: NetworkState | None
    scale: float = 1.0
    shift: float = 0.0
    linear: LinearState | None = None
    label: str = ""  # the candidate it came from: finetune, scratch, ridge, ... ("" in version 1)

    def __post_init__(self) -> None:
        if (self.network is None) == (self.linear is None):
            raise DataFormatError("a component holds exactly one model: a network or a linear one")


@dataclass(frozen=True)
class TargetState:
    """The model of one target (minibatch time or board power)."""

    name: str  # "time" or "power"
    column: str  # profile column it predicts, e.g. "time_ms"
    transform: str  # "log": the networks predict standardised log(target)
    y_mean: float
    y_std: float
    method: str  # one of METHODS
    components: tuple[ComponentState, ...]
    #: cross-validated MAPE (%) of each candidate method tried for this target
    cv_mape: Mapping[str, float] = field(default_factory=dict)
    #: RMSE of log(prediction / truth) of the chosen model, from cross-validation or
    #: held-out data; the optimizer adds it to the ensemble spread as a safety margin
    error_log_rmse: float = 0.0
    #: held-out residuals log(measured / predicted) of the chosen model (transfer CV, or the
    #: reference's validation split, at most MAX_RESIDUALS): what calibrated margins are built from
    cv_log_residuals: tuple[float, ...] = ()

    def base_component(self) -> ComponentState:
        """The network component later transfers start from (the one with the largest weight)."""
        return max((c for c in self.components if c.network is not None), key=lambda c: c.weight)

    def __post_init__(self) -> None:
        if self.transform not in TARGET_TRANSFORMS:
            raise DataFormatError(f"target {self.name}: transform {self.transform!r} not supported")
        if self.method not in METHODS:
            raise DataFormatError(f"target {self.name}: method {self.method!r} not one of {METHODS}")
        if not self.components:
            raise DataFormatError(f"target {self.name}: no components")
        if not (np.isfinite(self.y_mean) and np.isfinite(self.y_std) and self.y_std > 0):
            raise DataFormatError(f"target {self.name}: bad normalisation {self.y_mean}, {self.y_std}")
        if len(self.cv_log_residuals) > MAX_RESIDUALS or not np.all(np.isfinite(self.cv_log_residuals)):
            raise DataFormatError(f"target {self.name}: cv_log_residuals must be at most {MAX_RESIDUALS} finite "
                                  "numbers")


@dataclass(frozen=True)
class PredictorState:
    """Everything needed to rebuild a predictor; see the module docstring."""

    device_type: str
    workload: str
    knobs: tuple[str, ...]
    knob_transforms: tuple[str, ...]
    input_mean: np.ndarray
    input_std: np.ndarray
    targets: tuple[TargetState, ...]
    kind: str  # how the predictor as a whole was made: "reference" | "transfer" | "scratch"
    parent_id: str = ""  # artifact id (digest) of the source predictor, for transfers
    n_samples: int = 0  # profiled modes it was fitted on
    seed: int = 0
    created_at: float = 0.0  # unix seconds
    settings: Mapping[str, Any] = field(default_factory=dict)  # JSON-able hyper-parameters
    schema_version: int = STATE_SCHEMA_VERSION
    #: per knob, the least and largest value of the samples it was fitted on: where it has seen
    #: data (its support); empty when unknown (version-1 artifacts)
    sample_low: tuple[float, ...] = ()
    sample_high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.knobs)
        if k == 0 or len(set(self.knobs)) != k:
            raise DataFormatError("predictor knobs must be non-empty and distinct")
        if len(self.knob_transforms) != k or any(t not in KNOB_TRANSFORMS for t in self.knob_transforms):
            raise DataFormatError(f"knob transforms must be {k} of {KNOB_TRANSFORMS}")
        if self.input_mean.shape != (k,) or self.input_std.shape != (k,):
            raise DataFormatError(f"input scaling must have shape ({k},)")
        if not np.all(self.input_std > 0):
            raise DataFormatError("input scaling std must be positive")
        if (self.sample_low or self.sample_high) and not (
                len(self.sample_low) == len(self.sample_high) == k
                and all(np.isfinite(lo) and np.isfinite(hi) and lo <= hi
                        for lo, hi in zip(self.sample_low, self.sample_high, strict=True))):
            raise DataFormatError(f"sample ranges must be {k} finite (low <= high) pairs, or none")
        names = [t.name for t in self.targets]
        if sorted(names) != ["power", "time"]:
            raise DataFormatError(f"targets must be time and power, got {names}")
        for t in self.targets:
            if not any(c.network is not None for c in t.components):
                raise DataFormatError(f"target {t.name}: needs at least one network component")
            for c in t.components:
                if c.network is not None and c.network.n_inputs != k:
                    raise DataFormatError(f"target {t.name}: network takes {c.network.n_inputs} inputs, "
                                          f"predictor has {k} knobs")
        if self.schema_version not in READABLE_SCHEMA_VERSIONS:
            raise DataFormatError(
                f"predictor schema version {self.schema_version} is not supported "
                f"(this build reads versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})"
            )

    def supported(self, raw: np.ndarray) -> np.ndarray | None:
        """Per row of knob values (columns in ``knobs`` order): whether every knob lies within
        the range the predictor was fitted on; None when the ranges are unknown."""
        if not self.sample_low:
            return None
        lo, hi = np.asarray(self.sample_low), np.asarray(self.sample_high)
        tol = 1e-9 * np.maximum(np.abs(hi), 1.0)
        mask: np.ndarray = np.all((raw >= lo - tol) & (raw <= hi + tol), axis=1)
        return mask

    def target(self, name: str) -> TargetState:
        """The target called ``name``."""
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)
