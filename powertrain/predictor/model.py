"""``PowerTrainPredictor``: minibatch-time and board-power networks with transfer.

Estimator contract (scikit-learn style): ``__init__`` only stores hyper-parameters;
``fit(profile)`` learns a reference predictor from thousands of profiled modes;
``transfer(samples)`` returns a **new** predictor for a new workload and/or device type from
a few profiled modes and never mutates its source; ``predict(modes)`` is vectorised and
returns time, power and an uncertainty for each mode.

Design choices (see ``docs/predictor.md`` for the measurements behind them):

* **Inputs** are the profile's knob columns, whatever they are. Each knob is log-transformed
  when all its values are positive (time scales like 1/frequency, so log makes the dominant
  relations linear) and then standardised with the *reference* statistics. Transfers keep
  that scaling, so a given clock means the same input on every device; ranges that differ
  (Xavier, Orin Nano) are just different regions of the same input space.
* **Targets** are log(time) and log(power), standardised. Squared error in log space is
  relative error, which is what MAPE measures, and it tames the ~100x range of times.
* **Uncertainty**: each target is an ensemble (``members`` networks); the spread of the
  members plus the cross-validated (or out-of-bag) log-error of the model gives a log-sd
  the optimizer turns into a safety margin.
* **Transfer goes beyond fine-tuning**: with k samples, k-fold cross-validation scores every
  candidate - the reference shifted by a fitted factor (``rescale``), fine-tuning from the
  reference with an L2 pull towards its weights (``finetune``), a network from scratch
  (``scratch``), a ridge regression on polynomial knob features (``ridge``: log knobs,
  reciprocals, squares and pairwise products; strong where time is a sum of 1/clock terms,
  as on CPU-bound workloads) and blends of those three on a grid of weights - the networks
  each at several training lengths, for time and power separately, and keeps the best. The
  CV errors and the choice are recorded, so a workload where transfer is worse than scratch
  is noticed, not assumed away.
"""

from __future__ import annotations

import itertools
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from powertrain.errors import (
    DataFormatError,
    InvalidParameterError,
    NotFittedError,
    check_choice,
    check_range,
)
from powertrain.predictor import nets
from powertrain.predictor.state import (
    MAX_RESIDUALS,
    ComponentState,
    LinearState,
    NetworkState,
    PredictorState,
    TargetState,
)
from powertrain.profile_io import MAX_POWER_W, MAX_TIME_MS, check_values, single_value
from powertrain.space import JETSON_KNOBS

TARGETS = ("time", "power")
TRANSFER_METHODS = ("rescale", "finetune", "scratch", "ridge", "blend")
_BLEND_STEP = 0.25  # blend weights of finetune / scratch / ridge on this grid (sum 1, two or more > 0)
_RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
_MIN_FIT_ROWS = 20
_MIN_TRANSFER_ROWS = 3


@dataclass(frozen=True)
class Prediction:
    """Predicted time and power per mode, with log-space uncertainties.

    ``*_log_sd`` combine the ensemble spread with the model's measured error; a margin of
    ``z`` standard deviations multiplies a prediction by ``exp(z * log_sd)``.
    """

    time_ms: np.ndarray
    power_w: np.ndarray
    time_log_sd: np.ndarray
    power_log_sd: np.ndarray
    time_col: str = "time_ms"
    power_col: str = "power_w"
    #: per mode, whether it lies within the knob ranges the model was fitted on (None: unknown);
    #: outside them a prediction is an extrapolation the optimizer does not act on
    supported: np.ndarray | None = None

    def upper(self, z: float) -> tuple[np.ndarray, np.ndarray]:
        """Time and power ``z`` standard deviations above the prediction."""
        return self.time_ms * np.exp(z * self.time_log_sd), self.power_w * np.exp(z * self.power_log_sd)

    def to_frame(self, modes: pd.DataFrame) -> pd.DataFrame:
        """``modes`` with ``pred_<col>`` and ``pred_<col>_std`` columns added."""
        out = modes.copy()
        tc, pc = f"pred_{self.time_col}", f"pred_{self.power_col}"
        out[tc] = self.time_ms
        out[pc] = self.power_w
        out[f"{tc}_std"] = self.time_ms * self.time_log_sd
        out[f"{pc}_std"] = self.power_w * self.power_log_sd
        return out


