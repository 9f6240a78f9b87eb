"""Fleet files: which boards a simulated fleet has.

```toml
name = "mixed-12"
seed = 0                     # experiment seed (noise); units seed their own variation

[[group]]
device = "sim:orin-agx"      # a device spec without unit/seed
count = 4
first_unit = 0               # units first_unit .. first_unit + count - 1
power_cap_w = 30.0           # optional: this group's cap instead of the run's
```
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from powertrain.boards import board_names
from powertrain.devices import BACKENDS, parse_device_spec
from powertrain.errors import DataFormatError, InvalidParameterError, UnknownNameError

_GROUP_KEYS = {"device", "count", "first_unit", "power_cap_w"}
#: Fleet files shipped with the package, loadable by name (``FleetSpec.load("mixed-12")``).
BUNDLED_FLEETS = Path(__file__).resolve().parent / "fleets"
#: The fleet a simulation uses when none is named.
DEFAULT_FLEET = "mixed-12"


@dataclass(frozen=True)
class NodeSpec:
    """One board of a fleet."""

    index: int  # position in the fleet = the node's partition id in simulation
    device_spec: str  # full spec, e.g. "sim:orin-agx?unit=2&seed=0"
    device_type: str
    unit: int
    power_cap_w: float | None = None


@dataclass(frozen=True)
class FleetSpec:
    """A named list of boards."""

    name: str
    nodes: tuple[NodeSpec, ...]

    @property
    def device_types(self) -> list[str]:
        """Distinct device types, in order of appearance."""
        return list(dict.fromkeys(n.device_type for n in self.nodes))

    @cached_property
    def _caps(self) -> dict[str, float]:
        caps: dict[str, float] = {}
        for n in self.nodes:
            if n.power_cap_w is not None:
                caps.setdefault(n.device_type, n.power_cap_w)
        return caps

    def cap_for(self, device_type: str, default_w: float) -> float:
        """The power cap of a device type (its group's override, else the run's)."""
        return self._caps.get(device_type, default_w)

    def to_toml(self) -> str:
        """The fleet as a fleet file (one group per board), loadable by :meth:`load`."""
        lines = [f"name = {json.dumps(self.name)}", ""]
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
        """Build from parsed ``[[group]]`` tables."""
        if not groups:
            raise DataFormatError(f"{where}: no [[group]] of boards; a fleet needs at least one")
        nodes: list[NodeSpec] = []
        for gi, group in enumerate(groups, start=1):
            unknown = sorted(set(group) - _GROUP_KEYS)
            if unknown:
                raise DataFormatError(f"{where}: group {gi}: unknown key {unknown[0]!r}; keys: "
                                      f"{', '.join(sorted(_GROUP_KEYS))}")
            spec = group.get("device")
            if not isinstance(spec, str):
                raise DataFormatError(f"{where}: group {gi}: 'device' must be a device spec such as sim:orin-agx")
            backend, dtype, options = parse_device_spec(spec)
            if backend not in BACKENDS:
                raise UnknownNameError(f"{where}: group {gi}: device backend {backend!r} is not known; "
                                       f"valid backends: {', '.join(BACKENDS)}")
            if dtype not in board_names():
                raise UnknownNameError(f"{where}: group {gi}: device {dtype!r} is not known; valid devices: "
                                       f"{', '.join(board_names())}")
            count = group.get("count", 1)
            first = group.get("first_unit", 0)
            cap = group.get("power_cap_w")
            if not isinstance(count, int) or count < 1:
                raise InvalidParameterError(f"{where}: group {gi}: count={count!r} must be an integer >= 1")
            if not isinstance(first, int) or first < 0:
                raise InvalidParameterError(f"{where}: group {gi}: first_unit={first!r} must be an integer >= 0")
            if cap is not None and (not isinstance(cap, int | float) or cap <= 0):
                raise InvalidParameterError(f"{where}: group {gi}: power_cap_w={cap!r} must be a number > 0")
            for i in range(count):
                unit = first + i
                opts = {"unit": str(unit), "seed": options.get("seed", str(seed)),
                        **{k: v for k, v in options.items() if k not in ("unit", "seed")}}
                query = "&".join(f"{k}={v}" for k, v in opts.items())
                nodes.append(NodeSpec(len(nodes), f"{backend}:{dtype}?{query}", dtype, unit,
                                      float(cap) if cap is not None else None))
        return cls(name, tuple(nodes))

    @classmethod
    def load(cls, path: str | Path) -> FleetSpec:
        """Read and validate a fleet TOML file, or a bundled fleet by name (``mixed-12``)."""
        p = Path(path)
        if not p.is_file() and (bundled := BUNDLED_FLEETS / f"{path}.toml").is_file() and "/" not in str(path):
            p = bundled
        if not p.is_file():
            names = ", ".join(sorted(f.stem for f in BUNDLED_FLEETS.glob("*.toml")))
            raise DataFormatError(f"{p}: fleet file not found (bundled fleets: {names})")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise DataFormatError(f"{p}: malformed TOML: {exc}") from None
        except UnicodeDecodeError:
            raise DataFormatError(f"{p}: not a UTF-8 text file") from None
        groups = data.get("group", [])
        if not isinstance(groups, list):
            raise DataFormatError(f"{p}: 'group' must be an array of tables ([[group]])")
        seed = data.get("seed", 0)
        if not isinstance(seed, int):
            raise DataFormatError(f"{p}: seed={seed!r} must be an integer")
        return cls.from_groups(str(data.get("name", p.stem)), groups, seed, str(p))


def check_cap_above_idle(device_type: str, cap_w: float, idle_w: float | None) -> None:
    """Refuse a power cap below a board's idle power (no mode can run under it); None: unknown."""
    if idle_w is not None and cap_w < idle_w:
        raise InvalidParameterError(
            f"power-cap-w {cap_w:g} W is below the idle power of {device_type} (about {idle_w:.1f} W); "
            "no mode can run under it")


def default_fleet() -> FleetSpec:
    """The bundled default fleet (what ``flwr run .`` simulates when no fleet-file is given)."""
    return FleetSpec.load(DEFAULT_FLEET)
