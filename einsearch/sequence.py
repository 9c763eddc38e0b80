"""The pair rule: which (t, u) pairs of a T x T score matrix a level scores.

A level's sequence pattern is ``p`` contiguous equal blocks (t and u in the same block; p = 1 is
global) and optionally a band, inclusive bounds ``lo <= t - u <= hi``. Everything that needs to
know which pairs are scored (pair counts, the compute pattern, rank bounds, masks in the
reference and the interpreter) asks a ``SequencePattern`` (``Level.pattern``); the one other
statement is its symbolic twin, the sympy pair count of ``analyze/formulas.py``.

Every count is an exact integer in closed form (no loop over positions), so it answers any T.
The methods take Python ints or numpy integer arrays (broadcasting); arrays of counts that could
pass 2^63 are computed as Python ints in object arrays. ``covers`` also takes torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from .runtime.tiling import Pattern, covers

INT64_SAFE_T = 1 << 30  # up to this T every intermediate count fits in int64 (about 2 T^2 at most)
MASK_LIMIT = 1 << 15  # the largest T ``mask`` builds (T^2 booleans)


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
