"""Rank: the cheapest-cut bound on a level's tensor network, and a numeric check.

A matrix given by a tensor network has rank at most the product of the sizes of any set of
indices whose removal separates its row legs from its column legs. The cheapest such set is a
minimum vertex cut (indices are the cuttable nodes, weighted by log size), which networkx finds
as a max-flow on the split graph. Indices shared by rows and columns (block indices) make the
matrix block-diagonal: they multiply the bound instead of being cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..structure import Instance, Level


@dataclass(frozen=True)
class Cut:
    """A rank bound with its witness: the indices cut, and the block indices it repeats over."""

    rank: int
    indices: tuple[str, ...]
    blocks: int


def min_cut(level: Level, rows: tuple[str, ...], cols: tuple[str, ...], tensors: list[tuple[str, ...]]) -> Cut:
    """The cheapest index cut of ``tensors`` between ``rows`` and ``cols`` legs."""
    import networkx as nx

    shared = tuple(i for i in rows if i in cols)
    blocks = math.prod(level.sizes[i] for i in shared)
    graph = nx.DiGraph()
    for index in {i for t in tensors for i in t} - set(shared):
        graph.add_edge(("in", index), ("out", index), capacity=math.log(level.sizes[index]))
    for n, tensor in enumerate(tensors):
        for index in set(tensor) - set(shared):
            graph.add_edge(("out", index), ("tensor", n))  # no capacity: tensors cannot be cut
            graph.add_edge(("tensor", n), ("in", index))
    for index in set(rows) - set(shared):
        graph.add_edge("source", ("in", index))
    for index in set(cols) - set(shared):
        graph.add_edge(("out", index), "sink")
    if "source" not in graph or "sink" not in graph:
        return Cut(blocks, (), blocks)
    _, (reach, _) = nx.minimum_cut(graph, "source", "sink")
    cut = tuple(sorted(i for kind, i in (n for n in reach if isinstance(n, tuple) and n[0] == "in")
                       if ("out", i) not in reach))  # fmt: skip
    return Cut(blocks * math.prod(level.sizes[i] for i in cut), cut, blocks)


def feature_cut(level: Level) -> Cut:
    """Bound on the rank of the level's D x D matrix M_l (rows: query features)."""
    tensors = [op.indices for op in level.factors] + [level.query_features, level.key_features]
    return min_cut(level, level.query_features, level.key_features, tensors)


def sequence_cut(level: Level) -> Cut:
    """Bound on the rank of the level's T x T score block pattern (before any band)."""
    tensors = [op.indices for op in level.operands]
    return min_cut(level, level.query.axes[0], level.key.axes[0], tensors)


def band_rows(level: Level, T: int) -> int:
    """Rows of a band pattern that hold any pair: a band's generic rank (its diagonal is full)."""
    lo, hi = level.band
    return max(0, T - max(lo, 0) - max(-hi, 0))


def level_rank_bound(level: Level, T: int, feature: bool) -> int:
    if feature:
        return feature_cut(level).rank
    bound = sequence_cut(level).rank
    if level.band is None:
        return bound
    rows = band_rows(level, T)  # rank(P o A) <= rank(P) rank(A), and a band's P has full row rank
    return min(rows, rows * bound)


def rank_bound(instance: Instance) -> int:
    """Generic-rank bound of the structure's matrix: M (D x D) or the T x T score matrix."""
    feature = instance.is_feature_structure
    side = instance.D if feature else instance.T
    return min(side, sum(level_rank_bound(level, instance.T, feature) for level in instance.levels))
