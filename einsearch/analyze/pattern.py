"""The distance-dependent compute pattern c(t, u): FLOPs a structure spends on the pair (t, u).

In the feature-map form a level scores a pair with one dot product over its interface, and only
where its pattern (block, band) covers the pair. Summing the levels gives c(t, u); nearby pairs
of an MLR structure share more levels, so they get more compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sequence import SequencePattern
from ..structure import Instance


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


NEAR = 8  # near pairs: |t - u| at most T / NEAR


def near_pairs(pattern: SequencePattern, T: int) -> int:
    """Causal pairs (u <= t) of ``pattern`` with t - u <= T / NEAR (closed form: the pattern cut
    to that band)."""
    reach = T // NEAR
    return pattern.within(-reach, reach).causal_count(T)


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


def distance_profile(instance: Instance, distances=None, flops: list[int] | None = None) -> Profile:
    """Mean FLOPs per pair at ``distances`` (0 <= d < T; by default ``profile_distances``, a few
    dozen): exact, from each level's pair count at each distance, for any T. Work and memory
    grow with the number of distances only (``range(T)`` lists them all). ``flops``: each
    level's FLOPs per pair when the plan is at hand (else it is made)."""
    T = instance.T
    d = np.asarray(profile_distances(instance) if distances is None else distances, dtype=np.int64)
    if d.size and (d.min() < 0 or d.max() >= T):
        raise ValueError(f"distances lie in 0 .. {T - 1}")
    flops = level_pair_flops(instance) if flops is None else flops
    exact_int64 = 2 * T * sum(flops) < 2**53  # every sum fits and converts to float exactly
    total = np.zeros(d.shape, dtype=np.int64 if exact_int64 else object)
    for level, cost in zip(instance.levels, flops):
        total = total + cost * level.pattern.count_at_distance(T, d).astype(total.dtype)
    pairs = np.where(d == 0, T, 2 * (T - d)).astype(total.dtype)
    return Profile(d.tolist(), (total / pairs).astype(float).tolist())


def pair_flops_grid(instance: Instance, cells: int = 16, flops: list[int] | None = None) -> np.ndarray:
    """c(t, u) averaged over a cells x cells grid of the T x T plane (for the heatmap): the exact
    mean over each cell, from each level's pair count in it, for any T (``flops`` as in
    ``distance_profile``)."""
    T = instance.T
    n = min(cells, T)
    edges = np.array([k * T // n for k in range(n + 1)], dtype=object)
    total = np.zeros((n, n), dtype=object)
    for level, cost in zip(instance.levels, level_pair_flops(instance) if flops is None else flops):
        total = total + cost * np.asarray(level.pattern.count_grid(T, edges, edges), dtype=object)
    sides = edges[1:] - edges[:-1]
    return (total / np.multiply.outer(sides, sides)).astype(float)
