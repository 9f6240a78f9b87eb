"""Conversions between domain objects and the ``powerfleet.v1`` protobuf messages.

This is the only module that imports the generated code. Every load checks the bytes (magic,
format version, the sha256 digest of the payload) and then their meaning (:func:`check_meaning`:
finite numbers everywhere, tensor shapes that match the network architecture the payload
declares, knobs and units of the device type's space), so a corrupt, truncated, foreign or
crafted value is refused whole, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError

from powerfleet.v1 import powerfleet_pb2 as pb
from powertrain.boards import board_names, get_space
from powertrain.errors import DataFormatError
from powertrain.outputs import atomic_output
from powertrain.predictor.state import (
    READABLE_SCHEMA_VERSIONS,
    ComponentState,
    LinearState,
    NetworkState,
    PredictorState,
    TargetState,
    poly2_width,
)
from powertrain.space import Knob, ModeSpace

MAGIC = "powerfleet.predictor"
FORMAT_VERSION = 1
BUNDLE_MAGIC = "powerfleet.bundle"
BUNDLE_FORMAT_VERSION = 1
#: Artifacts above this size are refused on load and on put (a paper-sized predictor is ~1 MB).
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_MADE_BY = {"reference": pb.MADE_BY_REFERENCE_FIT, "transfer": pb.MADE_BY_TRANSFER,
            "scratch": pb.MADE_BY_SCRATCH}
_MADE_BY_NAME = {v: k for k, v in _MADE_BY.items()}


class ArtifactError(DataFormatError):
    """A predictor or profile value that is not a valid powerfleet artifact."""


def digest_of(data: bytes) -> str:
    """The artifact id of payload bytes: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- tensors
def tensor_to_proto(array: np.ndarray, dtype: str = "float32") -> pb.Tensor:
    """An array as a Tensor message (little-endian, C order)."""
    arr = np.ascontiguousarray(array, dtype=_DTYPES[dtype])
    return pb.Tensor(dtype=dtype, shape=list(arr.shape), data=arr.tobytes())


def tensor_from_proto(msg: pb.Tensor, what: str) -> np.ndarray:
    """Rebuild an array, refusing unknown dtypes and data whose size does not match the shape."""
    if msg.dtype not in _DTYPES:
        raise ArtifactError(f"{what}: tensor dtype {msg.dtype!r} not one of {', '.join(_DTYPES)}")
    shape = tuple(int(s) for s in msg.shape)
    if any(s < 0 for s in shape):
        raise ArtifactError(f"{what}: negative tensor dimension in {shape}")
    dtype = _DTYPES[msg.dtype]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(msg.data) != expected:
        raise ArtifactError(f"{what}: tensor holds {len(msg.data)} bytes, shape {shape} needs {expected}")
    array: np.ndarray = np.frombuffer(msg.data, dtype=dtype).reshape(shape).astype(np.float64)
    return array


# ---------------------------------------------------------------- spaces
def space_to_proto(space: ModeSpace) -> pb.KnobSpace:
    """A mode space (knobs and values; presets and grids are not part of the artifact)."""
    return pb.KnobSpace(name=space.name, knobs=[pb.Knob(name=k.name, values=list(k.values), unit=k.unit)
                                                for k in space.knobs])


def space_from_proto(msg: pb.KnobSpace) -> ModeSpace:
    """The mode space described by ``msg``."""
    return ModeSpace(msg.name, tuple(Knob(k.name, tuple(k.values), k.unit) for k in msg.knobs))


# ---------------------------------------------------------------- predictors
def _network_to_proto(net: NetworkState) -> pb.Network:
    return pb.Network(weights=[tensor_to_proto(w) for w in net.weights],
                      biases=[tensor_to_proto(b) for b in net.biases], activation=net.activation)


def _network_from_proto(msg: pb.Network, what: str) -> NetworkState:
    weights = tuple(tensor_from_proto(t, f"{what} weight {i}") for i, t in enumerate(msg.weights))
    biases = tuple(tensor_from_proto(t, f"{what} bias {i}") for i, t in enumerate(msg.biases))
    return NetworkState(weights, biases, msg.activation)


