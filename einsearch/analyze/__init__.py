"""What ``describe`` reports: every count of one head, from the levels' einsums and their plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..planner import DEFAULT_COST, Balanced, Plan, plan
from ..structure import Instance
from .cache import cached_exact_rank, cached_formulas
from .counts import Flops, feature_map_flops_per_token, pair_costs, params, plan_flops
from .exact import RANK_LIMIT, affordable
from .family import LevelFamily, level_family
from .formulas import Formulas
from .pattern import Profile, distance_profile, pair_flops_grid
from .rank import rank_bound

__all__ = ["Description", "Taxonomy", "describe"]


@dataclass(frozen=True)
class Taxonomy:
    """Exponents placing a D x D feature structure on the map (docs/design.md §2)."""

    psi: float  # log R / log D: 1 = full rank
    omega: float  # log(C / P) / log D: 0 = each parameter used once per token
    nu: float  # log(C / D) / log D: 1 = dense, 1/2 = BTT with s = 1


@dataclass(frozen=True)
class Description:
    """Every count of one head of an instance, taken from its plan (batch 1).

    ``str()`` is the text report of ``einsearch describe``, ``to_dict()`` its ``--json`` object.
    """

    instance: Instance
    plan: Plan = field(repr=False)
    params: int
    rank_bound: int
    rank_numeric: int | None  # None when the matrix is too large to check
    flops: Flops
    levels: tuple[LevelFamily, ...]
    taxonomy: Taxonomy | None
    formulas: Formulas | None  # None when not asked for (sympy derives them: the slow part)
    profile: Profile = field(repr=False)
    grid: Any = field(default=None, repr=False)  # c(t, u) over a 16 x 16 grid of the T x T plane (numpy)

    @property
    def rank(self) -> int:
        return self.rank_numeric if self.rank_numeric is not None else self.rank_bound

    @property
    def score(self) -> int:
        """All T x T scores of one sequence, as the plan computes them."""
        return self.flops.score

    def full_profile(self) -> Profile:
        """The compute pattern at every distance 0 .. T-1 (T entries: meant for moderate T)."""
        return distance_profile(self.instance, range(self.instance.T), pair_costs(self.plan))

    def to_dict(self, heads: int = 1, macs: bool = False, full_pattern: bool = False) -> dict:
        """What ``einsearch describe --json`` prints."""
        from ..report import describe_json

        return describe_json(self, heads, macs, full_pattern)

    def text(self, heads: int = 1, macs: bool = False) -> str:
        """What ``einsearch describe`` prints."""
        from ..report import describe_text

        return describe_text(self, heads, macs)

    def __str__(self) -> str:
        return self.text()


def describe(instance: Instance, rank_limit: int = RANK_LIMIT, cost: Balanced = DEFAULT_COST,
             with_formulas: bool = True) -> Description:  # fmt: skip
    """Counts of one head; the exact rank runs when its matrix is at most ``rank_limit`` on a side.

    >>> import einsearch
    >>> d = einsearch.describe(einsearch.load("btt").resolve(D=256))
    >>> d.params, d.rank, d.flops.per_token
    (8192, 256, 16384)
    >>> d.formulas.params
    'D*s*(a + b)'
    """
    chosen = plan(instance, 1, cost)
    bound = rank_bound(instance)
    numeric = cached_exact_rank(instance, bound) if affordable(instance, rank_limit) else None
    flops = plan_flops(chosen)
    n_params = params(instance)
    taxonomy = None
    macs_per_token = feature_map_flops_per_token(chosen) // 2
    if instance.is_feature_structure and instance.D > 1 and n_params and macs_per_token:
        taxonomy = taxonomy_of(instance.D, n_params, macs_per_token, numeric or bound)
    families = tuple(level_family(lv) for lv in instance.levels)
    per_pair = pair_costs(chosen)
    profile, grid = distance_profile(instance, flops=per_pair), pair_flops_grid(instance, flops=per_pair)
    formulas = cached_formulas(chosen) if with_formulas else None
    return Description(instance, chosen, n_params, bound, numeric, flops, families, taxonomy, formulas,
                       profile, grid)  # fmt: skip


def taxonomy_of(D: int, params: int, macs_per_token: int, rank: int) -> Taxonomy:
    log_d = math.log(D)
    return Taxonomy(
        psi=math.log(rank) / log_d,
        omega=math.log(macs_per_token / params) / log_d,
        nu=math.log(macs_per_token / D) / log_d,
    )
