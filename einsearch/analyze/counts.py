"""Parameters and FLOPs of one head, read off the plan (2 FLOPs per multiply-add).

The plan is the only place that decides how a level is computed; these counts add up its steps
by part (docs/design.md §4): the token maps, the factor products done once per head, the pair
products. ``scored_pairs`` is what the same maps cost with one dot product per causal pair (u <= t)
the pattern scores; the plan's total is at least that, its calls computing whole rectangles
(each causal square whole, a masked tile once per class it holds). What a level adds to decoding (its maps, its
channels) and the bytes of a decoding cache are stated here once (``level_counts``,
``cache_bytes_per_token``); search and the generated modules' docstrings use them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..planner import ITEMSIZE, Part, Plan, Schedule
from ..sequence import SequencePattern
from ..structure import Instance


@dataclass(frozen=True)
class Flops:
    """One head, one sequence; FLOPs = 2 per multiply-add."""

    per_token: int  # map one query token and one key token through their factors (all levels)
    factors: int  # factor-only products of the maps, once per head (0 unless the plan multiplies factors first)
    per_pair: float  # the plan's pair products, mean over all T x T pairs
    score: int  # all the scores of one sequence, as the plan computes them
    scored_pairs: int  # the maps, then one dot product per causal pair (u <= t) the pattern scores


def params(instance: Instance) -> int:
    """Scoring parameters of one head: every distinct factor once."""
    return sum(math.prod(shape) for shape in instance.factor_shapes.values())


def interface_sizes(schedule: Schedule) -> dict[int, int]:
    """For each level of a fused schedule, the size of the interface its pairs contract."""
    return {number: math.prod(schedule.sizes[i] for i in indices) for number, indices in schedule.interfaces}


def pair_flops(schedule: Schedule) -> dict[int, int]:
    """FLOPs one pair of each level of a fused schedule costs: a dot product over its interface,
    2 per multiply-add (the partition's calls run attention over the channels of their levels,
    one channel for maps that share no index)."""
    return {number: 2 * size for number, size in interface_sizes(schedule).items()}


@dataclass(frozen=True, slots=True)
class LevelCounts:
    """One level's share of a plan, one head."""

    maps: int  # its query and key maps over every token of the plan, in the feature-map form
    channels: int  # the interface its pairs contract in that form (the key channels a cached token keeps)
    pair: int  # FLOPs it spends on one pair it scores, as the plan computes it: its c(t, u)

    def decode(self, pattern: SequencePattern, T: int) -> int:
        """FLOPs to score the token at position T - 1 against a decoding cache: its query and key
        maps, then one dot product per key the level lets it see."""
        return self.maps // T + 2 * self.channels * pattern.keys_seen(T)


def level_counts(plan: Plan) -> list[LevelCounts]:
    """Each level's counts. The feature-map form is the plan's own where it chose it, else the
    level's cheapest feature-map candidate (what the taxonomy's C and a decoding cache measure,
    whatever the plan does at this T); a pair costs 2 x the interface in a fused schedule, the
    level's FLOPs over its pairs when it is one einsum."""
    T = plan.instance.T
    owner = {n: s for s in plan.schedules for n in s.levels}
    found = []
    for lp in plan.levels:
        n = lp.level.number
        schedule = owner[n]
        form = schedule if schedule.fused else next(s for s in lp.candidates if s.fused)
        maps = sum(s.flops for s in form.steps if s.level == n and s.part in (Part.QUERY, Part.KEY))
        channels = interface_sizes(form)[n]
        pair = 2 * channels if schedule.fused else schedule.flops // max(1, lp.level.pattern.count(T))
        found.append(LevelCounts(maps, channels, pair))
    return found


def feature_map_flops_per_token(plan: Plan) -> int:
    """FLOPs to map one query and one key token through every level's factors, in the feature-map
    form (``level_counts``)."""
    return sum(c.maps for c in level_counts(plan)) // (plan.instance.T * plan.batch)


def pair_costs(plan: Plan) -> list[int]:
    """FLOPs each level spends on one pair it scores (the c(t, u) of the compute pattern)."""
    return [c.pair for c in level_counts(plan)]


def cache_bytes_per_token(levels: Iterable[tuple[SequencePattern, int]], T: int, heads: int, D: int) -> int:
    """Float32 bytes per token that a decoding cache holds at a T-token context, all heads: each
    level keeps its key channels for the keys a later query can still score (``span``: all of
    them for a global level, a block, hi + 1 for a band) and the values of the longest span.
    ``levels``: each level's pattern and key channels (per head)."""
    levels = list(levels)
    keys = sum(channels * pattern.span(T) for pattern, channels in levels)
    return cache_bytes(keys, max(pattern.span(T) for pattern, _ in levels), T, heads, D)


def cache_bytes(key_slots: int, value_slots: int, T: int, heads: int, D: int) -> int:
    """``cache_bytes_per_token`` from its two sums: key channels x kept keys over the levels (per
    head), and the longest span (whose D values, all heads, are kept):
    4 (heads x key_slots + D x value_slots) / T, rounded up."""
    return -(-ITEMSIZE * (heads * key_slots + D * value_slots) // T)


def plan_flops(plan: Plan) -> Flops:
    """The counts of ``plan`` (one sequence: ``plan.batch`` must be 1)."""
    if plan.batch != 1:
        raise ValueError("counts are per sequence: plan with batch = 1")
    instance = plan.instance
    T = instance.T
    maps = plan.part_flops(Part.QUERY, Part.KEY)
    factors = plan.part_flops(Part.FACTORS)
    pairs = plan.part_flops(Part.PAIRS, Part.WHOLE)
    scored = maps + factors
    for schedule in plan.schedules:
        if not schedule.fused:  # one einsum: every FLOP of it is the level's pairs
            scored += schedule.flops
            continue
        for number, flops in pair_flops(schedule).items():
            scored += instance.levels[number - 1].pattern.causal_count(T) * flops
    return Flops(maps // T, factors, pairs / T**2, plan.flops, scored)
