"""The pair rule on absolute token positions, and the causal pairs cut into batched attention calls.

A level's sequence pattern, at run time, is a ``Pattern``: blocks of ``length`` consecutive
tokens starting at position 0 (``None``: one block, every pair), then optionally a band
``lo <= t - u <= hi`` on the distance. Query t scores key u through the level when
``covers(pattern, t, u)``; attention is causal on top of that (u <= t).

Standard library only: einsearch's analyzer imports this file, and every generated module
carries it verbatim, so the rule the numbers are computed with is the rule the module runs.
"""

from typing import NamedTuple


class Pattern(NamedTuple):
    """The pairs a level scores: ``t // length == u // length`` (when ``length`` is set) and
    ``lo <= t - u <= hi`` (when each bound is set)."""

    length: "int | None" = None
    lo: "int | None" = None
    hi: "int | None" = None


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
    """The first key position that a query at ``position`` or later can still score: what a
    decoding cache must keep of this level's keys."""
    length, _, hi = pattern
    first = 0 if length is None else position // length * length
    return first if hi is None else max(first, position - hi)


def span(pattern: Pattern) -> "int | None":
    """The most keys a decoding cache keeps for this level: those from ``reach`` up to the newest
    token (a block's length, hi + 1 for a band, the smaller when both; ``None``: all of them)."""
    length, _, hi = pattern
    spans = [s for s in (length, None if hi is None else hi + 1) if s is not None]
    return min(spans) if spans else None
