"""The profile CSV: the one file format other tools read and write.

Schema: ``cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w`` (per-minibatch time in ms, mean
board power in W), optionally followed by ``device,workload``; column order may vary on
input. Generic profiles (other accelerators) name their own knob, time and power columns.
Every reading error names the file, the line and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from powertrain.errors import DataFormatError
from powertrain.outputs import atomic_output
from powertrain.space import JETSON_KNOBS

TIME_COL = "time_ms"
POWER_COL = "power_w"
META_COLS = ("device", "workload")
PROFILE_COLUMNS = (*JETSON_KNOBS, TIME_COL, POWER_COL)
#: Largest per-minibatch time (ms, ~2.8 h), board power (W) and knob value a profile may hold:
#: a value above is a unit error or a corrupt row, and would wreck a fit.
MAX_TIME_MS = 1e7
MAX_POWER_W = 1e4
MAX_KNOB_VALUE = 1e7


def read_profile(
    path: str | Path,
    *,
    knobs: Sequence[str] = JETSON_KNOBS,
    time_col: str = TIME_COL,
    power_col: str = POWER_COL,
    require_targets: bool = True,
    min_rows: int = 1,
) -> pd.DataFrame:
    """Read and validate a profile (or, with ``require_targets=False``, a modes file).

    Returns a frame with the knob columns (float, >= 0), the time and power columns (float,
    > 0) when required or present, and any other columns as text. An error names the file,
    the line and the column of the first bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{p}: file not found")
    targets = [time_col, power_col]
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise DataFormatError(f"{p}: line 1: file is empty; expected a CSV header")
            needed = [*knobs, *targets] if require_targets else list(knobs)
            missing = [c for c in needed if c not in header]
            if missing:
                raise DataFormatError(f"{p}: line 1: missing column(s) {', '.join(missing)}; "
                                      f"found: {', '.join(header) or '(none)'}")
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise DataFormatError(f"{p}: line 1: duplicate column(s) {', '.join(dupes)}")
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:  # structure only: values are checked column-wise below
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataFormatError(f"{p}: line {reader.line_num}: expected {len(header)} fields, "
                                          f"found {len(row)}")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{p}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise DataFormatError(f"{p}: malformed CSV: {exc}") from None
    frame = pd.DataFrame(rows, columns=header, dtype=object).apply(lambda col: col.str.strip())
    numeric = list(knobs) + [c for c in targets if c in header]
    maximum = {**dict.fromkeys(knobs, MAX_KNOB_VALUE), time_col: MAX_TIME_MS, power_col: MAX_POWER_W}
    values = check_values(frame, numeric, positive=[c for c in targets if c in header], nonnegative=knobs,
                          maximum=maximum, where=str(p), position=lambda i: f"line {lines[i]}")
    frame = frame.assign(**{c: values[c] for c in numeric})
    if len(frame) < min_rows:
        raise DataFormatError(f"{p}: has {len(frame)} data row(s); at least {min_rows} needed")
    out: pd.DataFrame = frame
    return out


def check_values(frame: pd.DataFrame, columns: Sequence[str], *, positive: Collection[str] = (),
                 nonnegative: Collection[str] = (), maximum: Mapping[str, float] | None = None, where: str,
                 position: Callable[[int], str] = lambda i: f"row {i + 1}") -> pd.DataFrame:
    """The ``columns`` of ``frame`` as floats: finite numbers, > 0 in ``positive``, >= 0 in ``nonnegative``,
    at most ``maximum[column]`` where given.

    The one check of profile values, for files and in-memory frames alike; an error names the
    first bad cell (``where``, its ``position`` and column) and what is wrong with it.
    """
    out: dict[str, np.ndarray] = {}
    first: tuple[int, int, str] | None = None  # (row, column order, message) of the earliest bad cell
    for order, c in enumerate(columns):
        col = frame[c]
        if not pd.api.types.is_numeric_dtype(col):
            text = col.astype(str).str.strip()
            vals = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
            cells = text.to_numpy()
        else:
            vals = col.to_numpy(dtype=float)
            cells = np.array([f"{v:g}" for v in vals], dtype=object)
        is_text_nan = np.isin(np.char.lower(cells.astype(str)), ["nan", "-nan", "+nan"])
        with np.errstate(invalid="ignore"):
            low = vals <= 0 if c in positive else vals < 0
        out_of_range = low if (c in positive or c in nonnegative) else np.zeros(len(vals), dtype=bool)
        top = (maximum or {}).get(c)
        with np.errstate(invalid="ignore"):
            too_big = vals > top if top is not None else np.zeros(len(vals), dtype=bool)
        problems = (
            (cells == "", "empty value"),
            (np.isnan(vals) & (cells != "") & ~is_text_nan, "{cell!r} is not a number"),
            (~np.isfinite(vals), "{cell!r} is not finite"),
            (out_of_range, "{cell} must be " + ("> 0" if c in positive else ">= 0")),
            (too_big, "{cell} is above the largest plausible value " + (f"{top:g}" if top is not None else "")),
        )
        for mask, template in problems:
            if mask.any():
                row = int(np.argmax(mask))
                if first is None or (row, order) < first[:2]:
                    message = template.format(cell=str(cells[row]))
                    first = (row, order, f"{where}: {position(row)}, column {c}: {message}")
                break
        out[c] = vals
    if first is not None:
        raise DataFormatError(first[2])
    return pd.DataFrame(out, index=frame.index)


def write_profile(frame: pd.DataFrame, path: str | Path, knobs: Sequence[str] = JETSON_KNOBS,
                  time_col: str = TIME_COL, power_col: str = POWER_COL, *, what: str = "output") -> None:
    """Write a profile atomically: knobs, time, power, then ``device,workload`` if present."""
    cols = [*knobs, time_col, power_col]
    cols += [c for c in META_COLS if c in frame.columns]
    cols += [c for c in frame.columns if c not in cols]
    with atomic_output(path, what=what) as tmp:
        frame.loc[:, cols].to_csv(tmp, index=False, float_format="%.6g")


def write_modes(frame: pd.DataFrame, path: str | Path, *, what: str = "output") -> None:
    """Write a modes file (knob columns only, or whatever columns ``frame`` has) atomically."""
    with atomic_output(path, what=what) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def single_value(frame: pd.DataFrame, column: str, where: str, given: str = "") -> str:
    """The one value of a text column such as ``device`` ("" if absent or empty).

    A profile that mixes devices (or workloads) is refused: one predictor is one pair. A
    ``given`` value (an explicit ``--device-type``) must agree with the column.
    """
    if column not in frame.columns or not len(frame):
        return given
    values = sorted({str(v).strip() for v in frame[column] if str(v).strip() and str(v) != "nan"})
    if len(values) > 1:
        shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
        raise DataFormatError(f"{where}: column {column} mixes {len(values)} values ({shown}); a profile must "
                              f"hold one {column}")
    found = values[0] if values else ""
    if given and found and given != found:
        raise DataFormatError(f"{where}: column {column} says {found!r} but {given!r} was given")
    return given or found
