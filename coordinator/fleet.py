"""Fleet files: which boards a simulated fleet has.

```toml
name = "mixed-12"
seed = 0                     # experiment seed (noise); units seed their own variation

[[group]]
device = "sim:orin-agx"      # a device spec without unit
count = 4
first_unit = 0               # units first_unit .. first_unit + count - 1
power_cap_w = 30.0           # optional: this group's cap instead of the run's
```

Files are validated strictly: known keys only, integers that are integers (``true`` is not
a count), finite caps, at most :data:`MAX_BOARDS` boards, and no board (device type, unit)
twice. A fleet shipped with the package is named by its name (``mixed-12``,
:func:`builtin_fleets`), so runs work from any directory. Caps are per board:
:meth:`FleetSpec.cap_of` answers for one node, and :meth:`FleetSpec.cap_for` answers for a
device type only while all its boards agree.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from powertrain.boards import board_names
from powertrain.devices import BACKENDS, parse_device_spec
from powertrain.errors import DataFormatError, InvalidParameterError, UnknownNameError

_TOP_KEYS = {"name", "seed", "group", "run"}
_GROUP_KEYS = {"device", "count", "first_unit", "power_cap_w"}
#: Most boards one fleet may have (the analytic engine's scale studies use 10,000).
MAX_BOARDS = 100_000
#: Units are int32 on the wire.
MAX_UNIT = 2**31 - 1
#: Largest power cap a fleet file may set (W); Jetson boards draw well under 100 W.
MAX_CAP_W = 1000.0
#: Package that holds the fleets shipped with powerfleet.
BUILTIN_PACKAGE = "powerfleet.fleets"
#: The fleet a simulation uses when none is named.
DEFAULT_FLEET = "mixed-12"


@dataclass(frozen=True)
class NodeSpec:
    """One board of a fleet."""

    index: int  # position in the fleet = the node's partition id in simulation
    device_spec: str  # full spec, e.g. "sim:orin-agx?unit=2&seed=0"
    device_type: str
    unit: int
    power_cap_w: float | None = None  # this board's cap (None: the run's)

    def cap(self, default_w: float) -> float:
        """This board's power cap: its group's override, else ``default_w`` (the run's)."""
        return self.power_cap_w if self.power_cap_w is not None else default_w


def builtin_fleets() -> list[str]:
    """Names of the fleet files shipped inside the package (``mixed-12``, ...)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files(BUILTIN_PACKAGE).iterdir()
                  if p.name.endswith(".toml"))


def _strict_int(where: str, field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(f"{where}: {field}={value!r} must be an integer in [{low}, {high}]")
    return value


@dataclass(frozen=True)
class FleetSpec:
    """A named list of boards."""

    name: str
    nodes: tuple[NodeSpec, ...]
    #: run-config keys the fleet file sets (its ``[run]`` table, e.g. ``task``, ``cost-as``): the
    #: defaults of a simulation of this fleet, under what the command line sets
    run: Mapping[str, bool | int | float | str] = field(default_factory=dict)

    @property
    def device_types(self) -> list[str]:
        """Distinct device types, in order of appearance."""
        return list(dict.fromkeys(n.device_type for n in self.nodes))

    def cap_of(self, node: NodeSpec | int, default_w: float) -> float:
        """The power cap of one board (a node or its index): its group's override, else ``default_w``."""
        spec = self.nodes[node] if isinstance(node, int) else node
        return spec.cap(default_w)

    def node_caps(self, default_w: float) -> dict[int, float]:
        """Every board's power cap, by node index."""
        return {n.index: n.cap(default_w) for n in self.nodes}

    def cap_for(self, device_type: str, default_w: float) -> float:
        """The power cap shared by every board of a device type.

        Refused (InvalidParameterError) when boards of the type have different caps - two groups
        of one type with different ``power_cap_w`` - since no single answer is right; ask per
        board with :meth:`cap_of` instead.
        """
        caps = sorted({n.cap(default_w) for n in self.nodes if n.device_type == device_type})
        if len(caps) > 1:
            raise InvalidParameterError(
                f"fleet {self.name}: {device_type} boards have different power caps "
                f"({', '.join(f'{c:g} W' for c in caps)}); the cap is per board (FleetSpec.cap_of)")
        return caps[0] if caps else default_w

    def to_toml(self) -> str:
        """The fleet as a fleet file (one group per board), loadable by :meth:`load`."""
        lines = [f"name = {json.dumps(self.name)}", ""]
        if self.run:
            lines += ["[run]", *(f"{k} = {json.dumps(v)}" for k, v in self.run.items()), ""]
        for node in self.nodes:
            backend, dtype, options = parse_device_spec(node.device_spec)
            unit = options.pop("unit", str(node.unit))
            query = "&".join(f"{k}={v}" for k, v in options.items())
            lines += ["[[group]]", f"device = {json.dumps(f'{backend}:{dtype}' + (f'?{query}' if query else ''))}",
                      "count = 1", f"first_unit = {int(unit)}"]
            if node.power_cap_w is not None:
                lines.append(f"power_cap_w = {node.power_cap_w!r}")
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def uniform(cls, device: str, count: int, seed: int = 0) -> FleetSpec:
        """``count`` boards of one spec (for tests and quick runs)."""
        return cls.from_groups("uniform", [{"device": device, "count": count}], seed)

    @classmethod
    def from_groups(cls, name: str, groups: list[dict[str, object]], seed: int, where: str = "fleet") -> FleetSpec:
        """Build from parsed ``[[group]]`` tables (every value checked; see the module docstring)."""
        if not isinstance(groups, list) or not groups:
            raise DataFormatError(f"{where}: no [[group]] of boards; a fleet needs at least one")
        _strict_int(where, "seed", seed, 0, 2**63 - 1)
        parsed: list[tuple[str, str, dict[str, str], int, int, float | None]] = []
        total = 0
        for gi, group in enumerate(groups, start=1):
            at = f"{where}: group {gi}"
            if not isinstance(group, dict):
                raise DataFormatError(f"{at}: must be a table of {', '.join(sorted(_GROUP_KEYS))}")
            unknown = sorted(set(group) - _GROUP_KEYS)
            if unknown:
                raise DataFormatError(f"{at}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(_GROUP_KEYS))}")
            spec = group.get("device")
            if not isinstance(spec, str):
                raise DataFormatError(f"{at}: 'device' must be a device spec such as sim:orin-agx")
            backend, dtype, options = parse_device_spec(spec)
            if backend not in BACKENDS:
                raise UnknownNameError(f"{at}: device backend {backend!r} is not known; "
                                       f"valid backends: {', '.join(BACKENDS)}")
            if dtype not in board_names():
                raise UnknownNameError(f"{at}: device {dtype!r} is not known; valid devices: "
                                       f"{', '.join(board_names())}")
            if "unit" in options:
                raise InvalidParameterError(f"{at}: device {spec!r} names a unit; units come from first_unit "
                                            "and count")
            count = _strict_int(at, "count", group.get("count", 1), 1, MAX_BOARDS)
            first = _strict_int(at, "first_unit", group.get("first_unit", 0), 0, MAX_UNIT - count + 1)
            cap = group.get("power_cap_w")
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float)
                                    or not math.isfinite(cap) or not 0 < cap <= MAX_CAP_W):
                raise InvalidParameterError(f"{at}: power_cap_w={cap!r} must be a number in (0, {MAX_CAP_W:g}] W")
            total += count
            if total > MAX_BOARDS:
                raise InvalidParameterError(f"{where}: {total} boards by group {gi}; a fleet may have at most "
                                            f"{MAX_BOARDS}")
            parsed.append((backend, dtype, options, count, first, float(cap) if cap is not None else None))
        seen: dict[tuple[str, int], int] = {}
        for gi, (_, dtype, _, count, first, _) in enumerate(parsed, start=1):
            for unit in range(first, first + count):
                other = seen.setdefault((dtype, unit), gi)
                if other != gi:
                    raise InvalidParameterError(f"{where}: group {gi}: {dtype} unit {unit} is also in group {other}; "
                                                "unit ids must be unique per device type (set first_unit)")
        nodes: list[NodeSpec] = []
        for backend, dtype, options, count, first, cap in parsed:
            for unit in range(first, first + count):
                opts = {"unit": str(unit), "seed": options.get("seed", str(seed)),
                        **{k: v for k, v in options.items() if k not in ("unit", "seed")}}
                query = "&".join(f"{k}={v}" for k, v in opts.items())
                nodes.append(NodeSpec(len(nodes), f"{backend}:{dtype}?{query}", dtype, unit, cap))
        return cls(name, tuple(nodes))

    @classmethod
    def load(cls, path: str | Path) -> FleetSpec:
        """Read and validate a fleet TOML file, or a fleet shipped with the package by name (``mixed-12``)."""
        p = Path(path)
        if p.is_file():
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(f"{p}: not a UTF-8 text file") from None
            except OSError as exc:
                raise DataFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from None
            return cls.parse(text, str(p), p.stem)
        name = str(path).removesuffix(".toml")
        if p.parent == Path(".") and name in builtin_fleets():
            text = resources.files(BUILTIN_PACKAGE).joinpath(f"{name}.toml").read_text(encoding="utf-8")
            return cls.parse(text, f"built-in fleet {name}", name)
        what = "is not a file" if p.exists() else "not found"
        raise DataFormatError(f"{p}: fleet file {what}; give a TOML file or a built-in fleet "
                              f"({', '.join(builtin_fleets())})")

    @classmethod
    def parse(cls, text: str, where: str, default_name: str) -> FleetSpec:
        """Validate the text of a fleet file (``where`` names it in messages)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DataFormatError(f"{where}: malformed TOML: {exc}") from None
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise DataFormatError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(_TOP_KEYS))}")
        groups = data.get("group", [])
        if not isinstance(groups, list):
            raise DataFormatError(f"{where}: 'group' must be an array of tables ([[group]])")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise DataFormatError(f"{where}: name={name!r} must be a non-empty string of at most 128 characters")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataFormatError(f"{where}: seed={seed!r} must be an integer")
        run = data.get("run", {})
        if not isinstance(run, dict) or any(not isinstance(v, bool | int | float | str) for v in run.values()):
            raise DataFormatError(f"{where}: [run] must be a table of run-config keys with scalar values, e.g. "
                                  'task = "powerfleet.tasks.digits:Digits"')
        return replace(cls.from_groups(name, groups, seed, where), run=dict(run))


def check_cap_above_idle(device_type: str, cap_w: float, idle_w: float | None) -> None:
    """Refuse a power cap below a board's idle power (no mode can run under it); None: unknown."""
    if idle_w is not None and cap_w < idle_w:
        raise InvalidParameterError(
            f"power-cap-w {cap_w:g} W is below the idle power of {device_type} (about {idle_w:.1f} W); "
            "no mode can run under it")


def default_fleet() -> FleetSpec:
    """The bundled default fleet (what ``flwr run .`` simulates when no fleet-file is given)."""
    return FleetSpec.load(DEFAULT_FLEET)