def _component_to_proto(c: ComponentState) -> pb.Component:
    msg = pb.Component(weight=c.weight, scale=c.scale, shift=c.shift, label=c.label)
    if c.network is not None:
        msg.network.CopyFrom(_network_to_proto(c.network))
    if c.linear is not None:
        msg.linear.CopyFrom(pb.Linear(features=c.linear.features,
                                      feature_mean=[float(v) for v in c.linear.feature_mean],
                                      feature_std=[float(v) for v in c.linear.feature_std],
                                      coef=[float(v) for v in c.linear.coef], intercept=c.linear.intercept))
    return msg


def _component_from_proto(msg: pb.Component, what: str) -> ComponentState:
    network = _network_from_proto(msg.network, what) if msg.HasField("network") else None
    linear = None
    if msg.HasField("linear"):
        lin = msg.linear
        linear = LinearState(lin.features, np.asarray(lin.feature_mean, float), np.asarray(lin.feature_std, float),
                             np.asarray(lin.coef, float), float(lin.intercept))
    return ComponentState(msg.weight, network, msg.scale, msg.shift, linear, msg.label)


def state_to_payload(state: PredictorState, space: ModeSpace | None = None) -> pb.PredictorPayload:
    """The payload message of a predictor state."""
    targets = [
        pb.TargetModel(
            name=t.name, column=t.column, transform=t.transform, y_mean=t.y_mean, y_std=t.y_std,
            method=t.method, cv_mape=dict(t.cv_mape), error_log_rmse=t.error_log_rmse,
            components=[_component_to_proto(c) for c in t.components],
            cv_log_residuals=[float(r) for r in t.cv_log_residuals],
        )
        for t in state.targets
    ]
    payload = pb.PredictorPayload(
        schema_version=state.schema_version, device_type=state.device_type, workload=state.workload,
        knobs=list(state.knobs), knob_transforms=list(state.knob_transforms),
        input_mean=[float(v) for v in state.input_mean], input_std=[float(v) for v in state.input_std],
        targets=targets, made_by=_MADE_BY.get(state.kind, pb.MADE_BY_UNSPECIFIED),
        parent_id=state.parent_id, n_samples=state.n_samples, seed=state.seed,
        created_at=state.created_at or time.time(),
        settings_json=json.dumps(dict(state.settings), sort_keys=True),
        sample_low=[float(v) for v in state.sample_low], sample_high=[float(v) for v in state.sample_high],
    )
    if space is not None:
        payload.space.CopyFrom(space_to_proto(space))
    return payload


