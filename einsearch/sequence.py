"""The pair rule: which (t, u) pairs of a T x T score matrix a level scores.

A level's sequence pattern is ``p`` contiguous equal blocks (t and u in the same block; p = 1 is
global) and optionally a band, inclusive bounds ``lo <= t - u <= hi``. Everything that needs to
know which pairs are scored (pair counts, the compute pattern, rank bounds, masks in the
reference and the interpreter) asks a ``SequencePattern`` (``Level.pattern``); the one other
statement is its symbolic twin, the sympy pair count of ``analyze/formulas.py``. The pattern also
owns how far back its keys reach (``span``, what a decoding cache keeps), how block patterns nest
(``nests_in``), its text, and which causal pairs a set of patterns scores
(``causal_pairs``).

Every count is an exact integer in closed form (no loop over positions), so it answers any T.
The methods take Python ints or numpy integer arrays (broadcasting); arrays of counts that could
pass 2^63 are computed as Python ints in object arrays. ``covers`` also takes torch tensors.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .runtime.tiling import Pattern, covers, span

INT64_SAFE_T = 1 << 30  # up to this T every intermediate count fits in int64 (about 2 T^2 at most)
MASK_LIMIT = 1 << 15  # the largest T ``mask`` builds (T^2 booleans)
REFINEMENT_LIMIT = 1 << 16  # the most block boundaries ``refinement_cells`` lists when the counts do not nest


@dataclass(frozen=True)
class SequencePattern:
    """The pairs a level scores: ``blocks`` contiguous equal blocks, then ``band`` inside them."""

    blocks: int = 1
    band: tuple[int, int] | None = None  # inclusive bounds on t - u

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ValueError(f"a sequence pattern needs at least one block, got {self.blocks}")

    # -- the rule --------------------------------------------------------------------------

    def block_size(self, T: int) -> int:
        if T < 0 or T % self.blocks:
            raise ValueError(f"T = {T} does not split into {self.blocks} equal blocks")
        return T // self.blocks

    def at(self, T: int) -> Pattern:
        """The run-time pattern in a T-token sequence: blocks of T / blocks tokens (the rule
        itself lives in ``runtime.tiling``, which generated modules carry)."""
        length = None if self.blocks == 1 else self.block_size(T)
        lo, hi = self.band if self.band is not None else (None, None)
        return Pattern(length, lo, hi)

    def covers(self, T: int, t, u):
        """Whether the pair (t, u) is scored: ints give a bool, arrays (numpy or torch) broadcast."""
        return (t < T) & (u < T) & covers(self.at(T), t, u)

    def covers_every(self, T: int, lo: int, hi: int) -> bool:
        """Whether every pair (t, u) of a T-token sequence with lo <= t - u <= hi is scored.

        A block pattern (more than one block) leaves out some pair at every distance d != 0: one
        that straddles a block edge when d <= T - T / blocks, else every pair (d is then at least
        a block long)."""
        lo, hi = max(lo, 1 - T), min(hi, T - 1)
        if lo > hi:
            return True  # no such pair
        if self.blocks > 1 and (lo < 0 or hi > 0):
            return False
        return self.band is None or (self.band[0] <= lo and hi <= self.band[1])

    def within(self, lo: int, hi: int) -> SequencePattern:
        """The pairs of this pattern with lo <= t - u <= hi (the band cut to those bounds)."""
        if self.band is not None:
            lo, hi = max(lo, self.band[0]), min(hi, self.band[1])
        return SequencePattern(self.blocks, (lo, hi))

    def contains(self, other: SequencePattern) -> bool:
        """Whether this pattern scores every pair ``other`` scores: other's blocks nest in these
        and its band lies inside this band."""
        if not other.nests_in(self):
            return False
        if self.band is None:
            return True
        return other.band is not None and self.band[0] <= other.band[0] and other.band[1] <= self.band[1]

    def nests_in(self, other: SequencePattern) -> bool:
        """Whether each of this pattern's blocks lies inside one of ``other``'s: its block count is
        a multiple of the other's (the one statement of "each block count divides the next")."""
        return self.blocks % other.blocks == 0

    def span(self, T: int) -> int:
        """Keys a decoding cache keeps for this level at context T: those a later query can still
        score (``runtime.tiling.span``: a block, hi + 1 for a band; every token for a global level)."""
        kept = span(self.at(T))
        return T if kept is None else max(0, min(T, kept))

    def keys_seen(self, T: int) -> int:
        """Keys the token at position T - 1 scores (what decoding it against the cache reads)."""
        return self.count_in(T, T - 1, T, 0, T)

    def text(self) -> str:
        """``global``, ``4 blocks``, ``band 0 <= t-u <= 128`` (the pattern as reports write it)."""
        parts = [f"{self.blocks} blocks"] if self.blocks > 1 else []
        if self.band is not None:
            parts.append(f"band {self.band[0]} <= t-u <= {self.band[1]}")
        return ", ".join(parts) or "global"

    def mask(self, T: int):
        """The T x T boolean numpy array of ``covers`` (for small T only)."""
        import numpy as np

        if T > MASK_LIMIT:
            raise ValueError(f"a {T} x {T} mask is too large to build; count pairs with count_in")
        return self.covers(T, np.arange(T)[:, None], np.arange(T)[None, :])

    # -- counts -----------------------------------------------------------------------------

    def count(self, T: int) -> int:
        """Pairs scored."""
        block = self.block_size(T)
        return self.blocks * self._rect(block, block, block)

    def count_at_distance(self, T: int, d):
        """Ordered pairs with |t - u| = d that are scored (d an int or an integer array)."""
        block = self.block_size(T)
        d = _ints(T, d)
        per_diagonal = self.blocks * _clip(block - d, 0, None)  # pairs on t - u = d, over every block
        if self.band is None:
            diagonals = _where(d == 0, 1, 2)
        else:
            lo, hi = self.band
            forward = (d >= lo) & (d <= hi)
            backward = (-d >= lo) & (-d <= hi) & (d != 0)
            diagonals = _as_int(forward) + _as_int(backward)
        return _where(d < 0, 0, per_diagonal * diagonals)

    def count_before(self, T: int, a, b):
        """Pairs with t < a and u < b (a, b clipped to 0..T)."""
        block = self.block_size(T)
        a, b = _clip(_ints(T, a), 0, T), _clip(_ints(T, b), 0, T)
        first = _min(a, b) // block  # blocks before this one lie wholly inside both ranges
        rows = _min(block, a - first * block)
        cols = _min(block, b - first * block)
        return first * self._rect(block, block, block) + self._rect(rows, cols, block)

    def count_in(self, T: int, t0, t1, u0, u1):
        """Pairs in the rectangle t0 <= t < t1, u0 <= u < u1 (ints or broadcasting arrays)."""
        t0, u0 = _ints(T, t0), _ints(T, u0)
        t1, u1 = _max(_ints(T, t1), t0), _max(_ints(T, u1), u0)
        return (self.count_before(T, t1, u1) - self.count_before(T, t0, u1) - self.count_before(T, t1, u0)
                + self.count_before(T, t0, u0))  # fmt: skip

    def count_grid(self, T: int, t_edges, u_edges):
        """Pairs in every cell of the grid cut at ``t_edges`` (rows) and ``u_edges`` (columns), both
        increasing: ``count_in`` of each cell, from one ``count_before`` per grid corner."""
        import numpy as np

        before = self.count_before(T, np.asarray(t_edges)[:, None], np.asarray(u_edges)[None, :])
        return before[1:, 1:] - before[:-1, 1:] - before[1:, :-1] + before[:-1, :-1]

    @staticmethod
    def band_problem(lo: int, hi: int, T: int) -> str | None:
        """Why the band ``lo <= t - u <= hi`` cannot be a level's in a T-token sequence (it keeps
        no pair, or no causal one), or None when it can."""
        if lo > hi:
            return f"empty band: {lo} <= t - u <= {hi}"
        if not SequencePattern(1, (lo, hi)).causal_count(T):
            why = ("every key it reaches comes after its query (u > t), and a causal model scores none"
                   if hi < 0 else f"t - u is at most T - 1 = {T - 1}")  # fmt: skip
            return f"the band {lo} <= t - u <= {hi} scores no pair: {why}"
        return None

    def causal_count(self, T: int) -> int:
        """Pairs scored with u <= t: what a causal model keeps of the pattern."""
        lo, hi = self.band if self.band is not None else (0, T)
        return SequencePattern(self.blocks, (max(lo, 0), hi)).count(T)

    def rows(self, T: int) -> int:
        """Rows t holding at least one scored pair."""
        block = self.block_size(T)
        if self.band is None:
            return T if block else 0
        lo, hi = self.band
        if lo > hi:
            return 0
        return self.blocks * max(0, block - max(lo, 0) - max(-hi, 0))

    def changes(self, T: int) -> list[int]:
        """Distances 0 < d < T around which ``count_at_distance`` is not one straight line:
        both sides of each edge of the band (on t - u = d and on t - u = -d), and the block
        length, past which nothing is scored (d = 0 always stands apart: one diagonal, not two)."""
        block = self.block_size(T)
        found = set()
        if self.band is not None:
            lo, hi = self.band
            found |= {d for d in (lo - 1, lo, hi, hi + 1, -hi - 1, -hi, -lo, -lo + 1) if d < block}
        if self.blocks > 1:
            found.add(block)
        return sorted(d for d in found if 0 < d < T)

    # -- inside one block -------------------------------------------------------------------

    def _rect(self, rows, cols, block: int):
        """Pairs of the band in the rectangle [0, rows) x [0, cols) of one block."""
        if self.band is None:
            return rows * cols
        lo, hi = (max(-block, min(block, v)) for v in self.band)  # diagonals past the block hold nothing
        if lo > hi:
            return rows * cols * 0
        return _clip(_below(hi, rows, cols) - _below(lo - 1, rows, cols), 0, None)


