"""Reuse through transfer: one predictor per (device type, workload), profiled once per fleet.

``get_or_build(store, device_type, workload, collector)`` returns the pair's predictor:

* an exact hit is reused as is (``rule="hit"``);
* otherwise the best *source* predictor already in the store is picked, in this order, and
  the rule that fired is recorded: ``same-workload`` (the workload on another device type),
  ``reference`` (``resnet18-imagenet`` on ``orin-agx``), ``same-device`` (another workload on
  this device type). k modes of the target's grid are chosen by space-filling design,
  profiled across the boards of the type (:class:`~coordinator.store.collect.DeviceCollector`),
  and the source is transferred to them; predictor and samples are stored;
* with no source at all, the reference itself is fitted first from its full profiling grid
  (4,368 modes on ``orin-agx``); that needs ``orin-agx`` boards (``reference_collector``).

The work is split in two phases so a Flower coordinator can collect the samples inside FL
rounds: :func:`plan` says what to profile, :func:`complete` transfers and stores.
Concurrency: a build holds the store lock ``build:<device>:<workload>`` (Redis ``SET NX PX``
with a token, renewed while held); a second caller waits and reuses the result, so a pair is
built once however many coordinators ask. A corrupt latest version is refused (and counted
by the store) and rebuilt, reusing the pair's stored samples when there are enough.
:func:`refine` re-transfers when observations from FL rounds show the predictor drifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from coordinator.store.base import (
    ArtifactMeta,
    LockHandle,
    ModelStore,
    StoredPredictor,
    check_name,
    pair_label,
)
from coordinator.store.collect import ProfilingCost, SampleCollector
from coordinator.store.errors import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    LockBusyError,
    LockTimeoutError,
    StoreError,
)
from powertrain.boards import get_space
from powertrain.errors import InvalidParameterError, UnknownNameError, check_range
from powertrain.predictor import PowerTrainPredictor, PredictorState
from powertrain.sampling import sample_modes
from powertrain.space import ModeSpace
from powertrain.workloads import REFERENCE_WORKLOAD

REFERENCE_DEVICE_TYPE = "orin-agx"
RULE_HIT = "hit"
RULE_SAME_WORKLOAD = "same-workload"
RULE_REFERENCE = "reference"
RULE_SAME_DEVICE = "same-device"
RULE_REFERENCE_FIT = "reference-fit"
RULE_REFINE = "refine"
#: Hyper-parameters of a transfer that ``BuildSettings.predictor_params`` may override; the
#: network shape always comes from the source predictor.
TRANSFER_PARAMS = ("transfer_steps", "finetune_lr", "finetune_anchor", "scratch_lr", "scratch_weight_decay",
                   "cv_folds", "transfer_methods", "seed", "members")


@dataclass(frozen=True)
class BuildSettings:
    """How new predictors are built."""

    k: int = 50  # profiled modes per transferred pair (how each is measured: the collector's
    sampling_seed: int = 0  # ProfileSettings, e.g. DeviceCollector(devices, settings))
    #: PowerTrainPredictor(**predictor_params) fits the reference; keys in TRANSFER_PARAMS
    #: also override the source's settings when transferring
    predictor_params: Mapping[str, Any] = field(default_factory=dict)
    reference_device_type: str = REFERENCE_DEVICE_TYPE
    reference_workload: str = REFERENCE_WORKLOAD
    reference_grid: str = "powertrain"
    reference_k: int | None = None  # None: the whole reference grid (4,368 modes on orin-agx)
    lock_ttl_s: float = 60.0
    wait_timeout_s: float = 6 * 3600.0
    poll_s: float = 0.05

    def __post_init__(self) -> None:
        check_range("k", self.k, low=3)
        if self.reference_k is not None:
            check_range("reference_k", self.reference_k, low=20)
        check_range("lock_ttl_s", self.lock_ttl_s, low=0, low_inclusive=False)
        check_range("wait_timeout_s", self.wait_timeout_s, low=0)
        check_range("poll_s", self.poll_s, low=0, low_inclusive=False)

    @property
    def reference_pair(self) -> tuple[str, str]:
        """(reference device type, reference workload)."""
        return (self.reference_device_type, self.reference_workload)


@dataclass(frozen=True)
class BuildPlan:
    """What building a pair takes: a hit, or a rule, a source and the modes to profile.

    When nothing in the store can serve as a source, the plan is for the *reference* pair
    (``prerequisite`` is True, ``requested`` names the pair asked for): complete it with
    samples from reference boards, then plan the requested pair again.
    """

    device_type: str
    workload: str
    rule: str
    hit: StoredPredictor | None = None
    source: StoredPredictor | None = None
    modes: pd.DataFrame = field(default_factory=pd.DataFrame)
    reuse_samples: int = 0  # stored samples of the pair the build will use as well
    latest_version: int = 0  # the pair's latest version when planned (0: none)
    requested: tuple[str, str] = ("", "")
    notes: tuple[str, ...] = ()

    @property
    def prerequisite(self) -> bool:
        """True when this plan builds the reference before the requested pair."""
        return self.requested != (self.device_type, self.workload)

    @property
    def needs_boards(self) -> bool:
        """True when the plan can only be completed with modes profiled on boards."""
        return self.rule != RULE_HIT and len(self.modes) > 0


@dataclass(frozen=True)
class BuildResult:
    """The predictor of a pair and how it was obtained."""

    meta: ArtifactMeta
    state: PredictorState
    rule: str
    source: ArtifactMeta | None = None
    profiled_modes: int = 0  # modes profiled by this call for the pair (0 for a hit)
    cost: ProfilingCost | None = None
    waited: bool = False  # another builder held the lock; this call reused its result
    built: tuple[ArtifactMeta, ...] = ()  # versions stored by this call (a reference first, if built)
    notes: tuple[str, ...] = ()

    @property
    def reused(self) -> bool:
        """True if no predictor was built for the pair by this call."""
        return self.rule == RULE_HIT


def lock_name(device_type: str, workload: str) -> str:
    """The store lock that serialises builds of one pair."""
    return f"build:{device_type}:{workload}"


def target_modes(device_type: str, k: int, seed: int = 0) -> pd.DataFrame:
    """k space-filling modes of a device type's profiling grid (``powertrain``, else ``full``)."""
    space = get_space(device_type)
    pool = space.modes("powertrain" if "powertrain" in space.grids else "full")
    return sample_modes(pool, min(int(k), len(pool)), strategy="spacefill", seed=seed, knobs=space.knob_names)


