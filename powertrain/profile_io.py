"""The profile CSV: the one file format other tools read and write.

Schema: ``cpu_cores,cpu_mhz,gpu_mhz,mem_mhz,time_ms,power_w`` (per-minibatch time in ms, mean
board power in W), optionally followed by ``device,workload``; column order may vary on
input. Generic profiles (other accelerators) name their own knob, time and power columns.
Every reading error names the file, the line and the column.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from powertrain.errors import DataFormatError
from powertrain.space import JETSON_KNOBS

TIME_COL = "time_ms"
POWER_COL = "power_w"
META_COLS = ("device", "workload")
PROFILE_COLUMNS = (*JETSON_KNOBS, TIME_COL, POWER_COL)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A failed command therefore never leaves a partial output file behind.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise DataFormatError(f"output {target}: directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


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

    Returns a frame with the knob columns (float), the time and power columns (float, > 0)
    when required or present, and any other columns as text.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{p}: file not found")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise DataFormatError(f"{p}: line 1: file is empty; expected a CSV header") from None
            header = [h.strip() for h in header]
            targets = [time_col, power_col]
            needed = [*knobs, *targets] if require_targets else list(knobs)
            missing = [c for c in needed if c not in header]
            if missing:
                raise DataFormatError(
                    f"{p}: line 1: missing column(s) {', '.join(missing)}; "
                    f"found: {', '.join(header) or '(none)'}"
                )
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise DataFormatError(f"{p}: line 1: duplicate column(s) {', '.join(dupes)}")
            numeric = list(knobs) + [c for c in targets if c in header]
            positive = {c for c in targets if c in header}
            idx = {c: header.index(c) for c in header}
            columns: dict[str, list[object]] = {c: [] for c in header}
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataFormatError(
                        f"{p}: line {line}: expected {len(header)} fields, found {len(row)}"
                    )
                for c in header:
                    cell = row[idx[c]].strip()
                    if c in numeric:
                        columns[c].append(_number(p, line, c, cell, c in positive))
                    else:
                        columns[c].append(cell)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{p}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise DataFormatError(f"{p}: malformed CSV: {exc}") from None
    frame = pd.DataFrame(columns)
    if len(frame) < min_rows:
        raise DataFormatError(f"{p}: has {len(frame)} data row(s); at least {min_rows} needed")
    for c in numeric:
        frame[c] = frame[c].astype(float)
    return frame


def _number(path: Path, line: int, column: str, cell: str, positive: bool) -> float:
    if cell == "":
        raise DataFormatError(f"{path}: line {line}, column {column}: empty value")
    try:
        value = float(cell)
    except ValueError:
        raise DataFormatError(
            f"{path}: line {line}, column {column}: {cell!r} is not a number"
        ) from None
    if math.isnan(value) or math.isinf(value):
        raise DataFormatError(f"{path}: line {line}, column {column}: {cell!r} is not finite")
    if positive and value <= 0:
        raise DataFormatError(
            f"{path}: line {line}, column {column}: {cell} must be > 0"
        )
    if not positive and value < 0:
        raise DataFormatError(
            f"{path}: line {line}, column {column}: {cell} must be >= 0"
        )
    return value


def write_profile(frame: pd.DataFrame, path: str | Path, knobs: Sequence[str] = JETSON_KNOBS,
                  time_col: str = TIME_COL, power_col: str = POWER_COL) -> None:
    """Write a profile atomically: knobs, time, power, then ``device,workload`` if present."""
    cols = [*knobs, time_col, power_col]
    cols += [c for c in META_COLS if c in frame.columns]
    cols += [c for c in frame.columns if c not in cols]
    with atomic_output(path) as tmp:
        frame.loc[:, cols].to_csv(tmp, index=False, float_format="%.6g")


def write_modes(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a modes file (knob columns only, or whatever columns ``frame`` has) atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