def state_from_payload(payload: pb.PredictorPayload, what: str = "artifact") -> PredictorState:
    """Rebuild a predictor state, translating every inconsistency into ArtifactError.

    The state's meaning is checked as well (:func:`check_meaning`), so what this returns can
    be used to predict without producing NaN or failing on a shape.
    """
    if payload.schema_version not in READABLE_SCHEMA_VERSIONS:
        raise ArtifactError(f"{what}: predictor schema version {payload.schema_version} is not supported "
                            f"(this build reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    try:
        settings = json.loads(payload.settings_json) if payload.settings_json else {}
    except ValueError:
        raise ArtifactError(f"{what}: settings are not valid JSON") from None
    if not isinstance(settings, dict):
        raise ArtifactError(f"{what}: settings must be a JSON object; got {type(settings).__name__}")
    try:
        targets = tuple(
            TargetState(
                name=t.name, column=t.column, transform=t.transform, y_mean=t.y_mean, y_std=t.y_std,
                method=t.method, cv_mape=dict(t.cv_mape), error_log_rmse=t.error_log_rmse,
                components=tuple(_component_from_proto(c, f"{what}: {t.name}[{i}]")
                                 for i, c in enumerate(t.components)),
                cv_log_residuals=tuple(t.cv_log_residuals),
            )
            for t in payload.targets
        )
        state = PredictorState(
            device_type=payload.device_type, workload=payload.workload, knobs=tuple(payload.knobs),
            knob_transforms=tuple(payload.knob_transforms),
            input_mean=np.asarray(payload.input_mean, float), input_std=np.asarray(payload.input_std, float),
            targets=targets, kind=_MADE_BY_NAME.get(payload.made_by, "reference"),
            parent_id=payload.parent_id, n_samples=payload.n_samples, seed=payload.seed,
            created_at=payload.created_at, settings=settings,
            schema_version=payload.schema_version,
            sample_low=tuple(payload.sample_low), sample_high=tuple(payload.sample_high),
        )
    except ArtifactError:
        raise
    except (DataFormatError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{what}: inconsistent predictor: {exc}") from None
    check_meaning(state, payload.space if payload.HasField("space") else None, what)
    return state


#: Largest ensemble, layer width and depth a loaded network may have (far above what is trained).
MAX_MEMBERS, MAX_WIDTH, MAX_LAYERS = 256, 4096, 16


def _architecture(settings: Mapping[str, Any], what: str) -> tuple[tuple[int, ...] | None, str | None]:
    """The hidden widths and activation the payload's settings declare (None where not declared)."""
    hidden = settings.get("hidden")
    declared: tuple[int, ...] | None = None
    if hidden is not None:
        if (not isinstance(hidden, list) or not hidden
                or not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH for h in hidden)
                or len(hidden) > MAX_LAYERS):
            raise ArtifactError(f"{what}: settings hidden={hidden!r} must list 1-{MAX_LAYERS} layer widths "
                                f"in [1, {MAX_WIDTH}]")
        declared = tuple(hidden)
    activation = settings.get("activation")
    if activation is not None and not isinstance(activation, str):
        raise ArtifactError(f"{what}: settings activation={activation!r} must be a string")
    return declared, activation


def check_meaning(state: PredictorState, space: pb.KnobSpace | None = None, what: str = "artifact") -> None:
    """Refuse a well-formed predictor that cannot mean anything (one line, ArtifactError).

    Checks: every number finite (scaling, normalisation, component weights, error terms,
    creation time); every network's hidden widths and activation equal to the architecture
    its settings declare, and all components of a target of one ensemble size; for a known
    board type, knobs that are knobs of its space and a recorded space whose knob units match.
    """
    def bad(message: str) -> ArtifactError:
        return ArtifactError(f"{what}: {message}")

    if not (np.all(np.isfinite(state.input_mean)) and np.all(np.isfinite(state.input_std))):
        raise bad("input scaling holds a non-finite value")
    if not np.isfinite(state.created_at):
        raise bad(f"created_at={state.created_at!r} is not finite")
    hidden, activation = _architecture(state.settings, what)
    for t in state.targets:
        if not (np.isfinite(t.error_log_rmse) and t.error_log_rmse >= 0):
            raise bad(f"target {t.name}: error_log_rmse={t.error_log_rmse!r} must be a finite number >= 0")
        members = {c.network.members for c in t.components if c.network is not None}
        if len(members) != 1:
            raise bad(f"target {t.name}: components have different ensemble sizes {sorted(members)}")
        for i, c in enumerate(t.components):
            if not all(np.isfinite(v) for v in (c.weight, c.scale, c.shift)):
                raise bad(f"target {t.name} component {i}: weight, scale and shift must be finite")
            if c.linear is not None:
                width = poly2_width(state.knob_transforms)
                if c.linear.coef.shape != (width,):
                    raise bad(f"target {t.name} component {i}: a poly2 ridge over {len(state.knobs)} knobs has "
                              f"{width} coefficients, not {c.linear.coef.shape[0]}")
                continue
            net = c.network
            assert net is not None
            if net.members > MAX_MEMBERS or len(net.weights) > MAX_LAYERS + 1:
                raise bad(f"target {t.name} component {i}: {net.members} members and {len(net.weights)} layers "
                          f"exceed {MAX_MEMBERS} and {MAX_LAYERS + 1}")
            if hidden is not None and net.hidden != hidden:
                raise bad(f"target {t.name} component {i}: tensor shapes give hidden layers {list(net.hidden)}, "
                          f"the settings declare {list(hidden)}")
            if activation is not None and net.activation != activation:
                raise bad(f"target {t.name} component {i}: activation {net.activation!r} differs from the "
                          f"declared {activation!r}")
    if state.device_type in board_names():
        board = get_space(state.device_type)
        unknown = [k for k in state.knobs if k not in board.knob_names]
        if unknown:
            raise bad(f"knob(s) {', '.join(unknown)} are not knobs of {state.device_type} "
                      f"({', '.join(board.knob_names)})")
        if space is not None and len(space.knobs):
            units = {k.name: k.unit for k in board.knobs}
            for k in space.knobs:
                if k.name not in units:
                    raise bad(f"recorded space knob {k.name!r} is not a knob of {state.device_type}")
                if k.unit != units[k.name]:
                    raise bad(f"recorded space knob {k.name} has unit {k.unit!r}; {state.device_type} "
                              f"uses {units[k.name]!r}")
                if not all(np.isfinite(v) for v in k.values):
                    raise bad(f"recorded space knob {k.name} holds a non-finite value")


def encode_predictor(state: PredictorState, space: ModeSpace | None = None) -> bytes:
    """Serialize a predictor as an artifact (payload + digest); a meaningless state is refused."""
    message = state_to_payload(state, space)
    check_meaning(state, message.space if message.HasField("space") else None, "predictor to encode")
    payload = message.SerializeToString(deterministic=True)
    if len(payload) > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"artifact is {len(payload)} bytes; the limit is {MAX_ARTIFACT_BYTES}")
    return pb.PredictorArtifact(magic=MAGIC, format_version=FORMAT_VERSION, payload=payload,
                                digest=digest_of(payload)).SerializeToString(deterministic=True)


