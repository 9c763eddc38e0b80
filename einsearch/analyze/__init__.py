"""What ``describe`` reports: every count of one head, from the levels' einsums."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..plan import plan
from ..structure import Instance
from .counts import Flops, feature_map_flops, params
from .exact import exact_rank, rank_work
from .family import LevelFamily, level_family
from .rank import rank_bound

__all__ = ["Description", "Taxonomy", "describe"]


@dataclass(frozen=True)
class Taxonomy:
    """Exponents placing a D x D feature structure on the map (DESIGN.md section 1)."""

    psi: float  # log R / log D: 1 = full rank
    omega: float  # log(C / P) / log D: 0 = each parameter used once per token
    nu: float  # log(C / D) / log D: 1 = dense, 1/2 = BTT with s = 1


@dataclass(frozen=True)
class Description:
    instance: Instance
    params: int
    rank_bound: int
    rank_numeric: int | None  # None when the matrix is too large to check
    flops: Flops
    score: int  # all T x T scores of one sequence, as the optimizer's plan computes them
    levels: list[LevelFamily]
    taxonomy: Taxonomy | None

    @property
    def rank(self) -> int:
        return self.rank_numeric if self.rank_numeric is not None else self.rank_bound


def describe(instance: Instance, rank_limit: int = 1024) -> Description:
    """Counts of one head; the exact rank check runs when its matrix is at most ``rank_limit`` on a side."""
    bound = rank_bound(instance)
    numeric = exact_rank(instance, bound) if rank_work(instance, bound) <= rank_limit else None
    flops = feature_map_flops(instance)
    n_params = params(instance)
    taxonomy = None
    if instance.is_feature_structure and instance.D > 1:
        taxonomy = taxonomy_of(instance.D, n_params, flops.per_token // 2, numeric or bound)
    families = [level_family(lv) for lv in instance.levels]
    return Description(instance, n_params, bound, numeric, flops, plan(instance).flops, families, taxonomy)


def taxonomy_of(D: int, params: int, macs_per_token: int, rank: int) -> Taxonomy:
    log_d = math.log(D)
    return Taxonomy(
        psi=math.log(rank) / log_d,
        omega=math.log(macs_per_token / params) / log_d,
        nu=math.log(macs_per_token / D) / log_d,
    )
