"""PowerTrainPredictor: fit, transfer, predict, persistence, baselines, bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from powerfleet.serde import ArtifactError, decode_predictor, encode_predictor
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.errors import DataFormatError, NotFittedError
from powertrain.predictor import PowerTrainPredictor
from powertrain.predictor.baselines import PolynomialBaseline, TransferBaseline, mape
from powertrain.sampling import sample_modes

FAST: dict[str, Any] = {"fit_steps": 600, "members": 2, "transfer_steps": 200}


def truth(device: str, workload: str, grid: str = "powertrain", unit: int = 0) -> pd.DataFrame:
    dev = SimulatedJetson(device, unit=unit)
    return dev.true_performance(workload, get_space(device).modes(grid))


def noisy(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["time_ms"] *= np.exp(rng.normal(0, 0.02, len(out)))
    out["power_w"] *= np.exp(rng.normal(0, 0.012, len(out)))
    return out


@pytest.fixture(scope="module")
def reference() -> PowerTrainPredictor:
    ref = noisy(truth("orin-agx", "resnet18-imagenet"), 0)
    return PowerTrainPredictor(**FAST).fit(ref, device_type="orin-agx", workload="resnet18-imagenet")


def test_reference_fit_is_accurate(reference: PowerTrainPredictor) -> None:
    t = truth("orin-agx", "resnet18-imagenet")
    pred = reference.predict(t)
    assert mape(pred.time_ms, t.time_ms) < 6
    assert mape(pred.power_w, t.power_w) < 4
    state = reference.to_state()
    assert state.kind == "reference" and state.n_samples == 4368
    assert state.knob_transforms == ("log", "log", "log", "log")


def test_predict_is_vectorised_with_uncertainty(reference: PowerTrainPredictor) -> None:
    modes = get_space("orin-agx").modes("full")
    pred = reference.predict(modes)
    assert pred.time_ms.shape == pred.power_w.shape == (18096,)
    assert np.all(pred.time_log_sd > 0) and np.all(pred.power_log_sd > 0)
    frame = reference.predict(modes.head(3)).to_frame(modes.head(3))
    assert {"pred_time_ms", "pred_power_w", "pred_time_ms_std", "pred_power_w_std"} <= set(frame.columns)


def test_transfer_beats_scratch_on_gpu_heavy_workload(reference: PowerTrainPredictor) -> None:
    target = truth("orin-agx", "vit-s16-imagenet", unit=1)
    grid = get_space("orin-agx").modes("powertrain")
    picked = sample_modes(grid, 20, strategy="spacefill", seed=3)
    samples = noisy(picked.merge(target), 7)
    ours = reference.transfer(samples, workload="vit-s16-imagenet")
    scratch = TransferBaseline(reference, "scratch").fit(samples)
    poly = PolynomialBaseline(reference.knobs).fit(samples)
    ours_err = mape(ours.predict(target).time_ms, target.time_ms)
    assert ours_err < mape(scratch.predict(target).time_ms, target.time_ms)
    assert ours_err < mape(poly.predict(target).time_ms, target.time_ms)
    assert ours_err < 12
    assert mape(ours.predict(target).power_w, target.power_w) < 6


def test_transfer_never_mutates_source(reference: PowerTrainPredictor) -> None:
    modes = get_space("orin-agx").modes("powertrain").head(200)
    before = reference.predict(modes)
    snapshot = encode_predictor(reference.to_state())
    samples = noisy(truth("orin-agx", "lstm-wikitext").sample(30, random_state=0), 1)
    child = reference.transfer(samples)
    assert child is not reference and child.to_state() is not reference.to_state()
    assert encode_predictor(reference.to_state()) == snapshot
    after = reference.predict(modes)
    np.testing.assert_array_equal(before.time_ms, after.time_ms)
    assert child.to_state().kind == "transfer" and child.to_state().n_samples == 30


def test_transfer_records_choice_and_cv_errors(reference: PowerTrainPredictor) -> None:
    samples = noisy(truth("orin-nano", "mobilenetv3-gld23k").sample(40, random_state=2), 3)
    child = reference.transfer(samples, device_type="orin-nano", parent_id="sha256:abc")
    info = child.describe()
    assert info["device_type"] == "orin-nano" and info["parent_id"] == "sha256:abc"
    for t in info["targets"].values():
        assert set(t["cv_mape"]) == {"rescale", "finetune", "scratch", "ridge", "blend"}
        assert t["cv_mape"][t["method"]] == min(t["cv_mape"].values())


def test_ridge_candidate_wins_on_reciprocal_clock_structure(reference: PowerTrainPredictor) -> None:
    """Time as a sum of 1/clock terms (a CPU-bound job): the ridge features carry it exactly."""
    grid = get_space("orin-agx").modes("powertrain")
    samples = sample_modes(grid, 50, strategy="spacefill", seed=1)
    samples = samples.assign(time_ms=4e4 / samples.cpu_mhz + 2e3 / samples.gpu_mhz + 1e4 / samples.mem_mhz,
                             power_w=8.0 + 0.004 * samples.cpu_mhz + 0.002 * samples.gpu_mhz)
    child = reference.transfer(samples, seed=2)
    t = child.describe()["targets"]["time"]
    assert t["cv_mape"]["ridge"] < t["cv_mape"]["finetune"]
    assert "ridge" in t["weights"] and t["weights"]["ridge"] > 0
    expected = 4e4 / grid.cpu_mhz + 2e3 / grid.gpu_mhz + 1e4 / grid.mem_mhz
    assert mape(child.predict(grid).time_ms, expected) < 4
    # a network stays in the artifact, so the child can itself be a transfer source
    state = child.to_state()
    assert all(any(c.network is not None for c in tgt.components) for tgt in state.targets)
    back = PowerTrainPredictor.from_state(decode_predictor(encode_predictor(state)))
    np.testing.assert_array_equal(back.predict(grid).time_ms, child.predict(grid).time_ms)
    grandchild = back.transfer(noisy(truth("orin-agx", "lstm-wikitext").sample(30, random_state=1), 4))
    assert grandchild.to_state().parent_id == "" and np.all(np.isfinite(grandchild.predict(grid).time_ms))


def test_schema_version_1_artifacts_still_load(reference: PowerTrainPredictor) -> None:
    old = dataclasses.replace(reference.to_state(), schema_version=1)
    back = decode_predictor(encode_predictor(old))
    assert back.schema_version == 1
    modes = get_space("orin-agx").modes("powertrain").head(100)
    np.testing.assert_array_equal(PowerTrainPredictor.from_state(back).predict(modes).time_ms,
                                  reference.predict(modes).time_ms)
    with pytest.raises(ArtifactError, match="schema version 7"):
        decode_predictor(_with_version(reference, 7))


def _with_version(reference: PowerTrainPredictor, version: int) -> bytes:
    from powerfleet.serde import decode_payload, digest_of
    from powerfleet.v1 import powerfleet_pb2 as pb

    data = encode_predictor(reference.to_state())
    payload = decode_payload(data)
    payload.schema_version = version
    raw = payload.SerializeToString()
    return pb.PredictorArtifact(magic="powerfleet.predictor", format_version=1, payload=raw,
                                digest=digest_of(raw)).SerializeToString()


def test_transfer_notices_when_the_source_is_misleading(reference: PowerTrainPredictor) -> None:
    # A "workload" whose time *rises* with GPU clock and ignores everything else: the
    # reference is actively wrong, so scratch must score better than rescaling it.
    modes = sample_modes(get_space("orin-agx").modes("powertrain"), 60, strategy="spacefill", seed=0)
    samples = modes.assign(time_ms=5.0 * modes.gpu_mhz, power_w=30.0 - 0.01 * modes.gpu_mhz)
    child = reference.transfer(samples)
    t = child.describe()["targets"]["time"]
    assert t["cv_mape"]["scratch"] < t["cv_mape"]["rescale"]
    assert t["method"] != "rescale"
    assert mape(child.predict(modes).time_ms, samples.time_ms) < 10


def test_determinism_for_a_seed() -> None:
    ref = noisy(truth("orin-nano", "resnet18-imagenet", grid="full"), 0)
    a = PowerTrainPredictor(fit_steps=150, members=2, seed=4).fit(ref).predict(ref)
    b = PowerTrainPredictor(fit_steps=150, members=2, seed=4).fit(ref).predict(ref)
    c = PowerTrainPredictor(fit_steps=150, members=2, seed=5).fit(ref).predict(ref)
    np.testing.assert_array_equal(a.time_ms, b.time_ms)
    assert not np.array_equal(a.time_ms, c.time_ms)


def test_protobuf_round_trip_gives_identical_predictions(reference: PowerTrainPredictor) -> None:
    samples = noisy(truth("xavier-agx", "resnet18-imagenet").sample(25, random_state=5), 2)
    child = reference.transfer(samples)
    data = encode_predictor(child.to_state(), get_space("xavier-agx"))
    back = PowerTrainPredictor.from_state(decode_predictor(data))
    modes = get_space("xavier-agx").modes("powertrain").head(500)
    np.testing.assert_array_equal(child.predict(modes).time_ms, back.predict(modes).time_ms)
    np.testing.assert_array_equal(child.predict(modes).power_log_sd, back.predict(modes).power_log_sd)
    assert back.describe() == child.describe()
    # the transfer's CV residuals (for calibrated margins) and the sampled knob ranges survive the trip
    for target in ("time", "power"):
        res = back.to_state().target(target).cv_log_residuals
        assert len(res) > 0 and res == child.to_state().target(target).cv_log_residuals
    assert back.to_state().sample_low == child.to_state().sample_low
    sup = back.predict(modes).supported
    lo = samples.loc[:, list(get_space("xavier-agx").knob_names)].min()
    hi = samples.loc[:, list(get_space("xavier-agx").knob_names)].max()
    inside = ((modes >= lo) & (modes <= hi)).all(axis=1).to_numpy()
    assert sup is not None and np.array_equal(sup, inside)  # choices stay where the samples were


def test_tampered_or_foreign_artifacts_are_refused(reference: PowerTrainPredictor) -> None:
    data = bytearray(encode_predictor(reference.to_state()))
    with pytest.raises(ArtifactError, match="truncated"):
        decode_predictor(bytes(data[: len(data) // 2]))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ArtifactError):
        decode_predictor(bytes(data))
    with pytest.raises(ArtifactError, match="not a powerfleet predictor"):
        decode_predictor(b"cpu_cores,cpu_mhz\n1,2\n")


def test_generic_knob_space() -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "sm_count": rng.choice([20, 40, 80, 108], n).astype(float),
        "clock_mhz": rng.choice(np.arange(600, 1500, 100), n).astype(float),
        "hbm_on": rng.choice([0.0, 1.0], n),
    })
    frame["latency"] = 1e5 / (frame.sm_count * frame.clock_mhz) * (1.5 - 0.4 * frame.hbm_on)
    frame["watts"] = 50 + 0.002 * frame.sm_count * frame.clock_mhz + 20 * frame.hbm_on
    model = PowerTrainPredictor(knobs=("sm_count", "clock_mhz", "hbm_on"), time_col="latency",
                                power_col="watts", fit_steps=800, members=2).fit(frame)
    assert model.to_state().knob_transforms == ("log", "log", "linear")
    pred = model.predict(frame)
    assert mape(pred.time_ms, frame.latency) < 5 and mape(pred.power_w, frame.watts) < 3
    assert "pred_latency" in pred.to_frame(frame).columns


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.head(5), "at least 20 needed"),
        (lambda f: f.drop(columns=["gpu_mhz"]), "missing column(s) gpu_mhz"),
        (lambda f: f.assign(mem_mhz=3199.0), "knob column mem_mhz is constant"),
        (lambda f: f.assign(time_ms=np.where(f.index == 3, np.nan, f.time_ms)), "row 4, column time_ms"),
        (lambda f: f.assign(power_w=np.where(f.index == 0, 0.0, f.power_w)), "must be > 0"),
        (lambda f: f.assign(time_ms=np.where(f.index == 1, -3.0, f.time_ms)), "must be > 0"),
    ],
)
def test_fit_bad_input(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    frame = truth("orin-nano", "resnet18-imagenet").reset_index(drop=True)
    with pytest.raises(DataFormatError) as info:
        PowerTrainPredictor(fit_steps=5).fit(mutate(frame))
    assert message in str(info.value)


def test_transfer_and_predict_bad_input(reference: PowerTrainPredictor) -> None:
    samples = truth("orin-nano", "resnet18-imagenet").head(10)
    with pytest.raises(DataFormatError, match="at least 3"):
        reference.transfer(samples.head(2))
    with pytest.raises(DataFormatError, match="missing column"):
        reference.transfer(samples.rename(columns={"cpu_mhz": "cpu_freq"}))
    with pytest.raises(DataFormatError, match="must be > 0"):
        reference.predict(samples.assign(gpu_mhz=0.0))
    with pytest.raises(NotFittedError, match="not fitted"):
        PowerTrainPredictor().predict(samples)