def _open_artifact(data: bytes, what: str) -> pb.PredictorArtifact:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ArtifactError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_ARTIFACT_BYTES + 1024:
        raise ArtifactError(f"{what}: {len(data)} bytes exceeds the artifact limit {MAX_ARTIFACT_BYTES}")
    msg = pb.PredictorArtifact()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError:
        raise ArtifactError(f"{what}: not a powerfleet predictor artifact (undecodable; truncated?)") \
            from None
    if msg.magic != MAGIC:
        raise ArtifactError(f"{what}: not a powerfleet predictor artifact (magic {msg.magic[:40]!r})")
    if msg.format_version != FORMAT_VERSION:
        raise ArtifactError(f"{what}: artifact format {msg.format_version} is not supported "
                            f"(this build reads {FORMAT_VERSION})")
    if digest_of(msg.payload) != msg.digest:
        raise ArtifactError(f"{what}: digest mismatch (stored {msg.digest[:19]}..., content "
                            f"{digest_of(msg.payload)[:19]}...): corrupt or tampered")
    return msg


def artifact_id(data: bytes, what: str = "artifact") -> str:
    """The verified id (payload digest) of artifact bytes."""
    return _open_artifact(data, what).digest


def decode_predictor(data: bytes, what: str = "artifact") -> PredictorState:
    """Verify and decode artifact bytes into a predictor state."""
    return state_from_payload(decode_payload(data, what), what)


def decode_payload(data: bytes, what: str = "artifact") -> pb.PredictorPayload:
    """Verify artifact bytes and return the payload message (for metadata without tensors)."""
    return _open_payload(data, what)[1]


def _open_payload(data: bytes, what: str) -> tuple[pb.PredictorArtifact, pb.PredictorPayload]:
    msg = _open_artifact(data, what)
    payload = pb.PredictorPayload()
    try:
        payload.ParseFromString(msg.payload)
    except DecodeError:
        raise ArtifactError(f"{what}: payload does not decode") from None
    return msg, payload