def reference_modes(settings: BuildSettings) -> pd.DataFrame:
    """The modes a reference fit profiles: the whole reference grid, or ``reference_k`` of it."""
    space = get_space(settings.reference_device_type)
    pool = space.modes(settings.reference_grid)
    if settings.reference_k is None or settings.reference_k >= len(pool):
        return pool
    return sample_modes(pool, settings.reference_k, strategy="spacefill", seed=settings.sampling_seed,
                        knobs=space.knob_names)


def _space_or_none(device_type: str) -> ModeSpace | None:
    try:
        return get_space(device_type)
    except UnknownNameError:
        return None


def _try_get(store: ModelStore, meta: ArtifactMeta, notes: list[str]) -> StoredPredictor | None:
    try:
        return store.get(meta.device_type, meta.workload, meta.version)
    except CorruptArtifactError as exc:
        notes.append(f"skipped source {meta.label}: {exc}")
    except ArtifactNotFoundError:
        pass
    return None


def _choose_source(store: ModelStore, device_type: str, workload: str, settings: BuildSettings,
                   notes: list[str]) -> tuple[str, StoredPredictor] | None:
    pairs = store.list_pairs()
    candidates = (  # in order of preference; within a rule, the pair with the most samples first
        (RULE_SAME_WORKLOAD, sorted((m for m in pairs if m.workload == workload and m.device_type != device_type),
                                    key=lambda m: (-m.n_samples, m.device_type))),
        (RULE_REFERENCE, [m for m in pairs if m.pair == settings.reference_pair]),
        (RULE_SAME_DEVICE, sorted((m for m in pairs if m.device_type == device_type and m.workload != workload),
                                  key=lambda m: (-m.n_samples, m.workload))),
    )
    for rule, metas in candidates:
        for m in metas:
            got = _try_get(store, m, notes)
            if got is not None:
                return rule, got
    return None


