"""Rank: the cheapest-cut bound on a level's tensor network, and the bounds of a sum of levels.

A matrix given by a tensor network has rank at most the product of the sizes of any set of
indices whose removal separates its row legs from its column legs. The cheapest such set is a
minimum vertex cut (indices are the cuttable nodes, weighted by log size), found as a max-flow
on the split graph (``source_side``; the graphs have tens of nodes, so plain Python does).
Indices shared by rows and columns (block indices) make the matrix block-diagonal: they multiply
the bound instead of being cut.

Everything past one level's cut is arithmetic on a ``LevelRank`` per level (its pattern, its cut,
its own bound on the score matrix), so ``describe`` and ``search`` combine levels the same way:

* ``rank_bounds``: the structure's matrix (D x D for a feature structure, else T x T), the least
  of several bounds (the side, the sum of the levels' bounds, and for block levels two bounds
  that see the levels overlap in x's column span);
* ``pair_ranks``: the D x D matrix a pair is scored with, the sum of the M_l of the levels that
  score it, near (distance 0) and far (every pair at distance >= T/8).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ..canonical import feature_key
from ..planner import memo
from ..sequence import SequencePattern, refinement_cells
from ..structure import Instance, Level

FAR = 8  # far pairs: distance t - u at least T / FAR


@dataclass(frozen=True)
class Cut:
    """A rank bound with its witness: the indices cut, and the block indices it repeats over."""

    rank: int
    indices: tuple[str, ...]
    blocks: int


@dataclass(frozen=True, slots=True)
class LevelRank:
    """What the bounds of a sum of levels need of one level, at one T (``level_rank``)."""

    pattern: SequencePattern
    cut: int  # the cut bound on the rank of its D x D matrix M_l
    bound: int  # its own bound on the T x T score matrix
    near: bool  # it scores every pair at distance 0
    far: bool  # it scores every pair at distance t - u >= T/8
    matrix: Hashable | None = None  # equal for levels with the very same M_l; None: a matrix of its own


def min_cut(level: Level, rows: tuple[str, ...], cols: tuple[str, ...], tensors: list[tuple[str, ...]]) -> Cut:
    """The cheapest index cut of ``tensors`` between ``rows`` and ``cols`` legs."""
    shared = tuple(i for i in rows if i in cols)
    blocks = math.prod(level.sizes[i] for i in shared)
    graph: dict = {"source": {}, "sink": {}}

    def edge(tail, head, capacity: float = math.inf) -> None:
        graph.setdefault(tail, {})[head] = capacity
        graph.setdefault(head, {})

    for index in {i for t in tensors for i in t} - set(shared):  # an index is a node of capacity log(size)
        edge(("in", index), ("out", index), math.log(level.sizes[index]))
    for n, tensor in enumerate(tensors):
        for index in set(tensor) - set(shared):
            edge(("out", index), ("tensor", n))  # no capacity: tensors cannot be cut
            edge(("tensor", n), ("in", index))
    for index in set(rows) - set(shared):
        edge("source", ("in", index))
    for index in set(cols) - set(shared):
        edge(("out", index), "sink")
    reach = source_side(graph, "source", "sink")
    cut = tuple(sorted(i for kind, i in (n for n in reach if isinstance(n, tuple) and n[0] == "in")
                       if ("out", i) not in reach))  # fmt: skip
    return Cut(blocks * math.prod(level.sizes[i] for i in cut), cut, blocks)


SATURATED = 1e-9  # residual capacity below this (in log size) counts as none: float sums of logs


def source_side(graph: dict, source, sink) -> set:
    """The source side of a minimum cut: the nodes ``source`` reaches in the residual graph once
    the flow is maximal (Edmonds-Karp: shortest augmenting paths). ``graph[u][v]`` is the
    capacity of edge u -> v, math.inf for one that cannot be cut."""
    residual = {u: dict(heads) for u, heads in graph.items()}
    for u, heads in graph.items():
        for v in heads:
            residual[v].setdefault(u, 0.0)
    while True:
        parent = {source: None}
        queue = deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, capacity in residual[u].items():
                if capacity > SATURATED and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return set(parent)
        path, head = [], sink
        while parent[head] is not None:
            path.append((parent[head], head))
            head = parent[head]
        flow = min(residual[u][v] for u, v in path)
        for u, v in path:
            residual[u][v] -= flow
            residual[v][u] += flow


def feature_cut(level: Level) -> Cut:
    """Bound on the rank of the level's D x D matrix M_l (rows: query features), worked out once
    per matrix up to names (``canonical.feature_key``, in the planner's cache)."""
    key, order = feature_key(level)

    def compute() -> tuple[int, tuple[int, ...], int]:
        tensors = [op.indices for op in level.factors] + [level.query_features, level.key_features]
        cut = min_cut(level, level.query_features, level.key_features, tensors)
        return cut.rank, tuple(order.index(i) for i in cut.indices), cut.blocks

    rank, positions, blocks = memo(("feature cut", key), compute)
    return Cut(rank, tuple(order[p] for p in positions), blocks)


def level_rank(level: Level, T: int, matrix: Hashable | None = None) -> LevelRank:
    """The level's ``LevelRank`` at sequence length T.

    Its own bound on the score matrix: cutting the network between the query's and the key's
    sequence indices takes, per block, the non-block sequence index (T / blocks) or a cut of M_l
    (x joins the sequence index to all its features, so nothing cheaper separates them). A band
    keeps at most its rows, and at most that bound plus the rows past its edges
    (``band_complement_rows``).
    """
    cut = feature_cut(level).rank
    pattern = level.pattern
    bound = level.blocks * min(T // level.blocks, cut)
    if level.band is not None:
        bound = min(pattern.rows(T), bound + band_complement_rows(pattern, T))
    near, far = pattern.covers_every(T, 0, 0), pattern.covers_every(T, far_distance(T), T - 1)
    return LevelRank(pattern, cut, bound, near, far, matrix)


def band_complement_rows(pattern: SequencePattern, T: int) -> int:
    """Rows holding pairs of the pattern's blocks past either edge of its band.

    With A the level without its band (rank at most its sequence cut), P o A = A - L o A - U o A,
    L and U the pairs with t - u > hi and t - u < lo; a matrix has no more rank than nonzero rows.
    So a band that keeps most pairs has a rank near A's (and P o A has at most P's rows anyway).
    """
    lo, hi = pattern.band
    past = SequencePattern(pattern.blocks, (hi + 1, T)), SequencePattern(pattern.blocks, (-T, lo - 1))
    return sum(p.rows(T) for p in past)


def level_ranks(instance: Instance) -> list[LevelRank]:
    """Each level's ``LevelRank``, levels with the very same factors sharing one matrix."""
    return [level_rank(level, instance.T, matrix_key(level)) for level in instance.levels]


def matrix_key(level: Level) -> tuple:
    """Equal for levels with the very same M (the same factors on the same feature indices), which
    count once in a sum of M's."""
    return tuple((op.name, op.axes) for op in level.factors), level.query_features, level.key_features


def rank_bound(instance: Instance) -> int:
    """Generic-rank bound of the structure's matrix: M (D x D) or the T x T score matrix (the
    least of ``rank_bounds``)."""
    return min(rank_bounds(instance).values())


def rank_bounds(instance: Instance) -> dict[str, int]:
    """Every cheap upper bound on the rank of the structure's matrix, by name (``bounds``)."""
    return bounds(level_ranks(instance), instance.T, instance.D, instance.is_feature_structure)


def bounds(levels: Sequence[LevelRank], T: int, D: int, feature: bool) -> dict[str, int]:
    """The bounds of a structure of these levels.

    ``side``: the matrix is D x D (feature structure) or T x T. ``levels``: rank is subadditive,
    so the sum of the levels' own bounds. For the T x T score matrix also, over its block levels
    (the band levels add their own bounds): ``refinement``, the columns lie in the span of x cut
    to the cells of the common refinement of the levels' blocks, and ``nested blocks``, the rank
    of the blocks' coupling matrix taken eigenspace by eigenspace when the block counts nest
    (``nested_blocks_bound``).
    """
    if feature:
        return {"side": D, "levels": sum(level.cut for level in levels)}
    blocked = [level for level in levels if level.pattern.band is None]
    total = sum(level.bound for level in levels)
    found = {"side": T, "levels": total}
    if not blocked:
        return found
    banded = total - sum(level.bound for level in blocked)
    blocked.sort(key=finest_first)
    patterns = [level.pattern for level in blocked]
    nest = all(a.nests_in(b) for a, b in zip(patterns, patterns[1:]))
    refined = refinement_bound(patterns, T, D, nest)
    if refined is not None:
        found["refinement"] = banded + refined
    if nest:
        found["nested blocks"] = banded + nested_blocks_bound(blocked, D)
    return found


def finest_first(level: LevelRank) -> int:
    return -level.pattern.blocks


def refinement_bound(patterns: list[SequencePattern], T: int, D: int, nest: bool | None = None) -> int | None:
    """sum over the cells c of the common refinement of the block partitions of min(|c|, D).

    A block level is sum_b E_b X M X^T E_b (E_b keeps the rows of block b), and every block b is
    a union of cells, so each column of the score matrix lies in the span of the columns of the
    E_c X, c a cell, whose rank is at most min(|c|, D). None when the cells are too many to list
    (``sequence.refinement_cells``; ``nest``: whether the block counts nest, when known).
    """
    cells = refinement_cells(patterns, T, nest)
    return None if cells is None else sum(count * min(length, D) for length, count in cells.items())


def nested_blocks_bound(levels: Sequence[LevelRank], D: int) -> int:
    """Rank bound for block levels whose block counts q_1 < q_2 < ... < q_m nest (each divides the
    next), given finest first.

    With the cells the finest blocks, the score matrix is Xc N Xc^T: Xc is block-diagonal with x's
    rows of each cell, and N, over (cell, feature), is sum_l (P_l kron M_l) where P_l is 1 on the
    pairs of cells in one block of level l (I_{p_l} kron J). The P_l commute and share the
    eigenspaces V_1 (constant on each q_1-block, dimension q_1) and V_k (constant on each
    q_k-block, summing to zero over each q_(k-1)-block, dimension q_k - q_(k-1)): P_l is a
    nonzero multiple of the identity on V_k when p_l >= q_k and zero otherwise. So
    rank(N) = sum_k dim V_k * rank(sum_{l: p_l >= q_k} c_l M_l), each term at most
    ``form_rank`` of those levels; and rank(S) <= rank(N). (When every cell has at least D rows,
    Xc has full column rank for a generic x, so rank(S) = rank(N).)
    """
    total = coupled = 0
    seen: set = set()
    for n, level in enumerate(levels):  # coupled: the cuts of the distinct M's of the levels with p_l >= q
        if level.matrix is None or level.matrix not in seen:
            coupled += level.cut
            seen.add(level.matrix)
        q = level.pattern.blocks
        coarser = levels[n + 1].pattern.blocks if n + 1 < len(levels) else 0
        if coarser != q:
            total += (q - coarser) * min(D, coupled)
    return total


def form_rank(levels: Sequence[LevelRank], D: int) -> int:
    """Bound on the rank of the sum of the levels' D x D matrices: min(D, the sum of their cuts),
    a matrix shared by several levels counted once."""
    seen: set = set()
    total = 0
    for level in levels:
        if level.matrix is None or level.matrix not in seen:
            total += level.cut
            seen.add(level.matrix)
    return min(D, total)


def far_distance(T: int) -> int:
    """The least distance t - u of a far pair: T / FAR, rounded up (at least 1)."""
    return max(1, -(-T // FAR))


def pair_ranks(levels: Sequence[LevelRank], D: int) -> tuple[int, int]:
    """Bounds on the rank of the D x D matrix a pair is scored with (the sum of the M_l of the
    levels that score it): near, on the diagonal (t = u); far, that of the levels that score every
    pair at distance t - u >= T/8 (0 when some far pair is not scored at all)."""
    near = far = 0
    for level in levels:
        if level.matrix is not None:  # a matrix some levels may share: count it once
            return form_rank([lv for lv in levels if lv.near], D), form_rank([lv for lv in levels if lv.far], D)
        near += level.cut if level.near else 0
        far += level.cut if level.far else 0
    return min(D, near), min(D, far)
