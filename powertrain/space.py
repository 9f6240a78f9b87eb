"""Power-mode spaces: named numeric knobs, their allowed values, presets and profiling grids.

A *mode* is a mapping from knob name to a value of that knob's table, e.g.
``{"cpu_cores": 12, "cpu_mhz": 2201.6, "gpu_mhz": 1300.5, "mem_mhz": 3199}`` on a Jetson.
Nothing here is Jetson-specific: the predictor works on any space of numeric knobs (a
profile's knob columns define one via :meth:`ModeSpace.from_frame`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from powertrain.errors import ModeError, UnknownNameError, format_allowed

#: Knob values are compared with this absolute tolerance (table values are MHz with at most
#: two decimals, so this is far below any step).
VALUE_TOLERANCE = 1e-3

#: The four Jetson knobs, in the order of the profile CSV schema.
JETSON_KNOBS: tuple[str, ...] = ("cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz")

Mode = dict[str, float]


@dataclass(frozen=True)
class Knob:
    """One numeric control with a finite, sorted table of allowed values."""

    name: str
    values: tuple[float, ...]
    unit: str = ""

    def __post_init__(self) -> None:
        vals = tuple(float(v) for v in self.values)
        if not vals:
            raise ModeError(f"knob {self.name!r} has no values")
        if any(b <= a for a, b in itertools.pairwise(vals)):
            vals = tuple(sorted(set(vals)))
        object.__setattr__(self, "values", vals)

    @property
    def low(self) -> float:
        """Smallest allowed value."""
        return self.values[0]

    @property
    def high(self) -> float:
        """Largest allowed value."""
        return self.values[-1]

    def contains(self, value: float) -> bool:
        """Whether ``value`` is (within tolerance) one of the table values."""
        arr = np.asarray(self.values)
        return bool(np.any(np.abs(arr - float(value)) <= VALUE_TOLERANCE))

    def snap(self, value: float) -> float:
        """The table value equal to ``value``; raises ModeError naming the allowed values (NaN is none)."""
        arr = np.asarray(self.values)
        idx = int(np.argmin(np.abs(arr - float(value))))
        if not abs(arr[idx] - float(value)) <= VALUE_TOLERANCE:
            raise ModeError(
                f"{self.name}={_num(value)} is not an allowed value; "
                f"allowed {self.name} values: {format_allowed(self.values)}"
            )
        return float(arr[idx])

    def floor(self, cap: float) -> float:
        """Highest table value not above ``cap`` (how cpufreq/devfreq resolve a max cap)."""
        below = [v for v in self.values if v <= cap + VALUE_TOLERANCE]
        return below[-1] if below else self.values[0]


@dataclass(frozen=True)
class Preset:
    """A named vendor power mode (an nvpmodel entry), expressed as a mode of the space."""

    name: str
    mode: Mode
    nvpmodel_id: int | None = None
    budget_w: float | None = None
    active_tpcs: int | None = None
    note: str = ""


@dataclass(frozen=True)
class ModeSpace:
    """The set of modes of one device type: the cartesian product of its knob tables."""

    name: str
    knobs: tuple[Knob, ...]
    presets: Mapping[str, Preset] = field(default_factory=dict)
    grids: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)
    description: str = ""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_values(
        cls, name: str, values: Mapping[str, Iterable[float]], *, description: str = ""
    ) -> ModeSpace:
        """A space from ``{knob: values}`` (no presets, no grids)."""
        return cls(name, tuple(Knob(k, tuple(v)) for k, v in values.items()), {}, {}, description)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, knobs: Sequence[str], name: str = "custom") -> ModeSpace:
        """The space spanned by the distinct knob values observed in a profile."""
        return cls.from_values(name, {k: np.unique(frame[k].to_numpy(float)) for k in knobs})

    # ------------------------------------------------------------------ queries
    @property
    def knob_names(self) -> tuple[str, ...]:
        """Knob names in canonical order."""
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        """The knob called ``name``."""
        for k in self.knobs:
            if k.name == name:
                return k
        raise ModeError(f"knob {name!r} is not part of {self.name}; knobs: {', '.join(self.knob_names)}")

    @property
    def size(self) -> int:
        """Number of modes in the full space."""
        return int(np.prod([len(k.values) for k in self.knobs]))

    def grid_names(self) -> list[str]:
        """Names accepted by :meth:`modes` (``full`` plus any named profiling grids)."""
        return ["full", *self.grids]

    def grid_values(self, grid: str = "full") -> dict[str, tuple[float, ...]]:
        """Per-knob values of a named grid (``full`` is the whole table)."""
        if grid == "full":
            return {k.name: k.values for k in self.knobs}
        if grid not in self.grids:
            raise UnknownNameError(
                f"grid {grid!r} is not defined for {self.name}; valid grids: "
                f"{', '.join(self.grid_names())}"
            )
        return {k: tuple(float(x) for x in v) for k, v in self.grids[grid].items()}

    def grid_size(self, grid: str = "full") -> int:
        """Number of modes in a named grid."""
        return int(np.prod([len(v) for v in self.grid_values(grid).values()]))

    def modes(self, grid: str = "full") -> pd.DataFrame:
        """Every mode of a grid as a frame with one column per knob (canonical order)."""
        vals = self.grid_values(grid)
        axes = [np.asarray(vals[k], dtype=float) for k in self.knob_names]
        mesh = np.meshgrid(*axes, indexing="ij")
        data = {k: m.ravel() for k, m in zip(self.knob_names, mesh, strict=True)}
        return pd.DataFrame(data)

    # ------------------------------------------------------------------ validation
    def validate(self, mode: Mapping[str, float]) -> Mode:
        """Return ``mode`` with each value snapped to its table entry; raise ModeError if not."""
        missing = [k for k in self.knob_names if k not in mode]
        if missing:
            raise ModeError(
                f"mode for {self.name} is missing knob(s) {', '.join(missing)}; "
                f"a mode needs {', '.join(self.knob_names)}"
            )
        extra = [k for k in mode if k not in self.knob_names]
        if extra:
            raise ModeError(
                f"mode for {self.name} has unknown knob(s) {', '.join(extra)}; "
                f"knobs are {', '.join(self.knob_names)}"
            )
        return {k.name: k.snap(float(mode[k.name])) for k in self.knobs}

    def contains(self, mode: Mapping[str, float]) -> bool:
        """Whether ``mode`` is a member of the space."""
        try:
            self.validate(mode)
        except ModeError:
            return False
        return True

    def validate_frame(self, frame: pd.DataFrame, source: str = "modes") -> pd.DataFrame:
        """Check every row's knob values; raise ModeError naming the first bad row."""
        for k in self.knobs:
            if k.name not in frame.columns:
                raise ModeError(
                    f"{source}: missing knob column {k.name!r}; "
                    f"needed: {', '.join(self.knob_names)}"
                )
            col = frame[k.name].to_numpy(dtype=float)
            table = np.asarray(k.values)
            dist = np.abs(col[:, None] - table[None, :])
            ok = dist.min(axis=1) <= VALUE_TOLERANCE
            if not ok.all():
                row = int(np.argmax(~ok))
                raise ModeError(
                    f"{source}: row {row + 1}: {k.name}={_num(col[row])} is not an allowed "
                    f"value for {self.name}; allowed: {format_allowed(k.values)}"
                )
            frame = frame.assign(**{k.name: table[dist.argmin(axis=1)]})
        return frame

    def to_array(self, modes: pd.DataFrame | Sequence[Mapping[str, float]]) -> np.ndarray:
        """Modes as an ``(n, n_knobs)`` float array in canonical knob order."""
        if isinstance(modes, pd.DataFrame):
            return modes.loc[:, list(self.knob_names)].to_numpy(dtype=float)
        return np.array([[float(m[k]) for k in self.knob_names] for m in modes], dtype=float)

    def preset(self, name: str) -> Preset:
        """Look up a preset by name, case-insensitively (``maxn``, ``MODE_30W`` or ``30W``)."""
        key = _preset_key(name)
        for preset_name, preset in self.presets.items():
            if _preset_key(preset_name) == key:
                return preset
        raise UnknownNameError(
            f"preset {name!r} is not defined for {self.name}; valid presets: "
            f"{', '.join(self.presets)}"
        )

    def max_mode(self) -> Mode:
        """Every knob at its highest value (MAXN-like)."""
        return {k.name: k.high for k in self.knobs}

    def min_mode(self) -> Mode:
        """Every knob at its lowest value."""
        return {k.name: k.low for k in self.knobs}


def _preset_key(name: str) -> str:
    key = name.strip().upper().replace("-", "_")
    return key.removeprefix("MODE_")


def _num(value: float) -> str:
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:g}"
