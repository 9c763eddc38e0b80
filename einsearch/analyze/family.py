"""The family coordinates of each level, read off its einsum: sequence pattern and feature class.

Nothing here looks at a structure's name. A level's feature class follows from how its factors
connect the query's feature indices to the key's (docs/design.md §1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..sequence import SequencePattern
from ..structure import Level
from .rank import feature_cut


@dataclass(frozen=True)
class LevelFamily:
    """One row of the family table."""

    sequence: str  # "global" | "blocks" | "band"
    blocks: int
    band: tuple[int, int] | None
    feature: str
    rank: int  # generic rank bound of the level's D x D matrix M_l

    @property
    def window(self) -> int | None:
        """Keys a query reaches through the band (its width)."""
        return None if self.band is None else self.band[1] - self.band[0] + 1

    def sequence_text(self) -> str:
        return SequencePattern(self.blocks, self.band).text()


def level_family(level: Level) -> LevelFamily:
    if level.band is not None:
        sequence = "band"
    else:
        sequence = "blocks" if level.blocks > 1 else "global"
    return LevelFamily(sequence, level.blocks, level.band, feature_class(level), feature_cut(level).rank)


def feature_class(level: Level) -> str:
    """low rank, dense, Kronecker, BTT, tensor train, ... with ``block-diagonal`` when it applies."""
    cut = feature_cut(level)
    blocks = cut.blocks
    shared = set(level.feature_block_indices)
    rows = set(level.query_features) - shared
    cols = set(level.key_features) - shared
    factors = [set(op.indices) - shared for op in level.factors]
    side = math.prod(level.sizes[i] for i in rows)
    name = _class(factors, rows, cols, cut.rank // blocks, side)
    return f"block-diagonal {name} ({blocks} blocks)" if blocks > 1 else name


def _class(factors: list[set[str]], rows: set[str], cols: set[str], rank: int, side: int) -> str:
    features = rows | cols
    bonds = [f - features for f in factors]  # indices only factors carry
    if not factors:
        return "identity"
    if len(factors) == 1 and factors[0] == features:
        return "dense"
    if rank < side:
        return f"low rank {rank}"
    disjoint = sum(len(f) for f in factors) == len(set().union(*factors))
    if len(factors) > 1 and disjoint and not any(bonds) and all(f & rows and f & cols for f in factors):
        return "Kronecker"
    if len(factors) == 2 and factors[0] & factors[1] & features and all(f & rows and f & cols for f in factors):
        return "BTT" if any(bonds) else "Monarch (BTT, rank 1)"
    if len(factors) > 2 and all(len(f & rows) == 1 and len(f & cols) == 1 for f in factors):
        return "tensor train"
    return "general einsum"