def _stored_samples(store: ModelStore, device_type: str, workload: str, notes: list[str]) -> pd.DataFrame:
    try:
        return store.get_profile(device_type, workload)
    except CorruptArtifactError as exc:
        notes.append(f"stored samples of {pair_label(device_type, workload)} refused: {exc}")
        return pd.DataFrame()


def _missing_modes(wanted: pd.DataFrame, have: pd.DataFrame, knobs: tuple[str, ...], k: int) -> pd.DataFrame:
    """Modes of ``wanted`` not yet in ``have``, enough to bring the pair to ``k`` distinct modes.

    Distinct modes count, not rows: a hundred round observations of the same mode are one mode.
    """
    seen: set[tuple[float, ...]] = set()
    if len(have) and all(c in have.columns for c in knobs):
        seen = {tuple(r) for r in have.loc[:, list(knobs)].to_numpy(float)}
    need = k - len(seen)
    if need <= 0:
        return wanted.iloc[0:0]
    if seen:
        keep = [tuple(r) not in seen for r in wanted.loc[:, list(knobs)].to_numpy(float)]
        wanted = wanted.loc[keep]
    return wanted.iloc[:need].reset_index(drop=True)


def plan(store: ModelStore, device_type: str, workload: str,
         settings: BuildSettings | None = None) -> BuildPlan:
    """Decide how to get a pair's predictor (see :class:`BuildPlan`); reads the store only."""
    cfg = settings or BuildSettings()
    check_name("device type", device_type)
    check_name("workload", workload)
    notes: list[str] = []
    latest = 0
    try:
        hit = store.get(device_type, workload)
        return BuildPlan(device_type, workload, RULE_HIT, hit=hit, latest_version=hit.meta.version,
                         requested=(device_type, workload))
    except ArtifactNotFoundError:
        latest = store.latest_version(device_type, workload)
    except CorruptArtifactError as exc:
        notes.append(f"latest version refused, rebuilding: {exc}")
        latest = store.latest_version(device_type, workload)
    have = _stored_samples(store, device_type, workload, notes)
    if (device_type, workload) == cfg.reference_pair:
        space = get_space(device_type)
        wanted = reference_modes(cfg)
        modes = _missing_modes(wanted, have, space.knob_names, len(wanted))
        return BuildPlan(device_type, workload, RULE_REFERENCE_FIT, modes=modes,
                         reuse_samples=len(have), latest_version=latest, requested=(device_type, workload),
                         notes=tuple(notes))
    found = _choose_source(store, device_type, workload, cfg, notes)
    if found is None:
        ref = plan(store, cfg.reference_device_type, cfg.reference_workload, cfg)
        return replace(ref, requested=(device_type, workload),
                       notes=(*notes, f"no source predictor for {pair_label(device_type, workload)}; "
                                      f"the reference {pair_label(*cfg.reference_pair)} is built first"))
    rule, source = found
    space = get_space(device_type)
    modes = _missing_modes(target_modes(device_type, cfg.k, cfg.sampling_seed), have, space.knob_names, cfg.k)
    return BuildPlan(device_type, workload, rule, source=source, modes=modes, reuse_samples=len(have),
                     latest_version=latest, requested=(device_type, workload), notes=tuple(notes))


