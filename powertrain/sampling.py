"""Choosing which k modes to profile for a transfer.

Knobs are normalised to [0, 1] by their table rank. ``random`` draws uniformly without
replacement. ``spacefill`` is a maximin Latin hypercube: every knob's range is covered in k
even strata, interior included, and the most spread-out of several random designs wins.
``maxmin`` is greedy farthest-point (k-center) selection: corners first, then the gaps.

For profiling inside FL rounds, :func:`decision_region` keeps only the modes a fleet could
choose (under the cap, fast enough for some useful work, near the time/energy front) and
:func:`farthest_first_order` orders them so that any prefix is spread out, starting from the
mode the fleet is about to choose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from powertrain.errors import check_choice, check_range

STRATEGIES = ("random", "spacefill", "maxmin")


def normalised_ranks(frame: pd.DataFrame, knobs: Sequence[str]) -> np.ndarray:
    """Each knob value mapped to its rank among the distinct values, scaled to [0, 1].

    Rank scaling treats the table steps as equally important whatever their spacing, which
    matches how DVFS tables are laid out (dense steps where behaviour changes).
    """
    cols = []
    for k in knobs:
        values = frame[k].to_numpy(float)
        uniq = np.unique(values)
        rank = np.searchsorted(uniq, values).astype(float)
        cols.append(rank / max(len(uniq) - 1, 1))
    return np.column_stack(cols) if cols else np.zeros((len(frame), 0))


def sample_modes(
    candidates: pd.DataFrame,
    k: int,
    *,
    strategy: str = "random",
    seed: int = 0,
    knobs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pick ``k`` distinct rows of ``candidates`` (a frame of modes) by ``strategy``."""
    check_choice("strategy", strategy, STRATEGIES)
    check_range("k", k, low=1, high=len(candidates))
    rng = np.random.default_rng(seed)
    if strategy == "random":
        idx = rng.choice(len(candidates), size=int(k), replace=False)
        return candidates.iloc[np.sort(idx)].reset_index(drop=True)
    cols = list(knobs) if knobs is not None else list(candidates.columns)
    x = normalised_ranks(candidates, cols)
    if strategy == "maxmin":
        return candidates.iloc[np.sort(_farthest_first(x, int(k), rng))].reset_index(drop=True)
    return candidates.iloc[np.sort(_lhs_maximin(x, int(k), rng))].reset_index(drop=True)


def decision_region(time_ms: np.ndarray, power_w: np.ndarray, *, power_cap_w: float, max_time_ms: float,
                    near_front: float) -> np.ndarray:
    """Mask of the modes a fleet could choose: (upper) power under the cap, minibatch time at
    most ``max_time_ms``, and energy per minibatch within ``near_front`` (a fraction) of the
    least energy of any such mode that is at least as fast - near the time/energy front, where
    a min-energy choice under some deadline lands."""
    t = np.asarray(time_ms, float)
    e = t * np.asarray(power_w, float)
    ok = (np.asarray(power_w, float) <= power_cap_w) & (t <= max_time_ms)
    if not ok.any():
        return ok
    order = np.argsort(t, kind="stable")
    best = np.minimum.accumulate(np.where(ok[order], e[order], np.inf))  # least energy at or below each time
    front = np.empty_like(e)
    front[order] = best
    mask: np.ndarray = ok & (e <= (1.0 + near_front) * front)
    return mask


def farthest_first_order(candidates: pd.DataFrame, knobs: Sequence[str], start: int, k: int,
                         seed: int = 0) -> list[int]:
    """Positions of ``k`` rows of ``candidates`` in farthest-first order from row ``start``
    (rank-normalised knobs): every prefix of the order is spread over the candidates."""
    check_range("k", k, low=1, high=len(candidates))
    check_range("start", start, low=0, high=len(candidates) - 1)
    x = normalised_ranks(candidates, list(knobs))
    return _farthest_first(x, int(k), np.random.default_rng(seed), start=start)


def _farthest_first(x: np.ndarray, k: int, rng: np.random.Generator, start: int | None = None) -> list[int]:
    """Greedy max-min (k-center) design: corners first, then the largest gaps."""
    x = x + rng.uniform(-1e-6, 1e-6, size=x.shape)  # seed-dependent tie breaks
    # start at the given row, else at the centre
    chosen = [int(np.argmin(((x - 0.5) ** 2).sum(axis=1))) if start is None else int(start)]
    dist = ((x - x[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(axis=1))
    return chosen


def _lhs_maximin(x: np.ndarray, k: int, rng: np.random.Generator, designs: int = 40) -> list[int]:
    """Best of several Latin hypercube designs (by minimum pairwise distance), snapped to candidates.

    Each knob's range is cut into k strata and every stratum gets one sample; a stratum maps
    to the knob level whose equal share of [0, 1) it falls in, so every level of every knob
    gets k / levels samples (+-1), end levels included. Among random designs the most
    spread-out one wins.
    """
    n, d = x.shape
    levels = [np.unique(x[:, j]) for j in range(d)]
    best: tuple[float, list[int]] | None = None
    for _ in range(designs):
        strata = np.column_stack([rng.permutation(k) for _ in range(d)])
        u = (strata + rng.uniform(size=(k, d))) / k
        target = np.column_stack([lv[np.minimum((u[:, j] * len(lv)).astype(int), len(lv) - 1)]
                                  for j, lv in enumerate(levels)])
        used = np.zeros(n, dtype=bool)
        picks: list[int] = []
        for point in target:
            dist = ((x - point) ** 2).sum(axis=1)
            dist[used] = np.inf
            i = int(np.argmin(dist))
            used[i] = True
            picks.append(i)
        chosen = x[picks]
        gaps = ((chosen[:, None, :] - chosen[None, :, :]) ** 2).sum(axis=2)
        score = float(np.min(gaps + np.eye(k) * 1e9)) if k > 1 else 0.0
        if best is None or score > best[0]:
            best = (score, picks)
    assert best is not None
    return best[1]
