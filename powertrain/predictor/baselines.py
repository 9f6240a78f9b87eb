"""Baselines the transferred predictor must beat, run on the same k samples.

* ``scratch``  - the same networks trained from scratch on the k samples (CV picks the length);
* ``poly``     - ridge regression of log(time) and log(power) on engineered features: log knobs,
  reciprocal knobs, and all squares and pairwise products of log knobs (alpha by leave-one-out);
  ``reciprocals=False`` drops the reciprocals: the full quadratic in log knobs, the simulator
  calibration's "ridge on log knobs with pairwise products";
* ``rescale``  - the reference predictor multiplied by a factor fitted on the k samples.

Each is a ``fit(samples) -> self`` / ``predict(modes) -> Prediction`` estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from powertrain.boards import get_space
from powertrain.devices.simulated import NoiseModel, SimulatedJetson
from powertrain.errors import DataFormatError, NotFittedError
from powertrain.predictor.model import (
    PowerTrainPredictor,
    Prediction,
    linear_output,
    poly2_features,
    ridge_loo,
)
from powertrain.predictor.state import LinearState
from powertrain.profiler import profile


class TransferBaseline:
    """The reference transferred with one fixed method (``scratch`` or ``rescale``)."""

    def __init__(self, reference: PowerTrainPredictor, method: str, seed: int = 0) -> None:
        self.reference = reference
        self.method = method
        self.seed = seed
        self.model_: PowerTrainPredictor | None = None

    def fit(self, samples: pd.DataFrame) -> TransferBaseline:
        """Transfer with only ``self.method`` allowed."""
        self.model_ = self.reference.transfer(samples, methods=[self.method], seed=self.seed)
        return self

    def predict(self, modes: pd.DataFrame) -> Prediction:
        """Predictions of the fitted model."""
        if self.model_ is None:
            raise NotFittedError(f"{self.method} baseline is not fitted")
        return self.model_.predict(modes)


class PolynomialBaseline:
    """Ridge regression on polynomial features of the log knobs (log targets).

    The same ridge (:func:`~powertrain.predictor.model.ridge_loo`, alpha by closed-form
    leave-one-out) and features (``poly2`` on all-log knobs) the predictor's ``ridge``
    candidate uses, here on its own, without a reference.
    """

    def __init__(self, knobs: Sequence[str], time_col: str = "time_ms", power_col: str = "power_w",
                 *, reciprocals: bool = True) -> None:
        self.knobs = tuple(knobs)
        self.time_col = time_col
        self.power_col = power_col
        self.reciprocals = reciprocals
        self.models_: dict[str, LinearState] = {}
        self.resid_: dict[str, float] = {}

    def _features(self, frame: pd.DataFrame) -> np.ndarray:
        raw = frame.loc[:, list(self.knobs)].to_numpy(float)
        if not np.all(raw > 0):
            raise DataFormatError(f"polynomial baseline: knobs {', '.join(self.knobs)} must be positive")
        return poly2_features(raw, ("log",) * len(self.knobs), reciprocals=self.reciprocals)

    def fit(self, samples: pd.DataFrame) -> PolynomialBaseline:
        """Fit both targets; alpha by leave-one-out error."""
        f = self._features(samples)
        for name, col in (("time", self.time_col), ("power", self.power_col)):
            self.models_[name], self.resid_[name] = ridge_loo(f, np.log(samples[col].to_numpy(float)))
        return self

    def predict(self, modes: pd.DataFrame) -> Prediction:
        """Predictions; uncertainty is the leave-one-out RMSE (constant per target)."""
        if not self.models_:
            raise NotFittedError("polynomial baseline is not fitted")
        f = self._features(modes)
        t = np.exp(np.clip(linear_output(self.models_["time"], f), -50, 50))
        p = np.exp(np.clip(linear_output(self.models_["power"], f), -50, 50))
        return Prediction(t, p, np.full(len(t), self.resid_["time"]), np.full(len(p), self.resid_["power"]),
                          self.time_col, self.power_col)


def mape(pred: ArrayLike, truth: ArrayLike) -> float:
    """Mean absolute percentage error (%)."""
    return float(np.mean(np.abs(np.asarray(pred) / np.asarray(truth) - 1.0)) * 100.0)


def accuracy_table(prediction: Prediction, truth: pd.DataFrame, time_col: str = "time_ms",
                   power_col: str = "power_w") -> pd.DataFrame:
    """Error statistics of a prediction against measured or true values, per target."""
    rows = []
    for pred, col in ((prediction.time_ms, time_col), (prediction.power_w, power_col)):
        ape = np.abs(pred / truth[col].to_numpy(float) - 1.0) * 100.0
        rows.append({"target": col, "modes": len(ape), "mape_pct": float(ape.mean()),
                     "median_ape_pct": float(np.median(ape)), "p90_ape_pct": float(np.percentile(ape, 90)),
                     "max_ape_pct": float(ape.max()), "within_10pct": float(np.mean(ape <= 10.0))})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class RidgeCheck:
    """The calibration ridge (full quadratic in log knobs) fitted on ``k`` profiled modes."""

    device: str
    workload: str
    seeds: int
    time_mape_measured: float  # against a measured (profiled) test set: what a user sees
    power_mape_measured: float
    time_mape_truth: float  # against the noise-free truth of the same modes
    power_mape_truth: float


def ridge_check(device: str, workload: str, *, k: int = 50, seeds: int = 2, test_modes: int = 800,
                unit: int = 1, grid: str = "powertrain") -> RidgeCheck:
    """Fit the calibration ridge on ``k`` random profiled modes, score it on other profiled modes.

    Training and test modes are measured in separate sessions (profiler seeds) of the same
    board, as a user would profile them; the truth column scores the same predictions
    against the board's noise-free steady state.
    """
    space = get_space(device)
    pool = space.modes(grid)
    rng = np.random.default_rng([unit, k, 12345])
    test = pool.iloc[np.sort(rng.choice(len(pool), size=min(test_modes, len(pool)), replace=False))]
    measured = profile(SimulatedJetson(device, unit=unit, seed=900 + unit), workload, test).frame
    truth = SimulatedJetson(device, unit=unit, noise=NoiseModel.off()).true_performance(workload, test)
    scores = []
    for seed in range(seeds):
        picked = pool.sample(k, random_state=seed)
        samples = profile(SimulatedJetson(device, unit=unit, seed=seed), workload, picked).frame
        pred = PolynomialBaseline(space.knob_names, reciprocals=False).fit(samples).predict(test)
        scores.append((mape(pred.time_ms, measured.time_ms), mape(pred.power_w, measured.power_w),
                       mape(pred.time_ms, truth.time_ms), mape(pred.power_w, truth.power_w)))
    mean = np.mean(scores, axis=0)
    return RidgeCheck(device, workload, seeds, *(float(v) for v in mean))