def transfer_predictor(source: PredictorState, params: Mapping[str, Any]) -> PowerTrainPredictor:
    """A predictor holding ``source`` whose transfer settings are overridden by ``params``."""
    base = PowerTrainPredictor.from_state(source)
    overrides = {k: v for k, v in params.items() if k in TRANSFER_PARAMS}
    if not overrides:
        return base
    pred = PowerTrainPredictor(**{**base.get_params(), **overrides})
    pred.state_ = source
    return pred


def _build_locked(store: ModelStore, plan_: BuildPlan, samples: pd.DataFrame | None, cfg: BuildSettings,
                  cost: ProfilingCost | None) -> BuildResult:
    """Append the samples, fit or transfer, and store the new version (caller holds the lock)."""
    dt, wl = plan_.device_type, plan_.workload
    notes = list(plan_.notes)
    if plan_.rule == RULE_REFERENCE_FIT:
        fitter = PowerTrainPredictor(**dict(cfg.predictor_params))
        knobs = fitter.knobs
    elif plan_.source is not None:
        fitter = transfer_predictor(plan_.source.state, cfg.predictor_params)
        knobs = plan_.source.state.knobs
    else:
        raise InvalidParameterError(f"plan for {pair_label(dt, wl)} with rule {plan_.rule!r} has no source")
    new_rows = 0 if samples is None else len(samples)
    if new_rows:
        assert samples is not None
        store.append_profile(dt, wl, samples, knobs=knobs)
    all_samples = _stored_samples(store, dt, wl, notes)
    if len(all_samples) < new_rows:  # stored profile unreadable: use what was just collected
        assert samples is not None
        all_samples = samples
    if not len(all_samples):
        raise StoreError(f"no samples to build {pair_label(dt, wl)} from; profile some modes first")
    if plan_.rule == RULE_REFERENCE_FIT:
        state = fitter.fit(all_samples, device_type=dt, workload=wl).to_state()
    else:
        assert plan_.source is not None
        state = fitter.transfer(all_samples, device_type=dt, workload=wl,
                                parent_id=plan_.source.meta.artifact_id).to_state()
    labels = {"rule": plan_.rule, "profiled_modes": str(new_rows), "reused_samples": str(plan_.reuse_samples)}
    if plan_.source is not None:
        labels |= {"source": plan_.source.meta.label, "source_id": plan_.source.meta.artifact_id}
    if cost is not None:
        labels |= cost.labels()
    meta = store.put(state, space=_space_or_none(dt), labels=labels)
    return BuildResult(meta, state, plan_.rule, plan_.source.meta if plan_.source else None, new_rows, cost,
                       built=(meta,), notes=tuple(notes))


def _hit(plan_: BuildPlan, waited: bool = False) -> BuildResult:
    assert plan_.hit is not None
    return BuildResult(plan_.hit.meta, plan_.hit.state, RULE_HIT, waited=waited, notes=plan_.notes)


def _lock_or_newer(store: ModelStore, device_type: str, workload: str, cfg: BuildSettings,
                   known_version: int) -> LockHandle | StoredPredictor:
    """Take the pair's build lock, or return the StoredPredictor another builder stored meanwhile."""

    def attempt() -> LockHandle | StoredPredictor:
        handle = store.acquire_lock(lock_name(device_type, workload), ttl_s=cfg.lock_ttl_s)
        if handle is not None:
            return handle
        try:
            got = store.get(device_type, workload)
            if got.meta.version > known_version:
                return got
        except (ArtifactNotFoundError, CorruptArtifactError):
            pass
        raise LockBusyError

    def give_up(_: RetryCallState) -> LockHandle | StoredPredictor:
        raise LockTimeoutError(f"waited {cfg.wait_timeout_s:.0f} s for another builder of "
                               f"{pair_label(device_type, workload)} in {store.url}; giving up")

    retrying = Retrying(retry=retry_if_exception_type(LockBusyError), stop=stop_after_delay(cfg.wait_timeout_s),
                        wait=wait_exponential(multiplier=cfg.poll_s, exp_base=1.5, max=1.0),
                        retry_error_callback=give_up)
    return retrying(attempt)



