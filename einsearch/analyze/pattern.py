"""The distance-dependent compute pattern c(t, u): FLOPs a structure spends on the pair (t, u).

In the feature-map form a level scores a pair with one dot product over its interface, and only
where its pattern (block, band) covers the pair. Summing the levels gives c(t, u); nearby pairs
of an MLR structure share more levels, so they get more compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..structure import Instance

SHADES = " .:-=+*#%@"


@dataclass(frozen=True)
class Profile:
    """Mean FLOPs per pair at each listed distance |t - u| (``profile_distances``)."""

    distance: list[int]
    flops: list[float]


def level_pair_flops(instance: Instance) -> list[int]:
    """FLOPs each level spends on one pair it scores, as the plan computes it."""
    from ..planner import plan
    from .counts import pair_costs

    return pair_costs(plan(instance))


PROFILE_POINTS = 128  # the most distances a profile lists
SMALL_T = 64  # up to this T the profile lists every distance


def profile_distances(instance: Instance) -> list[int]:
    """The distances a profile lists: every one up to ``SMALL_T``; beyond, 0, 1, 2, 3, 4, 6, 8, 12,
    ... (two per octave) and T - 1, plus the distances where a level starts or stops scoring
    (both sides of a band's edge, a block's length) while there is room."""
    T = instance.T
    if T <= SMALL_T:
        return list(range(T))
    picks = {0, T - 1}
    power = 1
    while power < T:
        picks.update(d for d in (power, power + power // 2) if d < T)
        power *= 2
    changes = sorted({d for level in instance.levels for d in level.pattern.changes(T)} - picks)
    return sorted(picks | set(changes[: max(0, PROFILE_POINTS - len(picks))]))


def distance_profile(instance: Instance) -> Profile:
    """Mean FLOPs per pair at the distances of ``profile_distances`` (exact, any T)."""
    T = instance.T
    distance = profile_distances(instance)
    d = np.asarray(distance, dtype=np.int64)
    total = [0] * len(distance)
    for level, flops in zip(instance.levels, level_pair_flops(instance)):
        covered = level.pattern.count_at_distance(T, d).tolist()
        total = [s + flops * c for s, c in zip(total, covered)]
    pairs = [T if k == 0 else 2 * (T - k) for k in distance]
    return Profile(distance, [s / n for s, n in zip(total, pairs)])


def pair_flops_grid(instance: Instance, cells: int = 16) -> np.ndarray:
    """c(t, u) averaged over a cells x cells grid of the T x T plane (for the heatmap): the exact
    mean over each cell, from each level's pair count in it, for any T."""
    T = instance.T
    n = min(cells, T)
    edges = np.array([k * T // n for k in range(n + 1)], dtype=object)
    t0, t1 = edges[:-1, None], edges[1:, None]
    u0, u1 = edges[None, :-1], edges[None, 1:]
    total = np.zeros((n, n), dtype=object)
    for level, flops in zip(instance.levels, level_pair_flops(instance)):
        total = total + flops * np.asarray(level.pattern.count_in(T, t0, t1, u0, u1), dtype=object)
    return (total / ((t1 - t0) * (u1 - u0))).astype(float)


def heatmap(grid: np.ndarray) -> list[str]:
    """Text rows, one character per cell, darker for more FLOPs (two characters wide, square)."""
    top = grid.max() or 1.0
    return ["".join(SHADES[round(v / top * (len(SHADES) - 1))] * 2 for v in row) for row in grid]
