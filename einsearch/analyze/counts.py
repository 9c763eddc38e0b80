"""Parameters and FLOPs of one head, counted from the levels' einsums (2 FLOPs per multiply-add)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..network import best_feature_map, pair_count
from ..structure import Instance


@dataclass(frozen=True)
class Flops:
    """One head, one sequence; FLOPs = 2 per multiply-add."""

    per_token: int  # map one query token and one key token through their factors (all levels)
    per_pair: float  # mean over all T x T pairs of the pair dot products
    scored_pairs: int  # every token's maps, then one dot product per pair the pattern scores


def params(instance: Instance) -> int:
    """Scoring parameters of one head: every distinct factor once."""
    return sum(math.prod(shape) for shape in instance.factor_shapes.values())


def feature_map_flops(instance: Instance) -> Flops:
    """Counts of the feature-map form: per-token maps, then one dot product per scored pair."""
    T = instance.T
    maps = [best_feature_map(level, T) for level in instance.levels]
    per_token = sum(fm.per_token_flops() for fm in maps)
    pair_total = sum(pair_count(lv, T) * fm.pair_flops(lv) for lv, fm in zip(instance.levels, maps))
    return Flops(per_token, pair_total / T**2, T * per_token + pair_total)
