"""A level as a tensor network: einsum strings, the FLOP charge of a contraction, opt_einsum's
paths, and the splits of a level's factors between the query side and the key side.

A split sends some factors to the query token (``q'_t = x_t . query factors``) and the rest to
the key token; each pair then costs one dot product over the indices the two sides share. Every
way of computing a score that fused attention kernels can run is one such split; the plan
(``planner.py``) builds and costs them.
"""

from __future__ import annotations

import itertools
import math

import opt_einsum

from .structure import Level


def letters(names) -> dict[str, str]:
    """One einsum symbol per index name, in first-seen order: a-z, A-Z, then opt_einsum's
    unicode symbols (``torch.einsum`` reads only the first 52)."""
    return {name: opt_einsum.get_symbol(n) for n, name in enumerate(dict.fromkeys(names))}


def einsum_string(inputs, output, letter: dict[str, str]) -> str:
    """``ij,jk->ik`` from index-name tuples."""
    lhs = ",".join("".join(letter[i] for i in op) for op in inputs)
    return f"{lhs}->{''.join(letter[i] for i in output)}"


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


EXHAUSTIVE_SPLITS = 8  # up to this many factors every query/key split is tried (2^n); beyond, n + 1


def splits(level: Level) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Ways to split the factors (positions in ``level.operands``) between the query and key side.

    Up to ``EXHAUSTIVE_SPLITS`` factors, all 2^n. Beyond, the n + 1 splits that give the query
    side the factors nearest to the query token: factors ordered by breadth-first distance from
    it over shared indices, and the first k of that order for k = 0..n (every cut of a chain).
    """
    factor_ids = [i for i, op in enumerate(level.operands) if op.role == "factor"]
    if len(factor_ids) <= EXHAUSTIVE_SPLITS:
        masks = range(2 ** len(factor_ids))
        chosen = [tuple(f for b, f in enumerate(factor_ids) if mask >> b & 1) for mask in masks]
    else:
        order = nearest_first(level, factor_ids)
        chosen = [tuple(sorted(order[:k])) for k in range(len(order) + 1)]
    return tuple((q, tuple(f for f in factor_ids if f not in q)) for q in chosen)


def nearest_first(level: Level, factor_ids: list[int]) -> list[int]:
    """Factors in breadth-first order from the query token over shared indices (unreached last)."""
    reached = set(level.query.axes[1])
    order: list[int] = []
    while len(order) < len(factor_ids):
        frontier = [f for f in factor_ids if f not in order and reached & set(level.operands[f].indices)]
        frontier = frontier or [next(f for f in factor_ids if f not in order)]
        order.extend(frontier)
        reached.update(i for f in frontier for i in level.operands[f].indices)
    return order
