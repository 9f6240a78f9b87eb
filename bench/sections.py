"""Markdown helpers the benchmark scripts share: a results table, and a marked section of a
results file that a later run replaces instead of appending."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def md(frame: pd.DataFrame) -> str:
    """``frame`` as a markdown table (floats to 3 significant digits)."""
    cols = list(frame.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        out.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(out)


def put_section(path: Path, start: str, end: str, text: str, *, before: str | None = None,
                empty: str = "") -> None:
    """Write ``text`` (which begins with ``start`` and ends with ``end``) into ``path``: an earlier
    section between those markers is removed first; the new one goes before the line ``before``
    when given and present, else after the file's first paragraph."""
    old = path.read_text() if path.exists() else empty
    if start in old:
        head, rest = old.split(start, 1)
        old = head + rest.split(end, 1)[1].lstrip("\n")
    if before is not None and before in old:
        new = old.replace(before, text + "\n" + before, 1)
    else:
        head, sep, tail = old.partition("\n\n")
        new = head + sep + text + "\n" + tail if sep else old + "\n" + text
    path.write_text(new)