@dataclass(frozen=True)
class ArtifactInfo:
    """What a store records about an artifact, read from its verified payload (no tensors)."""

    artifact_id: str
    device_type: str
    workload: str
    kind: str
    parent_id: str
    n_samples: int
    created_at: float
    size_bytes: int


def _inspect(data: bytes, what: str) -> tuple[ArtifactInfo, pb.PredictorPayload]:
    msg, payload = _open_payload(data, what)
    info = ArtifactInfo(
        artifact_id=msg.digest, device_type=payload.device_type, workload=payload.workload,
        kind=_MADE_BY_NAME.get(payload.made_by, "reference"), parent_id=payload.parent_id,
        n_samples=int(payload.n_samples), created_at=float(payload.created_at), size_bytes=len(data),
    )
    return info, payload


def inspect_predictor(data: bytes, what: str = "artifact") -> ArtifactInfo:
    """Verify artifact bytes (magic, format, digest) and return their metadata (no tensors decoded).

    Enough to tell whose bytes these are; use :func:`verify_predictor` or :func:`load_predictor`
    before trusting their meaning.
    """
    return _inspect(data, what)[0]


def verify_predictor(data: bytes, what: str = "artifact") -> ArtifactInfo:
    """Verify artifact bytes completely (bytes and meaning) and return their metadata."""
    return load_predictor(data, what)[0]


def load_predictor(data: bytes, what: str = "artifact") -> tuple[ArtifactInfo, PredictorState]:
    """Verify and decode artifact bytes in one pass: metadata and the predictor state."""
    info, payload = _inspect(data, what)
    return info, state_from_payload(payload, what)


def save_model(path: str | Path, state: PredictorState, space: ModeSpace | None = None, *,
               what: str = "output") -> str:
    """Write a ``.model`` file atomically (see :mod:`powertrain.outputs`); returns its artifact id."""
    data = encode_predictor(state, space)
    with atomic_output(path, what=what) as tmp:
        tmp.write_bytes(data)
    return artifact_id(data)


def read_artifact_file(path: str | Path) -> bytes:
    """The bytes of an artifact file (``.model``), one-line errors for what cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: model file not found" if not p.exists() else f"{p}: not a regular file")
    try:
        size = p.stat().st_size
        if size > MAX_ARTIFACT_BYTES + 1024:
            raise ArtifactError(f"{p}: {size} bytes exceeds the artifact limit {MAX_ARTIFACT_BYTES}")
        return p.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot be read ({exc.strerror or exc})") from None


def load_model(path: str | Path) -> PredictorState:
    """Read and verify a ``.model`` file (bytes and meaning)."""
    return decode_predictor(read_artifact_file(path), str(path))


# ---------------------------------------------------------------- profiles
def profile_to_proto(frame: pd.DataFrame, *, device_type: str, workload: str, knobs: Sequence[str],
                     time_col: str = "time_ms", power_col: str = "power_w", device_unit: int = 0,
                     timestamp: float | None = None, source: str = "profile") -> pb.Profile:
    """Profile rows as a Profile message with its digest; per-row ``device_unit``,
    ``timestamp`` and ``source`` columns override the defaults."""
    now = time.time() if timestamp is None else timestamp
    samples = []
    for _, row in frame.iterrows():
        samples.append(pb.ProfileSample(
            knob_values=[float(row[k]) for k in knobs], time_ms=float(row[time_col]),
            power_w=float(row[power_col]),
            device_unit=int(row["device_unit"]) if "device_unit" in frame.columns else device_unit,
            timestamp=float(row["timestamp"]) if "timestamp" in frame.columns else now,
            source=str(row["source"]) if "source" in frame.columns else source,
        ))
    msg = pb.Profile(device_type=device_type, workload=workload, knobs=list(knobs), samples=samples)
    msg.digest = digest_of(msg.SerializeToString(deterministic=True))
    return msg


def encode_profile(msg: pb.Profile) -> bytes:
    """Serialize a Profile message."""
    return msg.SerializeToString(deterministic=True)


def decode_profile(data: bytes, what: str = "profile") -> pb.Profile:
    """Verify and decode Profile bytes: digest, then meaning (distinct knobs, one value per knob,
    finite knob values, finite positive time and power)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ArtifactError(f"{what}: expected bytes, got {type(data).__name__}")
    msg = pb.Profile()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError:
        raise ArtifactError(f"{what}: not a powerfleet profile (undecodable)") from None
    stored = msg.digest
    msg.digest = ""
    if not stored or digest_of(msg.SerializeToString(deterministic=True)) != stored:
        raise ArtifactError(f"{what}: profile digest mismatch: corrupt or tampered")
    msg.digest = stored
    knobs = list(msg.knobs)
    if not knobs or len(set(knobs)) != len(knobs) or not all(knobs):
        raise ArtifactError(f"{what}: knobs {knobs} must be non-empty, named and distinct")
    n = len(knobs)
    for i, s in enumerate(msg.samples):
        values = s.knob_values
        if len(values) != n:
            raise ArtifactError(f"{what}: sample {i} has {len(values)} knob values for {n} knobs")
        t, p = s.time_ms, s.power_w
        if not (0 < t < math.inf and 0 < p < math.inf and math.isfinite(s.timestamp)
                and all(map(math.isfinite, values))):
            raise ArtifactError(f"{what}: sample {i} holds a non-finite value or a time/power <= 0")
    return msg


