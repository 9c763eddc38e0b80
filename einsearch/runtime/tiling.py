"""The pair rule on absolute token positions, and the causal pairs cut into batched
attention calls.

A level's sequence pattern, at run time, is a ``Pattern``: blocks of ``length``
consecutive tokens starting at position 0 (``None``: one block, every pair), then
optionally a band ``lo <= t - u <= hi`` on the distance. Query t scores key u through
the level when ``covers(pattern, t, u)``; attention is causal on top of that (u <= t).

``partition`` cuts the causal pairs of a sequence into ``Call``s, batched attention
calls each of one class (the set of levels covering its pairs); ``attention.py`` runs
them and merges their softmaxes. ``cache_slots`` and ``cache_elements`` size the
decoding cache.

Standard library only: einsearch's analyzer imports this file, and every generated
module carries it verbatim, so the rule the numbers are computed with is the rule the
module runs.
"""

from collections import Counter
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple


class Pattern(NamedTuple):
    """The pairs a level scores: ``t // length == u // length`` (when ``length`` is set)
    and ``lo <= t - u <= hi`` (when each bound is set)."""

    length: int | None = None
    lo: int | None = None
    hi: int | None = None


def covers(pattern: Pattern, t, u):
    """Whether the level scores query t against key u (ints give a bool; numpy or torch
    arrays broadcast and give a boolean array). Causality is not part of it."""
    length, lo, hi = pattern
    covered = (t >= 0) & (u >= 0)
    if length is not None:
        covered = covered & (t // length == u // length)
    if lo is not None:
        covered = covered & (t - u >= lo)
    if hi is not None:
        covered = covered & (t - u <= hi)
    return covered


def reach(pattern: Pattern, position: int) -> int:
    """The first key position that a query at ``position`` or later can still score:
    what a decoding cache must keep of this level's keys."""
    length, _, hi = pattern
    first = 0 if length is None else position // length * length
    return first if hi is None else max(first, position - hi)


def span(pattern: Pattern) -> int | None:
    """The most keys a decoding cache keeps for this level: those from ``reach`` up to
    the newest token (a block's length, hi + 1 for a band, the smaller when both;
    ``None``: all of them)."""
    length, _, hi = pattern
    spans = [s for s in (length, None if hi is None else hi + 1) if s is not None]
    return min(spans) if spans else None


def cache_slots(pattern: Pattern, context: int) -> int:
    """The keys a decoding cache keeps for this level over ``context`` tokens: ``span``,
    at most ``context`` (all of them for a global level), at least one."""
    keep = span(pattern)
    return max(1, context if keep is None else min(keep, context))


def cache_elements(
    patterns: tuple[Pattern, ...],
    widths: tuple[int, ...],
    v_width: int,
    context: int,
) -> int:
    """Elements per head of a decoding cache over ``context`` tokens: each level's key
    channels times its slots, and the value channels times the most slots of any level.
    """
    slots = [cache_slots(pattern, context) for pattern in patterns]
    return sum(width * n for width, n in zip(widths, slots)) + v_width * max(slots)


# -- the partition: the causal pairs as batched attention calls
# -----------------------------------


class Blocks(NamedTuple):
    """``count`` token ranges in arithmetic progression: range g is ``[start + g *
    stride, start + g * stride + length)``. The stride is at least the length, so the
    ranges never overlap."""

    start: int
    count: int
    stride: int
    length: int


class Call(NamedTuple):
    """One batched attention: member g scores the queries ``queries`` range g against
    the keys ``keys`` range g, with the channels of ``levels`` (the pairs' class: the
    levels covering them).

    ``mode`` says which pairs of each query x key rectangle are scored: "dense" all of
    them; "causal" (squares) those on or below the square's diagonal, u - u0 <= t - t0
    for the corner (t0, u0), as causal attention does; "masked" those with u <= t whose
    covering levels are exactly ``levels`` (tiles where coverage changes).
    """

    queries: Blocks
    keys: Blocks
    levels: tuple[int, ...]
    mode: str


# Where coverage changes inside a region, it is cut (``_Cutter.cut``); a region whose
# sides are at most _TILE (or _MIN_SIDE at block boundaries) becomes masked tiles
# instead. Smaller tiles cost more in call overhead than they save in arithmetic.
_MIN_SIDE = 16
_TILE = 64
_STRIP = 128  # queries per chunk of a band's strip
_MODES = ("causal", "dense", "masked")


def level_keys(pattern: Pattern, t: int) -> tuple[int, int]:
    """The keys ``[first, end)`` that query t scores through the level (causal): always
    one range."""
    length, lo, hi = pattern
    first = 0 if length is None else t // length * length
    if hi is not None:
        first = max(first, t - hi, 0)
    end = t + 1 - max(lo or 0, 0)
    return first, max(first, end)


def call_pairs(call: Call) -> int:
    """Query x key pairs the call computes: whole rectangles, as a FLOP counter sees
    them."""
    queries, keys = call.queries, call.keys
    return queries.count * queries.length * keys.length


@lru_cache(maxsize=256)
def partition(T: int, patterns: tuple[Pattern, ...]) -> tuple[Call, ...]:
    """The causal pairs of a T-token sequence that some level covers, each in exactly
    one call, with exactly the levels that cover it; causal calls first.

    Where only distances matter (no level has blocks shorter than T) and each class is
    one strip a <= t - u <= b of the triangle, strips are cut into chunks of queries
    (``_Cutter.strip``). Otherwise, recursion on the causal triangle: a diagonal square
    splits into two diagonal squares and the rectangle below the diagonal; a rectangle
    into two or four. A region stops where each level covers all or none of its pairs (a
    causal or dense call of that class) or where it is small (a masked tile per class it
    holds). Equal regions in arithmetic progression form one call.
    """
    cutter = _Cutter(tuple(patterns), T)
    if T > 0 and not cutter.strips(T):
        cutter.square(0, T)
    return cutter.calls()


@lru_cache(maxsize=256)
def first_touch(T: int, calls: tuple[Call, ...]) -> tuple[bool, ...]:
    """For each call, whether no earlier call scores any of its queries: its output and
    log-sum-exp can then be written, not merged."""
    touched = bytearray(T)
    fresh = []
    for call in calls:
        start, count, stride, length = call.queries
        rows = [
            slice(start + g * stride, start + g * stride + length) for g in range(count)
        ]
        fresh.append(not any(any(touched[r]) for r in rows))
        for r in rows:
            touched[r] = b"\x01" * length
    return tuple(fresh)


class _Cutter:
    """The recursion of ``partition``: leaves collected by family (same shape, class,
    mode and offset of the keys from the queries), then cut into arithmetic
    progressions.

    Blocks whose length is not a power of two fall at a different phase in every region
    of the dyadic cuts; when they are short (or scored only at short distances) such a
    level counts as covering part of any region holding pairs closer than its length, so
    the regions it touches are all masked tiles, of a few shapes.
    """

    def __init__(self, patterns: tuple[Pattern, ...], T: int):
        self.patterns = patterns
        never = float("inf")
        # (level, block length or None, least and greatest distance, phase-free)
        self.levels = []
        for level, (length, lo, hi) in enumerate(patterns):
            lo, hi = max(lo or 0, 0), never if hi is None else hi
            length = (
                None if length is not None and length >= T else length
            )  # one block: all pairs
            if lo <= hi:  # a level with an empty band covers nothing
                odd = length is not None and length & (length - 1) != 0
                loose = odd and min(length, hi) <= _TILE
                self.levels.append((level, length, lo, hi, loose))
        self.families: dict = {}
        self.tiles: dict = {}  # masked tile kind -> [(t0, block phases)]
        # (kind, block phases) -> the classes its pairs fall into
        self.classes: dict = {}

    def status(self, t0: int, t1: int, u0: int, u1: int, diagonal: bool):
        """The levels covering every pair of the region, and those covering some (maybe
        none)."""
        dmin = 0 if diagonal else t0 - u1 + 1
        dmax = t1 - 1 - u0
        every, some = [], []
        for level, length, lo, hi, loose in self.levels:
            if dmax < lo or dmin > hi:
                continue
            whole = lo <= dmin and dmax <= hi
            if loose:
                if dmin >= length:  # never in one block
                    continue
                whole = False
            elif length is not None:
                first, last = t0 // length, (t1 - 1) // length
                if diagonal:
                    whole = whole and first == last
                else:
                    if (u1 - 1) // length < first:
                        continue
                    whole = whole and first == last == u0 // length
            (every if whole else some).append(level)
        return tuple(every), tuple(some)

    def strips(self, T: int) -> bool:
        """Distances only: the class of a pair changes where t - u crosses a band's
        edge. One strip per class, or False (nothing done) when a level has blocks or a
        class has two strips (the masked tiles of one would hold pairs of the other)."""
        if any(length is not None for _, length, _, _, _ in self.levels):
            return False
        edges = sorted(
            {0, T}
            | {
                edge
                for _, _, lo, hi, _ in self.levels
                for edge in (lo, hi + 1)
                if 0 < edge < T
            }
        )
        strips = []
        for a, end in pairwise(edges):
            levels = tuple(
                level for level, _, lo, hi, _ in self.levels if lo <= a <= hi
            )
            if levels:
                strips.append((a, end - 1, levels))
        if len({levels for _, _, levels in strips}) < len(strips):
            return False
        for a, b, levels in strips:
            self.strip(T, a, b, levels)
        return True

    def strip(self, T: int, a: int, b: int, levels: tuple) -> None:
        """The pairs a <= t - u <= b, one class. Unbounded (b = T - 1): one causal
        square, queries from a against keys from 0. Else chunks of c queries t0.., whose
        keys [t0 - b, t0 - a + c) are cut in three: at the near end a causal square (its
        pairs below the diagonal are at distances a to a + c - 1), at the far end a
        masked square (the band's edge), dense pieces between. Chunks cut by the
        sequence's ends are masked tiles."""
        if b >= T - 1:
            self.leaf(a, 0, T - a, T - a, levels, "causal")
            return
        n = b - a
        c = min(n, _STRIP) if n >= _TILE else _TILE
        for t0 in range(a, T, c):
            if t0 - b < 0 or t0 + c > T:
                first = max(t0 - b, 0)
                self.leaf(
                    t0,
                    first,
                    min(c, T - t0),
                    min(t0 + c - a, T) - first,
                    levels,
                    "masked",
                )
                continue
            self.leaf(t0, t0 - a, c, c, levels, "causal" if c <= n + 1 else "masked")
            if n < c:
                if n:
                    self.leaf(t0, t0 - b, c, n, levels, "masked")
                continue
            self.leaf(t0, t0 - b, c, c, levels, "masked")
            for first in range(t0 - b + c, t0 - a, c):
                self.leaf(t0, first, c, min(c, t0 - a - first), levels, "dense")

    def square(self, a: int, b: int) -> None:
        every, some = self.status(a, b, a, b, True)
        if not some:
            self.leaf(a, a, b - a, b - a, every, "causal")
            return
        cut = self.cut(a, b, self.lengths(some))
        if cut is None:
            self.masked(a, a, b - a, b - a, every, some)
            return
        self.square(a, cut)
        self.square(cut, b)
        self.rect(cut, b, a, cut)

    def rect(self, t0: int, t1: int, u0: int, u1: int) -> None:
        every, some = self.status(t0, t1, u0, u1, False)
        if not some:
            self.leaf(t0, u0, t1 - t0, u1 - u0, every, "dense")
            return
        lengths = self.lengths(some)
        t_cut, u_cut = self.cut(t0, t1, lengths), self.cut(u0, u1, lengths)
        if t_cut is None and u_cut is None:
            self.masked(t0, u0, t1 - t0, u1 - u0, every, some)
            return
        for q0, q1 in _halves(t0, t1, t_cut):
            for k0, k1 in _halves(u0, u1, u_cut):
                self.rect(q0, q1, k0, k1)

    def lengths(self, some: tuple[int, ...]) -> list[int]:
        """The block lengths of the partly covering levels that cuts follow, longest
        first."""
        lengths = {
            length
            for level, length, _, _, loose in self.levels
            if level in some and not loose
        }
        return sorted(lengths - {None}, reverse=True)

    def cut(self, x0: int, x1: int, lengths: list[int]) -> int | None:
        """Where to cut [x0, x1), or None to stop. The point inside that is a multiple
        of the highest power of two, counted in blocks of the longest partly covering
        level when one of its boundaries lies inside and its blocks are longer than a
        tile; in tokens otherwise, down to a tile, and below a tile only at a block
        boundary. So equal regions recur at equal strides."""
        if x1 - x0 <= _MIN_SIDE:
            return None
        for length in lengths:
            if length > _TILE and _boundary(x0, x1, length):
                return _dyadic(x0 // length, (x1 - 1) // length + 1) * length
        middle = _dyadic(x0, x1)
        if x1 - x0 > _TILE or any(middle % length == 0 for length in lengths):
            return middle
        return None

    def masked(
        self, t0: int, u0: int, rows: int, cols: int, every: tuple, some: tuple
    ) -> None:
        """A small region, left for ``calls`` to cut into one masked call per class."""
        lengths = [
            length for level, length, _, _, _ in self.levels if level in some and length
        ]
        phases = tuple((t0 % n, u0 % n) for n in lengths)
        self.tiles.setdefault((rows, cols, t0 - u0, every, some), []).append(
            (t0, phases)
        )

    def tile_classes(self, kind: tuple, t0: int, phases: tuple) -> set[tuple[int, ...]]:
        """The classes of a masked tile's pairs (the same for every tile of its kind and
        phases): the causal pairs as one bit set, split by each partly covering level's
        pairs."""
        if (kind, phases) not in self.classes:
            rows, cols, offset, every, some = kind
            u0 = t0 - offset
            pairs, covered = 0, dict.fromkeys(some, 0)
            for row in range(rows):
                t, shift = t0 + row, row * cols
                end = min(cols, t + 1 - u0)
                pairs |= ((1 << end) - 1) << shift
                for level in some:
                    first, stop = level_keys(self.patterns[level], t)
                    first, stop = max(first - u0, 0), min(stop - u0, end)
                    if stop > first:
                        covered[level] |= ((1 << (stop - first)) - 1) << (shift + first)
            groups = [(every, pairs)]
            for level in some:
                bits = covered[level]
                groups = [
                    (levels + (level,) if inside else levels, part)
                    for levels, group in groups
                    for inside, part in ((True, group & bits), (False, group & ~bits))
                    if part
                ]
            self.classes[kind, phases] = {tuple(sorted(levels)) for levels, _ in groups}
        return self.classes[kind, phases]

    def leaf(
        self, t0: int, u0: int, rows: int, cols: int, levels: tuple, mode: str
    ) -> None:
        if levels:
            self.families.setdefault((rows, cols, t0 - u0, levels, mode), []).append(t0)

    def calls(self) -> tuple[Call, ...]:
        # Every tile of a kind computes each class that any of them holds (for some,
        # none of its pairs): one call per class, whatever the phases.
        for kind, tiles in self.tiles.items():
            rows, cols, offset = kind[:3]
            classes = set().union(
                *(self.tile_classes(kind, t0, phases) for t0, phases in tiles)
            )
            for levels in sorted(classes):
                for t0, _ in tiles:
                    self.leaf(t0, t0 - offset, rows, cols, levels, "masked")
        calls = []
        for (rows, cols, offset, levels, mode), starts in self.families.items():
            for start, count, stride in _progressions(starts, max(rows, cols)):
                queries = Blocks(start, count, stride, rows)
                keys = Blocks(start - offset, count, stride, cols)
                calls.append(Call(queries, keys, levels, mode))
        calls.sort(
            key=lambda call: (
                _MODES.index(call.mode),
                -call_pairs(call),
                call.queries.start,
            )
        )
        return tuple(calls)


def _boundary(x0: int, x1: int, length: int) -> bool:
    """Whether a block boundary lies strictly inside [x0, x1)."""
    return (x0 // length + 1) * length < x1


def _dyadic(x0: int, x1: int) -> int:
    """The point of (x0, x1) divisible by the highest power of two (x1 - x0 >= 2)."""
    step = 1 << (x1 - 1).bit_length()
    while (x0 // step + 1) * step >= x1:
        step >>= 1
    return (x0 // step + 1) * step


def _halves(x0: int, x1: int, cut: int | None):
    return ((x0, x1),) if cut is None else ((x0, cut), (cut, x1))


def _progressions(starts: list[int], least: int) -> list[tuple[int, int, int]]:
    """``starts`` as (first, count, stride) runs, extended at the most common gap (at
    least ``least``)."""
    starts = sorted(starts)
    gaps = Counter(b - a for a, b in pairwise(starts) if b - a >= least)
    stride = gaps.most_common(1)[0][0] if gaps else least
    runs: list = []
    for x in starts:
        if runs and x == runs[-1][0] + runs[-1][1] * stride:
            runs[-1][1] += 1
        else:
            runs.append([x, 1])
    return [(first, count, stride if count > 1 else least) for first, count in runs]
