"""Reuse through transfer: rules, fleet-parallel profiling, build-once, rebuild, refinement."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from coordinator.store.base import BackendStore
from coordinator.store.builder import (
    RULE_HIT,
    RULE_REFERENCE,
    RULE_REFERENCE_FIT,
    RULE_REFINE,
    RULE_SAME_DEVICE,
    RULE_SAME_WORKLOAD,
    BuildResult,
    complete,
    get_or_build,
    plan,
    plan_or_rebuild,
    refine,
    rolling_error,
)
from coordinator.store.collect import DeviceCollector
from coordinator.store.errors import CorruptArtifactError, StoreError
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.errors import InvalidParameterError, UnknownNameError
from powertrain.predictor import PredictorState
from powertrain.sampling import sample_modes
from tests.store.conftest import (
    FAST_PROFILE,
    TINY_BUILD,
    CountingCollector,
    collector,
    overwrite_blob,
    raw_blob,
    variant,
)

REF = ("orin-agx", "resnet18-imagenet")
NANO = ("orin-nano", "lstm-wikitext")


def test_builds_reference_then_transfers_then_reuses(store: BackendStore) -> None:
    nano = CountingCollector(collector("orin-nano", boards=2))
    agx = CountingCollector(collector("orin-agx", boards=2))
    first = get_or_build(store, *NANO, nano, settings=TINY_BUILD, reference_collector=agx)
    assert first.rule == RULE_REFERENCE
    assert [m.label for m in first.built] == ["orin-agx/resnet18-imagenet v1", "orin-nano/lstm-wikitext v1"]
    ref = store.meta(*REF)
    assert ref.kind == "reference" and ref.n_samples == 100 and ref.labels["rule"] == RULE_REFERENCE_FIT
    assert first.meta.parent_id == ref.artifact_id and first.source == ref
    assert first.meta.labels["rule"] == RULE_REFERENCE and first.meta.labels["profiled_modes"] == "12"
    assert first.cost is not None and first.cost.boards == 2 and first.cost.board_modes == (6, 6)
    assert len(store.get_profile(*NANO)) == 12 and len(store.get_profile(*REF)) == 100
    assert (agx.calls, nano.calls) == (1, 1)
    again = get_or_build(store, *NANO, nano, settings=TINY_BUILD)
    assert again.rule == RULE_HIT and again.reused and again.meta == first.meta
    assert nano.calls == 1 and again.profiled_modes == 0
    # the stored predictor carries the target's mode space and predicts it
    modes = get_space("orin-nano").modes("powertrain").head(5)
    assert np.all(np.isfinite(first.state.input_mean)) and len(modes) == 5


def test_source_rules_in_order(make_store: Callable[..., BackendStore], ref_state: PredictorState) -> None:
    store = make_store()
    # nothing stored: the plan is for the reference, as a prerequisite
    p = plan(store, *NANO, TINY_BUILD)
    assert p.rule == RULE_REFERENCE_FIT and p.prerequisite and p.requested == NANO and len(p.modes) == 100
    with pytest.raises(StoreError) as exc:  # needs orin-agx boards to fit it
        get_or_build(store, *NANO, collector("orin-nano"), settings=TINY_BUILD)
    assert "\n" not in str(exc.value) and "orin-agx" in str(exc.value)
    # (c) same device type, other workload - when there is no reference
    other = store.put(variant(ref_state, "orin-nano", "mobilenetv3-gld23k", kind="transfer"))
    p = plan(store, *NANO, TINY_BUILD)
    assert (p.rule, p.source and p.source.meta) == (RULE_SAME_DEVICE, other) and len(p.modes) == 12
    # (b) the reference beats (c)
    ref = store.put(ref_state)
    p = plan(store, *NANO, TINY_BUILD)
    assert (p.rule, p.source and p.source.meta) == (RULE_REFERENCE, ref)
    # (a) the same workload on another device type beats the reference
    xavier = store.put(variant(ref_state, "xavier-agx", "lstm-wikitext", kind="transfer", n_samples=50))
    p = plan(store, *NANO, TINY_BUILD)
    assert (p.rule, p.source and p.source.meta) == (RULE_SAME_WORKLOAD, xavier)
    assert set(map(tuple, p.modes.to_numpy().tolist())) <= set(
        map(tuple, get_space("orin-nano").modes("powertrain").to_numpy().tolist()))
    # a corrupt candidate is skipped (and counted), the next rule fires
    overwrite_blob(store, xavier, b"junk")
    fresh = make_store()
    p = plan(fresh, *NANO, TINY_BUILD)
    assert p.rule == RULE_REFERENCE and fresh.stats()["corrupt_refused"] == 1
    assert any("skipped source xavier-agx/lstm-wikitext v1" in n for n in p.notes)


def test_fleet_parallel_profiling_cost_falls_with_boards() -> None:
    modes = sample_modes(get_space("orin-nano").modes("powertrain"), 16, strategy="spacefill")
    one = DeviceCollector([SimulatedJetson("orin-nano", unit=0)], FAST_PROFILE)
    four = DeviceCollector([SimulatedJetson("orin-nano", unit=u) for u in range(4)], FAST_PROFILE)
    f1, f4 = one.collect("lstm-wikitext", modes), four.collect("lstm-wikitext", modes)
    c1, c4 = one.last_cost, four.last_cost
    assert c1 is not None and c4 is not None
    assert c4.board_modes == (4, 4, 4, 4) and c4.total_minibatches == c1.total_minibatches
    assert c4.max_board_minibatches * 4 == c1.max_board_minibatches
    assert c4.max_board_device_s < 0.4 * c1.max_board_device_s
    for f in (f1, f4):  # rows come back in input order
        np.testing.assert_allclose(f[list(modes.columns)].to_numpy(float), modes.to_numpy(float))
    assert list(f4.device_unit) == [0, 1, 2, 3] * 4  # round-robin
    assert set(f4.source) == {"profile"}
    with pytest.raises(Exception, match="one device type"):
        DeviceCollector([SimulatedJetson("orin-nano"), SimulatedJetson("orin-agx")])


def test_concurrent_get_or_build_builds_once(make_store: Callable[..., BackendStore],
                                             ref_state: PredictorState) -> None:
    make_store().put(ref_state)
    slow = CountingCollector(collector("orin-nano", boards=2), delay_s=0.3)
    results: list[BuildResult] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def ask() -> None:
        try:
            res = get_or_build(make_store(), *NANO, slow, settings=TINY_BUILD)
            with guard:
                results.append(res)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert slow.calls == 1  # profiled once
    assert [m.version for m in make_store().versions(*NANO)] == [1]  # stored once
    assert len({r.meta.artifact_id for r in results}) == 1
    builders = [r for r in results if not r.reused]
    assert len(builders) == 1 and builders[0].rule == RULE_REFERENCE
    assert all(r.waited or r is builders[0] for r in results)


def test_corrupt_latest_is_refused_counted_and_rebuilt(make_store: Callable[..., BackendStore],
                                                       ref_state: PredictorState) -> None:
    store = make_store()
    store.put(ref_state)
    nano = CountingCollector(collector("orin-nano"))
    built = get_or_build(store, *NANO, nano, settings=TINY_BUILD)
    good = raw_blob(store, built.meta)
    overwrite_blob(store, built.meta, good[:-1] + bytes([good[-1] ^ 0xFF]))
    fresh = make_store()
    rebuilt = get_or_build(fresh, *NANO, nano, settings=TINY_BUILD)
    assert fresh.stats()["corrupt_refused"] >= 1
    assert rebuilt.rule == RULE_REFERENCE and rebuilt.meta.version == 2
    assert nano.calls == 1 and rebuilt.profiled_modes == 0  # the stored samples were reused
    assert rebuilt.meta.labels["reused_samples"] == "12"
    assert any("refused" in n for n in rebuilt.notes)
    with pytest.raises(CorruptArtifactError):  # the bad version is kept for inspection, never served
        make_store().get(*NANO, version=1)
    assert make_store().get(*NANO).meta.artifact_id == rebuilt.meta.artifact_id


def test_plan_and_complete_in_two_phases(store: BackendStore, ref_state: PredictorState) -> None:
    store.put(ref_state)
    p = plan(store, *NANO, TINY_BUILD)
    assert p.rule == RULE_REFERENCE and not p.prerequisite and len(p.modes) == 12
    samples = collector("orin-nano", boards=3).collect(NANO[1], p.modes)  # e.g. inside FL rounds
    done = complete(store, p, samples, settings=TINY_BUILD)
    assert done.rule == RULE_REFERENCE and done.meta.version == 1 and done.profiled_modes == 12
    assert plan(store, *NANO, TINY_BUILD).rule == RULE_HIT
    # a second coordinator completing a stale plan gets the stored predictor, keeps its samples
    late = complete(store, p, samples.head(4), settings=TINY_BUILD)
    assert late.rule == RULE_HIT and late.waited and late.meta == done.meta
    assert len(store.get_profile(*NANO)) == 16 and len(store.versions(*NANO)) == 1


def test_refine_only_above_threshold(store: BackendStore, ref_state: PredictorState) -> None:
    store.put(ref_state)
    boards = collector("orin-nano", boards=2)
    built = get_or_build(store, *NANO, boards, settings=TINY_BUILD)
    modes = sample_modes(get_space("orin-nano").modes("powertrain"), 16, strategy="random", seed=7)
    observed = boards.collect(NANO[1], modes)
    t_err, p_err = rolling_error(built.state, observed)
    threshold = max(t_err, p_err) + 15.0
    calm = refine(store, *NANO, observed, threshold_pct=threshold, window=16, settings=TINY_BUILD)
    assert not calm.refined and "<= threshold" in calm.reason and calm.window == 16
    assert len(store.versions(*NANO)) == 1 and len(store.get_profile(*NANO)) == 28
    drifted = observed.assign(time_ms=observed.time_ms * 1.6)  # e.g. a throttling fleet
    hot = refine(store, *NANO, drifted, threshold_pct=threshold, window=16, settings=TINY_BUILD)
    assert hot.refined and hot.error_pct > threshold and hot.previous == built.meta
    assert hot.meta.version == 2 and hot.meta.parent_id == built.meta.artifact_id
    assert hot.meta.labels["rule"] == RULE_REFINE and hot.meta.labels["source_id"] == built.meta.parent_id
    assert hot.meta.n_samples == 44  # all samples of the pair
    new_state = store.get(*NANO).state
    assert max(rolling_error(new_state, drifted)) < max(rolling_error(built.state, drifted))
    history = store.history(*NANO)
    assert [a.meta.pair for a in history[0].ancestors if a.meta] == [NANO, REF]
    small = refine(store, *NANO, drifted.head(2), threshold_pct=threshold, window=16, min_observations=40)
    assert not small.refined and "needed" in small.reason


def test_bad_names_and_unknown_device_types(store: BackendStore, ref_state: PredictorState) -> None:
    with pytest.raises(InvalidParameterError, match="not a valid name"):
        plan(store, "orin nano", "lstm-wikitext")
    store.put(ref_state)
    with pytest.raises(UnknownNameError) as exc:
        get_or_build(store, "tpu-v9", "lstm-wikitext", collector("orin-nano"), settings=TINY_BUILD)
    assert str(exc.value).startswith("device 'tpu-v9' is not known")
    with pytest.raises(InvalidParameterError, match="orin-agx boards; orin-nano boards are needed"):
        get_or_build(store, *NANO, collector("orin-agx"), settings=TINY_BUILD)
    assert store.versions(*NANO) == [] and store.get_profile(*NANO).empty  # nothing half-built


def test_a_pair_with_samples_but_no_latest_is_rebuilt_never_planned_with_zero_modes(
        make_store: Callable[..., BackendStore], ref_state: PredictorState) -> None:
    """Issue 16: after `store rm PAIR --all` (or a refused latest) the samples survive; the plan
    used to ask the fleet to profile 0 modes, forever."""
    store = make_store()
    store.put(ref_state)
    first = get_or_build(store, *NANO, collector("orin-nano", boards=2), settings=TINY_BUILD)
    store.delete(*NANO)  # the samples are kept
    stale = plan(store, *NANO, TINY_BUILD)
    assert stale.rule != RULE_HIT and not stale.needs_boards and len(stale.modes) == 0  # the trap
    counting = CountingCollector(collector("orin-nano"))
    healed = plan_or_rebuild(store, *NANO, TINY_BUILD)
    assert healed.rule == RULE_HIT and healed.hit is not None and counting.calls == 0
    assert healed.hit.meta.version == first.meta.version + 1 and healed.hit.meta.labels["profiled_modes"] == "0"
    assert healed.hit.meta.labels["reused_samples"] == "12" and any("rebuilt" in n for n in healed.notes)
    # with too few samples the plan asks for exactly the missing modes
    store.delete(*NANO, profile=True)
    store.append_profile(*NANO, _nano_rows(5))
    short = plan_or_rebuild(store, *NANO, TINY_BUILD)
    assert short.needs_boards and len(short.modes) == 12 - 5


def _nano_rows(n: int) -> pd.DataFrame:
    from powertrain.profiler import profile

    modes = sample_modes(get_space("orin-nano").modes("powertrain"), n, strategy="spacefill", seed=7)
    return profile(SimulatedJetson("orin-nano", seed=2), "lstm-wikitext", modes, FAST_PROFILE).frame
