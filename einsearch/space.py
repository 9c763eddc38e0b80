"""The search space of ``einsearch search``: every structure of the family for given (D, T, H),
scored from its plan, filtered by a budget and ranked.

The space (``FAMILIES``, in the order duplicates are resolved):

* the catalog over its hyperparameters: ``lowrank`` and ``swa`` over a rank grid and a window
  grid, every non-trivial split D = a * b for ``btt`` (TT-ranks s with s (a + b) <= D),
  ``monarch`` and ``kronecker``, every ordered D = a * b * c for ``tt`` with TT-ranks 1, 2, 4
  (the mirror c * b * a is the same family at the same cost and is left out), every composition
  of the head dimension over 1 .. max_levels levels (in steps of the rank unit) for ``mlr`` and
  ``bilinear-mlr``, and the splits of the head dimension (in eighths) between the global and
  the windowed term of ``global-swa``;
* ``multi``: the general multi-level members, any per-level sequence pattern (global, p blocks,
  band w) with any per-level feature structure (low rank, block-diagonal low rank, BTT,
  Kronecker), up to ``multi_levels`` levels; they have no catalog file, so each comes with the
  text of one (``Candidate.ein``);
* ``einsum``: the two-core einsums of the einsum-search space (Potapczynski et al. 2024),
  ``M[(g b a), (f e d)] = sum_r A[f, d, r, g, a] B[f, e, r, g, b]``, each of the seven axis
  exponents on a grid of step 1 / einsum_grid (sizes: divisors of D, rounded in log scale);
* a user's own ``.ein`` files, over a small grid around each declared option.

Duplicates (listed once, the first family above kept): candidates whose levels have the same
sequence patterns and the same feature networks up to relabelling (indices of size 1 dropped,
indices on the same tensors merged, factors anonymous), at the same costs: Monarch and BTT with
s = 1, Kronecker a x b and b x a, one-level MLR and the low-rank head, a multi member and the
catalog structure it spells out.

**Scoring.** Every number is the one ``describe`` prints, from the same plan (docs/design.md §4):
each distinct level (compared by value, up to the names of its indices and factors) is planned
once with ``plan_level`` and its counts kept; a candidate is then plain arithmetic over its
levels: FLOPs the sum of the levels' chosen schedules (the multi-level kinds of §4 spend exactly
those FLOPs when they reuse each level's own feature maps, which is checked per level; otherwise
the whole candidate is planned), params the factors' sizes, and the rank the cut bound of
``analyze.rank`` (docs/design.md §2) assembled from each level's cut. Nothing is re-parsed.

**Fields** (units in ``UNITS``): params, FLOPs and decode FLOPs for all heads; ``rank_bound`` per
head (describe's ``rank_bound``: the exact rank is too slow to run per candidate; on the catalog
the two agree); ``near_share`` the share of the pair FLOPs spent on pairs with |t - u| <= T/8;
``decode_flops`` what scoring the token at position T costs (its query and key maps and one dot
product per key its patterns let it see, through the level's feature-map split); ``cache_bytes``
float32 bytes per token that the generated module's decoding cache holds at context T, all heads:
each level's key channels for the keys its later queries can still reach (all T for a global
level, a block for a block level, hi + 1 for a band) and the values of the longest reach
(``codegen.cache_bytes_per_token``).
"""

from __future__ import annotations

import csv
import gc
import io
import itertools
import math
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .analyze.counts import interface_sizes, pair_costs
from .analyze.rank import band_complement_rows, feature_cut, rank_bound, refinement_bound
from .codegen import reach as cache_reach
from .errors import EinsearchError, OptionError
from .planner import DEFAULT_COST, Kind, Part, pair_ready, plan, plan_level
from .sequence import SequencePattern
from .structure import Instance, Level, Operand, from_text

OBJECTIVES = ("rank", "params", "rank-per-flop", "local-bias", "decode")
NEAR = 8  # near_share counts pairs with |t - u| <= T / NEAR
ITEMSIZE = 4  # float32 bytes, for cache_bytes
USER_GRID_LIMIT = 2048  # the most option combinations tried for one --include file
UNITS = {
    "params": "scoring parameters, all heads",
    "flops": "FLOPs (2 per multiply-add) of all heads' T x T scores of one sequence: describe's score x heads",
    "rank_bound": "cut bound on the rank of one head's matrix (describe's rank_bound)",
    "near_share": "share of the pair FLOPs on pairs with |t - u| <= T/8",
    "decode_flops": "FLOPs to score the token at position T against the cache, all heads",
    "cache_bytes": "float32 bytes per token the generated module's decoding cache holds at context T, all heads",
}


# ---------------------------------------------------------------------------------------------
# Levels from einsum text (the catalog's own lines), and their counts, cached by value

_OPERAND = re.compile(r"(\w+)\[([^\]]*)\]")


def make_level(einsum: str, sizes: dict[str, int], band: tuple[int, int] | None = None, number: int = 1) -> Level:
    """A level from a score line such as ``x[(g t), i] Q[i, r] K[j, r] x[(g u), j]`` (every index sized)."""
    operands = []
    for name, inside in _OPERAND.findall(einsum):
        axes = tuple(tuple(part.strip().strip("()").split()) for part in inside.split(","))
        role = "factor" if name != "x" else ("query" if not any(op.role == "query" for op in operands) else "key")
        operands.append(Operand(name, role, axes))
    used = {i for op in operands for i in op.indices}
    return Level(number, tuple(operands), {i: sizes[i] for i in sizes if i in used}, band=band)


def canonical(level: Level) -> tuple:
    """The level up to the names of its indices and factors: what its plan and counts depend on."""
    names: dict[str, int] = {}
    tensors: dict[str, int] = {}
    ops = []
    for op in level.operands:
        axes = tuple(tuple(names.setdefault(i, len(names)) for i in axis) for axis in op.axes)
        ops.append((op.role, tensors.setdefault(op.name, len(tensors)), axes))
    return tuple(ops), tuple(level.sizes[i] for i in names), level.band


def feature_form(level: Level) -> tuple:
    """M_l as a network up to relabelling: indices of size 1 dropped, indices carried by the same
    tensors merged into one (sizes multiply), factors anonymous (the least form over their
    orders). Equal forms define the same matrix family up to one permutation of the features on
    both sides (which the embedding absorbs): Monarch and BTT with s = 1, Kronecker a x b and b x a."""
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


@dataclass(frozen=True, slots=True)
class LevelCost:
    """What one level adds to a candidate, per head (counts as ``describe`` takes them from the plan)."""

    flops: int  # the level's chosen schedule (maps, factor products, pairs)
    maps: int  # its query and key maps over the T tokens in the feature-map form (the taxonomy's C x T)
    pair_weight: int  # FLOPs of one pair (c(t, u) of the compute pattern) x pairs scored
    near_weight: int  # the same over the pairs with |t - u| <= T/8
    decode: int  # FLOPs to score the token at position T: its maps, one product per key it sees
    channels: int  # the key map a cached token keeps, per head
    params: int
    blocks: int
    band: tuple[int, int] | None
    cut: int  # cut bound on the rank of M_l
    sequence_rank: int  # the level's bound on the T x T score matrix (analyze.rank.level_rank_bound)
    alone: bool  # grouped with other levels (§4 SHARED_PAIRS, NESTED_BLOCKS), it keeps its own schedule's FLOPs
    ready: int | None  # FLOPs of the schedule a group would take its maps from (None: it joins no group)
    whole: int  # FLOPs of the level as one einsum (a group may not exceed its members' sum)
    family: int  # one number per (blocks, band, feature form): what duplicates are told by
    level: Level  # the level planned (for planning a whole candidate when grouping changes its FLOPs)

    @property
    def is_global(self) -> bool:
        return self.blocks == 1 and self.band is None


