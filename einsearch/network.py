"""A level as a tensor network: einsum strings, pair counts, and the factorised (feature-map) form.

The feature-map form splits a level's factors between the query side and the key side:
``q'_t = x_t . (query factors)`` and ``k'_u = x_u . (key factors)``, then each pair costs one dot
product over the *interface*, the indices the two sides share. Every way of computing a score
that fused attention kernels can run is one such split.
"""

from __future__ import annotations

import itertools
import math
import string
from dataclasses import dataclass
from functools import lru_cache

import opt_einsum

from .structure import Level

LETTERS = string.ascii_letters


def letters(names) -> dict[str, str]:
    """One einsum letter per index name, in first-seen order."""
    names = list(dict.fromkeys(names))
    if len(names) > len(LETTERS):
        raise ValueError(f"a level with {len(names)} indices is more than an einsum can name")
    return dict(zip(names, LETTERS))


def einsum_string(inputs, output, letter: dict[str, str]) -> str:
    """``ij,jk->ik`` from index-name tuples."""
    lhs = ",".join("".join(letter[i] for i in op) for op in inputs)
    return f"{lhs}->{''.join(letter[i] for i in output)}"


def pair_count(level: Level, T: int) -> int:
    """How many (t, u) pairs of a T x T score matrix this level scores."""
    if level.band is not None:
        lo, hi = level.band
        return sum(max(0, min(hi, t) - max(lo, t - T + 1) + 1) for t in range(T))
    return T * T // level.blocks


@dataclass(frozen=True)
class Side:
    """One token's feature map: x's feature indices contracted with some factors."""

    factors: tuple[int, ...]  # positions in level.operands
    output: tuple[str, ...]  # the interface indices, in a fixed order
    path: tuple  # opt_einsum path over [x, factors...]
    flops: int  # per token, 2 per multiply-add

    def inputs(self, level: Level, token) -> list[tuple[str, ...]]:
        return [token.axes[1]] + [level.operands[i].indices for i in self.factors]


@dataclass(frozen=True)
class FeatureMap:
    """A split of a level's factors into a query side and a key side."""

    query: Side
    key: Side

    @property
    def interface(self) -> tuple[str, ...]:
        return self.query.output

    def pair_flops(self, level: Level) -> int:
        return 2 * math.prod(level.sizes[i] for i in self.interface)

    def per_token_flops(self) -> int:
        return self.query.flops + self.key.flops

    def score_flops(self, level: Level, T: int) -> int:
        """All scores of the level for one sequence of T tokens (maps for every token, then pairs)."""
        return T * self.per_token_flops() + pair_count(level, T) * self.pair_flops(level)


def contraction_flops(inputs, output, sizes: dict[str, int], path) -> int:
    """FLOPs of a pairwise contraction sequence, per step over every index it touches: 2 per
    multiply-add when the step sums an index, 1 per multiply when it only multiplies (an outer
    or elementwise product), 1 per add when a lone operand is summed, and 0 for a lone operand
    already in shape."""
    operands = [tuple(op) for op in inputs]
    total = 0
    for step in path:
        picked = [operands[i] for i in step]
        for i in sorted(step, reverse=True):
            operands.pop(i)
        rest = set(output).union(*operands)
        touched = set().union(*picked)
        kept = tuple(i for i in dict.fromkeys(idx for op in picked for idx in op) if i in rest)
        sums = set(kept) != touched
        if len(picked) > 1 or sums:
            total += (2 if sums and len(picked) > 1 else 1) * math.prod(sizes[i] for i in touched)
        operands.append(kept)
    return total


def best_path(inputs, output, sizes: dict[str, int]) -> tuple:
    """opt_einsum's path: exhaustive for small networks, dynamic programming up to 12, then greedy."""
    if len(inputs) == 1:
        return ((0,),)
    letter = letters(itertools.chain(*inputs, output))
    shapes = [tuple(sizes[i] for i in op) for op in inputs]
    method = "optimal" if len(inputs) <= 5 else "dp" if len(inputs) <= 12 else "greedy"
    path, _ = opt_einsum.contract_path(einsum_string(inputs, output, letter), *shapes, shapes=True, optimize=method)
    return tuple(path)


def side(level: Level, token, factors: tuple[int, ...], other: set[str]) -> Side:
    """The map of one token through ``factors``; its output is what ``other`` (the far side) shares."""
    inputs = [token.axes[1]] + [level.operands[i].indices for i in factors]
    present = dict.fromkeys(i for op in inputs for i in op)
    output = tuple(i for i in present if i in other)
    path = best_path(inputs, output, level.sizes)
    return Side(factors, output, path, contraction_flops(inputs, output, level.sizes, path))


@lru_cache(maxsize=4096)
def feature_maps(level: Level) -> tuple[FeatureMap, ...]:
    """Every split of the factors between query and key side (2^n of them; n is small)."""
    factor_ids = [i for i, op in enumerate(level.operands) if op.role == "factor"]
    splits = []
    for mask in range(2 ** len(factor_ids)):
        q_ids = tuple(f for b, f in enumerate(factor_ids) if mask >> b & 1)
        k_ids = tuple(f for f in factor_ids if f not in q_ids)
        q_indices = set(level.query.axes[1]).union(*(level.operands[i].indices for i in q_ids))
        k_indices = set(level.key.axes[1]).union(*(level.operands[i].indices for i in k_ids))
        q_side = side(level, level.query, q_ids, k_indices)
        k_side = side(level, level.key, k_ids, q_indices)
        k_side = Side(k_side.factors, q_side.output, k_side.path, k_side.flops)  # same interface order
        splits.append(FeatureMap(q_side, k_side))
    return tuple(splits)


def best_feature_map(level: Level, T: int) -> FeatureMap:
    """The cheapest split for all scores at length T; ties go to the smaller interface."""
    return min(feature_maps(level), key=lambda fm: (fm.score_flops(level, T), fm.pair_flops(level)))
