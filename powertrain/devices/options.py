"""Parsing the ``k=v`` options of a device spec (``sim:orin-agx?seed=3&throttle=0``), shared by
every backend's builder."""

from __future__ import annotations

from powertrain.errors import InvalidParameterError


def parse_bool(name: str, value: str) -> bool:
    """``1/0/true/false/yes/no/on/off`` as a bool; anything else is a one-line error naming the option."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise InvalidParameterError(f"device option {name}={value!r} must be one of 1, 0, true, false")


def parse_int(name: str, value: str) -> int:
    """An integer option, or a one-line error naming it."""
    try:
        return int(value)
    except ValueError:
        raise InvalidParameterError(f"device option {name}={value!r} must be an integer") from None


def parse_float(name: str, value: str) -> float:
    """A number option, or a one-line error naming it."""
    try:
        return float(value)
    except ValueError:
        raise InvalidParameterError(f"device option {name}={value!r} must be a number") from None


def check_options(backend: str, options: dict[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse an option a backend does not know, naming the allowed ones."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidParameterError(
            f"device option {unknown[0]!r} is not known for {backend} devices; allowed: {', '.join(allowed)}")
