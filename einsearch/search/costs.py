"""A candidate's numbers: each level's counts from its plan (once per level up to names), summed.

Every number is the one ``describe`` and ``plan`` print (docs/design.md §4): a level's maps and
channels come from the planner (its cheapest feature-map split) and its counts from its sequence
pattern; a candidate adds its levels' maps and the pairs of its partition (``planner.level_pairs``:
each level's channels times the pairs of the calls it takes part in), and takes its rank bounds
from ``analyze.rank``. Where the levels of one score line would split their factors differently
alone, their counts are taken again at the split the plan gives the line (``shared_splits``); where
levels share a factor, the candidate is planned whole (``planned``) and the same functions read
that plan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple

from ..analyze.counts import LevelCounts, cache_bytes, level_counts, params
from ..analyze.pattern import near_pairs
from ..analyze.rank import LevelRank, bounds, level_rank, level_ranks, pair_ranks
from ..canonical import Canonical, canonical
from ..planner import (
    LevelPlan,
    Part,
    Plan,
    SplitChoices,
    by_split,
    canonical_plan,
    level_pairs,
    line_split,
    memo,
    plan,
    score_line,
    split_choices,
    term_maps,
)
from ..runtime.tiling import Pattern
from ..structure import Instance, Level


class LevelCost(NamedTuple):
    """What one level adds to a candidate, one head, at the search's T (a tuple: a candidate's
    levels transpose into columns at C speed, the summed ones first)."""

    flops: int  # its query and key maps over the T tokens and its factor products (its own split)
    maps: int  # its query and key maps over the T tokens, in the feature-map form
    pair_flops: int  # FLOPs per pair x pairs scored
    near_flops: int  # the same over the causal pairs with t - u <= T/8
    decode: int  # FLOPs to score the token at position T - 1 against the cache
    key_slots: int  # key channels x keys its decoding cache keeps
    params: int
    local: bool  # it leaves some pair unscored (blocks or a band)
    slots: int  # keys its decoding cache keeps
    rank: LevelRank
    channels: int  # the query/key channels its pairs contract
    at: Pattern  # its pattern at T, as the partition takes it
    line: int  # its score line (``planner.score_line``), interned
    split: int  # its score line and its own split of the factors, interned
    form: tuple  # the level up to relabelling (``feature_form``) with its pattern: what duplicates share
    canonical: Canonical | None  # its name-free form, to count it again at another split


SUMMED = 8  # the first eight fields add up over a candidate's levels; ``combine`` reads slots, rank, channels, at


class Costs(NamedTuple):
    """One candidate's numbers, one head (``Candidate`` multiplies by heads); plain numbers only,
    so the many a search keeps cost the garbage collector nothing."""

    flops: int  # the scores of one sequence, as the plan computes them
    params: int
    near_rank: int  # of the D x D matrix a pair at distance 0 is scored with
    far_rank: int  # of the D x D matrix every pair at distance >= T/8 is scored with
    covered: float  # share of the causal pairs some level scores
    near_share: float  # share of the causal pair FLOPs on pairs with t - u <= T/8
    decode: int  # FLOPs to score the token at position T - 1 against the cache
    key_slots: int  # key channels x keys the decoding cache keeps, over the levels
    slots: int  # the most keys a level's cache keeps (their values are kept once)
    per_token: int  # FLOPs to map a query and a key token in the feature-map form (the taxonomy's C)
    feature: bool  # every level global: a feature structure, one D x D matrix

    def cache_bytes(self, T: int, heads: int, D: int) -> int:
        """Float32 bytes per token of its decoding cache at context T, all heads."""
        return cache_bytes(self.key_slots, self.slots, T, heads, D)


def level_cost(level: Level, T: int) -> LevelCost:
    """The level's counts at sequence length T, from its plan (planned once per level up to names;
    the counts kept in the planner's cache)."""
    return at_split(canonical(level), T, None)


def at_split(form: Canonical, T: int, split: tuple | None) -> LevelCost:
    """The level's counts with its maps at ``split`` (None: its own cheapest), kept in the
    planner's cache."""
    return memo(("search counts", form.key, T, split), lambda: _level_cost(form, T, split))


def _level_cost(form: Canonical, T: int, split: tuple | None) -> LevelCost:
    level, lp = form.level, canonical_plan(form, T, keep=False)
    choices(form, T, lp)  # kept now: a line's shared split reads it without planning the level again
    D = math.prod(level.sizes[i] for i in level.query.axes[1])
    alone = Instance("level", {"T": T, "D": D}, (level,))
    maps = term_maps((lp,))[level.number] if split is None else by_split(lp, split)
    (counts,) = level_counts(Plan(alone, 1, (lp,), (maps,), (maps,)))
    flops = maps.part_flops(Part.QUERY, Part.KEY, Part.FACTORS)
    return counted(level, counts, flops, params(alone), level_rank(level, T), T, maps.split, form)


def shared_splits(levels: Sequence[LevelCost], T: int) -> list[LevelCost]:
    """The levels' counts with one split of the factors per score line, the one the plan gives the
    line (``planner.line_split``), where its levels alone differ."""
    lines: dict[int, list[int]] = {}
    for n, cost in enumerate(levels):
        lines.setdefault(cost.line, []).append(n)
    shared = list(levels)
    for members in lines.values():
        if len({levels[n].split for n in members}) > 1:
            split = line_split([choices(levels[n].canonical, T) for n in members])
            for n in members:
                shared[n] = at_split(levels[n].canonical, T, split)
    return shared


