from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MadeBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MADE_BY_UNSPECIFIED: _ClassVar[MadeBy]
    MADE_BY_REFERENCE_FIT: _ClassVar[MadeBy]
    MADE_BY_TRANSFER: _ClassVar[MadeBy]
    MADE_BY_SCRATCH: _ClassVar[MadeBy]
MADE_BY_UNSPECIFIED: MadeBy
MADE_BY_REFERENCE_FIT: MadeBy
MADE_BY_TRANSFER: MadeBy
MADE_BY_SCRATCH: MadeBy

class Knob(_message.Message):
    __slots__ = ("name", "values", "unit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[float]
    unit: str
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ..., unit: _Optional[str] = ...) -> None: ...

class KnobSpace(_message.Message):
    __slots__ = ("name", "knobs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KNOBS_FIELD_NUMBER: _ClassVar[int]
    name: str
    knobs: _containers.RepeatedCompositeFieldContainer[Knob]
    def __init__(self, name: _Optional[str] = ..., knobs: _Optional[_Iterable[_Union[Knob, _Mapping]]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("weights", "biases", "activation")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIASES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[Tensor]
    biases: _containers.RepeatedCompositeFieldContainer[Tensor]
    activation: str
    def __init__(self, weights: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., biases: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., activation: _Optional[str] = ...) -> None: ...

class Linear(_message.Message):
    __slots__ = ("features", "feature_mean", "feature_std", "coef", "intercept")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MEAN_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STD_FIELD_NUMBER: _ClassVar[int]
    COEF_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    features: str
    feature_mean: _containers.RepeatedScalarFieldContainer[float]
    feature_std: _containers.RepeatedScalarFieldContainer[float]
    coef: _containers.RepeatedScalarFieldContainer[float]
    intercept: float
    def __init__(self, features: _Optional[str] = ..., feature_mean: _Optional[_Iterable[float]] = ..., feature_std: _Optional[_Iterable[float]] = ..., coef: _Optional[_Iterable[float]] = ..., intercept: _Optional[float] = ...) -> None: ...

class Component(_message.Message):
    __slots__ = ("weight", "network", "scale", "shift", "linear", "label")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    LINEAR_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    weight: float
    network: Network
    scale: float
    shift: float
    linear: Linear
    label: str
    def __init__(self, weight: _Optional[float] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., scale: _Optional[float] = ..., shift: _Optional[float] = ..., linear: _Optional[_Union[Linear, _Mapping]] = ..., label: _Optional[str] = ...) -> None: ...

class TargetModel(_message.Message):
    __slots__ = ("name", "column", "transform", "y_mean", "y_std", "method", "components", "cv_mape", "error_log_rmse", "cv_log_residuals")
    class CvMapeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    Y_MEAN_FIELD_NUMBER: _ClassVar[int]
    Y_STD_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CV_MAPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_LOG_RMSE_FIELD_NUMBER: _ClassVar[int]
    CV_LOG_RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    name: str
    column: str
    transform: str
    y_mean: float
    y_std: float
    method: str
    components: _containers.RepeatedCompositeFieldContainer[Component]
    cv_mape: _containers.ScalarMap[str, float]
    error_log_rmse: float
    cv_log_residuals: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., column: _Optional[str] = ..., transform: _Optional[str] = ..., y_mean: _Optional[float] = ..., y_std: _Optional[float] = ..., method: _Optional[str] = ..., components: _Optional[_Iterable[_Union[Component, _Mapping]]] = ..., cv_mape: _Optional[_Mapping[str, float]] = ..., error_log_rmse: _Optional[float] = ..., cv_log_residuals: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictorPayload(_message.Message):
    __slots__ = ("schema_version", "device_type", "workload", "knobs", "knob_transforms", "input_mean", "input_std", "targets", "made_by", "parent_id", "n_samples", "seed", "created_at", "settings_json", "space", "sample_low", "sample_high")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    KNOBS_FIELD_NUMBER: _ClassVar[int]
    KNOB_TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    INPUT_MEAN_FIELD_NUMBER: _ClassVar[int]
    INPUT_STD_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    MADE_BY_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_LOW_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_HIGH_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    device_type: str
    workload: str
    knobs: _containers.RepeatedScalarFieldContainer[str]
    knob_transforms: _containers.RepeatedScalarFieldContainer[str]
    input_mean: _containers.RepeatedScalarFieldContainer[float]
    input_std: _containers.RepeatedScalarFieldContainer[float]
    targets: _containers.RepeatedCompositeFieldContainer[TargetModel]
    made_by: MadeBy
    parent_id: str
    n_samples: int
    seed: int
    created_at: float
    settings_json: str
    space: KnobSpace
    sample_low: _containers.RepeatedScalarFieldContainer[float]
    sample_high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, schema_version: _Optional[int] = ..., device_type: _Optional[str] = ..., workload: _Optional[str] = ..., knobs: _Optional[_Iterable[str]] = ..., knob_transforms: _Optional[_Iterable[str]] = ..., input_mean: _Optional[_Iterable[float]] = ..., input_std: _Optional[_Iterable[float]] = ..., targets: _Optional[_Iterable[_Union[TargetModel, _Mapping]]] = ..., made_by: _Optional[_Union[MadeBy, str]] = ..., parent_id: _Optional[str] = ..., n_samples: _Optional[int] = ..., seed: _Optional[int] = ..., created_at: _Optional[float] = ..., settings_json: _Optional[str] = ..., space: _Optional[_Union[KnobSpace, _Mapping]] = ..., sample_low: _Optional[_Iterable[float]] = ..., sample_high: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictorArtifact(_message.Message):
    __slots__ = ("magic", "format_version", "payload", "digest")
    MAGIC_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    magic: str
    format_version: int
    payload: bytes
    digest: str
    def __init__(self, magic: _Optional[str] = ..., format_version: _Optional[int] = ..., payload: _Optional[bytes] = ..., digest: _Optional[str] = ...) -> None: ...

class ProfileSample(_message.Message):
    __slots__ = ("knob_values", "time_ms", "power_w", "device_unit", "timestamp", "source")
    KNOB_VALUES_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    DEVICE_UNIT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    knob_values: _containers.RepeatedScalarFieldContainer[float]
    time_ms: float
    power_w: float
    device_unit: int
    timestamp: float
    source: str
    def __init__(self, knob_values: _Optional[_Iterable[float]] = ..., time_ms: _Optional[float] = ..., power_w: _Optional[float] = ..., device_unit: _Optional[int] = ..., timestamp: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("device_type", "workload", "knobs", "samples", "digest", "merged")
    DEVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    KNOBS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    device_type: str
    workload: str
    knobs: _containers.RepeatedScalarFieldContainer[str]
    samples: _containers.RepeatedCompositeFieldContainer[ProfileSample]
    digest: str
    merged: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_type: _Optional[str] = ..., workload: _Optional[str] = ..., knobs: _Optional[_Iterable[str]] = ..., samples: _Optional[_Iterable[_Union[ProfileSample, _Mapping]]] = ..., digest: _Optional[str] = ..., merged: _Optional[_Iterable[str]] = ...) -> None: ...

class StoredArtifact(_message.Message):
    __slots__ = ("artifact", "version", "labels", "stored_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    artifact: bytes
    version: int
    labels: _containers.ScalarMap[str, str]
    stored_at: float
    def __init__(self, artifact: _Optional[bytes] = ..., version: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., stored_at: _Optional[float] = ...) -> None: ...

class ExportBundle(_message.Message):
    __slots__ = ("magic", "format_version", "artifacts", "profiles", "created_at", "source", "digest")
    MAGIC_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    magic: str
    format_version: int
    artifacts: _containers.RepeatedCompositeFieldContainer[StoredArtifact]
    profiles: _containers.RepeatedCompositeFieldContainer[Profile]
    created_at: float
    source: str
    digest: str
    def __init__(self, magic: _Optional[str] = ..., format_version: _Optional[int] = ..., artifacts: _Optional[_Iterable[_Union[StoredArtifact, _Mapping]]] = ..., profiles: _Optional[_Iterable[_Union[Profile, _Mapping]]] = ..., created_at: _Optional[float] = ..., source: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...
