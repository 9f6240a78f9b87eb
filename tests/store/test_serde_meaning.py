"""Loads verify meaning, not only bytes: finite numbers, shapes of the declared architecture,
knobs and units of the device type (``powerfleet.serde.check_meaning``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from powerfleet.serde import (
    ArtifactError,
    decode_bundle,
    decode_predictor,
    encode_predictor,
    encode_profile_frame,
    inspect_profile,
    load_predictor,
    merge_profiles,
)
from powertrain.boards import get_space
from powertrain.predictor import PredictorState
from tests.store.conftest import craft, nan_weight, wrong_architecture, wrong_shape


def _input_mean_nan(p: Any) -> None:
    p.input_mean[0] = float("nan")


def _created_inf(p: Any) -> None:
    p.created_at = float("inf")


def _knob_unknown(p: Any) -> None:
    p.knobs[0] = "dla_mhz"


def _unit_wrong(p: Any) -> None:
    p.space.knobs[1].unit = "GHz"


def _component_nan(p: Any) -> None:
    p.targets[1].components[0].shift = float("nan")


def _error_negative(p: Any) -> None:
    p.targets[0].error_log_rmse = -1.0


def _settings_not_object(p: Any) -> None:
    p.settings_json = json.dumps([1, 2])


CASES: dict[str, tuple[Callable[[Any], None], str]] = {
    "nan-weight": (nan_weight, "non-finite weights"),
    "wrong-shape": (wrong_shape, "shape"),
    "wrong-architecture": (wrong_architecture, "the settings declare"),
    "nan-input-scaling": (_input_mean_nan, "input scaling"),
    "created-at-inf": (_created_inf, "created_at"),
    "unknown-knob": (_knob_unknown, "not knobs of orin-agx"),
    "wrong-unit": (_unit_wrong, "unit 'GHz'"),
    "nan-component": (_component_nan, "must be finite"),
    "negative-error": (_error_negative, "error_log_rmse"),
    "settings-not-object": (_settings_not_object, "JSON object"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_meaningless_artifact_is_refused_whole(ref_state: PredictorState, case: str) -> None:
    mutate, needle = CASES[case]
    good = encode_predictor(ref_state, get_space("orin-agx"))
    bad = craft(good, mutate)
    for load in (decode_predictor, load_predictor):
        with pytest.raises(ArtifactError) as exc:
            load(bad, "crafted")
        text = str(exc.value)
        assert "\n" not in text and text.startswith("crafted: ") and needle in text, text
    decode_predictor(craft(good, lambda p: None))  # the crafting itself keeps a good artifact good


def test_profile_meaning_and_merge(ref_profile: Any) -> None:
    a = encode_profile_frame(ref_profile.head(3), device_type="orin-agx", workload="w",
                             knobs=["cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz"])
    b = encode_profile_frame(ref_profile.iloc[3:5], device_type="orin-agx", workload="w",
                             knobs=["cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz"])
    (merged,) = merge_profiles([a, b])
    info = inspect_profile(merged)
    assert info.n_samples == 5 and len(info.merged) == 2  # knows what it holds
    (again,) = merge_profiles([merged, a])
    assert set(inspect_profile(again).merged) >= set(info.merged)
    bad = encode_profile_frame(ref_profile.head(2).assign(time_ms=[1.0, float("inf")]), device_type="orin-agx",
                               workload="w", knobs=["cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz"])
    with pytest.raises(ArtifactError, match="non-finite"):
        inspect_profile(bad, "chunk")


def test_bundle_with_a_meaningless_entry_is_refused(ref_state: PredictorState) -> None:
    from powerfleet.serde import Bundle, BundleEntry, encode_bundle

    good = encode_predictor(ref_state)
    with pytest.raises(ArtifactError, match="non-finite"):
        encode_bundle(Bundle((BundleEntry(good), BundleEntry(craft(good, nan_weight)))))
    data = encode_bundle(Bundle((BundleEntry(good),)))
    assert len(decode_bundle(data).entries) == 1
