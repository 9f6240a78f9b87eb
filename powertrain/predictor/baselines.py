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

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from powertrain.errors import NotFittedError
from powertrain.predictor.model import PowerTrainPredictor, Prediction


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
    """Ridge regression on engineered polynomial features of the knobs (log targets)."""

    alphas = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

    def __init__(self, knobs: Sequence[str], time_col: str = "time_ms", power_col: str = "power_w",
                 *, reciprocals: bool = True) -> None:
        self.knobs = tuple(knobs)
        self.time_col = time_col
        self.power_col = power_col
        self.reciprocals = reciprocals
        self.coef_: dict[str, np.ndarray] = {}
        self.scale_: tuple[np.ndarray, np.ndarray] | None = None
        self.resid_: dict[str, float] = {}

    def _features(self, frame: pd.DataFrame) -> np.ndarray:
        raw = frame.loc[:, list(self.knobs)].to_numpy(float)
        pos = raw > 0
        logs = np.where(pos, np.log(np.where(pos, raw, 1.0)), raw)
        cols = [logs]
        if self.reciprocals:
            cols.append(np.where(pos, 1.0 / np.where(pos, raw, 1.0), 0.0))
        cols += [(logs[:, i] * logs[:, j])[:, None]
                 for i, j in itertools.combinations_with_replacement(range(logs.shape[1]), 2)]
        return np.column_stack(cols)

    def fit(self, samples: pd.DataFrame) -> PolynomialBaseline:
        """Fit both targets; alpha by closed-form leave-one-out error."""
        f = self._features(samples)
        mean, std = f.mean(axis=0), f.std(axis=0)
        std[std == 0] = 1.0
        self.scale_ = (mean, std)
        x = np.column_stack([np.ones(len(f)), (f - mean) / std])
        for name, col in (("time", self.time_col), ("power", self.power_col)):
            y = np.log(samples[col].to_numpy(float))
            best: tuple[float, np.ndarray] | None = None
            for alpha in self.alphas:
                reg = alpha * np.eye(x.shape[1])
                reg[0, 0] = 0.0
                inv = np.linalg.pinv(x.T @ x + reg)
                coef = inv @ x.T @ y
                hat = np.einsum("ij,jk,ik->i", x, inv, x)
                loo = (y - x @ coef) / np.clip(1.0 - hat, 1e-6, None)
                err = float(np.mean(loo**2))
                if best is None or err < best[0]:
                    best = (err, coef)
            assert best is not None
            self.coef_[name] = best[1]
            self.resid_[name] = float(np.sqrt(best[0]))
        return self

    def predict(self, modes: pd.DataFrame) -> Prediction:
        """Predictions; uncertainty is the leave-one-out RMSE (constant per target)."""
        if self.scale_ is None:
            raise NotFittedError("polynomial baseline is not fitted")
        f = (self._features(modes) - self.scale_[0]) / self.scale_[1]
        x = np.column_stack([np.ones(len(f)), f])
        t = np.exp(np.clip(x @ self.coef_["time"], -50, 50))
        p = np.exp(np.clip(x @ self.coef_["power"], -50, 50))
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