def refinement_cells(patterns: Iterable[SequencePattern], T: int, nest: bool | None = None) -> dict[int, int] | None:
    """The cells of the common refinement of the patterns' partitions of T tokens into blocks, as
    {cell length: how many}. Nested block counts give the finest blocks; otherwise the boundaries
    are listed, unless there are more than ``REFINEMENT_LIMIT`` (then None). ``nest``: whether the
    counts nest, when the caller knows."""
    if nest:
        finest = max(p.blocks for p in patterns)
        return {T // finest: finest}
    counts = sorted({p.blocks for p in patterns})
    if nest is None and all(SequencePattern(b).nests_in(SequencePattern(a)) for a, b in zip(counts, counts[1:])):
        return {T // counts[-1]: counts[-1]}
    if sum(counts) > REFINEMENT_LIMIT:
        return None
    cuts = sorted({k * (T // p) for p in counts for k in range(p + 1)})
    return dict(Counter(b - a for a, b in zip(cuts, cuts[1:])))


def causal_pairs(patterns: Iterable[SequencePattern], T: int) -> int | None:
    """Pairs u <= t of a T-token sequence that at least one of the patterns scores (exact, by
    inclusion and exclusion over the patterns that no other contains; the pairs common to several
    patterns are those in one cell of their blocks' refinement within all their bands). None when
    a refinement has too many cells to list."""
    causal = [p.within(0, T - 1) for p in patterns]
    causal = list(dict.fromkeys(p for p in causal if p.band[0] <= p.band[1]))
    kept = [p for p in causal if not any(q is not p and q.contains(p) for q in causal)]
    total = 0
    for size in range(1, len(kept) + 1):
        for group in itertools.combinations(kept, size):
            common = _common_pairs(group, T)
            if common is None:
                return None
            total += common if size % 2 else -common
    return total


def _common_pairs(patterns: Sequence[SequencePattern], T: int) -> int | None:
    lo = max(p.band[0] for p in patterns)
    hi = min(p.band[1] for p in patterns)
    cells = refinement_cells(patterns, T)
    if cells is None:
        return None
    return sum(count * SequencePattern(1, (lo, hi)).count(length) for length, count in cells.items())


def _below(c: int, rows, cols):
    """Pairs (t, u) in [0, rows) x [0, cols) with t - u <= c.

    Row t holds clip(cols + c - t, 0, cols) of them, so the sum over t is a difference of the
    partial sums G(x) = sum_{y <= x} clip(y, 0, cols)."""
    return _partial(cols + c, cols) - _partial(cols + c - rows, cols)


def _partial(x, cols):
    """sum_{y = 1..x} clip(y, 0, cols) (0 for x <= 0)."""
    y = _clip(x, 0, cols)
    return y * (y + 1) // 2 + _clip(x - cols, 0, None) * cols


# -- ints and arrays alike -----------------------------------------------------------------


def _is_array(value) -> bool:
    return hasattr(value, "shape")


def _ints(T: int, value):
    """An int stays an int; an array becomes int64, or Python ints (object) when T is large."""
    if not _is_array(value):
        return int(value)
    import numpy as np

    return np.asarray(value, dtype=np.int64 if T <= INT64_SAFE_T else object)


def _min(a, b):
    if _is_array(a) or _is_array(b):
        import numpy as np

        return np.minimum(a, b)
    return min(a, b)


def _max(a, b):
    if _is_array(a) or _is_array(b):
        import numpy as np

        return np.maximum(a, b)
    return max(a, b)


def _clip(value, lo, hi):
    if lo is not None:
        value = _max(value, lo)
    return value if hi is None else _min(value, hi)


def _where(cond, a, b):
    if _is_array(cond) or _is_array(a) or _is_array(b):
        import numpy as np

        return np.where(cond, a, b)
    return a if cond else b


def _as_int(flag):
    return flag.astype(int) if _is_array(flag) else int(flag)