class PowerTrainPredictor:
    """Time and power predictor for any space of numeric knobs (see the module docstring)."""

    def __init__(
        self,
        *,
        knobs: Sequence[str] = JETSON_KNOBS,
        time_col: str = "time_ms",
        power_col: str = "power_w",
        hidden: Sequence[int] = (64, 32),
        activation: str = "silu",
        members: int = 4,
        fit_steps: int = 3000,
        fit_batch_size: int = 256,
        fit_lr: float = 3e-3,
        transfer_steps: int = 400,
        finetune_lr: float = 1e-2,
        finetune_anchor: float | Sequence[float] = (1e-3, 3e-2, 1.0),
        scratch_lr: float = 1e-2,
        scratch_weight_decay: float = 1e-4,
        cv_folds: int = 5,
        transfer_methods: Sequence[str] = TRANSFER_METHODS,
        seed: int = 0,
    ) -> None:
        self.knobs = tuple(knobs)
        self.time_col = time_col
        self.power_col = power_col
        self.hidden = tuple(hidden)
        self.activation = activation
        self.members = members
        self.fit_steps = fit_steps
        self.fit_batch_size = fit_batch_size
        self.fit_lr = fit_lr
        self.transfer_steps = transfer_steps
        self.finetune_lr = finetune_lr
        self.finetune_anchor = (float(finetune_anchor) if isinstance(finetune_anchor, int | float)
                                else tuple(float(a) for a in finetune_anchor))
        self.scratch_lr = scratch_lr
        self.scratch_weight_decay = scratch_weight_decay
        self.cv_folds = cv_folds
        self.transfer_methods = tuple(transfer_methods)
        self.seed = seed
        self.state_: PredictorState | None = None

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters (JSON-able), as passed to ``__init__``."""
        return {
            "knobs": list(self.knobs), "time_col": self.time_col, "power_col": self.power_col,
            "hidden": list(self.hidden), "activation": self.activation, "members": self.members,
            "fit_steps": self.fit_steps, "fit_batch_size": self.fit_batch_size, "fit_lr": self.fit_lr,
            "transfer_steps": self.transfer_steps, "finetune_lr": self.finetune_lr,
            "finetune_anchor": (self.finetune_anchor if isinstance(self.finetune_anchor, float)
                                else list(self.finetune_anchor)),
            "scratch_lr": self.scratch_lr,
            "scratch_weight_decay": self.scratch_weight_decay, "cv_folds": self.cv_folds,
            "transfer_methods": list(self.transfer_methods), "seed": self.seed,
        }

    def _validate_params(self) -> None:
        if not self.knobs or len(set(self.knobs)) != len(self.knobs):
            raise InvalidParameterError(f"knobs must be non-empty and distinct; got {list(self.knobs)}")
        if self.time_col == self.power_col or {self.time_col, self.power_col} & set(self.knobs):
            raise InvalidParameterError(
                f"time_col {self.time_col!r}, power_col {self.power_col!r} and the knobs must all differ")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise InvalidParameterError(f"hidden must be positive layer widths; got {list(self.hidden)}")
        check_choice("activation", self.activation, ["relu", "silu"])
        check_range("members", self.members, low=1, high=64)
        check_range("fit_steps", self.fit_steps, low=1)
        check_range("transfer_steps", self.transfer_steps, low=1)
        check_range("cv_folds", self.cv_folds, low=2)
        for name in ("fit_lr", "finetune_lr", "scratch_lr"):
            check_range(name, getattr(self, name), low=0, low_inclusive=False)
        check_range("scratch_weight_decay", self.scratch_weight_decay, low=0)
        if not self.anchors():
            raise InvalidParameterError("finetune_anchor must be a number or a non-empty list of numbers")
        for a in self.anchors():
            check_range("finetune_anchor", a, low=0)
        for m in self.transfer_methods:
            check_choice("transfer method", m, TRANSFER_METHODS)
        if not self.transfer_methods:
            raise InvalidParameterError(f"transfer_methods must name at least one of {TRANSFER_METHODS}")

    def anchors(self) -> tuple[float, ...]:
        """Fine-tuning anchor strengths cross-validation chooses from (one or several)."""
        a = self.finetune_anchor
        return (a,) if isinstance(a, float) else tuple(a)

    # ------------------------------------------------------------------ data checks
    def _check_frame(self, frame: pd.DataFrame, min_rows: int, what: str,
                     allow_constant: bool) -> pd.DataFrame:
        cols = [*self.knobs, self.time_col, self.power_col]
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise DataFormatError(
                f"{what}: missing column(s) {', '.join(missing)}; the model needs "
                f"knobs {', '.join(self.knobs)}, {self.time_col} and {self.power_col}")
        if len(frame) < min_rows:
            raise DataFormatError(f"{what}: has {len(frame)} row(s); at least {min_rows} needed")
        data = check_values(frame.reset_index(drop=True), cols, positive=(self.time_col, self.power_col),
                            maximum={self.time_col: MAX_TIME_MS, self.power_col: MAX_POWER_W}, where=what)
        if not allow_constant:
            for c in self.knobs:
                if data[c].nunique() < 2:
                    raise DataFormatError(
                        f"{what}: knob column {c} is constant ({data[c].iloc[0]:g}); "
                        f"a reference profile must vary every knob")
        return data

    # ------------------------------------------------------------------ fit
    def fit(self, profile: pd.DataFrame, *, device_type: str = "", workload: str = "") -> PowerTrainPredictor:
        """Fit reference networks on a (large) profile; returns ``self``."""
        self._validate_params()
        data = self._check_frame(profile, _MIN_FIT_ROWS, "profile", allow_constant=False)
        device_type = single_value(profile, "device", "profile", device_type)
        workload = single_value(profile, "workload", "profile", workload)
        raw = data.loc[:, list(self.knobs)].to_numpy(float)
        transforms = tuple("log" if (raw[:, j] > 0).all() else "linear" for j in range(raw.shape[1]))
        xt = _transform(raw, transforms)
        mean, std = xt.mean(axis=0), xt.std(axis=0)
        x = (xt - mean) / std
        rng = np.random.default_rng(self.seed)
        n, m = len(data), int(self.members)
        ys, stats = [], []
        for col in (self.time_col, self.power_col):
            logy = np.log(data[col].to_numpy(float))
            stats.append((float(logy.mean()), float(logy.std()) or 1.0))
            ys.append((logy - stats[-1][0]) / stats[-1][1])
        # nets: [time member 0..m-1, power member 0..m-1]; each member holds out its own 10 %
        n_val = max(1, n // 10)
        val_mask = np.zeros((m, n), bool)
        for i in range(m):
            val_mask[i, rng.permutation(n)[:n_val]] = True
        val_mask = np.concatenate([val_mask, val_mask])
        y = np.concatenate([np.repeat(ys[0][None], m, 0), np.repeat(ys[1][None], m, 0)])
        layers = nets.init_layers(2 * m, x.shape[1], self.hidden, rng)
        every = max(self.fit_steps // 12, 1)
        spec = nets.TrainSpec(
            lr=np.full(2 * m, self.fit_lr), anchor=np.zeros(2 * m), weight_decay=np.zeros(2 * m),
            steps=int(self.fit_steps), batch_size=int(self.fit_batch_size),
            checkpoints=tuple(range(every, self.fit_steps + 1, every)),
            activation=self.activation,
        )
        snaps = nets.train(x, y, (~val_mask).astype(float), layers, spec, seed=self.seed)
        # best-validation checkpoint per net (PowerTrain keeps the best-val epoch)
        best_err = np.full(2 * m, np.inf)
        best: nets.Layers = [(w.copy(), b.copy()) for w, b in snaps[max(snaps)]]
        for layers_s in snaps.values():
            out = nets.forward_numpy(x, [w for w, _ in layers_s], [b for _, b in layers_s], self.activation)
            err = np.array([np.mean((out[i, val_mask[i]] - y[i, val_mask[i]]) ** 2) for i in range(2 * m)])
            better = err < best_err
            best_err[better] = err[better]
            for li, (w, b) in enumerate(layers_s):
                best[li][0][better] = w[better]
                best[li][1][better] = b[better]
        targets = []
        for t, (name, col) in enumerate(zip(TARGETS, (self.time_col, self.power_col), strict=True)):
            sel = list(range(t * m, (t + 1) * m))
            log_rmse = float(np.sqrt(best_err[sel].mean())) * stats[t][1]
            out = nets.forward_numpy(x, [w[sel] for w, _ in best], [b[sel] for _, b in best], self.activation)
            val_pred = np.concatenate([out[i][val_mask[sel[i]]] for i in range(m)])
            val_true = np.concatenate([y[sel[i]][val_mask[sel[i]]] for i in range(m)])
            mape = _mape_log(val_pred * stats[t][1], val_true * stats[t][1])
            targets.append(TargetState(
                name=name, column=col, transform="log", y_mean=stats[t][0], y_std=stats[t][1],
                method="reference",
                components=(ComponentState(1.0, nets.to_network_state(nets.select(best, sel), self.activation),
                                           label="reference"),),
                cv_mape={"reference": mape}, error_log_rmse=log_rmse,
                cv_log_residuals=_subsample((val_true - val_pred) * stats[t][1], self.seed),
            ))
        self.state_ = PredictorState(
            device_type=device_type, workload=workload, knobs=self.knobs, knob_transforms=transforms,
            input_mean=mean, input_std=std, targets=tuple(targets), kind="reference", n_samples=n,
            seed=self.seed, created_at=_time.time(), settings=self.get_params(),
            sample_low=_ranges(raw)[0], sample_high=_ranges(raw)[1],
        )
        return self

    # ------------------------------------------------------------------ transfer
    def transfer(
        self,
        samples: pd.DataFrame,
        *,
        device_type: str | None = None,
        workload: str | None = None,
        seed: int | None = None,
        parent_id: str = "",
        methods: Sequence[str] | None = None,
    ) -> PowerTrainPredictor:
        """A new predictor adapted to ``samples`` (a few profiled modes); ``self`` is untouched."""
        src = self._state()
        params = {**self.get_params(), "seed": self.seed if seed is None else seed}
        if methods:
            params["transfer_methods"] = list(methods)
        child = PowerTrainPredictor(**params)
        child._validate_params()
        data = child._check_frame(samples, _MIN_TRANSFER_ROWS, "samples", allow_constant=True)
        device_type = single_value(samples, "device", "samples", device_type or "") or src.device_type
        workload = single_value(samples, "workload", "samples", workload or "") or src.workload
        run = _TransferRun(child, src, data)
        targets = tuple(run.choose(name) for name in TARGETS)
        settings = {**child.get_params(), "cv_folds_used": run.k_folds, "chosen_steps": run.chosen_steps}
        low, high = _ranges(data.loc[:, list(src.knobs)].to_numpy(float))
        child.state_ = PredictorState(
            device_type=device_type, workload=workload,
            knobs=src.knobs, knob_transforms=src.knob_transforms, input_mean=src.input_mean.copy(),
            input_std=src.input_std.copy(), targets=targets, kind="transfer", parent_id=parent_id,
            n_samples=len(data), seed=child.seed, created_at=_time.time(), settings=settings,
            sample_low=low, sample_high=high,
        )
        return child

    # ------------------------------------------------------------------ predict
    def predict(self, modes: pd.DataFrame) -> Prediction:
        """Time (ms), power (W) and log-sd uncertainties for every row of ``modes``."""
        state = self._state()
        missing = [k for k in state.knobs if k not in modes.columns]
        if missing:
            raise DataFormatError(f"modes: missing knob column(s) {', '.join(missing)}; the model's knobs "
                                  f"are {', '.join(state.knobs)}")
        raw = modes.loc[:, list(state.knobs)].to_numpy(float)
        x = _scale(state, raw, "modes")
        outs = []
        for name in TARGETS:
            tgt = state.target(name)
            mean, sd = target_outputs(tgt, x, raw, state.knob_transforms)
            log_mean = mean * tgt.y_std + tgt.y_mean
            log_sd = np.sqrt((sd * tgt.y_std) ** 2 + tgt.error_log_rmse**2)
            outs.append((np.exp(log_mean), log_sd))
        return Prediction(outs[0][0], outs[1][0], outs[0][1], outs[1][1],
                          self.time_col, self.power_col, supported=state.supported(raw))

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> PredictorState:
        """The fitted predictor as plain arrays and metadata."""
        return self._state()

    @classmethod
    def from_state(cls, state: PredictorState) -> PowerTrainPredictor:
        """Rebuild a predictor (hyper-parameters from its recorded settings)."""
        known = set(cls().get_params())
        params = {k: v for k, v in dict(state.settings).items() if k in known}
        params["knobs"] = list(state.knobs)
        params["time_col"] = state.target("time").column
        params["power_col"] = state.target("power").column
        pred = cls(**params)
        pred.state_ = state
        return pred

    def _state(self) -> PredictorState:
        if self.state_ is None:
            raise NotFittedError("this PowerTrainPredictor is not fitted yet; call fit() or load a model")
        return self.state_

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: provenance, chosen methods and their CV errors."""
        s = self._state()
        return {
            "device_type": s.device_type, "workload": s.workload, "kind": s.kind, "knobs": list(s.knobs),
            "n_samples": s.n_samples, "parent_id": s.parent_id, "seed": s.seed,
            "targets": {t.name: {"column": t.column, "method": t.method, "cv_mape": dict(t.cv_mape),
                                 "error_log_rmse": t.error_log_rmse,
                                 "weights": {c.label or f"component {i}": c.weight
                                             for i, c in enumerate(t.components)},
                                 "members": _base_network(t).members,
                                 "hidden": list(_base_network(t).hidden)} for t in s.targets},
        }


