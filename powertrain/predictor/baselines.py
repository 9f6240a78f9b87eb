"""Baselines the transferred predictor must beat, run on the same k samples.

* ``scratch``  - the same networks trained from scratch on the k samples (CV picks the length);
* ``poly``     - ridge regression of log(time) and log(power) on engineered features: log knobs,
  reciprocal knobs, and all squares and pairwise products of log knobs (alpha by leave-one-out);
* ``rescale``  - the reference predictor multiplied by a factor fitted on the k samples.

Each is a ``fit(samples) -> self`` / ``predict(modes) -> Prediction`` estimator.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

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
    """Ridge regression on engineered polynomial features of the knobs (log targets).

    scikit-learn's ``RidgeCV`` picks alpha by its closed-form leave-one-out error; scikit-learn
    is a dev/bench dependency (``pip install -e '.[dev]'``), imported when a baseline is fitted.
    """

    alphas = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

    def __init__(self, knobs: Sequence[str], time_col: str = "time_ms", power_col: str = "power_w") -> None:
        self.knobs = tuple(knobs)
        self.time_col = time_col
        self.power_col = power_col
        self.models_: dict[str, Any] = {}
        self.resid_: dict[str, float] = {}

    def _features(self, frame: pd.DataFrame) -> np.ndarray:
        raw = frame.loc[:, list(self.knobs)].to_numpy(float)
        pos = raw > 0
        logs = np.where(pos, np.log(np.where(pos, raw, 1.0)), raw)
        recip = np.where(pos, 1.0 / np.where(pos, raw, 1.0), 0.0)
        cols = [logs, recip]
        cols += [(logs[:, i] * logs[:, j])[:, None]
                 for i, j in itertools.combinations_with_replacement(range(logs.shape[1]), 2)]
        return np.column_stack(cols)

    def fit(self, samples: pd.DataFrame) -> PolynomialBaseline:
        """Fit both targets; alpha by leave-one-out error."""
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        f = self._features(samples)
        for name, col in (("time", self.time_col), ("power", self.power_col)):
            ridge = RidgeCV(alphas=self.alphas, store_cv_results=True)
            model = make_pipeline(StandardScaler(), ridge).fit(f, np.log(samples[col].to_numpy(float)))
            best = int(np.argmin(ridge.cv_results_.mean(axis=0)))
            self.models_[name] = model
            self.resid_[name] = float(np.sqrt(ridge.cv_results_[:, best].mean()))
        return self

    def predict(self, modes: pd.DataFrame) -> Prediction:
        """Predictions; uncertainty is the leave-one-out RMSE (constant per target)."""
        if not self.models_:
            raise NotFittedError("polynomial baseline is not fitted")
        f = self._features(modes)
        t = np.exp(np.clip(self.models_["time"].predict(f), -50, 50))
        p = np.exp(np.clip(self.models_["power"].predict(f), -50, 50))
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