def chunk_digest(data: bytes) -> str:
    """The hex sha256 of an encoded profile chunk (how stores recognise a chunk they hold)."""
    return hashlib.sha256(bytes(data)).hexdigest()


def merge_profiles(chunks: Sequence[bytes], max_samples: int = 200_000, what: str = "profile") -> list[bytes]:
    """Merge encoded chunks of one pair into as few chunks as possible (at most ``max_samples``
    samples each), in order; each merged chunk records the digests of what it holds."""
    if not chunks:
        return []
    msgs = [decode_profile(c, f"{what} chunk {i + 1}") for i, c in enumerate(chunks)]
    head = msgs[0]
    for i, m in enumerate(msgs[1:], start=2):
        if (m.device_type, m.workload, list(m.knobs)) != (head.device_type, head.workload, list(head.knobs)):
            raise ArtifactError(f"{what} chunk {i}: pair or knobs differ from chunk 1; cannot merge")
    out: list[bytes] = []
    current = pb.Profile(device_type=head.device_type, workload=head.workload, knobs=list(head.knobs))
    for raw, m in zip(chunks, msgs, strict=True):
        if len(current.samples) and len(current.samples) + len(m.samples) > max_samples:
            out.append(_seal(current))
            current = pb.Profile(device_type=head.device_type, workload=head.workload, knobs=list(head.knobs))
        current.samples.extend(m.samples)
        current.merged.extend([*m.merged, chunk_digest(raw)])
    out.append(_seal(current))
    return out


def _seal(msg: pb.Profile) -> bytes:
    msg.digest = ""
    msg.digest = digest_of(msg.SerializeToString(deterministic=True))
    return encode_profile(msg)


def profile_to_frame(msg: pb.Profile, time_col: str = "time_ms", power_col: str = "power_w") -> pd.DataFrame:
    """A Profile message as a profile frame (knobs, time, power, device_unit, timestamp, source)."""
    knobs = list(msg.knobs)
    rows = [{**dict(zip(knobs, s.knob_values, strict=True)), time_col: s.time_ms, power_col: s.power_w,
             "device_unit": s.device_unit, "timestamp": s.timestamp, "source": s.source}
            for s in msg.samples]
    return pd.DataFrame(rows, columns=[*knobs, time_col, power_col, "device_unit", "timestamp", "source"])


@dataclass(frozen=True)
class ProfileInfo:
    """Metadata of a verified Profile value."""

    device_type: str
    workload: str
    knobs: tuple[str, ...]
    n_samples: int
    digest: str
    merged: tuple[str, ...] = ()  # hex sha256 of the chunks compacted into this one