_LEVEL_COSTS: dict[tuple, LevelCost] = {}
_CUTS: dict[tuple, int] = {}
_FORMS: dict[tuple, int] = {}


def level_cost(level: Level, T: int) -> LevelCost:
    """The level's counts at sequence length T, planned once per distinct level (by value)."""
    key = (T, canonical(level))
    found = _LEVEL_COSTS.get(key)
    if found is None:
        found = _LEVEL_COSTS[key] = _plan_level_cost(level, T)
    return found


def _feature_cut(level: Level) -> int:
    """The cut bound of M_l, once per feature network (the sequence pattern plays no part)."""
    sequence = set(level.sequence_indices)
    names: dict[str, int] = {}
    tensors: dict[str, int] = {}
    ops = []
    for op in level.operands:
        axes = tuple(tuple(names.setdefault(i, len(names)) for i in axis if i not in sequence) for axis in op.axes)
        ops.append((op.role, tensors.setdefault(op.name, len(tensors)), axes))
    key = tuple(ops), tuple(level.sizes[i] for i in names)
    if key not in _CUTS:
        _CUTS[key] = feature_cut(level).rank
    return _CUTS[key]


def _plan_level_cost(level: Level, T: int) -> LevelCost:
    lp = plan_level(level, T, 1, DEFAULT_COST)
    chosen = lp.chosen
    pattern = level.pattern
    count = pattern.count(T)
    decoding = chosen if chosen.fused else next(c for c in lp.candidates if c.kind is Kind.FEATURE_MAPS)
    maps, channels = map_facts(decoding, level)
    pair = 2 * channels if chosen.fused else chosen.flops // max(1, count)
    near = _near_pairs(pattern, T)
    keys = pattern.count_in(T, T - 1, T, 0, T)
    cut = _feature_cut(level)
    blocks = level.blocks
    sequence_rank = blocks * min(T // blocks, cut)  # the sequence cut: t (or u) itself, or M_l's cut, per block
    if level.band is not None:
        sequence_rank = min(pattern.rows(T), sequence_rank + band_complement_rows(level, T))
    ready = pair_ready(lp)
    return LevelCost(
        flops=chosen.flops,
        maps=maps,
        pair_weight=pair * count,
        near_weight=pair * near,
        decode=maps // T + 2 * channels * keys,
        channels=channels,
        params=sum(math.prod(level.sizes[i] for i in op.indices) for op in level.factors),
        blocks=blocks,
        band=level.band,
        cut=cut,
        sequence_rank=sequence_rank,
        alone=level.band is not None or ready is None or ready is chosen,
        ready=None if level.band is not None or ready is None else ready.flops,
        whole=lp.opt_einsum.flops,
        family=_FORMS.setdefault((blocks, level.band, feature_form(level)), len(_FORMS)),
        level=level,
    )


def map_facts(schedule, level: Level) -> tuple[int, int]:
    """Of ``level`` in a fused ``schedule``: its query and key map FLOPs (all T tokens), and the
    size of the interface its pairs contract (the key channels a cached token keeps)."""
    n = level.number
    steps = [s for s in schedule.steps if s.level == n and s.part in (Part.QUERY, Part.KEY)]
    return sum(s.flops for s in steps), interface_sizes(schedule)[n]


def _near_pairs(pattern: SequencePattern, T: int) -> int:
    """Pairs of ``pattern`` with |t - u| <= T / NEAR (closed form: the pattern cut to that band)."""
    reach = T // NEAR
    lo, hi = (-reach, reach) if pattern.band is None else (max(pattern.band[0], -reach), min(pattern.band[1], reach))
    return 0 if lo > hi else SequencePattern(pattern.blocks, (lo, hi)).count(T)


# ---------------------------------------------------------------------------------------------
# A candidate's numbers from its levels


class Costs(NamedTuple):
    """One candidate's numbers, per head unless named otherwise (``search`` multiplies by heads)."""

    flops: int
    params: int
    rank: int
    near_share: float
    decode: int
    cached: int  # key channels x tokens the decoding cache keeps per head at context T (codegen.reach)
    longest: int  # tokens whose values it keeps: the longest reach
    per_token: int  # FLOPs to map a query and a key token in the feature-map form (the taxonomy's 2 C)
    feature: bool  # every level global: a feature structure with a D x D matrix


def combine(costs: Sequence[LevelCost], T: int, D: int) -> Costs | None:
    """The candidate's numbers from its levels' counts; None when grouping levels could change the
    plan's FLOPs (a level whose grouped maps differ from its own choice): then plan it whole."""
    flops = maps = pair = near = decode = cached = longest = params = cut = 0
    feature = alone = True
    grouped = 0
    for c in costs:
        flops += c.flops
        maps += c.maps
        pair += c.pair_weight
        near += c.near_weight
        decode += c.decode
        cached += c.channels * cache_reach(c.blocks, c.band, T)
        longest = max(longest, cache_reach(c.blocks, c.band, T))
        params += c.params
        cut += c.cut
        if c.band is None:
            grouped += 1
            alone = alone and c.alone
            feature = feature and c.blocks == 1
        else:
            feature = False
    if not alone and grouped > 1 and regrouped(costs):
        return None
    rank = min(D, cut) if feature else sequence_rank(costs, T, D)
    return Costs(flops, params, rank, near / pair if pair else 0.0, decode, cached, longest, maps // T, feature)


def regrouped(costs: Sequence[LevelCost]) -> bool:
    """Whether the plan might group a level whose group maps cost other FLOPs than its own choice:
    a group (``planner.shared_pairs``, ``planner.nested_blocks``) with such a member that is not
    already ruled out by costing more FLOPs than its members as one einsum each."""
    ready = [c for c in costs if c.ready is not None]
    groups: dict[int, list[LevelCost]] = {}
    for c in ready:
        groups.setdefault(c.blocks, []).append(c)
    chain: list[LevelCost] = []
    for c in sorted(ready, key=lambda c: c.blocks):
        if not chain or (c.blocks != chain[-1].blocks and c.blocks % chain[-1].blocks == 0):
            chain.append(c)
    for members in (*groups.values(), chain):
        if len(members) > 1 and not all(c.alone for c in members):
            if sum(c.ready for c in members) <= sum(c.whole for c in members):
                return True
    return False


def sequence_rank(costs: Sequence[LevelCost], T: int, D: int) -> int:
    """``analyze.rank.rank_bounds`` of a T x T score matrix whose levels have distinct factors: the
    least of T, the sum of the levels' bounds, the refinement bound and the nested-blocks bound."""
    total = banded = 0
    cuts: dict[int, int] = {}  # block count -> sum of the cuts of M_l over the levels without a band
    for c in costs:
        total += c.sequence_rank
        if c.band is None:
            cuts[c.blocks] = cuts.get(c.blocks, 0) + c.cut
        else:
            banded += c.sequence_rank
    bound = min(T, total)
    if not cuts:
        return bound
    counts = sorted(cuts)
    previous = 1
    for q in counts:
        if q % previous:
            break
        previous = q
    else:  # the block counts nest (each divides the next)
        finest = counts[-1]
        bound = min(bound, banded + finest * min(T // finest, D))  # refinement_bound of nested counts
        coupled, nested, previous = sum(cuts.values()), 0, 0
        for q in counts:  # sum_k (q_k - q_(k-1)) min(D, cuts of the levels with p_l >= q_k)
            nested += (q - previous) * min(D, coupled)
            coupled -= cuts[q]
            previous = q
        return min(bound, banded + nested)
    refined = refinement_bound(counts, T, D)
    return bound if refined is None else min(bound, banded + refined)


def planned_costs(costs: Sequence[LevelCost], T: int, D: int) -> Costs:
    """A candidate's numbers when its plan groups levels differently: the counts that depend on the
    plan from planning its levels together (each level's own plan is cached), the rest from them."""
    levels = []
    for n, c in enumerate(costs, 1):
        operands = tuple(op if op.role != "factor" else Operand(f"{op.name}_{n}", op.role, op.axes)
                         for op in c.level.operands)  # fmt: skip
        levels.append(Level(n, operands, c.level.sizes, band=c.level.band))
    feature = all(c.is_global for c in costs)
    rank = min(D, sum(c.cut for c in costs)) if feature else sequence_rank(costs, T, D)
    return instance_costs(Instance("candidate", {"T": T, "D": D}, tuple(levels)), rank, sum(c.params for c in costs))


def instance_costs(instance: Instance, rank: int | None = None, params: int | None = None) -> Costs:
    """The same numbers from the whole instance's plan (exact whatever the levels; slower)."""
    from .analyze.counts import params as count_params

    T = instance.T
    chosen = plan(instance, 1, DEFAULT_COST)
    owner = {n: s for s in chosen.schedules for n in s.levels}
    decode = cached = longest = pair = near = total_maps = 0
    for level, cost in zip(instance.levels, pair_costs(chosen)):
        schedule = owner[level.number]
        if not schedule.fused:
            lp = chosen.levels[level.number - 1]
            schedule = next(c for c in lp.candidates if c.kind is Kind.FEATURE_MAPS)
        maps, width = map_facts(schedule, level)
        keys = level.pattern.count_in(T, T - 1, T, 0, T)
        decode += maps // T + 2 * width * keys
        total_maps += maps
        cached += width * cache_reach(level.blocks, level.band, T)
        longest = max(longest, cache_reach(level.blocks, level.band, T))
        pair += cost * level.pattern.count(T)
        near += cost * _near_pairs(level.pattern, T)
    rank = rank_bound(instance) if rank is None else rank
    params = count_params(instance) if params is None else params
    return Costs(chosen.flops, params, rank, near / pair if pair else 0.0, decode, cached, longest, total_maps // T,
                 instance.is_feature_structure)  # fmt: skip


def taxonomy(costs: Costs, D: int) -> dict[str, float] | None:
    """psi, omega, nu of a feature structure (docs/design.md §2), with the rank bound as R."""
    macs = costs.per_token // 2
    if not costs.feature or D < 2 or macs <= 0 or costs.params <= 0 or costs.rank <= 0:
        return None
    log_d = math.log(D)
    return {"psi": math.log(costs.rank) / log_d, "omega": math.log(macs / costs.params) / log_d,
            "nu": math.log(macs / D) / log_d}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Grids


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def compositions(units: int, parts: int) -> Iterable[tuple[int, ...]]:
    """Every way to write ``units`` as an ordered sum of ``parts`` positive whole numbers."""
    for cuts in itertools.combinations(range(1, units), parts - 1):
        edges = (0, *cuts, units)
        yield tuple(b - a for a, b in zip(edges, edges[1:]))


def nearest_divisor(n: int, target: float) -> int:
    """The divisor of n closest to ``target`` in log scale (the smaller on a tie)."""
    return min(divisors(n), key=lambda d: (abs(math.log(d) - math.log(max(target, 1e-9))), d))


def balanced_split(D: int) -> int:
    from .expr import sqrt_divisor

    return sqrt_divisor(D, "balanced")


# ---------------------------------------------------------------------------------------------
# Families: each enumerates specs (plain tuples) and turns one into its levels' counts


@dataclass
class Space:
    """The grids of one search: sizes, heads and the knobs of each family."""

    D: int
    T: int
    heads: int
    max_levels: int = 8
    multi_levels: int = 2
    rank_unit: int | None = None
    einsum_grid: int = 2
    levels: dict = field(default_factory=dict, repr=False)  # a family's level key -> LevelCost

    def __post_init__(self) -> None:
        self.head_dim = self.D // self.heads
        if self.rank_unit is None:  # the finest step that leaves at most 16 units in the head dimension
            self.rank_unit = next(u for u in divisors(self.head_dim) if self.head_dim // u <= 16)

    def cost(self, key: tuple, build: Callable[[], Level]) -> LevelCost:
        """The counts of the level ``build`` makes, by a family's own key (built and planned once)."""
        found = self.levels.get(key)
        if found is None:
            found = self.levels[key] = level_cost(build(), self.T)
        return found

    @property
    def ranks(self) -> list[int]:
        """Low-rank heads: powers of two from a sixteenth of the head dimension to D, and the head dimension."""
        grid = {2**k for k in range(self.D.bit_length()) if self.head_dim // 16 <= 2**k <= self.D}
        return sorted(grid | {self.head_dim})

    @property
    def windows(self) -> list[int]:
        """Band widths: T/4, T/8, ..., T/128."""
        return sorted({self.T >> k for k in range(2, 8) if self.T >> k >= 1})

    @property
    def splits(self) -> list[int]:
        """Non-trivial splits D = a * b (a = 1 or D degenerates to another family)."""
        return [a for a in divisors(self.D) if 1 < a < self.D]

    @property
    def units(self) -> int:
        return max(1, self.head_dim // self.rank_unit)


LOWRANK = "x[t, i] WQ[i, a] WK[j, a] x[u, j]"
BTT = "x[t, (i1 i2)] L[i2, i1, j1, k] R[j1, j2, i2, k] x[u, (j1 j2)]"
MONARCH = "x[t, (i1 i2)] L[i2, i1, j1] R[j1, j2, i2] x[u, (j1 j2)]"
KRONECKER = "x[t, (i1 i2)] A[i1, j1] B[i2, j2] x[u, (j1 j2)]"
TT = "x[t, (i1 i2 i3)] G1[i1, j1, k] G2[k, i2, j2, m] G3[m, i3, j3] x[u, (j1 j2 j3)]"
MLR = "x[(g t), i] Q[i, r] K[j, r] x[(g u), j]"
BILINEAR_MLR = "x[t, (k i)] L[k, i, r] R[k, j, r] x[u, (k j)]"


class Family:
    """A part of the space. ``specs`` lists its members as plain tuples; ``costs`` gives one
    member's level counts; ``options`` and ``ein`` say how ``describe`` reaches it."""

    name = ""

    def specs(self, space: Space) -> list[tuple]:
        raise NotImplementedError

    def costs(self, space: Space, spec: tuple) -> list[LevelCost]:
        raise NotImplementedError

    def options(self, space: Space, spec: tuple) -> dict:
        """The structure options that give this member (T and D first)."""
        return {"T": space.T, "D": space.D, **dict(spec)}

    def summary(self, spec: tuple) -> str:
        return " ".join(f"{k}={_text(v)}" for k, v in spec)

    def ein(self, space: Space, spec: tuple) -> str | None:
        """The .ein text of a member with no catalog file."""
        return None

    def stem(self, spec: tuple) -> str:
        return self.name

    def instance(self, space: Space, spec: tuple) -> Instance:
        """The member as ``describe`` resolves it (for the exact path and the tests)."""
        from . import catalog

        return catalog.find(self.name).resolve(self.options(space, spec))


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class Dense(Family):
    name = "dense"

    def specs(self, space):
        return [()]

    def costs(self, space, spec):
        D, T = space.D, space.T
        return [space.cost(("dense",), lambda: make_level("x[t, i] W[i, j] x[u, j]", {"t": T, "u": T, "i": D, "j": D}))]


class LowRank(Family):
    name = "lowrank"

    def specs(self, space):
        return [(("r", r),) for r in space.ranks]

    def costs(self, space, spec):
        ((_, r),) = spec
        return [space.cost(("lowrank", r), lambda: _lowrank(space, r))]


def _lowrank(space: Space, r: int, band: tuple[int, int] | None = None) -> Level:
    T, D = space.T, space.D
    return make_level(LOWRANK, {"t": T, "u": T, "i": D, "j": D, "a": r}, band)


class Swa(Family):
    name = "swa"

    def specs(self, space):
        return [(("r", r), ("window", w)) for r in space.ranks for w in space.windows]

    def costs(self, space, spec):
        (_, r), (_, w) = spec
        return [space.cost(("band", r, w), lambda: _lowrank(space, r, (0, w)))]


class GlobalSwa(Family):
    """A global and a windowed low-rank term splitting the head dimension (rg + rw = head dim)."""

    name = "global-swa"

    def specs(self, space):
        d = space.head_dim
        unit = max(space.rank_unit, d // 8)  # eighths of the head dimension at most
        return [(("rg", g), ("rw", d - g), ("window", w)) for g in range(unit, d, unit) for w in space.windows]

    def costs(self, space, spec):
        (_, rg), (_, rw), (_, w) = spec
        return [space.cost(("lowrank", rg), lambda: _lowrank(space, rg)),
                space.cost(("band", rw, w), lambda: _lowrank(space, rw, (0, w)))]  # fmt: skip


def _split_sizes(space: Space, a: int) -> dict[str, int]:
    """The index sizes of a two-core structure on the split D = a x (D / a)."""
    T, D = space.T, space.D
    return {"t": T, "u": T, "i1": a, "j1": a, "i2": D // a, "j2": D // a}


class Btt(Family):
    name = "btt"

    def specs(self, space):
        D = space.D
        return [(("a", a), ("s", s)) for a in space.splits for s in _powers(D) if s * (a + D // a) <= D]

    def costs(self, space, spec):
        (_, a), (_, s) = spec
        return [space.cost(("btt", a, s), lambda: make_level(BTT, {**_split_sizes(space, a), "k": s}))]


class Split(Family):
    """A structure over the splits of D alone (Monarch, Kronecker): ``name`` and its ``einsum``."""

    einsum = ""

    def specs(self, space):
        return [(("a", a),) for a in space.splits]

    def costs(self, space, spec):
        ((_, a),) = spec
        return [space.cost((self.name, a), lambda: make_level(self.einsum, _split_sizes(space, a)))]


class Monarch(Split):
    name, einsum = "monarch", MONARCH


class Kronecker(Split):
    name, einsum = "kronecker", KRONECKER


TT_RANKS = (1, 2, 4)  # TT-ranks tried for the three-core train (each level planned apart: the costliest to plan)


class TensorTrain(Family):
    """Every ordered D = a * b * c with cores of size >= 2, bond s <= a^2 and c^2 (past that it adds nothing)."""

    name = "tt"

    def specs(self, space):
        D = space.D
        found = []
        for a in divisors(D):
            for b in divisors(D // a):
                c = D // (a * b)
                if min(a, b, c) < 2 or a > c:  # a size-1 core is a two-core structure; c * b * a mirrors a * b * c
                    continue
                found += [(("a", a), ("b", b), ("s", s)) for s in TT_RANKS if s <= min(a, c) ** 2]
        return found

    def costs(self, space, spec):
        (_, a), (_, b), (_, s) = spec
        D, T = space.D, space.T
        c = D // (a * b)
        sizes = {"t": T, "u": T, "i1": a, "j1": a, "i2": b, "j2": b, "i3": c, "j3": c, "k": s, "m": s}
        return [space.cost(("tt", a, b, s), lambda: make_level(TT, sizes))]


def _powers(n: int) -> list[int]:
    return [2**k for k in range(n.bit_length()) if 2**k <= n]


class Mlr(Family):
    """MLR attention: level l scores pairs in the same of 2^(l-1) blocks with rank r_l."""

    name = "mlr"

    def divides(self, space: Space, levels: int) -> bool:
        return space.T % 2 ** (levels - 1) == 0

    def specs(self, space):
        found = []
        for levels in range(1, min(space.max_levels, space.units) + 1):
            if not self.divides(space, levels):
                break
            found += [(("levels", levels), ("ranks", tuple(u * space.rank_unit for u in parts)))
                      for parts in compositions(space.units, levels)]  # fmt: skip
        return found

    def level(self, space: Space, n: int, r: int) -> Level:
        """Level n (from 1) with rank r."""
        g = 2 ** (n - 1)
        return make_level(MLR, {"g": g, "t": space.T // g, "u": space.T // g, "i": space.D, "j": space.D, "r": r})

    def costs(self, space, spec):
        name, known = self.name, space.levels
        try:
            return [known[name, n, r] for n, r in enumerate(spec[1][1], 1)]
        except KeyError:
            return [space.cost((name, n, r), lambda n=n, r=r: self.level(space, n, r))
                    for n, r in enumerate(spec[1][1], 1)]  # fmt: skip

    def options(self, space, spec):
        return {"T": space.T, "D": space.D, "levels": spec[0][1], "ranks": list(spec[1][1])}


class BilinearMlr(Mlr):
    """Bilinear MLR: level l adds a block-diagonal low-rank matrix with 2^(l-1) feature blocks."""

    name = "bilinear-mlr"

    def divides(self, space: Space, levels: int) -> bool:
        return space.D % 2 ** (levels - 1) == 0

    def level(self, space: Space, n: int, r: int) -> Level:
        k = 2 ** (n - 1)
        return make_level(BILINEAR_MLR, {"t": space.T, "u": space.T, "k": k, "i": space.D // k, "j": space.D // k,
                                         "r": r})  # fmt: skip


# -- general multi-level members ----------------------------------------------------------------

FEATURE_NAMES = {"lowrank": "lr", "blockdiag": "bd", "btt": "btt", "kron": "kron"}


def _multi_level(space: Space, pattern: tuple, feature: tuple, n: int) -> tuple[str, dict[str, int], str, str]:
    """One level of a multi member: its score line, declared index sizes, band clause and scale."""
    if pattern[0] == "blocks":
        q, k, declared = f"(g{n} t)", f"(g{n} u)", {f"g{n}": pattern[1]}
    else:
        q, k, declared = "t", "u", {}
    kind = feature[0]
    if kind == "lowrank":
        line = f"x[{q}, i] Q{n}[i, r{n}] K{n}[j, r{n}] x[{k}, j]"
        declared[f"r{n}"] = feature[1]
        scale = f"1/sqrt({feature[1]})"
    elif kind == "blockdiag":
        line = f"x[{q}, (c{n} i)] L{n}[c{n}, i, r{n}] R{n}[c{n}, j, r{n}] x[{k}, (c{n} j)]"
        declared.update({f"c{n}": feature[1], f"r{n}": feature[2]})
        scale = f"1/sqrt({feature[1] * feature[2]})"
    elif kind == "btt":
        line = f"x[{q}, (i{n} i)] L{n}[i, i{n}, j{n}, s{n}] R{n}[j{n}, j, i, s{n}] x[{k}, (j{n} j)]"
        declared.update({f"i{n}": feature[1], f"j{n}": feature[1], f"s{n}": feature[2]})
        scale = "1/sqrt(D)"
    else:
        line = f"x[{q}, (i{n} i)] A{n}[i{n}, j{n}] B{n}[i, j] x[{k}, (j{n} j)]"
        declared.update({f"i{n}": feature[1], f"j{n}": feature[1]})
        scale = "1/sqrt(D)"
    band = f"  where 0 <= t - u <= {pattern[1]}" if pattern[0] == "band" else ""
    return line, declared, band, scale


def _multi_sizes(space: Space, pattern: tuple, feature: tuple, declared: dict[str, int]) -> dict[str, int]:
    """Every index size of a multi level (the declared ones and those x's axes imply)."""
    T, D = space.T, space.D
    p = pattern[1] if pattern[0] == "blocks" else 1
    kind = feature[0]
    inner = D // feature[1] if kind in ("blockdiag", "btt", "kron") else D
    return {**declared, "t": T // p, "u": T // p, "i": inner, "j": inner}


def _pattern_text(pattern: tuple) -> str:
    return {"global": "g", "blocks": f"b{pattern[-1]}", "band": f"w{pattern[-1]}"}[pattern[0]]


def _feature_text(feature: tuple) -> str:
    return FEATURE_NAMES[feature[0]] + "x".join(map(str, feature[1:]))


class Multi(Family):
    """Any per-level sequence pattern with any per-level feature structure, up to a level limit."""

    name = "multi"

    def patterns(self, space: Space) -> list[tuple]:
        blocks = [("blocks", 2**k) for k in range(1, 7) if space.T % 2**k == 0 and space.T >> k >= 2]
        return [("global",), *blocks, *(("band", w) for w in space.windows)]

    def features(self, space: Space) -> list[tuple]:
        D, d = space.D, space.head_dim
        found = [("lowrank", r) for r in sorted({max(1, d // 4), max(1, d // 2), d, min(D, 2 * d)})]
        found += [("blockdiag", k, max(1, d // k)) for k in (4, 16) if D % k == 0 and k < D]
        a = balanced_split(D)
        if a > 1:
            found += [("btt", a, 1), ("kron", a)]
        return found

    def specs(self, space):
        levels = [(p, f) for p in self.patterns(space) for f in self.features(space)]
        found = []
        for count in range(1, space.multi_levels + 1):
            for combo in itertools.combinations(levels, count):
                lowrank_patterns = [p for p, f in combo if f[0] == "lowrank"]
                if len(set(lowrank_patterns)) == len(lowrank_patterns):  # two low-rank terms on one pattern are one
                    found.append(combo)
        return found

    def costs(self, space, spec):
        out = []
        for pattern, feature in spec:

            def build(pattern=pattern, feature=feature):
                line, declared, _, _ = _multi_level(space, pattern, feature, 1)
                band = (0, pattern[1]) if pattern[0] == "band" else None
                return make_level(line, _multi_sizes(space, pattern, feature, declared), band)

            out.append(space.cost(("multi", pattern, feature), build))
        return out

    def options(self, space, spec):
        return {}

    def summary(self, spec):
        return " + ".join(f"{_pattern_text(p)} {_feature_text(f)}" for p, f in spec)

    def stem(self, spec):
        return "multi-" + "_".join(f"{_pattern_text(p)}-{_feature_text(f)}" for p, f in spec)

    def ein(self, space, spec):
        what = " + ".join(f"{p[0]}{'' if len(p) == 1 else ' ' + str(p[1])} {_feature_text(f)}" for p, f in spec)
        declarations, scores = [], []
        for n, (pattern, feature) in enumerate(spec, 1):
            line, declared, band, scale = _multi_level(space, pattern, feature, n)
            if declared:
                declarations.append("index " + ", ".join(f"{n}: {v}" for n, v in declared.items()))
            scores.append(f"score {'=' if n == 1 else '+='} {line}{band}  scale {scale}")
        head = [
            f'doc "multi-level member found by einsearch search: {what}"',
            "",
            f'size T = {space.T} "sequence length"',
            f'size D = {space.D} "model width (features per token)"',
            "",
        ]
        return "\n".join([*head, *declarations, *scores]) + "\n"

    def instance(self, space, spec):
        return from_text(self.ein(space, spec), f"{self.stem(spec)}.ein", self.stem(spec)).resolve()


# -- the two-core einsums of the einsum-search space ----------------------------------------------

AXES = ("a", "b", "g", "d", "e", "f", "r")  # alpha, beta, gamma, delta, epsilon, phi, rho
AXIS_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho")


def two_core_line(sizes: Sequence[int]) -> str:
    """``x[t, (g b a)] A[f, d, r, g, a] B[f, e, r, g, b] x[u, (f e d)]``, axes of size 1 left out."""
    size = dict(zip(AXES, sizes))

    def group(names: str) -> str:
        kept = [n for n in names if size[n] > 1]
        return kept[0] if len(kept) == 1 else f"({' '.join(kept)})"

    parts = [f"x[t, {group('gba')}]"]
    for factor, names in (("A", "fdrga"), ("B", "ferg" + "b")):
        kept = [n for n in names if size[n] > 1]
        if kept:
            parts.append(f"{factor}[{', '.join(kept)}]")
    parts.append(f"x[u, {group('fed')}]")
    return " ".join(parts)


class TwoCore(Family):
    """y = sum A[f, d, r, g, a] B[f, e, r, g, b] x[g, b, a]: query features (g b a), key (f e d)."""

    name = "einsum"

    def specs(self, space):
        D, step = space.D, space.einsum_grid
        if D < 2:
            return []
        triples = [(i, j, step - i - j) for i in range(step + 1) for j in range(step + 1 - i)]
        sides = sorted({self.sizes(D, t, step) for t in triples})
        ranks = sorted({nearest_divisor(D, D ** (k / step)) for k in range(step + 1)})
        found = []
        for (a, b, g), (d, e, f), r in itertools.product(sides, sides, ranks):
            sizes = (a, b, g, d, e, f, r)
            if self._valid(sizes):
                found.append(tuple(zip(AXIS_NAMES, sizes)))
        return found

    @staticmethod
    def sizes(D: int, exponents: tuple[int, int, int], step: int) -> tuple[int, int, int]:
        first = nearest_divisor(D, D ** (exponents[0] / step))
        second = nearest_divisor(D // first, D ** (exponents[1] / step))
        return first, second, D // (first * second)

    @staticmethod
    def _valid(sizes: tuple[int, ...]) -> bool:
        a, b, g, d, e, f, r = sizes
        A, B = a * d * f * g * r, b * e * f * g * r
        return A > 1 and B > 1  # a factor of size 1 is a scalar: the member is a one-factor structure

    def costs(self, space, spec):
        sizes = tuple(v for _, v in spec)
        line = two_core_line(sizes)
        all_sizes = {**dict(zip(AXES, sizes)), "t": space.T, "u": space.T}
        return [space.cost(("einsum", sizes), lambda: make_level(line, all_sizes))]

    def options(self, space, spec):
        return {}

    def summary(self, spec):
        return " ".join(f"{AXES[n]}{v}" for n, (_, v) in enumerate(spec) if v > 1)

    def stem(self, spec):
        return "einsum-" + "-".join(f"{AXES[n]}{v}" for n, (_, v) in enumerate(spec) if v > 1)

    def ein(self, space, spec):
        sizes = tuple(v for _, v in spec)
        line = two_core_line(sizes)
        declared = ", ".join(f"{AXES[n]}: {v}" for n, v in enumerate(sizes) if v > 1)
        theta = ", ".join(f"{name} {v}" for name, v in zip(AXIS_NAMES, sizes))
        return (f'doc "two-core einsum of the einsum-search space, axis sizes {theta}"\n\n'
                f'size T = {space.T} "sequence length"\nsize D = {space.D} "model width (features per token)"\n\n'
                f"index {declared}\nscore = {line}  scale 1/sqrt(D)\n")  # fmt: skip

    def instance(self, space, spec):
        return from_text(self.ein(space, spec), f"{self.stem(spec)}.ein", self.stem(spec)).resolve()


# -- a user's own files -------------------------------------------------------------------------


class UserFile(Family):
    """A user's .ein file over a small grid around each declared option: every choice; whole numbers
    at their default x 1/4, 1/2, 1, 2, 4; lists at their default."""

    def __init__(self, path: str) -> None:
        from .catalog import find

        self.path = path
        self.structure = find(path)
        self.name = path
        self.truncated = False
        self._resolved: dict[tuple, Instance | None] = {}

    def specs(self, space):
        base = self.structure.resolve({"T": space.T, "D": space.D})
        axes = []
        for decl in self.structure.options:
            if decl.name in ("T", "D"):
                continue
            value = base.values[decl.name]
            if decl.kind == "choice":
                axes.append([(decl.name, c) for c in decl.choices])
            elif isinstance(value, list):
                axes.append([(decl.name, tuple(value))])
            else:
                low = 1 if decl.kind == "size" else 0
                grid = sorted({v for v in (value // 4, value // 2, value, value * 2, value * 4) if v >= low} | {value})
                axes.append([(decl.name, v) for v in grid])
        found = list(itertools.islice(itertools.product(*axes), USER_GRID_LIMIT + 1))
        self.truncated = len(found) > USER_GRID_LIMIT
        return found[:USER_GRID_LIMIT]

    def resolved(self, space, spec) -> Instance | None:
        """The file at these options, or None when they do not resolve (a size that does not divide, ...)."""
        if spec not in self._resolved:
            try:
                self._resolved[spec] = self.instance(space, spec)
            except EinsearchError:
                self._resolved[spec] = None
        return self._resolved[spec]

    def costs(self, space, spec):
        instance = self.resolved(space, spec)
        if instance is None:
            return None
        return [space.cost(("user", canonical(level)), lambda level=level: level) for level in instance.levels]

    def options(self, space, spec):
        return {"T": space.T, "D": space.D, **{k: list(v) if isinstance(v, tuple) else v for k, v in spec}}

    def stem(self, spec):
        return Path(self.path).stem

    def instance(self, space, spec):
        return self.structure.resolve(self.options(space, spec))

    def shares_factors(self, instance: Instance) -> bool:
        """Whether two levels share a factor (then params and rank come from the whole instance)."""
        names = [op.name for level in instance.levels for op in level.factors]
        return len(names) != len(set(names))


FAMILIES: dict[str, type[Family]] = {
    cls.name: cls
    for cls in (Dense, LowRank, Monarch, Btt, Kronecker, TensorTrain, Swa, GlobalSwa, Mlr, BilinearMlr, Multi, TwoCore)
}


# ---------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True)
class Candidate:
    """One member of the space with its numbers (params, FLOPs and decode FLOPs for all heads)."""

    structure: str
    family: str
    options: dict
    summary: str
    params: int
    flops: int
    rank_bound: int
    near_share: float
    decode_flops: int
    cache_bytes: int
    taxonomy: dict[str, float] | None
    describe: str
    generate: str
    ein: str | None = None  # the .ein text of a member with no catalog file
    file: str | None = None  # where describe and generate expect that text

    def to_dict(self) -> dict:
        out = {
            "structure": self.structure,
            "family": self.family,
            "options": self.options,
            "summary": self.summary,
            "params": self.params,
            "flops": self.flops,
            "rank_bound": self.rank_bound,
            "near_share": self.near_share,
            "decode_flops": self.decode_flops,
            "cache_bytes": self.cache_bytes,
            "taxonomy": self.taxonomy,
            "describe": self.describe,
            "generate": self.generate,
        }
        if self.ein is not None:
            out.update({"file": self.file, "ein": self.ein})
        return out


class Row(NamedTuple):
    """A scored member before it becomes a Candidate (kept light: most never do)."""

    order: int
    family: Family
    spec: tuple
    costs: Costs


@dataclass(frozen=True)
class SearchResult:
    """The ranked candidates, and what was asked (``query``) and done."""

    query: dict
    candidates: tuple[Candidate, ...]
    scored: int
    within_budget: int
    duplicates: int
    seconds: float
    truncated: bool
    front: tuple[Candidate, ...] = ()  # the Pareto front over everything within budget (for the plot)
    cloud: tuple[tuple[int, float], ...] = field(default=(), repr=False)  # (FLOPs, objective) within budget
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        query = dict(self.query)
        query.update({"scored": self.scored, "within_budget": self.within_budget, "duplicates": self.duplicates,
                      "truncated": self.truncated, "seconds": round(self.seconds, 3), "units": UNITS})  # fmt: skip
        if self.notes:
            query["notes"] = list(self.notes)
        return {"query": query, "candidates": [c.to_dict() for c in self.candidates]}

    def csv(self) -> str:
        buffer = io.StringIO()
        columns = ["structure", "family", "options", "params", "flops", "rank_bound", "near_share", "decode_flops",
                   "cache_bytes", "psi", "omega", "nu", "describe", "generate"]  # fmt: skip
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for c in self.candidates:
            tax = c.taxonomy or {}
            options = " ".join(f"{k}={_text(v)}" for k, v in c.options.items()) or c.summary
            writer.writerow([c.structure, c.family, options, c.params, c.flops, c.rank_bound, f"{c.near_share:.6g}",
                             c.decode_flops, c.cache_bytes, *(f"{tax[k]:.6g}" if k in tax else "" for k in
                             ("psi", "omega", "nu")), c.describe, c.generate])  # fmt: skip
        return buffer.getvalue()

    def text(self) -> str:
        q = self.query
        budget = "none" if q["budget"] is None else f"{q['budget']:.4g} FLOPs"
        if q["cache_budget"] is not None:
            budget += f", cache {q['cache_budget']:.4g} B/token"
        stopped = "; stopped at --limit" if self.truncated else ""
        lines = [f"search  D={q['D']}  T={q['T']}  heads={q['heads']}  budget {budget}  objective {q['objective']}"
                 + ("  (Pareto front)" if q["pareto"] else ""),
                 f"scored {self.scored:,} candidates in {self.seconds:.2f} s: {self.within_budget:,} within budget, "
                 f"{self.duplicates:,} duplicate{'' if self.duplicates == 1 else 's'} removed{stopped}"]  # fmt: skip
        lines += [f"note: {n}" for n in self.notes]
        if not self.candidates:
            lines.append("no candidate fits: raise --budget or --cache-budget, or widen --family")
            return "\n".join(lines)
        header = ("#", "structure", "options", "params", "FLOPs", "rank<=", "near", "decode", "cache B")
        rows = [(str(n), c.structure if c.ein is None else c.family,
                 " ".join(f"{k}={_text(v)}" for k, v in c.options.items() if k not in ("T", "D")) or c.summary,
                 si(c.params), si(c.flops), f"{c.rank_bound:,}", f"{c.near_share:.2f}", si(c.decode_flops),
                 f"{c.cache_bytes:,}") for n, c in enumerate(self.candidates, 1)]  # fmt: skip
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        right = {0, 3, 4, 5, 6, 7, 8}

        def fmt(r):
            return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))

        lines += ["", fmt(header), *(fmt(r).rstrip() for r in rows), ""]
        lines += ["params, FLOPs (2 per multiply-add, all T x T scores of one sequence) and decode (FLOPs for the "
                  "token at position T)", "are for all heads; rank<= is the rank bound of one head; near is the share "
                  "of pair FLOPs within distance T/8;", "cache is the generated module's decoding cache at context T, "
                  "float32 bytes per token (all heads)"]  # fmt: skip
        best = self.candidates[0]
        lines += ["", f"best    {best.describe}", f"        {best.generate}"]
        if best.ein is not None and not Path(best.file).exists():
            lines.append(f"        ({best.file} is not written yet: pass --ein-dir DIR, or save the `ein` text of "
                         "--json)")  # fmt: skip
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def si(value: float) -> str:
    """12.3G: three significant digits with a decimal prefix."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if not float(value).is_integer() else str(int(value))


def parse_amount(text: str | float | int, option: str) -> float:
    """``2e9``, ``2G``, ``1.5T``, ``64k``, ``64Ki`` -> a positive number (decimal prefixes, or binary with i)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGTP]i?)?\s*", str(text))
        if not match:
            raise OptionError(option, f"expected a number such as 2e9, 2G or 64k, got {text!r}")
        value = float(match.group(1))
        prefix = match.group(2) or ""
        if prefix:
            power = "kMGTP".index(prefix[0].replace("K", "k")) + 1
            value *= (1024 if prefix.endswith("i") else 1000) ** power
    if not math.isfinite(value) or value <= 0:
        raise OptionError(option, f"must be a positive number, got {text!r}")
    return value


def objective_value(objective: str, costs: Costs, heads: int) -> float:
    """The objective as a number to maximise."""
    if objective == "rank":
        return costs.rank
    if objective == "params":
        return costs.params * heads
    if objective == "rank-per-flop":
        return costs.rank / max(1, costs.flops * heads)
    if objective == "local-bias":
        return costs.near_share
    return -costs.decode * heads  # decode: fewer FLOPs is better


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (FLOPs, objective to maximise) that no other beats: none has no more
    FLOPs and no lower objective with one of the two strictly better. Ties are all kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    i = 0
    while i < len(order):
        flops = points[order[i]][0]
        group = []
        while i < len(order) and points[order[i]][0] == flops:
            group.append(order[i])
            i += 1
        top = points[group[0]][1]
        if top > best:
            front += [j for j in group if points[j][1] == top]
            best = top
    return sorted(front)


def _validate(D, T, heads, objective, top, limit, max_levels, multi_levels, rank_unit, einsum_grid) -> None:
    for name, value, low in (("D", D, 1), ("T", T, 1), ("heads", heads, 1), ("max-levels", max_levels, 1),
                             ("multi-levels", multi_levels, 1), ("einsum-grid", einsum_grid, 1)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise OptionError(name, f"must be a whole number >= {low}, got {value!r}")
    for name, value, low in (("top", top, 0), ("limit", limit, 1), ("rank-unit", rank_unit, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise OptionError(name, f"must be a whole number >= {low}, got {value!r}")
    if D % heads:
        raise OptionError("heads", f"must divide D (the head dimension is D / heads), got D = {D}, heads = {heads}")
    if objective not in OBJECTIVES:
        raise OptionError("objective", f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if einsum_grid > 8:
        raise OptionError("einsum-grid", f"at most 8 (steps of 1/8 give thousands of members), got {einsum_grid}")
    if rank_unit is not None and (D // heads) % rank_unit:
        raise OptionError("rank-unit", f"must divide the head dimension D / heads = {D // heads}, got {rank_unit}")


def families_of(names: Iterable[str] | None, include: Sequence[str]) -> list[Family]:
    """The families asked for (all by default), in the order duplicates are resolved, then one per
    included file (always searched: naming it in ``names`` too is allowed)."""
    wanted = list(FAMILIES) if names is None else [n.strip() for n in names if n.strip()]
    files = {key for path in include for key in (path, Path(path).stem)}
    for name in wanted:
        if name not in FAMILIES and name not in files:
            from difflib import get_close_matches

            close = get_close_matches(name, list(FAMILIES), 1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise OptionError("family", f"no family {name!r}{hint} (families: {', '.join(FAMILIES)}; or a file "
                              "given with --include)")  # fmt: skip
    return [FAMILIES[n]() for n in FAMILIES if n in wanted] + [UserFile(path) for path in include]


def search(
    D: int,
    T: int,
    heads: int = 1,
    *,
    budget: float | str | None = None,
    cache_budget: float | str | None = None,
    objective: str = "rank",
    families: Iterable[str] | None = None,
    include: Sequence[str | Path] = (),
    top: int | None = 20,
    pareto: bool = False,
    limit: int | None = None,
    max_levels: int = 8,
    multi_levels: int = 2,
    rank_unit: int | None = None,
    einsum_grid: int = 2,
    ein_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Every structure of the space that fits the budget, best ``objective`` first (module doc)."""
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of small tuples: the cycle collector would rescan the plans' caches often
    try:
        return _search(
            D,
            T,
            heads,
            budget,
            cache_budget,
            objective,
            families,
            include,
            top,
            pareto,
            limit,
            max_levels,
            multi_levels,
            rank_unit,
            einsum_grid,
            ein_dir,
            progress,
        )
    finally:
        if collecting:
            gc.enable()


def _search(D, T, heads, budget, cache_budget, objective, families, include, top, pareto, limit, max_levels,
            multi_levels, rank_unit, einsum_grid, ein_dir, progress) -> SearchResult:  # fmt: skip
    started = time.perf_counter()
    _validate(D, T, heads, objective, top, limit, max_levels, multi_levels, rank_unit, einsum_grid)
    flop_budget = None if budget is None else parse_amount(budget, "budget")
    byte_budget = None if cache_budget is None else parse_amount(cache_budget, "cache-budget")
    space = Space(D, T, heads, max_levels, multi_levels, rank_unit, einsum_grid)
    chosen = families_of(families, [str(p) for p in include])
    plans = [(family, family.specs(space)) for family in chosen]
    total = sum(len(specs) for _, specs in plans)
    if limit:
        total = min(total, limit)
    kept: dict[tuple, Row] = {}  # one row per family of matrices at the same costs: the first found
    scored = within = 0
    truncated = False
    notes = [f"{f.path}: only the first {USER_GRID_LIMIT} option combinations were tried"
             for f in chosen if isinstance(f, UserFile) and f.truncated]  # fmt: skip
    for family, specs in plans:
        if truncated:
            break
        for spec in specs:
            if limit and scored >= limit:
                truncated = True
                break
            scored += 1
            if progress is not None and scored % 512 == 0:
                progress(scored, total)
            found = score_spec(space, family, spec)
            if found is None:
                continue
            costs, levels = found
            if flop_budget is not None and costs.flops * heads > flop_budget:
                continue
            if byte_budget is not None and cache_bytes(costs, space) > byte_budget:
                continue
            within += 1
            key = (tuple(sorted(level.family for level in levels)), *costs[:3], costs.decode, costs.cached)
            if key not in kept:
                kept[key] = Row(len(kept), family, spec, costs)
    if progress is not None:
        progress(scored, total)
    unique = list(kept.values())
    values = [objective_value(objective, r.costs, heads) for r in unique]
    points = [(r.costs.flops, v) for r, v in zip(unique, values)]
    front_ids = pareto_front(points)
    ids = front_ids if pareto else range(len(unique))
    ranked = sorted(ids, key=lambda i: (-values[i], unique[i].costs.flops, -unique[i].costs.rank, unique[i].order))
    shown = ranked if not top else ranked[:top]
    directory = None if ein_dir is None else Path(ein_dir)
    candidates = tuple(to_candidate(space, unique[i], directory) for i in shown)
    front = tuple(to_candidate(space, unique[i], directory) for i in front_ids) if front_ids else ()
    query = {"D": D, "T": T, "heads": heads, "budget": flop_budget, "cache_budget": byte_budget,
             "objective": objective, "families": [f.name for f in chosen], "top": top, "pareto": pareto,
             "limit": limit, "max_levels": max_levels, "multi_levels": multi_levels,
             "rank_unit": space.rank_unit, "einsum_grid": einsum_grid}  # fmt: skip
    cloud = tuple((r.costs.flops * heads, v) for r, v in zip(unique, values))
    seconds = time.perf_counter() - started
    return SearchResult(query, candidates, scored, within, within - len(unique), seconds, truncated, front, cloud,
                        tuple(notes))  # fmt: skip


def score_spec(space: Space, family: Family, spec: tuple) -> tuple[Costs, list[LevelCost]] | None:
    """A member's numbers and its levels' counts: from those counts, else (rarely) from its whole
    plan. None when a user's file does not resolve at these options."""
    levels = family.costs(space, spec)
    if levels is None:
        return None
    if isinstance(family, UserFile) and family.shares_factors(family.resolved(space, spec)):
        return instance_costs(family.resolved(space, spec)), levels
    costs = combine(levels, space.T, space.D)
    if costs is None:
        costs = planned_costs(levels, space.T, space.D)
    return costs, levels


def cache_bytes(costs: Costs, space: Space) -> int:
    """Float32 bytes per token that the generated module's decoding cache holds at context T, all
    heads (codegen.cache_bytes_per_token, from the counts already summed here)."""
    return -(-ITEMSIZE * (space.heads * costs.cached + space.D * costs.longest) // space.T)


def to_candidate(space: Space, row: Row, directory: Path | None) -> Candidate:
    family, spec, costs = row.family, row.spec, row.costs
    H = space.heads
    options = family.options(space, spec)
    ein = family.ein(space, spec)
    stem = family.stem(spec)
    if ein is not None and not isinstance(family, UserFile):
        file = str((directory / f"{stem}.ein") if directory is not None else Path(f"{stem}.ein"))
        target, shown = file, {}
    else:
        file = None
        target, shown = family.name, options
    flags = " ".join(f"--{k} {_text(v)}" for k, v in shown.items())
    flags = f" {flags}" if flags else ""
    quoted = shlex.quote(target)
    module = re.sub(r"\W", "_", Path(stem).stem) + "_attn.py"
    return Candidate(
        structure=stem if ein is not None else family.name,
        family=family.name if not isinstance(family, UserFile) else Path(family.path).stem,
        options=options,
        summary=family.summary(spec),
        params=costs.params * H,
        flops=costs.flops * H,
        rank_bound=costs.rank,
        near_share=costs.near_share,
        decode_flops=costs.decode * H,
        cache_bytes=cache_bytes(costs, space),
        taxonomy=taxonomy(costs, space.D),
        describe=f"einsearch describe {quoted}{flags} --heads {H}",
        generate=f"einsearch generate {quoted}{flags} --heads {H} -o {module}",
        ein=ein,
        file=file,
    )


# ---------------------------------------------------------------------------------------------
# The front's figure


def catalog_defaults(D: int, T: int, heads: int, objective: str) -> list[tuple[str, int, float]]:
    """Each catalog structure at its default options (with this T and D): name, FLOPs (all heads)
    and objective value; structures whose defaults do not fit these sizes are left out."""
    from . import catalog

    found = []
    for name in catalog.names():
        try:
            instance = catalog.find(name).resolve({"T": T, "D": D})
        except EinsearchError:
            continue
        levels = [level_cost(level, T) for level in instance.levels]
        names = [op.name for level in instance.levels for op in level.factors]
        costs = combine(levels, T, D) if len(names) == len(set(names)) else None
        if costs is None:
            costs = instance_costs(instance)
        found.append((name, costs.flops * heads, objective_value(objective, costs, heads)))
    return found


def plot_front(result: SearchResult, path: Path) -> None:
    """FLOPs against the objective: every candidate within budget, the Pareto front, and the
    catalog at its defaults (matplotlib, the optional ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = result.query
    objective = q["objective"]
    sign = -1 if objective == "decode" else 1  # decode is kept as -FLOPs to maximise; drawn as FLOPs
    label = {
        "rank": "rank (cut bound, one head)",
        "params": "params (all heads)",
        "rank-per-flop": "rank / FLOP",
        "local-bias": "share of pair FLOPs within T/8",
        "decode": "decode FLOPs per token (lower is better)",
    }
    fig, ax = plt.subplots(figsize=(8, 5.2))
    if result.cloud:
        xs, ys = zip(*result.cloud)
        ax.scatter(xs, [sign * y for y in ys], s=4, c="0.75", label=f"within budget ({len(xs):,})", rasterized=True)
    front = sorted((c.flops, sign * candidate_value(objective, c)) for c in result.front)
    if front:
        ax.step(*zip(*front), where="post", color="tab:red", lw=1.2)
        ax.scatter(*zip(*front), s=14, color="tab:red", label=f"Pareto front ({len(front)})", zorder=3)
    marks: dict[tuple[int, float], list[str]] = {}
    for name, flops, value in catalog_defaults(q["D"], q["T"], q["heads"], objective):
        marks.setdefault((flops, sign * value), []).append(name)
    for n, ((flops, value), names) in enumerate(sorted(marks.items())):
        ax.scatter([flops], [value], marker="*", s=90, color="black", zorder=4)
        ax.annotate(", ".join(names), (flops, value), textcoords="offset points", xytext=(4, 4 + 9 * (n % 3)),
                    fontsize=8)  # fmt: skip
    if q["budget"] is not None:
        ax.axvline(q["budget"], color="tab:blue", ls="--", lw=1, label="budget")
    ax.set_xscale("log")
    if objective != "local-bias":
        ax.set_yscale("log")
    ax.set(xlabel="FLOPs of all heads' scores, one sequence (2 per multiply-add)", ylabel=label[objective],
           title=f"einsearch search: D={q['D']} T={q['T']} heads={q['heads']} (stars: catalog defaults)")  # fmt: skip
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def candidate_value(objective: str, c: Candidate) -> float:
    """A listed candidate's objective, as ``objective_value`` gives it (a number to maximise)."""
    return {"rank": c.rank_bound, "params": c.params, "rank-per-flop": c.rank_bound / max(1, c.flops),
            "local-bias": c.near_share, "decode": -c.decode_flops}[objective]  # fmt: skip
