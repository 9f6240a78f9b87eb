"""One exception tree for powerfleet.

Every error a user can cause derives from :class:`PowerfleetError` and carries a one-line
message naming the field, the value and what is allowed; the CLI prints that line and exits
non-zero without a traceback. Library errors (OSError, redis errors, protobuf decode errors)
are translated into these at the module boundary that sees them.
"""

from __future__ import annotations

from collections.abc import Iterable


class PowerfleetError(Exception):
    """Root of every error powerfleet raises on purpose."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidParameterError(PowerfleetError, ValueError):
    """A parameter is outside its allowed range or set (scikit-learn style)."""


class UnknownNameError(InvalidParameterError, KeyError):
    """A device, workload, preset, policy, ... name that is not in its catalog."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class ModeError(InvalidParameterError):
    """A power mode with a knob value outside the device's table, or a missing knob."""


class DataFormatError(PowerfleetError, ValueError):
    """A malformed input file (CSV, TOML, model artifact): names file, line and column."""


class DeviceError(PowerfleetError):
    """A device could not be built, controlled or read."""


class DevicePermissionError(DeviceError, PermissionError):
    """The board refused a read or write for lack of privileges (sysfs/debugfs need root)."""


class NotFittedError(PowerfleetError, ValueError, AttributeError):
    """An estimator was used before ``fit``."""


def format_allowed(values: Iterable[object], limit: int = 40) -> str:
    """Render an allowed-values list compactly for one-line error messages."""
    items = [_fmt(v) for v in values]
    if len(items) > limit:
        head = ", ".join(items[: limit // 2])
        tail = ", ".join(items[-3:])
        return f"{head}, ... ({len(items)} values) ..., {tail}"
    return ", ".join(items)


def _fmt(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_choice(field: str, value: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a one-line UnknownNameError."""
    allowed_list = list(allowed)
    if value not in allowed_list:
        raise UnknownNameError(
            f"{field} {value!r} is not known; valid names: {', '.join(allowed_list)}"
        )
    return value


def check_range(
    field: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` if it lies in the interval, else raise InvalidParameterError."""
    import math

    ok = isinstance(value, int | float) and not math.isnan(float(value))
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + _fmt(low)
        hi = "inf)" if high is None else _fmt(high) + ("]" if high_inclusive else ")")
        raise InvalidParameterError(f"{field} must be in {lo}, {hi}; got {value!r}")
    return value
