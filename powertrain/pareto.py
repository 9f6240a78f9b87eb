"""Exact time/power Pareto front in O(n log n).

A mode is on the front when no other mode is at least as fast *and* at least as frugal while
strictly better in one of the two. Identical points do not dominate each other, so every
copy of a front point is on the front.
"""

from __future__ import annotations

import numpy as np


def pareto_front(time_ms: np.ndarray, power_w: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, sorted by increasing time (decreasing power)."""
    t = np.asarray(time_ms, dtype=float)
    p = np.asarray(power_w, dtype=float)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"time_ms and power_w must be 1-D of equal length; got {t.shape} and {p.shape}")
    if t.size == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(t)  # one float sort, O(n log n); ties need no particular order
    ts, ps = t[order], p[order]
    # Point i survives iff it has the lowest power among the points of its time (exact ties
    # included) and that power is strictly below every point with a smaller time.
    start = np.r_[True, ts[1:] != ts[:-1]]
    group = np.cumsum(start) - 1
    starts = np.nonzero(start)[0]
    group_min = np.minimum.reduceat(ps, starts)
    before = np.minimum.accumulate(np.r_[np.inf, ps[:-1]])[starts]  # min power at smaller times
    keep = (ps == group_min[group]) & (group_min[group] < before[group])
    front: np.ndarray = order[keep]
    return front