def encode_profile_frame(frame: pd.DataFrame, *, device_type: str, workload: str, knobs: Sequence[str],
                         source: str = "profile", timestamp: float | None = None) -> bytes:
    """Profile rows (knobs, time_ms, power_w, optional device_unit/timestamp/source) as Profile bytes."""
    return encode_profile(profile_to_proto(frame, device_type=device_type, workload=workload, knobs=knobs,
                                           source=source, timestamp=timestamp))


def inspect_profile(data: bytes, what: str = "profile") -> ProfileInfo:
    """Verify Profile bytes and return their metadata."""
    msg = decode_profile(data, what)
    return ProfileInfo(msg.device_type, msg.workload, tuple(msg.knobs), len(msg.samples), msg.digest,
                       tuple(msg.merged))


def decode_profile_frame(data: bytes, what: str = "profile") -> pd.DataFrame:
    """Verify Profile bytes and return them as a profile frame."""
    return profile_to_frame(decode_profile(data, what))


# ---------------------------------------------------------------- export bundles
@dataclass(frozen=True)
class BundleEntry:
    """One stored version in an export bundle."""

    artifact: bytes
    version: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    stored_at: float = 0.0


@dataclass(frozen=True)
class Bundle:
    """Artifacts and profiles moved between stores as one file."""

    entries: tuple[BundleEntry, ...]
    profiles: tuple[bytes, ...] = ()  # encoded Profile values
    created_at: float = 0.0
    source: str = ""


def encode_bundle(bundle: Bundle) -> bytes:
    """Serialize a bundle; every artifact and profile is verified first, so no bad value leaves."""
    msg = pb.ExportBundle(magic=BUNDLE_MAGIC, format_version=BUNDLE_FORMAT_VERSION,
                          created_at=bundle.created_at or time.time(), source=bundle.source)
    for i, e in enumerate(bundle.entries):
        verify_predictor(e.artifact, f"bundle artifact {i}")
        msg.artifacts.append(pb.StoredArtifact(artifact=e.artifact, version=e.version,
                                               labels=dict(e.labels), stored_at=e.stored_at))
    for i, p in enumerate(bundle.profiles):
        msg.profiles.append(decode_profile(p, f"bundle profile {i}"))
    msg.digest = digest_of(msg.SerializeToString(deterministic=True))
    return msg.SerializeToString(deterministic=True)


def decode_bundle(data: bytes, what: str = "bundle") -> Bundle:
    """Verify a bundle (magic, format, bundle digest, then every artifact and profile) and decode it."""
    msg = pb.ExportBundle()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError:
        raise ArtifactError(f"{what}: not a powerfleet bundle (undecodable; truncated?)") from None
    if msg.magic != BUNDLE_MAGIC:
        raise ArtifactError(f"{what}: not a powerfleet bundle (magic {msg.magic[:40]!r})")
    if msg.format_version != BUNDLE_FORMAT_VERSION:
        raise ArtifactError(f"{what}: bundle format {msg.format_version} is not supported "
                            f"(this build reads {BUNDLE_FORMAT_VERSION})")
    stored = msg.digest
    msg.digest = ""
    if digest_of(msg.SerializeToString(deterministic=True)) != stored:
        raise ArtifactError(f"{what}: bundle digest mismatch: corrupt or tampered")
    entries = []
    for i, a in enumerate(msg.artifacts):
        verify_predictor(a.artifact, f"{what}: artifact {i}")
        entries.append(BundleEntry(bytes(a.artifact), int(a.version), dict(a.labels), float(a.stored_at)))
    profiles = []
    for i, p in enumerate(msg.profiles):
        raw = encode_profile(p)
        decode_profile(raw, f"{what}: profile {i}")
        profiles.append(raw)
    return Bundle(tuple(entries), tuple(profiles), float(msg.created_at), msg.source)