def complete(store: ModelStore, plan_: BuildPlan, samples: pd.DataFrame, *,
             settings: BuildSettings | None = None, cost: ProfilingCost | None = None) -> BuildResult:
    """Second phase: store ``samples`` (profiled ``plan_.modes``), transfer or fit, store the predictor.

    If another builder stored the pair since ``plan_`` was made, the samples are still
    appended to the pair's profile and that predictor is returned (``rule="hit"``).
    """
    cfg = settings or BuildSettings()
    if plan_.rule == RULE_HIT:
        return _hit(plan_)
    got = _lock_or_newer(store, plan_.device_type, plan_.workload, cfg, plan_.latest_version)
    if isinstance(got, StoredPredictor):
        if len(samples):
            store.append_profile(plan_.device_type, plan_.workload, samples, knobs=got.state.knobs)
        return BuildResult(got.meta, got.state, RULE_HIT, waited=True, notes=plan_.notes)
    with got:
        if store.latest_version(plan_.device_type, plan_.workload) > plan_.latest_version:
            try:
                newer = store.get(plan_.device_type, plan_.workload)
                if newer.meta.version > plan_.latest_version:
                    if len(samples):
                        store.append_profile(plan_.device_type, plan_.workload, samples, knobs=newer.state.knobs)
                    return BuildResult(newer.meta, newer.state, RULE_HIT, waited=True, notes=plan_.notes)
            except (ArtifactNotFoundError, CorruptArtifactError):
                pass
        return _build_locked(store, plan_, samples, cfg, cost)


def current_predictor(store: ModelStore, device_type: str, workload: str,
                      settings: BuildSettings | None = None) -> StoredPredictor:
    """The pair's latest predictor; a latest that is refused or gone is rebuilt from the stored
    samples first (:func:`plan_or_rebuild`). StoreError (one line) if only boards can rebuild it."""
    try:
        return store.get(device_type, workload)
    except (CorruptArtifactError, ArtifactNotFoundError):
        pass
    again = plan_or_rebuild(store, device_type, workload, settings)
    if again.hit is None:
        raise StoreError(f"{pair_label(device_type, workload)} in {store.url} has no valid predictor and its "
                         f"samples do not suffice to rebuild one ({len(again.modes)} more modes to profile); a "
                         "bootstrap is needed")
    return again.hit


def plan_or_rebuild(store: ModelStore, device_type: str, workload: str,
                    settings: BuildSettings | None = None) -> BuildPlan:
    """A plan that is a hit or needs boards: never a build with no modes to profile.

    A pair with no valid latest version (deleted, refused, dangling) whose stored samples
    already cover the ``k`` modes a build needs is rebuilt from those samples right here,
    under the pair's build lock, and the returned plan is the hit (its notes say so). The
    same holds for the reference when the plan is for it first (``plan.prerequisite``). So a
    coordinator acting on the plan either reuses a predictor or profiles at least one mode.
    """
    cfg = settings or BuildSettings()
    notes: list[str] = []
    for _ in range(4):  # at most: the reference, then the pair, then a re-plan after a lost race
        current = plan(store, device_type, workload, cfg)
        if not (current.rule != RULE_HIT and not current.needs_boards):
            return replace(current, notes=(*notes, *current.notes)) if notes else current
        result = complete(store, current, current.modes.iloc[0:0], settings=cfg)
        built = f"rebuilt {result.meta.label} from {current.reuse_samples} stored samples (rule {current.rule})"
        notes.append(built if result.rule != RULE_HIT else f"reused {result.meta.label}, built meanwhile")
    raise StoreError(f"could not get a predictor for {pair_label(device_type, workload)} in {store.url} from "
                     "its stored samples; the store keeps changing under the build")


def _collect(collector: SampleCollector, workload: str, modes: pd.DataFrame) -> tuple[pd.DataFrame,
                                                                                       ProfilingCost | None]:
    if not len(modes):
        return modes.iloc[0:0], None
    frame = collector.collect(workload, modes)
    cost = getattr(collector, "last_cost", None)
    return frame, cost if isinstance(cost, ProfilingCost) else None


