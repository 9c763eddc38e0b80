"""A level up to the names of its factors and indices: the key its plan, counts and rank share.

Two levels whose einsums differ only in what their factors and indices are called (and in their
number, or the line of the file they come from) are computed the same way and have the same
counts: ``canonical(level)`` gives the key they share (``Canonical.key``: the einsum with indices
and factors numbered in order of first use, the index sizes, the band and the scale) and the
level in those standard names, with the maps back to the level's own. ``feature_key`` is the
same for the level's D x D matrix alone (sequence indices, band and scale left out).

The planner keeps one bounded cache (``planner.CACHE``, a ``BoundedCache``) keyed by these, for
its plans and for what the analysis derives from them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .structure import Level, Operand

INDEX = "_{}"  # standard index names: _0, _1, ... (no planner-made name starts with _)
FACTOR = "_F{}"  # standard factor names: _F0, _F1, ...


@dataclass(frozen=True)
class Canonical:
    """A level in standard names: ``key`` is equal for levels equal up to names, ``level`` is
    the level renamed (number 1), ``indices`` and ``factors`` map standard names to the level's."""

    key: tuple
    level: Level
    indices: dict[str, str]
    factors: dict[str, str]


def canonical(level: Level) -> Canonical:
    """The level's name-free key and its copy in standard names."""
    indices: dict[str, str] = {}
    factors: dict[str, str] = {}
    operands = []
    for op in level.operands:
        axes = tuple(tuple(indices.setdefault(i, INDEX.format(len(indices))) for i in axis) for axis in op.axes)
        name = op.name if op.role != "factor" else factors.setdefault(op.name, FACTOR.format(len(factors)))
        operands.append(Operand(name, op.role, axes))
    sizes = {new: level.sizes[old] for old, new in indices.items()}
    shape = tuple((op.role, op.name, op.axes) for op in operands)
    key = (shape, tuple(sizes.values()), level.band, level.scale)
    renamed = Level(1, tuple(operands), sizes, level.scale, level.band)
    back = {new: old for old, new in indices.items()}
    return Canonical(key, renamed, back, {new: old for old, new in factors.items()})


def feature_key(level: Level) -> tuple[tuple, tuple[str, ...]]:
    """The key of the level's D x D matrix up to names (its factors and the feature axes of x),
    and the level's feature indices in the order the key numbers them."""
    sequence = set(level.sequence_indices)
    order: dict[str, int] = {}
    factors: dict[str, int] = {}
    shape = []
    for op in level.operands:
        axes = tuple(tuple(order.setdefault(i, len(order)) for i in axis if i not in sequence) for axis in op.axes)
        name = op.role if op.role != "factor" else factors.setdefault(op.name, len(factors))
        shape.append((name, axes))
    return (tuple(shape), tuple(level.sizes[i] for i in order)), tuple(order)


class BoundedCache:
    """A memo of at most ``size`` entries, the least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value kept for ``key``, else ``compute()`` kept."""
        try:
            self.entries.move_to_end(key)
            return self.entries[key]
        except KeyError:
            value = self.entries[key] = compute()
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
            return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)