def choices(form: Canonical, T: int, lp: LevelPlan | None = None) -> SplitChoices:
    """What the choice of a line's split reads off the level's plan (``lp``, else planned), kept in
    the planner's cache."""
    return memo(("split choices", form.key, T), lambda: split_choices(lp or canonical_plan(form, T, keep=False)))


def counted(level: Level, counts: LevelCounts, flops: int, n_params: int, rank: LevelRank, T: int,
            split: tuple = (), form: Canonical | None = None) -> LevelCost:  # fmt: skip
    """A level's ``LevelCost`` from its counts in a plan and its pattern."""
    pattern = level.pattern
    slots = pattern.span(T)
    return LevelCost(
        flops=flops,
        maps=counts.maps,
        pair_flops=counts.pair * pattern.causal_count(T),
        near_flops=counts.pair * near_pairs(pattern, T),
        decode=counts.decode(pattern, T),
        key_slots=counts.channels * slots,
        params=n_params,
        local=pattern.blocks > 1 or pattern.band is not None,
        slots=slots,
        rank=rank,
        channels=counts.channels,
        at=pattern.at(T),
        line=interned(score_line(level)),
        split=interned((score_line(level), split)),
        form=(pattern, feature_form(level)),
        canonical=form,
    )


_INTERNED: dict[tuple, int] = {}


def interned(key: tuple) -> int:
    """A small number for ``key``, the same for equal keys (a candidate compares its levels' lines
    by these: hashing the lines' nested tuples per candidate cost a tenth of the search)."""
    return _INTERNED.setdefault(key, len(_INTERNED))


def combine(levels: Sequence[LevelCost], T: int, D: int, covered: float) -> Costs:
    """The candidate's numbers from its levels' counts and its partition's pairs, each score line
    at one split (``shared_splits``). ``covered``: the share of the causal pairs some level scores."""
    if len({cost.split for cost in levels}) != len({cost.line for cost in levels}):  # a line with two splits
        levels = shared_splits(levels, T)
    columns = zip(*levels)  # built lazily: the fields past ``at`` are never transposed
    flops, maps, pair, near, decode, key_slots, params, local = map(sum, islice(columns, SUMMED))
    slots, ranks, channels, patterns = max(next(columns)), next(columns), next(columns), next(columns)
    pairs = level_pairs(T, patterns)
    flops += 2 * sum(width * count for width, count in zip(channels, pairs))
    near_rank, far_rank = pair_ranks(ranks, D)
    return Costs._make((flops, params, near_rank, far_rank, covered, near / pair if pair else 0.0, decode, key_slots,
                        slots, maps // T, not local))  # fmt: skip


def rank_bound(levels: Sequence[LevelCost], T: int, D: int) -> int:
    """describe's rank bound of a candidate whose levels have factors of their own (``analyze.rank``):
    of M for a feature structure, else of the T x T scores. Asked of the listed candidates only."""
    return min(bounds([c.rank for c in levels], T, D, not any(c.local for c in levels)).values())


def planned(instance: Instance, covered: float) -> Costs:
    """The candidate's numbers from its whole plan (levels grouped as the plan groups them, a
    factor shared by levels counted once): exact whatever the levels, slower."""
    chosen = plan(instance)
    T, D = instance.T, instance.D
    parts = [counted(level, counts, 0, 0, rank, T)
             for level, counts, rank in zip(instance.levels, level_counts(chosen), level_ranks(instance))]  # fmt: skip
    return combine(parts, T, D, covered)._replace(flops=chosen.flops, params=params(instance))


def feature_form(level: Level) -> tuple:
    """M_l as a network up to relabelling: indices of size 1 dropped, indices carried by the same
    tensors merged into one (sizes multiply), factors anonymous (the least form over their
    orders). Equal forms define the same matrix family up to one permutation of the features on
    both sides (which the embedding absorbs): Monarch and BTT with s = 1, Kronecker a x b and b x a,
    one-level MLR and the low-rank head. Coarser than ``canonical``: it tells duplicates apart."""
    sequence = set(level.sequence_indices)
    rows, cols = set(level.query_features), set(level.key_features)
    factors = level.factors
    merged: dict[tuple, int] = {}
    for index, size in level.sizes.items():
        if index in sequence or size == 1:
            continue
        carriers = frozenset(n for n, op in enumerate(factors) if index in op.indices)
        key = (index in rows, index in cols, carriers)
        merged[key] = merged.get(key, 1) * size
    used = sorted({n for _, _, carriers in merged for n in carriers})
    items = [(r, c, tuple(used.index(n) for n in carriers), size) for (r, c, carriers), size in merged.items()]
    orders = itertools.permutations(range(len(used))) if len(used) <= 5 else [tuple(range(len(used)))]
    return min(tuple(sorted((r, c, tuple(sorted(order[n] for n in carriers)), size) for r, c, carriers, size in items))
               for order in orders)  # fmt: skip
