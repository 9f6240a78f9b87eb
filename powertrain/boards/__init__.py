"""Jetson board types: one :class:`BoardSpec` per type, and the registry that finds them.

``get_board("orin-nano")`` gives the whole description (tables, nvpmodel presets, grids,
simulator physics, sysfs layout); ``get_space("orin-nano")`` its mode space. To add a board
type, write one module like :mod:`powertrain.boards.orin_nano` and list it in ``BOARDS``.
"""

from __future__ import annotations

from powertrain.boards import orin_agx, orin_nano, xavier_agx
from powertrain.boards.spec import BoardPhysics, BoardSpec, NvpmodelCap, SysfsLayout, VfCurve, resolve_cap
from powertrain.errors import UnknownNameError
from powertrain.space import ModeSpace

#: Every board type with built-in tables, by name.
BOARDS: dict[str, BoardSpec] = {b.name: b for b in (orin_agx.BOARD, xavier_agx.BOARD, orin_nano.BOARD)}


def board_names() -> list[str]:
    """Names of the board types with built-in tables."""
    return list(BOARDS)


def get_board(name: str) -> BoardSpec:
    """The board type ``name``; unknown names list the valid ones."""
    if name not in BOARDS:
        raise UnknownNameError(f"device {name!r} is not known; valid devices: {', '.join(BOARDS)}")
    return BOARDS[name]


def get_space(name: str) -> ModeSpace:
    """The mode space of board type ``name``."""
    return get_board(name).space


__all__ = ["BOARDS", "BoardPhysics", "BoardSpec", "NvpmodelCap", "SysfsLayout", "VfCurve", "board_names",
           "get_board", "get_space", "resolve_cap"]