def _check_collector(collector: SampleCollector, device_type: str) -> None:
    kind = getattr(collector, "device_type", None)
    if isinstance(kind, str) and kind != device_type:
        raise InvalidParameterError(f"collector profiles {kind} boards; {device_type} boards are needed")


def get_or_build(store: ModelStore, device_type: str, workload: str, collector: SampleCollector, *,
                 settings: BuildSettings | None = None,
                 reference_collector: SampleCollector | None = None) -> BuildResult:
    """The pair's predictor: reused if stored, else built by transfer (see the module docstring).

    ``collector`` profiles boards of ``device_type``; ``reference_collector`` profiles
    reference boards (``orin-agx``) if the reference has to be fitted first (defaults to
    ``collector`` when the pair is on the reference device type).
    """
    cfg = settings or BuildSettings()
    first = plan(store, device_type, workload, cfg)
    if first.rule == RULE_HIT:
        return _hit(first)
    got = _lock_or_newer(store, device_type, workload, cfg, first.latest_version)
    if isinstance(got, StoredPredictor):
        return BuildResult(got.meta, got.state, RULE_HIT, waited=True)
    with got:
        current = plan(store, device_type, workload, cfg)  # again, under the lock
        if current.rule == RULE_HIT:
            return _hit(current, waited=True)
        built: tuple[ArtifactMeta, ...] = ()
        notes = current.notes
        if current.prerequisite:
            ref_collector = reference_collector or (
                collector if device_type == cfg.reference_device_type else None)
            if ref_collector is None:
                raise StoreError(
                    f"no source predictor for {pair_label(device_type, workload)} in {store.url} and no "
                    f"reference {pair_label(*cfg.reference_pair)}; pass a reference collector with "
                    f"{cfg.reference_device_type} boards or import a reference (powerfleet store import)")
            _check_collector(ref_collector, cfg.reference_device_type)
            ref = get_or_build(store, *cfg.reference_pair, ref_collector, settings=cfg)
            built = ref.built
            current = plan(store, device_type, workload, cfg)
            if current.rule == RULE_HIT:
                return replace(_hit(current), built=built)
            if current.prerequisite:
                raise StoreError(f"the reference {pair_label(*cfg.reference_pair)} is still missing after "
                                 f"building it for {pair_label(device_type, workload)}")
        _check_collector(collector, device_type)
        samples, cost = _collect(collector, workload, current.modes)
        result = _build_locked(store, current, samples, cfg, cost)
        return replace(result, built=(*built, *result.built), notes=(*notes, *result.notes))


# ---------------------------------------------------------------------- online refinement
@dataclass(frozen=True)
class RefineResult:
    """What :func:`refine` observed and did."""

    refined: bool
    reason: str
    time_mape_pct: float  # rolling MAPE of the predictor in force before the call
    power_mape_pct: float
    window: int  # observations the error was computed over
    previous: ArtifactMeta
    meta: ArtifactMeta  # the pair's latest version after the call

    @property
    def error_pct(self) -> float:
        """The larger of the two rolling errors (what the threshold is compared with)."""
        return max(self.time_mape_pct, self.power_mape_pct)


def rolling_error(state: PredictorState, observations: pd.DataFrame) -> tuple[float, float]:
    """MAPE (%) of time and power predicted by ``state`` over ``observations``."""
    pred = PowerTrainPredictor.from_state(state).predict(observations)
    t = observations[state.target("time").column].to_numpy(float)
    p = observations[state.target("power").column].to_numpy(float)
    return (float(np.mean(np.abs(pred.time_ms / t - 1.0)) * 100.0),
            float(np.mean(np.abs(pred.power_w / p - 1.0)) * 100.0))


