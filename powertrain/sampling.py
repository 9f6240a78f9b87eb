"""Choosing which k modes to profile for a transfer.

``random`` draws uniformly without replacement. ``spacefill`` is greedy max-min design over
knobs normalised to [0, 1] by their table rank, which spreads the samples over every knob's
range (corners first, then the gaps) so a few profiled modes cover the space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from powertrain.errors import check_choice, check_range

STRATEGIES = ("random", "spacefill")


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
    # jitter breaks exact distance ties differently per seed
    x = x + rng.uniform(-1e-6, 1e-6, size=x.shape)
    chosen = [int(np.argmin(((x - 0.5) ** 2).sum(axis=1)))]  # start at the centre
    dist = ((x - x[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(int(k) - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(axis=1))
    return candidates.iloc[np.sort(chosen)].reset_index(drop=True)
