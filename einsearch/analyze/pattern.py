"""The distance-dependent compute pattern c(t, u): FLOPs a structure spends on the pair (t, u).

In the feature-map form a level scores a pair with one dot product over its interface, and only
where its pattern (block, band) covers the pair. Summing the levels gives c(t, u); nearby pairs
of an MLR structure share more levels, so they get more compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import best_feature_map
from ..structure import Instance, Level

SHADES = " .:-=+*#%@"


@dataclass(frozen=True)
class Profile:
    """Mean FLOPs per pair at each distance |t - u| = 0 .. T-1."""

    distance: list[int]
    flops: list[float]


def level_pair_flops(instance: Instance) -> list[int]:
    return [best_feature_map(level, instance.T).pair_flops(level) for level in instance.levels]


def covered_at_distance(level: Level, T: int) -> np.ndarray:
    """For each d = |t - u|, the number of ordered pairs at that distance the level scores."""
    d = np.arange(T)
    if level.band is not None:
        lo, hi = level.band
        forward = (d >= lo) & (d <= hi)  # t - u = d
        backward = (-d >= lo) & (-d <= hi) & (d > 0)  # t - u = -d
        return (T - d) * (forward.astype(int) + backward.astype(int))
    block = T // level.blocks
    inside = np.clip(block - d, 0, None) * level.blocks
    return np.where(d == 0, inside, 2 * inside)


def distance_profile(instance: Instance) -> Profile:
    T = instance.T
    d = np.arange(T)
    pairs_at = np.where(d == 0, T, 2 * (T - d))
    total = sum(f * covered_at_distance(lv, T) for lv, f in zip(instance.levels, level_pair_flops(instance)))
    return Profile(d.tolist(), (total / pairs_at).tolist())


def pair_flops_grid(instance: Instance, cells: int = 16) -> np.ndarray:
    """c(t, u) averaged over a cells x cells grid of the T x T plane (for the terminal heatmap)."""
    T = instance.T
    step = max(1, T // 1024)  # sample every step-th token on long sequences
    t = np.arange(0, T, step)
    gap = np.subtract.outer(t, t)
    grid = np.zeros((len(t), len(t)))
    for level, flops in zip(instance.levels, level_pair_flops(instance)):
        if level.band is not None:
            lo, hi = level.band
            covered = (gap >= lo) & (gap <= hi)
        else:
            block = np.asarray(t) // (T // level.blocks)
            covered = np.equal.outer(block, block)
        grid += flops * covered
    n = min(cells, len(t))
    edges = np.linspace(0, len(t), n + 1).astype(int)
    return np.array([[grid[a:b, c:e].mean() for c, e in zip(edges, edges[1:])] for a, b in zip(edges, edges[1:])])


def heatmap(grid: np.ndarray) -> list[str]:
    """Text rows, one character per cell, darker for more FLOPs (two characters wide, square)."""
    top = grid.max() or 1.0
    return ["".join(SHADES[round(v / top * (len(SHADES) - 1))] * 2 for v in row) for row in grid]
