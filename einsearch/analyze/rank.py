"""Rank: the cheapest-cut bound on a level's tensor network, and a numeric check.

A matrix given by a tensor network has rank at most the product of the sizes of any set of
indices whose removal separates its row legs from its column legs. The cheapest such set is a
minimum vertex cut (indices are the cuttable nodes, weighted by log size), found as a max-flow
on the split graph (``source_side``; the graphs have tens of nodes, so plain Python does).
Indices shared by rows and columns (block indices) make the matrix block-diagonal: they multiply
the bound instead of being cut.

A structure's bound is the least of several (``rank_bounds``): the side of its matrix, the sum
of its levels' bounds, and for a score matrix with block levels two bounds that see the levels
overlap in x's column span (the cells of the blocks' common refinement, and the eigenspaces
shared by nested block patterns).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..sequence import SequencePattern
from ..structure import Instance, Level


@dataclass(frozen=True)
class Cut:
    """A rank bound with its witness: the indices cut, and the block indices it repeats over."""

    rank: int
    indices: tuple[str, ...]
    blocks: int


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
    """Bound on the rank of the level's D x D matrix M_l (rows: query features)."""
    tensors = [op.indices for op in level.factors] + [level.query_features, level.key_features]
    return min_cut(level, level.query_features, level.key_features, tensors)


def sequence_cut(level: Level) -> Cut:
    """Bound on the rank of the level's T x T score block pattern (before any band)."""
    tensors = [op.indices for op in level.operands]
    return min_cut(level, level.query.axes[0], level.key.axes[0], tensors)


def level_rank_bound(level: Level, T: int, feature: bool) -> int:
    if feature:
        return feature_cut(level).rank
    bound = sequence_cut(level).rank
    if level.band is None:
        return bound
    return min(level.pattern.rows(T), bound + band_complement_rows(level, T))


def band_complement_rows(level: Level, T: int) -> int:
    """Rows holding pairs of the level's blocks past either edge of its band.

    With A the level without its band (rank at most its sequence cut), P o A = A - L o A - U o A,
    L and U the pairs with t - u > hi and t - u < lo; a matrix has no more rank than nonzero rows.
    So a band that keeps most pairs has a rank near A's (and P o A has at most P's rows anyway).
    """
    lo, hi = level.band
    past = SequencePattern(level.blocks, (hi + 1, T)), SequencePattern(level.blocks, (-T, lo - 1))
    return sum(pattern.rows(T) for pattern in past)


def rank_bound(instance: Instance) -> int:
    """Generic-rank bound of the structure's matrix: M (D x D) or the T x T score matrix (the
    least of ``rank_bounds``)."""
    return min(rank_bounds(instance).values())


def rank_bounds(instance: Instance) -> dict[str, int]:
    """Every cheap upper bound on the rank of the structure's matrix, by name.

    ``side``: the matrix is D x D (feature structure) or T x T. ``levels``: rank is subadditive,
    so the sum of the levels' own bounds. For the T x T score matrix also, over its block levels
    (the band levels add their own bounds): ``refinement``, the columns lie in the span of x cut
    to the cells of the common refinement of the levels' blocks, and ``nested blocks``, the rank
    of the blocks' coupling matrix taken eigenspace by eigenspace when the block counts nest
    (``nested_blocks_bound``). A band level's own bound is its rows, or the level's bound without
    the band plus the rows past the band's edges (``band_complement_rows``).
    """
    T, D = instance.T, instance.D
    feature = instance.is_feature_structure
    per_level = [level_rank_bound(level, T, feature) for level in instance.levels]
    bounds = {"side": D if feature else T, "levels": sum(per_level)}
    blocked = [level for level in instance.levels if level.band is None]
    if feature or not blocked:
        return bounds
    banded = sum(b for level, b in zip(instance.levels, per_level) if level.band is not None)
    refined = refinement_bound(sorted({level.blocks for level in blocked}), T, D)
    if refined is not None:
        bounds["refinement"] = banded + refined
    nested = nested_blocks_bound(blocked, D)
    if nested is not None:
        bounds["nested blocks"] = banded + nested
    return bounds


REFINEMENT_LIMIT = 1 << 16  # the most block boundaries ``refinement_bound`` lists when the counts do not nest


def refinement_bound(blocks: list[int], T: int, D: int) -> int | None:
    """sum over the cells c of the common refinement of the block partitions of min(|c|, D).

    A block level is sum_b E_b X M X^T E_b (E_b keeps the rows of block b), and every block b is
    a union of cells, so each column of the score matrix lies in the span of the columns of the
    E_c X, c a cell, whose rank is at most min(|c|, D). Nested counts (each divides the next):
    the cells are the finest blocks. Otherwise the boundaries are listed, unless there are more
    than ``REFINEMENT_LIMIT`` (then None).
    """
    if all(b % a == 0 for a, b in zip(blocks, blocks[1:])):
        finest = blocks[-1]
        return finest * min(T // finest, D)
    if sum(blocks) > REFINEMENT_LIMIT:
        return None
    cuts = sorted({k * (T // p) for p in blocks for k in range(p + 1)})
    return sum(min(b - a, D) for a, b in zip(cuts, cuts[1:]))


def nested_blocks_bound(levels: list[Level], D: int) -> int | None:
    """Rank bound for block levels whose block counts q_1 < q_2 < ... < q_m nest (each divides the
    next); None when they do not.

    With the cells the finest blocks, the score matrix is Xc N Xc^T: Xc is block-diagonal with x's
    rows of each cell, and N, over (cell, feature), is sum_l (P_l kron M_l) where P_l is 1 on the
    pairs of cells in one block of level l (I_{p_l} kron J). The P_l commute and share the
    eigenspaces V_1 (constant on each q_1-block, dimension q_1) and V_k (constant on each
    q_k-block, summing to zero over each q_(k-1)-block, dimension q_k - q_(k-1)): P_l is a
    nonzero multiple of the identity on V_k when p_l >= q_k and zero otherwise. So
    rank(N) = sum_k dim V_k * rank(sum_{l: p_l >= q_k} c_l M_l), each term at most
    min(D, sum of those levels' feature cuts, a matrix M shared by levels counted once); and
    rank(S) <= rank(N). (When every cell has at least D rows, Xc has full column rank for a
    generic x, so rank(S) = rank(N).)
    """
    counts = sorted({level.blocks for level in levels})
    if any(b % a for a, b in zip(counts, counts[1:])):
        return None
    by_count: dict[int, dict[tuple, int]] = {}
    for level in levels:
        by_count.setdefault(level.blocks, {})[feature_key(level)] = feature_cut(level).rank
    coupled, finer = {}, {}  # for each q, the cuts of the distinct M's of the levels with p_l >= q
    for q in reversed(counts):
        finer.update(by_count[q])
        coupled[q] = sum(finer.values())
    return sum((q - previous) * min(D, coupled[q]) for previous, q in zip([0, *counts], counts))


def feature_key(level: Level) -> tuple:
    """Equal for levels with the very same M (the same factors on the same feature indices), which
    count once in a sum of M's."""
    return tuple((op.name, op.axes) for op in level.factors), level.query_features, level.key_features