class _TransferRun:
    """One transfer: trains every candidate for both targets in a single batched run, then
    scores them by k-fold cross-validation on the samples and assembles the winners.

    Net layout of the batched run: for each target, for each trained variant (``finetune``
    at each anchor strength, ``scratch``), ``k_folds`` fold nets (each blind to its fold)
    followed by ``members`` final nets trained on every sample.
    """

    def __init__(self, child: PowerTrainPredictor, src: PredictorState, data: pd.DataFrame) -> None:
        self.child = child
        self.src = src
        self.raw = data.loc[:, list(child.knobs)].to_numpy(float)
        self.x = _scale(src, self.raw, "samples")
        self.n = len(data)
        self.members = int(child.members)
        self.k_folds = min(int(child.cv_folds), self.n)
        self.rng = np.random.default_rng(child.seed)
        self.fold_of = self.rng.permutation(self.n) % self.k_folds
        self.groups = self.k_folds + self.members
        self.wanted = set(child.transfer_methods)
        self.trained = [m for m in ("finetune", "scratch") if m in self.wanted or "blend" in self.wanted]
        self.variants = [(m, a) for m in self.trained for a in (child.anchors() if m == "finetune" else (0.0,))]
        self.activation = _base_network(src.targets[0]).activation
        self.ridge_wanted = "ridge" in self.wanted or "blend" in self.wanted
        self.y: dict[str, np.ndarray] = {}
        self.base: dict[str, nets.Layers] = {}
        self.base_out: dict[str, np.ndarray] = {}
        for name in TARGETS:
            tgt = src.target(name)
            col = child.time_col if name == "time" else child.power_col
            self.y[name] = (np.log(data[col].to_numpy(float)) - tgt.y_mean) / tgt.y_std
            self.base[name] = _folded_base(tgt)
            self.base_out[name] = nets.forward_numpy(self.x, [w for w, _ in self.base[name]],
                                                     [b for _, b in self.base[name]], self.activation)
        self.checkpoints: tuple[int, ...] = ()
        self.snaps: dict[int, nets.Layers] = {}
        self.best_step: dict[tuple[str, str], tuple[float, np.ndarray, int, int]] = {}
        if self.trained:
            self._train()

    @property
    def chosen_steps(self) -> dict[str, float]:
        """Training length (and anchor strength) picked by CV per (target, method), for the record."""
        out: dict[str, float] = {}
        for (t, m), v in self.best_step.items():
            out[f"{t}/{m}"] = v[2]
            if m == "finetune":
                out[f"{t}/{m}_anchor"] = self.variants[v[3]][1]
        return out

    def _offset(self, t_idx: int, variant: int) -> int:
        return (t_idx * len(self.variants) + variant) * self.groups

    def _train(self) -> None:
        c = self.child
        inits, row_w, ys, lrs, anchor, decay = [], [], [], [], [], []
        for name in TARGETS:
            base, y = self.base[name], self.y[name]
            for method, strength in self.variants:
                for g in range(self.groups):
                    rows = (self.fold_of != g) if g < self.k_folds else np.ones(self.n, bool)
                    row_w.append(rows.astype(float))
                    ys.append(y)
                    if method == "finetune":
                        member = g % base[0][0].shape[0]
                        layer = nets.select(base, [member])
                        shift = float(np.mean(y[rows] - self.base_out[name][member][rows]))
                        layer[-1] = (layer[-1][0], layer[-1][1] + shift)
                        inits.append(layer)
                        lrs.append(c.finetune_lr)
                        anchor.append(strength)
                        decay.append(0.0)
                    else:
                        inits.append(nets.init_layers(1, self.x.shape[1], c.hidden, self.rng))
                        lrs.append(c.scratch_lr)
                        anchor.append(0.0)
                        decay.append(c.scratch_weight_decay)
        if any(_shape(i) != _shape(inits[0]) for i in inits):
            raise InvalidParameterError(
                f"the source predictor's network shape differs from hidden={list(c.hidden)}; "
                "transfer with the source's own hyper-parameters")
        steps = int(c.transfer_steps)
        self.checkpoints = tuple(sorted({max(1, steps // d) for d in (16, 8, 4, 2)} | {steps}))
        spec = nets.TrainSpec(lr=np.array(lrs), anchor=np.array(anchor), weight_decay=np.array(decay),
                              steps=steps, checkpoints=self.checkpoints, activation=self.activation)
        stacked = nets.stack(*inits)
        # fine-tune nets are pulled towards their own start; the anchor is 0 for scratch nets
        self.snaps = nets.train(self.x, np.array(ys), np.array(row_w), stacked, spec,
                                anchor_layers=stacked, seed=c.seed)
        for t_idx, name in enumerate(TARGETS):
            for method in self.trained:
                candidates = [self._best_checkpoint(t_idx, name, v) for v, (m, _) in enumerate(self.variants)
                              if m == method]
                self.best_step[(name, method)] = min(candidates, key=lambda c: c[0])

    def _cv_predictions(self, step: int, offset: int) -> np.ndarray:
        layers = self.snaps[step]
        cv = np.empty(self.n)
        for f in range(self.k_folds):
            held = self.fold_of == f
            sel = [offset + f]
            out = nets.forward_numpy(self.x[held], [w[sel] for w, _ in layers], [b[sel] for _, b in layers],
                                     self.activation)
            cv[held] = out[0]
        return cv

    def _best_checkpoint(self, t_idx: int, name: str, variant: int) -> tuple[float, np.ndarray, int, int]:
        y_std = self.src.target(name).y_std
        best: tuple[float, np.ndarray, int, int] | None = None
        for step in self.checkpoints:
            cv = self._cv_predictions(step, self._offset(t_idx, variant))
            score = _mape_log(cv * y_std, self.y[name] * y_std)
            if best is None or score < best[0]:
                best = (score, cv, step, variant)
        assert best is not None
        return best

    def _final(self, t_idx: int, name: str, method: str) -> NetworkState:
        _, _, step, variant = self.best_step[(name, method)]
        offset = self._offset(t_idx, variant) + self.k_folds
        return nets.to_network_state(nets.select(self.snaps[step], range(offset, offset + self.members)),
                                     self.activation)

    def _ridge(self, name: str) -> tuple[np.ndarray, LinearState]:
        """Cross-validated predictions of the ridge candidate (same folds) and its final fit."""
        feats = poly2_features(self.raw, self.src.knob_transforms)
        y = self.y[name]
        cv = np.empty(self.n)
        for f in range(self.k_folds):
            train = self.fold_of != f
            model = fit_ridge(feats[train], y[train])
            cv[~train] = linear_output(model, feats[~train])
        return cv, fit_ridge(feats, y)

    def choose(self, name: str) -> TargetState:
        """Score every wanted candidate for target ``name`` and build the winner."""
        tgt = self.src.target(name)
        t_idx = TARGETS.index(name)
        y, y_std = self.y[name], tgt.y_std
        scores: dict[str, tuple[float, np.ndarray]] = {}
        if "rescale" in self.wanted:
            base_mean = self.base_out[name].mean(axis=0)
            cv = np.empty(self.n)
            for f in range(self.k_folds):
                train = self.fold_of != f
                cv[~train] = base_mean[~train] + np.mean(y[train] - base_mean[train])
            scores["rescale"] = (_mape_log(cv * y_std, y * y_std), cv)
        parts: dict[str, np.ndarray] = {m: self.best_step[(name, m)][1] for m in self.trained}
        linear: dict[str, LinearState] = {}
        if self.ridge_wanted and self.n >= 2 * self.k_folds:
            parts["ridge"], linear["ridge"] = self._ridge(name)
        for method, cv in parts.items():
            if method in self.wanted:
                scores[method] = (_mape_log(cv * y_std, y * y_std), cv)
        mix: dict[str, float] = {}
        if "blend" in self.wanted and len(parts) >= 2:
            for weights in _simplex(len(parts), _BLEND_STEP):
                if np.count_nonzero(weights) < 2:
                    continue
                cv = np.sum([w * parts[m] for w, m in zip(weights, parts, strict=True)], axis=0)
                score = _mape_log(cv * y_std, y * y_std)
                if "blend" not in scores or score < scores["blend"][0]:
                    scores["blend"] = (score, cv)
                    mix = {m: float(w) for w, m in zip(weights, parts, strict=True) if w > 0}
        chosen = min(scores, key=lambda m: scores[m][0])
        cv_pred = scores[chosen][1]
        if chosen == "rescale":
            shift = float(np.mean(y - self.base_out[name].mean(axis=0)))
            base_state = nets.to_network_state(self.base[name], self.activation)
            components: tuple[ComponentState, ...] = (ComponentState(1.0, base_state, 1.0, shift,
                                                                     label="rescale"),)
        else:
            chosen_weights = mix if chosen == "blend" else {chosen: 1.0}
            built: list[ComponentState] = []
            for m, w in chosen_weights.items():
                if m == "ridge":
                    built.append(ComponentState(w, None, linear=linear[m], label=m))
                else:
                    built.append(ComponentState(w, self._final(t_idx, name, m), label=m))
            components = tuple(built)
            if not any(c.network is not None for c in components):
                # keep a network (weight 0) as the base later transfers fine-tune from
                trained = [m for m in self.trained if m in scores] or self.trained
                if trained:
                    best_net = min(trained, key=lambda m: scores[m][0] if m in scores else np.inf)
                    base = ComponentState(0.0, self._final(t_idx, name, best_net), label=f"base ({best_net})")
                else:
                    base = ComponentState(0.0, nets.to_network_state(self.base[name], self.activation),
                                          label="base (source)")
                components = (*components, base)
        return TargetState(
            name=name, column=self.child.time_col if name == "time" else self.child.power_col,
            transform="log", y_mean=tgt.y_mean, y_std=y_std, method=chosen, components=components,
            cv_mape={m: float(v[0]) for m, v in scores.items()},
            error_log_rmse=float(np.sqrt(np.mean((cv_pred - y) ** 2))) * y_std,
            cv_log_residuals=_subsample((y - cv_pred) * y_std, self.child.seed),
        )


# ---------------------------------------------------------------------- helpers
def target_outputs(tgt: TargetState, x: np.ndarray, raw: np.ndarray,
                   transforms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and spread (normalised log units) of one target.

    ``x`` are the scaled network inputs, ``raw`` the knob values (for linear components).
    Components of weight 0 (a network kept only as a transfer base) are skipped.
    """
    total: np.ndarray | None = None
    feats: np.ndarray | None = None
    for c in tgt.components:
        if c.weight == 0:
            continue
        if c.linear is not None:
            feats = poly2_features(raw, transforms) if feats is None else feats
            out = linear_output(c.linear, feats)[None, :]
        else:
            assert c.network is not None
            net = c.network
            out = nets.forward_numpy(x, net.weights, net.biases, net.activation)
        out = c.scale * out + c.shift
        total = c.weight * out if total is None else total + c.weight * out
    if total is None:
        raise NotFittedError(f"target {tgt.name} has no component with a non-zero weight")
    return total.mean(axis=0), total.std(axis=0)


def poly2_features(raw: np.ndarray, transforms: Sequence[str], *, reciprocals: bool = True) -> np.ndarray:
    """The ``poly2`` feature set: each knob as transformed (log or linear), the reciprocal of
    each log knob, and all squares and pairwise products of the transformed knobs.

    ``reciprocals=False`` leaves the reciprocals out (the plain quadratic; baselines only: a
    stored ``poly2`` component always has them)."""
    t = _transform(raw, transforms)
    cols = [t]
    logs = [j for j, tr in enumerate(transforms) if tr == "log"]
    if logs and reciprocals:
        cols.append(1.0 / raw[:, logs])
    cols += [(t[:, i] * t[:, j])[:, None] for i, j in itertools.combinations_with_replacement(range(t.shape[1]), 2)]
    return np.column_stack(cols)


def fit_ridge(feats: np.ndarray, y: np.ndarray) -> LinearState:
    """Ridge regression of ``y`` on standardised ``feats``, alpha by closed-form leave-one-out."""
    return ridge_loo(feats, y)[0]


def ridge_loo(feats: np.ndarray, y: np.ndarray) -> tuple[LinearState, float]:
    """:func:`fit_ridge` and the leave-one-out RMSE of the chosen alpha."""
    mean = feats.mean(axis=0)
    std = feats.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    z = (feats - mean) / std
    x = np.column_stack([np.ones(len(z)), z])
    best: tuple[float, np.ndarray] | None = None
    for alpha in _RIDGE_ALPHAS:
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
    return LinearState("poly2", mean, std, best[1][1:].copy(), float(best[1][0])), float(np.sqrt(best[0]))


def linear_output(model: LinearState, feats: np.ndarray) -> np.ndarray:
    """Output of a linear component for precomputed features."""
    if model.features != "poly2":
        raise DataFormatError(f"linear component features {model.features!r} are not supported")
    return np.asarray(model.intercept + ((feats - model.feature_mean) / model.feature_std) @ model.coef)


def _ranges(raw: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The knob ranges of fitted samples (``sample_low``, ``sample_high`` of a state)."""
    return tuple(float(v) for v in raw.min(axis=0)), tuple(float(v) for v in raw.max(axis=0))


def _subsample(residuals: np.ndarray, seed: int) -> tuple[float, ...]:
    """At most MAX_RESIDUALS of ``residuals`` (a seeded random subset), as plain floats."""
    r = np.asarray(residuals, float)
    if len(r) > MAX_RESIDUALS:
        r = np.random.default_rng([seed, 31]).choice(r, MAX_RESIDUALS, replace=False)
    return tuple(float(v) for v in r)


def _simplex(parts: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors over ``parts`` on a grid of ``step`` that sum to 1."""
    units = round(1.0 / step)
    return [tuple(c * step for c in combo) for combo in itertools.product(range(units + 1), repeat=parts)
            if sum(combo) == units]


def _base_network(tgt: TargetState) -> NetworkState:
    net = tgt.base_component().network
    assert net is not None
    return net




def _transform(raw: np.ndarray, transforms: Sequence[str]) -> np.ndarray:
    out = raw.astype(float).copy()
    for j, t in enumerate(transforms):
        if t == "log":
            out[:, j] = np.log(out[:, j])
    return out


def _scale(state: PredictorState, raw: np.ndarray, what: str) -> np.ndarray:
    for j, (k, t) in enumerate(zip(state.knobs, state.knob_transforms, strict=True)):
        col = raw[:, j]
        if not np.all(np.isfinite(col)):
            raise DataFormatError(f"{what}: knob {k} has a non-finite value")
        if t == "log" and (col <= 0).any():
            raise DataFormatError(f"{what}: knob {k} must be > 0 for this model (it uses log({k})); "
                                  f"got {col[col <= 0][0]:g}")
    return np.asarray((_transform(raw, state.knob_transforms) - state.input_mean) / state.input_std)


def _folded_base(tgt: TargetState) -> nets.Layers:
    """The base network of a target with its scale and shift folded into the last layer."""
    comp = tgt.base_component()
    assert comp.network is not None
    layers = nets.from_network_state(comp.network)
    w, b = layers[-1]
    layers[-1] = (w * comp.scale, b * comp.scale + comp.shift)
    return layers


def _shape(layers: nets.Layers) -> list[tuple[int, ...]]:
    return [w.shape[1:] for w, _ in layers]


def _mape_log(pred_log: np.ndarray, true_log: np.ndarray) -> float:
    """MAPE (%) of exp(pred) against exp(true), computed from log values."""
    return float(np.mean(np.abs(np.exp(pred_log - true_log) - 1.0)) * 100.0)


