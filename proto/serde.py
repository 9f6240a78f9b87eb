"""Conversions between domain objects and the ``powerfleet.v1`` protobuf messages.

This is the only module that imports the generated code. Every load checks the magic, the
format version, the sha256 digest of the payload and the shapes of every tensor before any
object is built, so a corrupt, truncated or foreign value is refused whole, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError

from powertrain.errors import DataFormatError
from powertrain.predictor.state import (
    READABLE_SCHEMA_VERSIONS,
    ComponentState,
    LinearState,
    NetworkState,
    PredictorState,
    TargetState,
)
from powertrain.profile_io import atomic_output
from powertrain.space import Knob, ModeSpace
from proto.v1 import powerfleet_pb2 as pb

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
    )
    if space is not None:
        payload.space.CopyFrom(space_to_proto(space))
    return payload


def state_from_payload(payload: pb.PredictorPayload, what: str = "artifact") -> PredictorState:
    """Rebuild a predictor state, translating every inconsistency into ArtifactError."""
    if payload.schema_version not in READABLE_SCHEMA_VERSIONS:
        raise ArtifactError(f"{what}: predictor schema version {payload.schema_version} is not supported "
                            f"(this build reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    try:
        settings = json.loads(payload.settings_json) if payload.settings_json else {}
        targets = tuple(
            TargetState(
                name=t.name, column=t.column, transform=t.transform, y_mean=t.y_mean, y_std=t.y_std,
                method=t.method, cv_mape=dict(t.cv_mape), error_log_rmse=t.error_log_rmse,
                components=tuple(_component_from_proto(c, f"{what} {t.name}[{i}]")
                                 for i, c in enumerate(t.components)),
            )
            for t in payload.targets
        )
        return PredictorState(
            device_type=payload.device_type, workload=payload.workload, knobs=tuple(payload.knobs),
            knob_transforms=tuple(payload.knob_transforms),
            input_mean=np.asarray(payload.input_mean, float), input_std=np.asarray(payload.input_std, float),
            targets=targets, kind=_MADE_BY_NAME.get(payload.made_by, "reference"),
            parent_id=payload.parent_id, n_samples=payload.n_samples, seed=payload.seed,
            created_at=payload.created_at, settings=settings if isinstance(settings, dict) else {},
            schema_version=payload.schema_version,
        )
    except ArtifactError:
        raise
    except (DataFormatError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{what}: inconsistent predictor: {exc}") from None


def encode_predictor(state: PredictorState, space: ModeSpace | None = None) -> bytes:
    """Serialize a predictor as an artifact (payload + digest)."""
    payload = state_to_payload(state, space).SerializeToString(deterministic=True)
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
    msg = _open_artifact(data, what)
    payload = pb.PredictorPayload()
    try:
        payload.ParseFromString(msg.payload)
    except DecodeError:
        raise ArtifactError(f"{what}: payload does not decode") from None
    return payload


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
    msg = _open_artifact(data, what)
    payload = pb.PredictorPayload()
    try:
        payload.ParseFromString(msg.payload)
    except DecodeError:
        raise ArtifactError(f"{what}: payload does not decode") from None
    info = ArtifactInfo(
        artifact_id=msg.digest, device_type=payload.device_type, workload=payload.workload,
        kind=_MADE_BY_NAME.get(payload.made_by, "reference"), parent_id=payload.parent_id,
        n_samples=int(payload.n_samples), created_at=float(payload.created_at), size_bytes=len(data),
    )
    return info, payload


def inspect_predictor(data: bytes, what: str = "artifact") -> ArtifactInfo:
    """Verify artifact bytes (magic, format, digest) and return their metadata."""
    return _inspect(data, what)[0]


def load_predictor(data: bytes, what: str = "artifact") -> tuple[ArtifactInfo, PredictorState]:
    """Verify and decode artifact bytes in one pass: metadata and the predictor state."""
    info, payload = _inspect(data, what)
    return info, state_from_payload(payload, what)


def save_model(path: str | Path, state: PredictorState, space: ModeSpace | None = None) -> str:
    """Write a ``.model`` file atomically; returns its artifact id."""
    data = encode_predictor(state, space)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return artifact_id(data)


def load_model(path: str | Path) -> PredictorState:
    """Read and verify a ``.model`` file."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: model file not found")
    return decode_predictor(p.read_bytes(), str(p))


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
    """Verify and decode Profile bytes."""
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
    for i, s in enumerate(msg.samples):
        if len(s.knob_values) != len(msg.knobs):
            raise ArtifactError(f"{what}: sample {i} has {len(s.knob_values)} knob values for "
                                f"{len(msg.knobs)} knobs")
    return msg


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


def encode_profile_frame(frame: pd.DataFrame, *, device_type: str, workload: str, knobs: Sequence[str],
                         source: str = "profile", timestamp: float | None = None) -> bytes:
    """Profile rows (knobs, time_ms, power_w, optional device_unit/timestamp/source) as Profile bytes."""
    return encode_profile(profile_to_proto(frame, device_type=device_type, workload=workload, knobs=knobs,
                                           source=source, timestamp=timestamp))


def inspect_profile(data: bytes, what: str = "profile") -> ProfileInfo:
    """Verify Profile bytes and return their metadata."""
    msg = decode_profile(data, what)
    return ProfileInfo(msg.device_type, msg.workload, tuple(msg.knobs), len(msg.samples), msg.digest)


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
        artifact_id(e.artifact, f"bundle artifact {i}")
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
        artifact_id(a.artifact, f"{what}: artifact {i}")
        entries.append(BundleEntry(bytes(a.artifact), int(a.version), dict(a.labels), float(a.stored_at)))
    profiles = []
    for i, p in enumerate(msg.profiles):
        raw = encode_profile(p)
        decode_profile(raw, f"{what}: profile {i}")
        profiles.append(raw)
    return Bundle(tuple(entries), tuple(profiles), float(msg.created_at), msg.source)
