"""A candidate's numbers: each level's counts from its plan (once per level up to names), summed.

Every number is the one ``describe`` and ``plan`` print (docs/design.md §4): a level's counts come
from the planner (its chosen schedule, ``analyze.counts.level_counts``) and from its sequence
pattern; a candidate adds its levels' counts, and takes its rank bounds from ``analyze.rank``.
Levels that the plan groups (§4 ``SHARED_PAIRS``, ``NESTED_BLOCKS``) spend exactly their own
FLOPs when each keeps its own feature maps; where a group could change that, or where levels
share a factor, the candidate is planned whole (``planned``) and the same functions read that
plan.
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
from ..planner import Plan, canonical_plan, memo, pair_ready, plan
from ..sequence import nested_chain
from ..structure import Instance, Level


class LevelCost(NamedTuple):
    """What one level adds to a candidate, one head, at the search's T (a tuple: a candidate's
    levels transpose into columns at C speed, the summed ones first)."""

    flops: int  # its own chosen schedule
    maps: int  # its query and key maps over the T tokens, in the feature-map form
    pair_flops: int  # FLOPs per pair x pairs scored
    near_flops: int  # the same over the pairs with |t - u| <= T/8
    decode: int  # FLOPs to score the token at position T - 1 against the cache
    key_slots: int  # key channels x keys its decoding cache keeps
    params: int
    local: bool  # it leaves some pair unscored (blocks or a band)
    regroup: bool  # a group would take its maps from another schedule than its own choice
    slots: int  # keys its decoding cache keeps
    rank: LevelRank
    form: tuple  # the level up to relabelling (``feature_form``) with its pattern: what duplicates share
    ready: int | None  # FLOPs of the schedule a group would take its maps from (None: it joins no group)
    whole: int  # FLOPs of the level as one einsum (a group may not exceed its members' sum)


SUMMED = 9  # the first nine fields add up over a candidate's levels; ``combine`` reads slots, then rank, next


class Costs(NamedTuple):
    """One candidate's numbers, one head (``Candidate`` multiplies by heads); plain numbers only,
    so the many a search keeps cost the garbage collector nothing."""

    flops: int  # all T x T scores of one sequence, as the plan computes them
    params: int
    near_rank: int  # of the D x D matrix a pair at distance 0 is scored with
    far_rank: int  # of the D x D matrix every pair at distance >= T/8 is scored with
    covered: float  # share of the causal pairs some level scores
    near_share: float  # share of the pair FLOPs on pairs with |t - u| <= T/8
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
    form = canonical(level)
    return memo(("search counts", form.key, T), lambda: _level_cost(form, T))


def _level_cost(form: Canonical, T: int) -> LevelCost:
    level, lp = form.level, canonical_plan(form, T, keep=False)
    D = math.prod(level.sizes[i] for i in level.query.axes[1])
    alone = Instance("level", {"T": T, "D": D}, (level,))
    (counts,) = level_counts(Plan(alone, 1, (lp,), (lp.chosen,)))
    ready = pair_ready(lp)
    return counted(level, counts, lp.chosen.flops, params(alone), level_rank(level, T), T,
                   ready=None if level.band is not None or ready is None else ready.flops,
                   alone=level.band is not None or ready is None or ready is lp.chosen,
                   whole=lp.opt_einsum.flops)  # fmt: skip


def counted(level: Level, counts: LevelCounts, flops: int, n_params: int, rank: LevelRank, T: int,
            ready: int | None = None, alone: bool = True, whole: int = 0) -> LevelCost:  # fmt: skip
    """A level's ``LevelCost`` from its counts in a plan and its pattern."""
    pattern = level.pattern
    slots = pattern.span(T)
    return LevelCost(
        flops=flops,
        maps=counts.maps,
        pair_flops=counts.pair * pattern.count(T),
        near_flops=counts.pair * near_pairs(pattern, T),
        decode=counts.decode(pattern, T),
        key_slots=counts.channels * slots,
        params=n_params,
        local=pattern.blocks > 1 or pattern.band is not None,
        regroup=not alone,
        slots=slots,
        rank=rank,
        form=(pattern, feature_form(level)),
        ready=ready,
        whole=whole,
    )


def combine(levels: Sequence[LevelCost], T: int, D: int, covered: float) -> Costs | None:
    """The candidate's numbers from its levels' counts; None when grouping levels could change the
    plan's FLOPs (a level whose grouped maps differ from its own choice): then plan it whole.
    ``covered``: the share of the causal pairs some level scores (``Shared.covered``)."""
    columns = zip(*levels)  # built lazily: the fields past ``rank`` are never transposed
    flops, maps, pair, near, decode, key_slots, params, local, regroup = map(sum, islice(columns, SUMMED))
    if regroup and regrouped(levels):
        return None
    slots = max(next(columns))
    near_rank, far_rank = pair_ranks(next(columns), D)
    return Costs._make((flops, params, near_rank, far_rank, covered, near / pair if pair else 0.0, decode, key_slots,
                        slots, maps // T, not local))  # fmt: skip


def rank_bound(levels: Sequence[LevelCost], T: int, D: int) -> int:
    """describe's rank bound of a candidate whose levels have factors of their own (``analyze.rank``):
    of M for a feature structure, else of the T x T scores. Asked of the listed candidates only."""
    return min(bounds([c.rank for c in levels], T, D, not any(c.local for c in levels)).values())


def regrouped(levels: Sequence[LevelCost]) -> bool:
    """Whether the plan might group a level whose group maps cost other FLOPs than its own choice:
    a group (``planner.shared_pairs``, ``planner.nested_blocks``) with such a member that is not
    already ruled out by costing more FLOPs than its members as one einsum each."""
    ready = [c for c in levels if c.ready is not None]
    if len(ready) < 2:
        return False
    groups: dict[int, list[LevelCost]] = {}
    for c in ready:
        groups.setdefault(c.rank.pattern.blocks, []).append(c)
    chain = [ready[n] for n in nested_chain([c.rank.pattern for c in ready])]
    for members in (*groups.values(), chain):
        if len(members) > 1 and any(c.regroup for c in members):
            if sum(c.ready for c in members) <= sum(c.whole for c in members):
                return True
    return False


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
