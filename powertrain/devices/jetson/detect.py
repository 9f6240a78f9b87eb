"""Which Jetson is this? The module from ``/proc/device-tree``, confirmed by the SoC id.

The model string (``/proc/device-tree/model``) and the compatible list name the module
(P-number, e.g. ``p3701-0000`` for the AGX Orin dev kit); the SoC id (``tegra_chip_id`` or
``/sys/devices/soc0/soc_id``: 25 = tegra194 Xavier, 35 = tegra234 Orin) must agree with it.
:func:`identify` is pure (tested against the recorded model strings); :func:`detect_board`
reads the files through a :class:`~powertrain.devices.jetson.sysfs.Sysfs`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from powertrain.boards import BOARDS
from powertrain.devices.jetson.sysfs import Sysfs
from powertrain.errors import DeviceError

MODEL_PATH = "/proc/device-tree/model"
COMPATIBLE_PATH = "/proc/device-tree/compatible"
CHIP_ID_PATHS = ("/sys/module/tegra_fuse/parameters/tegra_chip_id", "/sys/devices/soc0/soc_id")
RELEASE_PATH = "/etc/nv_tegra_release"

#: SoC id -> SoC name.
SOC_NAMES = {25: "tegra194", 35: "tegra234"}

#: Jetson modules without built-in tables: P-number prefix -> (SoC id, module name, suffixes).
_WITHOUT_TABLES: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "p3767": (35, "Orin NX/Nano", ("0000", "0001")),  # Orin NX 16GB / 8GB
    "p3668": (25, "Xavier NX", ("0000", "0001", "0003")),
}
#: Model-string fragments of Jetsons without built-in tables.
_FRAGMENTS_WITHOUT_TABLES: tuple[tuple[str, int], ...] = (("orin nx", 35), ("xavier nx", 25))
_MODULE_NAMES = {"p3701": "AGX Orin", "p3767": "Orin NX/Nano", "p2888": "AGX Xavier", "p3668": "Xavier NX"}


def _module_table() -> dict[str, tuple[int, dict[str, str | None]]]:
    """P-number prefix -> (family SoC id, {suffix ("*" = any): device type or None = no tables})."""
    table: dict[str, tuple[int, dict[str, str | None]]] = {
        prefix: (soc, dict.fromkeys(suffixes)) for prefix, (soc, _, suffixes) in _WITHOUT_TABLES.items()}
    for board in BOARDS.values():
        for module in board.sysfs.modules:
            prefix, suffix = module.split("-")
            table.setdefault(prefix, (board.sysfs.soc_id, {}))[1][suffix] = board.name
    return table


_MODULES = _module_table()
#: Model-string fragments, checked in order when no module P-number is known.
_MODEL_FRAGMENTS: tuple[tuple[str, str | None, int], ...] = (
    *((f, b.name, b.sysfs.soc_id) for b in BOARDS.values() for f in b.sysfs.model_fragments),
    *((f, None, soc) for f, soc in _FRAGMENTS_WITHOUT_TABLES),
)
_NOTES = {tuple(module.split("-")): note for b in BOARDS.values() for module, note in b.sysfs.modules.items()
          if note}


@dataclass(frozen=True)
class BoardIdentity:
    """What a board says it is."""

    device_type: str | None  # orin-agx | xavier-agx | orin-nano, None: a Jetson without tables
    model: str
    module: str | None  # P-number of the module, e.g. p3701-0000
    soc_id: int | None
    l4t_release: str | None = None
    note: str = ""

    @property
    def soc(self) -> str:
        """SoC name (tegra234, tegra194) or ``unknown``."""
        return SOC_NAMES.get(self.soc_id, "unknown") if self.soc_id is not None else "unknown"


def parse_soc_id(text: str) -> int | None:
    """The chip id from ``tegra_chip_id`` (``35``) or an SMCCC ``soc_id`` (``jep106:036b:0023``)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = re.fullmatch(r"jep106:[0-9a-fA-F]{4}:([0-9a-fA-F]{4})", text)
    return int(match.group(1), 16) if match else None


def module_from_compatible(compatible: Sequence[str]) -> str | None:
    """The module P-number in a device-tree compatible list (``nvidia,p3737-0000+p3701-0000``)."""
    for entry in compatible:
        for match in re.finditer(r"p\d{4}-\d{4}", entry):
            if match.group(0).split("-")[0] in _MODULES:
                return match.group(0)
    return None


def identify(model: str, compatible: Sequence[str] = (), soc_id: int | None = None,
             l4t_release: str | None = None) -> BoardIdentity:
    """Map a model string, compatible list and SoC id to a device type (pure)."""
    model = model.replace("\0", "").strip()
    module = module_from_compatible(compatible)
    device_type: str | None
    family_soc: int | None
    note = ""
    if module is not None:
        prefix, suffix = module.split("-")
        family_soc, variants = _MODULES[prefix]
        device_type = variants.get(suffix, variants.get("*"))
        note = _NOTES.get((prefix, suffix), "")
        if device_type is None:
            note = f"{_MODULE_NAMES[prefix]} module {module} has no built-in tables"
    else:
        device_type, family_soc = None, None
        lowered = model.lower()
        for fragment, dtype, soc in _MODEL_FRAGMENTS:
            if fragment in lowered:
                device_type, family_soc = dtype, soc
                if dtype is None:
                    note = f"{model!r} has no built-in tables"
                break
        else:
            if soc_id in SOC_NAMES:
                family_soc = soc_id
                note = f"model {model!r} is not a known Jetson module"
    if device_type is not None:
        family_soc = BOARDS[device_type].sysfs.soc_id
    if soc_id is not None and family_soc is not None and soc_id != family_soc:
        raise DeviceError(
            f"SoC id {soc_id} ({SOC_NAMES.get(soc_id, 'unknown')}) contradicts model {model!r} "
            f"(expected {family_soc}, {SOC_NAMES[family_soc]})"
        )
    return BoardIdentity(device_type, model, module, soc_id, l4t_release, note)


def parse_l4t_release(text: str) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``R35.4.1``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def detect_board(fs: Sysfs) -> BoardIdentity:
    """Read the model, compatible list, SoC id and L4T release under ``fs.root``."""
    model = fs.try_read(MODEL_PATH)
    if not model:
        raise DeviceError(
            f"no Jetson found under {fs.root}: {fs.path(MODEL_PATH)} is missing; run on a Jetson, "
            "pass --sysfs-root for a recorded tree, or use a sim: device"
        )
    compatible: list[str] = []
    if fs.exists(COMPATIBLE_PATH):
        try:
            compatible = [c for c in fs.read_bytes(COMPATIBLE_PATH).decode(errors="replace").split("\0") if c]
        except DeviceError:
            compatible = []
    soc_id = None
    for path in CHIP_ID_PATHS:
        text = fs.try_read(path)
        if text and (soc_id := parse_soc_id(text)) is not None:
            break
    release_text = fs.try_read(RELEASE_PATH)
    release = parse_l4t_release(release_text) if release_text else None
    return identify(model, compatible, soc_id, release)
