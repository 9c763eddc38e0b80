"""Parameters and FLOPs of one head, read off the plan (2 FLOPs per multiply-add).

The plan is the only place that decides how a level is computed; these counts add up its steps
by part (docs/design.md §4): the token maps, the factor products done once per head, the pair
products. ``scored_pairs`` is what the same maps cost with one dot product per pair the pattern
actually scores; it differs from the plan's total only where the plan computes more pairs than
it keeps (a band in chunks, a masked product).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..planner import Part, Plan, Schedule
from ..structure import Instance


@dataclass(frozen=True)
class Flops:
    """One head, one sequence; FLOPs = 2 per multiply-add."""

    per_token: int  # map one query token and one key token through their factors (all levels)
    factors: int  # factor-only products of the maps, once per head (0 unless the plan multiplies factors first)
    per_pair: float  # the plan's pair products, mean over all T x T pairs
    score: int  # all T x T scores of one sequence, as the plan computes them
    scored_pairs: int  # the maps, then one dot product per pair the pattern scores


def params(instance: Instance) -> int:
    """Scoring parameters of one head: every distinct factor once."""
    return sum(math.prod(shape) for shape in instance.factor_shapes.values())


def interface_sizes(schedule: Schedule) -> dict[int, int]:
    """For each level of a fused schedule, the size of the interface its pairs contract."""
    return {number: math.prod(schedule.sizes[i] for i in indices) for number, indices in schedule.interfaces}


def dot_flops(schedule: Schedule, number: int, size):
    """FLOPs one pair of level ``number`` costs in the fused ``schedule``, ``size`` its interface
    size (a number or a formula): a dot product, 2 per multiply-add; but a level alone whose maps
    share no index is scored by one multiply per pair (an outer product, docs/design.md §3). Levels
    sharing a pair product always sum over their concatenated channels."""
    alone_without_interface = len(schedule.levels) == 1 and not dict(schedule.interfaces)[number]
    return 1 if alone_without_interface else 2 * size


def pair_flops(schedule: Schedule) -> dict[int, int]:
    """``dot_flops`` of every level of a fused schedule."""
    return {number: dot_flops(schedule, number, size) for number, size in interface_sizes(schedule).items()}


def feature_map_flops_per_token(plan: Plan) -> int:
    """FLOPs to map one query and one key token through every level's factors, in the feature-map
    form: the plan's own maps where it chose that form, else the level's cheapest feature-map
    candidate (what the taxonomy's C measures, whatever the plan does at this T)."""
    own = {n: s for s in plan.schedules if s.fused for n in s.levels}
    total = 0
    for lp in plan.levels:
        schedule = own.get(lp.level.number) or next(s for s in lp.candidates if s.fused)
        steps = [s for s in schedule.steps if s.level == lp.level.number and s.part in (Part.QUERY, Part.KEY)]
        total += sum(s.flops for s in steps)
    return total // (plan.instance.T * plan.batch)


def pair_costs(plan: Plan) -> list[int]:
    """FLOPs each level spends on one pair it scores: its ``dot_flops`` in a fused schedule, its
    FLOPs over its pairs when it is one einsum (the c(t, u) of the compute pattern)."""
    T = plan.instance.T
    costs = {}
    for schedule in plan.schedules:
        if schedule.fused:
            costs.update(pair_flops(schedule))
        else:
            level = plan.instance.levels[schedule.levels[0] - 1]
            costs[level.number] = schedule.flops // max(1, level.pattern.count(T))
    return [costs[level.number] for level in plan.instance.levels]


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
            scored += instance.levels[number - 1].pattern.count(T) * flops
    return Flops(maps // T, factors, pairs / T**2, plan.flops, scored)
