"""Shared helpers of the tests: small instances of every catalog structure and the plan's counts.

Kept here once (not in each test file) so that a size table or a helper has one definition.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from einsearch import catalog, reference
from einsearch.analyze.counts import Flops, plan_flops
from einsearch.planner import FLOPS, Balanced, LevelPlan, Op, Part, Schedule, Step, plan

# One small instance of every catalog structure, with non-square splits, s > 1 and odd T where they apply.
SMALL = {
    "dense": {"D": 16, "T": 16},
    "lowrank": {"D": 16, "T": 16, "r": 4},
    "btt": {"D": 36, "T": 8, "s": 2},
    "monarch": {"D": 24, "T": 8},
    "kronecker": {"D": 12, "T": 8},
    "tt": {"D": 24, "a": 2, "b": 3, "T": 8},
    "bilinear-mlr": {"D": 16, "T": 8, "levels": 3, "ranks": [3, 2, 1]},
    "mlr": {"D": 16, "T": 32, "levels": 4, "ranks": [4, 3, 2, 1]},
    "swa": {"D": 16, "T": 37, "r": 4, "window": 5},
    "global-swa": {"D": 16, "T": 19, "rg": 3, "rw": 2, "window": 4},
}


def flop_counts(instance, cost: Balanced = FLOPS) -> Flops:
    """The counts ``describe`` reports, for the plan chosen under ``cost`` (FLOPs only by default:
    the choice the brute-force minimum must match)."""
    return plan_flops(plan(instance, 1, cost))


def map_flops(schedule: Schedule, level: int) -> int:
    """FLOPs of one level's token maps in a schedule."""
    return sum(s.flops for s in schedule.steps if s.level == level and s.part in (Part.QUERY, Part.KEY))


def pair_cost(lp: LevelPlan) -> int:
    """FLOPs of one pair of the level's own choice: 2 x its interface size."""
    number, indices = lp.chosen.interfaces[0]
    size = 1
    for i in indices:
        size *= lp.chosen.sizes[i]
    return 2 * size


def random_case(name: str, batch: int = 2):
    """A small instance, numpy factors and inputs for the reference, and their torch twins."""
    instance = catalog.find(name).resolve(SMALL[name])
    factors = reference.random_factors(instance)
    xs = [reference.random_input(instance, seed=seed) for seed in range(1, batch + 1)]
    torch_factors = {k: torch.from_numpy(v) for k, v in factors.items()}
    return instance, factors, xs, torch_factors, torch.from_numpy(np.stack(xs))


def causal_pairs(T: int, blocks: int, band: tuple[int, int] | None) -> int:
    """Pairs u <= t a level scores: L(L + 1)/2 in each of its blocks of L = T / blocks tokens, or
    the diagonals 0 <= t - u <= hi of its band."""
    if band is None:
        length = T // blocks
        return blocks * length * (length + 1) // 2
    assert blocks == 1, "no catalog level has both blocks and a band"
    return band_pairs(T, max(band[0], 0), band[1])


def band_pairs(T: int, lo: int, hi: int) -> int:
    """Pairs with lo <= t - u <= hi: T - |d| of them on each diagonal d, |d| < T."""
    lo, hi = max(lo, 1 - T), min(hi, T - 1)
    below = sum_of_lengths(T, max(lo, 0), hi) if hi >= 0 else 0  # diagonals d >= 0
    above = sum_of_lengths(T, max(-hi, 1), -lo) if lo < 0 else 0  # diagonals d < 0, by |d|
    return below + above


def sum_of_lengths(T: int, first: int, last: int) -> int:
    """Sum of T - d for d = first..last."""
    return 0 if last < first else (last - first + 1) * (2 * T - first - last) // 2


def charge(step: Step, schedule: Schedule) -> int:
    """docs/design.md §3, worked out from a step's tensors and index sizes alone (exact integers):
    over every index the step touches, 2 per element for a pairwise step that sums an index, 1 for
    one that only multiplies, 1 for a lone operand that is summed, 0 for one already in shape and
    for the steps that only move data. An attention call: 2 per element of its score rectangles
    per channel of its levels; past the partition's limit, 2 per causal pair per channel."""
    sizes = schedule.sizes
    if step.op is Op.ATTEND:
        tiling = schedule.tiling
        if step.call >= 0:
            channels = tiling.channels(tiling.calls[step.call])
            return 2 * channels * math.prod(sizes[i] for i in step.output.indices)
        index = schedule.levels.index(step.level)
        length, lo, hi = tiling.patterns[index]
        T = sizes["s"]
        band = None if lo is None and hi is None else (lo if lo is not None else -T, hi if hi is not None else T)
        blocks = 1 if length is None else T // length
        return 2 * sizes["n"] * tiling.widths[index] * causal_pairs(T, blocks, band)
    if step.op is not Op.CONTRACT:
        return 0
    touched = {i for t in step.inputs for i in t.indices} | set(step.output.indices)
    elements = 1
    for i in touched:
        elements *= sizes[i]
    sums = bool(touched - set(step.output.indices))
    if len(step.inputs) > 1:
        return (2 if sums else 1) * elements
    return elements if sums else 0


def charged(schedules) -> int:
    """The §3 charge of every step of ``schedules``."""
    return sum(charge(step, schedule) for schedule in schedules for step in schedule.steps)


def chain_text(n: int, D: int, T: int = 8) -> str:
    """A structure file: x[t, i] F0[i, c1] F1[c1, c2] ... x[u, j], n factors joined by bonds of
    size 2 (generic rank 2 when D >= 2)."""
    bonds = ["i", *(f"c{k}" for k in range(1, n)), "j"]
    chain = " ".join(f"F{k}[{a}, {b}]" for k, (a, b) in enumerate(zip(bonds, bonds[1:])))
    declared = ", ".join(f"{c}: 2" for c in bonds[1:-1])
    return f"size T = {T}\nsize D = {D}\nindex {declared}\nscore = x[t, i] {chain} x[u, j]\n"