def refine_samples(profile: pd.DataFrame, max_samples: int, seed: int = 0) -> pd.DataFrame:
    """What a re-transfer trains on: the newest round observations (up to half the budget),
    then profiled samples drawn at random to fill ``max_samples``.

    A transfer is k-fold CV over its samples; without a cap, refining a pair with thousands
    of samples (the reference) would cost a minute per refinement instead of a second.
    """
    if len(profile) <= max_samples:
        return profile
    is_round = (profile["source"] == "round").to_numpy() if "source" in profile.columns else None
    rounds = profile[is_round].tail(max_samples // 2) if is_round is not None else profile.iloc[0:0]
    rest = profile[~is_round] if is_round is not None else profile
    take = min(len(rest), max_samples - len(rounds))
    picked = rest.sample(n=take, random_state=seed) if take < len(rest) else rest
    return pd.concat([picked, rounds], ignore_index=True)


def refine(store: ModelStore, device_type: str, workload: str, observations: pd.DataFrame, *,
           threshold_pct: float = 10.0, window: int = 32, min_observations: int = 8,
           max_samples: int = 256, settings: BuildSettings | None = None) -> RefineResult:
    """Record observations from FL rounds; re-transfer if the rolling error exceeds the threshold.

    The observations (knob columns, ``time_ms``, ``power_w``) are appended to the pair's
    profile with ``source="round"``. The error is the MAPE of the current predictor over the
    last ``window`` round observations (the larger of time and power). Above
    ``threshold_pct``, the current version's source (its parent; the version itself if it has
    none in the store) is transferred again to the pair's samples (at most ``max_samples``, see
    :func:`refine_samples`) and stored as a new version whose parent is the current one.
    """
    cfg = settings or BuildSettings()
    check_range("threshold_pct", threshold_pct, low=0, low_inclusive=False)
    check_range("window", window, low=1)
    check_range("min_observations", min_observations, low=1)
    check_range("max_samples", max_samples, low=8)
    current = current_predictor(store, device_type, workload, cfg)
    obs = observations.copy()
    obs["source"] = "round"
    store.append_profile(device_type, workload, obs, knobs=current.state.knobs)
    rounds = store.get_profile_tail(device_type, workload, int(window), source="round")
    t_err, p_err = rolling_error(current.state, rounds) if len(rounds) else (0.0, 0.0)

    def result(refined: bool, reason: str, meta: ArtifactMeta) -> RefineResult:
        return RefineResult(refined, reason, t_err, p_err, len(rounds), current.meta, meta)

    if len(rounds) < min_observations:
        return result(False, f"{len(rounds)} round observations; {min_observations} needed", current.meta)
    if max(t_err, p_err) <= threshold_pct:
        return result(False, f"rolling error {max(t_err, p_err):.1f}% <= threshold {threshold_pct:g}%",
                      current.meta)
    handle = store.acquire_lock(lock_name(device_type, workload), ttl_s=cfg.lock_ttl_s)
    if handle is None:
        return result(False, "another build or refinement of the pair is running", current.meta)
    with handle:
        latest = store.meta(device_type, workload)
        if latest.artifact_id != current.meta.artifact_id:
            return result(False, f"a newer version ({latest.label}) appeared meanwhile", latest)
        source = current
        notes: list[str] = []
        if current.meta.parent_id:
            for m in store.find(current.meta.parent_id):
                got = _try_get(store, m, notes)
                if got is not None:
                    source = got
                    break
        profile_frame = refine_samples(store.get_profile(device_type, workload), int(max_samples), cfg.sampling_seed)
        state = transfer_predictor(source.state, cfg.predictor_params).transfer(
            profile_frame, device_type=device_type, workload=workload,
            parent_id=current.meta.artifact_id).to_state()
        labels = {"rule": RULE_REFINE, "source": source.meta.label, "source_id": source.meta.artifact_id,
                  "trigger_mape_pct": f"{max(t_err, p_err):.2f}", "window": str(len(rounds))}
        meta = store.put(state, space=_space_or_none(device_type), labels=labels)
    return result(True, f"rolling error {max(t_err, p_err):.1f}% > threshold {threshold_pct:g}%", meta)
