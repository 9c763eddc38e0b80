"""MlrAttention: MLR attention: level l scores pairs in the same of 2^(l-1) sequence blocks with rank r_l

A causal self-attention layer whose logits are einsearch's `mlr` scoring function,
written by

    einsearch generate mlr --T 128 --D 64 --levels 5 --ranks 16,4,4,4,4 --heads 2 -o mlr_attention.py

Per head, query token t scores key token u <= t with the sum, over the levels that cover the
pair, of scale * x_t^T M_l x_u (x: the layer's input). The structure, as einsearch read it:

    size T = 1024 "sequence length"
    size D = 512  "model width (features per token)"
    param levels = 8 "number of levels"
    param ranks[levels] = [32, 8, 6, 4, 4, 4, 4, 2] "rank of each level (sums to the head dimension)"
    for l in 1..levels:
        index g: 2^(l-1), r: ranks[l]
        score += x[(g t), i] Q[i, r] K[j, r] x[(g u), j]  scale 1/r

Every option of the structure is a keyword of the constructor (the defaults are the
values this file was generated with), so one file serves any size. Blocks and bands lie
on absolute token positions: a level of g blocks groups block_size / g tokens whatever
the input's length, so the outputs for a prefix never change when tokens are appended.

Per head at the generated sizes (d_model=64, block_size=128, levels=5, ranks=(16, 4, 4,
4, 4)): 4,096 scoring parameters, rank 128, and 1,556,480 FLOPs (2 per multiply-add) for
the maps and scores of one 128-token sequence. The plan maps the tokens as

    x[(g t), i] Q[i, r] K[j, r] x[(g u), j]  ->  q: Q | k: K

and attends with 5 batched attention calls: the pairs grouped by the levels that cover
them, merged through their log-sum-exp, nothing T x T. Decoding cache: at most 414 bytes
per token of a 128-token context (float32, all heads): each level keeps only the keys
later queries can still reach.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class MlrAttention(nn.Module):
    """Causal self-attention, (B, T, d_model) -> (B, T, d_model), scored by `mlr`.

    Values and output are `v_proj` and `o_proj` (heads of d_model / n_heads channels). Each
    factor is drawn from N(0, 1 / fan_in), fan_in being the features it contracts with a token;
    init="mup" also zeroes `o_proj`, and `param_groups(lr)` gives each matrix the muP Adam
    learning rate lr * base_fan_in / fan_in.

    Options of the structure:
        levels: number of levels
        ranks: rank of each level (sums to the head dimension)
    """

    def __init__(
        self,
        d_model: int = 64,
        n_heads: int = 2,
        *,
        block_size: int = 128,
        levels: int = 5,
        ranks: tuple = (16, 4, 4, 4, 4),
        dropout: float = 0.0,
        bias: bool = False,
        init: str = "standard",
    ):
        super().__init__()
        T = check_size(block_size, "block_size")
        D = check_size(d_model, "d_model")
        levels = whole(levels, "levels")
        ranks = check_list(ranks, "ranks", levels)
        if D % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={D}")
        if init not in ("standard", "mup"):
            raise ValueError(f"init={init!r}: use 'standard' or 'mup'")
        self.d_model, self.n_heads, self.block_size = D, n_heads, T
        self.dropout, self.init = dropout, init
        self.fan_in = {}  # each factor's fan-in: the features it contracts with one token
        self.levels = []  # each level's pattern, query/key channels and logit scale
        # x[(g t), i] Q[i, r] K[j, r] x[(g u), j]
        self.Q = nn.ParameterDict()
        self.K = nn.ParameterDict()
        for l in range(1, levels + 1):
            g = 2 ** (l - 1)
            r = ranks[l - 1]
            self.Q[str(l)] = self.factor(f"Q_{l}", D, r, fan_in=D)  # Q[i, r]
            self.K[str(l)] = self.factor(f"K_{l}", D, r, fan_in=D)  # K[j, r]
            pattern = Pattern(length=block_length(T, g, "block_size in x[(g t), i]"))
            self.levels.append(Level(pattern, width=r, scale=1 / r))
        # each query channel's logit scale (float64, cast where used: exact in any dtype)
        scales = [level.scale for level in self.levels for _ in range(level.width)]
        scales = torch.tensor(scales, dtype=torch.float64)
        self.register_buffer("scales", scales, persistent=False)
        self.v_proj = nn.Linear(D, D, bias=bias)
        self.o_proj = nn.Linear(D, D, bias=bias)
        self.reset_parameters()

    def factor(self, name: str, *shape: int, fan_in: int) -> nn.Parameter:
        """A scoring factor of `shape` per head, which einsearch calls `name`."""
        self.fan_in[name] = fan_in
        return nn.Parameter(torch.empty(self.n_heads, *shape))

    def factors(self) -> dict[str, torch.Tensor]:
        """Every scoring factor, (n_heads, *its shape), under einsearch's names."""
        return {
            **{f"Q_{l}": p for l, p in self.Q.items()},
            **{f"K_{l}": p for l, p in self.K.items()},
        }

    @property
    def patterns(self) -> list[Pattern]:
        return [level.pattern for level in self.levels]

    @property
    def widths(self) -> list[int]:
        return [level.width for level in self.levels]

    def reset_parameters(self) -> None:
        for name, factor in self.factors().items():
            nn.init.normal_(factor, std=self.fan_in[name] ** -0.5)
        self.v_proj.reset_parameters()
        self.o_proj.reset_parameters()
        if self.init == "mup":
            nn.init.zeros_(self.o_proj.weight)

    def param_groups(self, lr: float, base_fan_in: int = 64) -> list[dict]:
        """Adam parameter groups with muP learning rates: lr * base_fan_in / fan_in."""
        groups = [
            {"params": [factor], "lr": lr * base_fan_in / self.fan_in[name]}
            for name, factor in self.factors().items()
        ]
        projections = [*self.v_proj.parameters(), *self.o_proj.parameters()]
        return [*groups, {"params": projections, "lr": lr * base_fan_in / self.d_model}]

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every level's query and key maps side by side, (B, H, T, C)."""
        # Each level maps a token through one matrix per side: their columns side by side.
        Q = torch.cat(list(self.Q.values()), dim=-1)  # (H, D, C)
        K = torch.cat(list(self.K.values()), dim=-1)  # (H, D, C)
        q = torch.einsum("btd,hdc->bhtc", x, Q)  # (B, H, T, C)
        k = torch.einsum("btd,hdc->bhtc", x, K)  # (B, H, T, C)
        return q, k

    def qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries and keys attention scores, (B, H, T, C): the maps,
        each level's logit scale on its query channels."""
        q, k = self.maps(x)
        return q * self.scales.to(q.dtype), k

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model). With a cache (`new_cache`), x holds the next
        tokens of the sequences the cache has seen: they attend to those and to themselves."""
        B, T = check_input(x, self.d_model)
        H = self.n_heads
        q, k = self.qk(x)  # (B, H, T, C)
        v = self.v_proj(x).view(B, T, H, -1).transpose(1, 2)  # (B, H, T, D / H)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = attention(q, k, v, self.patterns, self.widths, dropout_p=dropout)
        else:
            y = decode(cache, q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def new_cache(self, batch_size: int, max_len: int) -> Cache:
        """An empty decoding cache for `batch_size` sequences of up to `max_len` tokens."""
        H, w = self.n_heads, self.v_proj.weight
        args = (batch_size, H, max_len, self.patterns, self.widths, self.d_model // H)
        return new_cache(*args, dtype=w.dtype, device=w.device)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The logits the softmax sees, (B, H, T, T), -inf where no level covers (t, u) or u > t.
        Every pair is built here (a reference); `forward` never builds them."""
        check_input(x, self.d_model)
        q, k = self.qk(x)
        t = torch.arange(x.shape[1], device=x.device)[:, None]
        qs, ks = q.split(self.widths, -1), k.split(self.widths, -1)
        return level_logits(zip(self.levels, qs, ks), t, t.T)


class Level(NamedTuple):
    """One term of the score at the module's sizes: the pairs it covers, its query/key channels,
    its logit scale, and x's features as a grid on each side where its factors read them so."""

    pattern: Pattern
    width: int
    scale: float
    query_grid: tuple = ()
    key_grid: tuple = ()


def level_logits(levels, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The summed logits of (level, q_l, k_l) triples on the pairs (t, u),
    -inf where no level covers (t, u) or u > t."""
    logits, count = 0, 0
    for level, q_l, k_l in levels:
        covered = covers(level.pattern, t, u)
        logits = logits + (q_l @ k_l.transpose(-1, -2)) * covered
        count = count + covered
    return logits.masked_fill((count == 0) | (u > t), -math.inf)


def check_input(x: torch.Tensor, d_model: int) -> tuple[int, int]:
    """(B, T) of an input (B, T, d_model), T >= 1."""
    if x.dim() != 3 or x.shape[-1] != d_model or x.shape[1] < 1:
        raise ValueError(f"x must be (B, T >= 1, {d_model}), got {tuple(x.shape)}")
    return x.shape[0], x.shape[1]


# ------------------------------------------------------------------------------------------------
# Sizes: the structure's functions and the checks of the options
# ------------------------------------------------------------------------------------------------
# A structure's sizes at construction: the DSL's functions, and checks of options.
#
# The structure language evaluates sizes with these functions (``einsearch.expr``
# imports them), and a generated module's ``__init__`` calls them with the options it
# is given, so a module built with options O has the factors and patterns that
# ``einsearch generate`` with O would write. Every failed check is a ValueError that
# names the option and gives the structure's reason. Standard library only: generated
# modules carry this file.


MAX_FACTORED = 10**12  # sqrt_divisor searches up to sqrt(n) candidates


def sqrt_divisor(n: int, mode: str = "balanced") -> int:
    """The smaller factor ``a`` of a two-way split ``n = a * b`` near the square root.

    ``balanced``: the largest divisor of n not above sqrt(n) (256 -> 16, 96 -> 8).
    ``research``: n / b with b the smallest divisor strictly above sqrt(n) (256 -> 8,
    144 -> 9), the rule of the paper's code: the largest divisor a with a * a < n.
    Both search down from sqrt(n), so n is limited to what that search does quickly.
    """
    if mode not in ("balanced", "research"):
        raise ValueError(f"unknown split mode {mode!r} (balanced or research)")
    if n > MAX_FACTORED:
        raise ValueError(f"{n} is too large to split (at most {MAX_FACTORED})")
    if n < 1:
        raise ValueError(f"{n} has no split")
    root = math.isqrt(n)
    if mode == "research" and root * root == n and n > 1:
        root -= 1  # b must be strictly above sqrt(n)
    return next(d for d in range(root, 0, -1) if n % d == 0)


def log2(n: int) -> int:
    """The exact base-2 logarithm of a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"log2({n}) is not a whole number")
    return n.bit_length() - 1


def whole(value, what: str) -> int:
    """``value`` as an int if it is a whole number (a size, a count), else an error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != int(value)
    ):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def divide(total: int, part: int, what: str) -> int:
    """``total / part`` when ``part`` divides ``total``: the one size left in a group
    such as ``(g t)`` of a T-token axis; else a ValueError stating the rule."""
    if part < 1 or total % part:
        raise ValueError(f"{what}: {total} is not a multiple of {part}")
    return total // part


def block_length(total: int, blocks: int, what: str) -> int | None:
    """The length of each of ``blocks`` equal blocks of a ``total``-token sequence, or
    None for one block: a level of one block is global, and stays so past ``total``
    tokens."""
    return None if blocks == 1 else divide(total, blocks, what)


def check_size(value, name: str) -> int:
    """A ``size`` option: a positive whole number."""
    if whole(value, name) < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def check_list(value, name: str, length: int) -> list:
    """A list option of ``length`` whole numbers (one number stands for every entry)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * length
    if len(values) != length:
        raise ValueError(f"{name} needs {length} values, got {len(values)}: {value!r}")
    return [whole(v, f"each value of {name}") for v in values]


def check_choice(value: str, name: str, choices: tuple) -> str:
    """A ``choice`` option: one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def require(holds: bool, message: str) -> None:
    """A ``require`` of the structure: a ValueError with its reason if it fails."""
    if not holds:
        raise ValueError(message)


# ------------------------------------------------------------------------------------------------
# The pair rule, and the causal pairs cut into batched attention calls
# ------------------------------------------------------------------------------------------------
# The pair rule on absolute token positions, and the causal pairs cut into batched
# attention calls.
#
# A level's sequence pattern, at run time, is a ``Pattern``: blocks of ``length``
# consecutive tokens starting at position 0 (``None``: one block, every pair), then
# optionally a band ``lo <= t - u <= hi`` on the distance. Query t scores key u through
# the level when ``covers(pattern, t, u)``; attention is causal on top of that (u <= t).
#
# ``partition`` cuts the causal pairs of a sequence into ``Call``s, batched attention
# calls each of one class (the set of levels covering its pairs); ``attention.py`` runs
# them and merges their softmaxes. ``cache_slots`` and ``cache_elements`` size the
# decoding cache.
#
# Standard library only: einsearch's analyzer imports this file, and every generated
# module carries it verbatim, so the rule the numbers are computed with is the rule the
# module runs.


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


# ------------------------------------------------------------------------------------------------
# The kernel layer: attention over a partition, and decoding
# ------------------------------------------------------------------------------------------------
# Causal attention over levels of channels, each scoring its own pairs: the partition
# of ``tiling`` run as batched attention calls merged by their log-sum-exp (forward,
# backward, decoding).
#
# Query t and key u <= t are scored by the levels that cover the pair (its class); the
# logit is one dot product over those levels' channels, so a call of one class passes q
# with the other levels' channels zeroed. Each call returns its partial output and
# log-sum-exp, and partial softmaxes over disjoint key sets merge exactly:
#
#     lse = log(exp(lse_a) + exp(lse_b))
#     out = out_a + sigmoid(lse_b - lse_a) * (out_b - out_a)
#
# Backward (the split-KV rule): with the *merged* output and log-sum-exp of its queries,
# each call's own attention backward yields exactly its share of the gradients
# (P = exp(S - lse) is its part of the softmax, and rowsum(dO * O) is the merged one); the
# shares add up. Nothing T x T is built.
#
# Paths: the fused kernels (CPU flash attention; on CUDA the flash and memory-efficient
# kernels), all private ops, looked up with ``hasattr``; and the plain path (float64,
# dropout, any device): the same calls as matrix products in tiles, a first pass for each
# query's log-sum-exp, a second for the output, autograd through it.


# Plain-path tiles are at most this many queries x keys per member of a call.
_CHUNK = 256


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    patterns: tuple[Pattern, ...],
    widths: tuple[int, ...],
    *,
    dropout_p: float = 0.0,
    coverage: bool = False,
) -> torch.Tensor:
    """Causal attention whose pair (t, u) is scored by the levels whose pattern covers
    it.

    q, k: (B, H, T, C), the channels of the levels concatenated in level order,
    ``widths[l]`` of level l (summing to C), each level's logit scale folded into q. v:
    (B, H, T, Dv). The logit of u <= t is the sum over covering levels of their
    channels' dot product; a key no level covers is masked, and a query with no key gets
    a zero output. Returns (B, H, T, Dv); dropout applies to the attention probabilities
    (pass 0 outside training, as with SDPA). ``coverage``: each pair's logit divided by
    the number of levels that cover it.
    """
    patterns, widths = tuple(Pattern(*p) for p in patterns), tuple(widths)
    _check(q, k, v, patterns, widths)
    kernel = _kernel_for(q, dropout_p)
    if kernel is None:
        return _plain(q, k, v, patterns, widths, dropout_p, coverage)
    return _Fused.apply(q, k, v, patterns, widths, kernel, coverage)


def _check(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, patterns: tuple, widths: tuple
) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "need q, k (B, H, T, C) and v (B, H, T, Dv), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if (
        len(widths) != len(patterns)
        or min(widths, default=0) < 0
        or sum(widths) != q.shape[-1]
    ):
        raise ValueError(
            f"need one width per level ({len(patterns)}) summing to "
            f"C={q.shape[-1]}, got {widths}"
        )


# -- views, channels, masks
# ----------------------------------------------------------------------


def _take(x: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """The (BH, count, length, ...) view of the token ranges ``blocks`` of x (BH, T,
    ...)."""
    start, count, stride, length = blocks
    step = x.stride(1)
    return x.as_strided(
        (x.shape[0], count, length, *x.shape[2:]),
        (x.stride(0), stride * step, step, *x.stride()[2:]),
        x.storage_offset() + start * step,
    )


def _level_channels(widths: tuple) -> list[tuple[int, int]]:
    """Each level's channel range [lo, hi)."""
    ends = [sum(widths[: level + 1]) for level in range(len(widths))]
    return [(end - width, end) for end, width in zip(ends, widths)]


@lru_cache(maxsize=1024)
def _keep(
    widths: tuple,
    levels: tuple,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
    coverage: bool,
) -> torch.Tensor | None:
    """1 on the ``width`` channels of the class's levels (1 / their number with
    ``coverage``), 0 elsewhere; None when that is 1 on every channel of q (the rest is
    zero padding). A class's calls take q times this."""
    share = 1 / len(levels) if coverage else 1
    if len(levels) == len(widths) and share == 1:
        return None
    keep = torch.zeros(width, dtype=dtype, device=device)
    for level in levels:
        lo, hi = _level_channels(widths)[level]
        keep[lo:hi] = share
    return keep


def _class_queries(
    q: torch.Tensor, call: Call, keep: torch.Tensor | None
) -> torch.Tensor:
    """The call's queries (BH, count, rows, width) with the channels outside its class
    zeroed."""
    queries = _take(q, call.queries)
    return queries if keep is None else queries * keep


def _positions(blocks: Blocks, device: torch.device) -> torch.Tensor:
    """The token positions of ``blocks``, (count, length)."""
    start, count, stride, length = blocks
    return (
        start
        + stride * torch.arange(count, device=device)[:, None]
        + torch.arange(length, device=device)
    )


@lru_cache(maxsize=1024)
def _class_mask(call: Call, patterns: tuple, device: torch.device) -> torch.Tensor:
    """Which pairs of a masked call's tiles it scores: u <= t, covered by exactly its
    levels. (count, rows, cols), or (1, rows, cols) when every tile has the same."""
    t = _positions(call.queries, device)[:, :, None]
    u = _positions(call.keys, device)[:, None, :]
    mask = u <= t
    for level, pattern in enumerate(patterns):
        covered = covers(pattern, t, u)
        mask &= covered if level in call.levels else ~covered
    return mask[:1] if bool((mask == mask[:1]).all()) else mask


@lru_cache(maxsize=1024)
def _bias(call: Call, patterns: tuple, dtype: torch.dtype, device: torch.device):
    """A masked call as the fused kernels take it: an additive mask (1, count or 1,
    rows, cols) of 0 and -inf, and the rows with no key at all (count or 1, rows), None
    if there are none."""
    mask = _class_mask(call, patterns, device)
    bias = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(
        ~mask, -math.inf
    )
    empty = ~mask.any(-1)
    return bias[None], empty if bool(empty.any()) else None


# -- the fused kernels
# ---------------------------------------------------------------------------


def _has(*names: str) -> bool:
    return all(hasattr(torch.ops.aten, name) for name in names)


class _CpuFlash:
    """The CPU flash-attention ops: one head size for q, k and v; is_causal keeps u <= t
    of a square."""

    available = _has(
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention_for_cpu_backward",
    )

    @staticmethod
    def width(channels: int) -> int:
        return channels

    @staticmethod
    def forward(q, k, v, causal: bool, bias):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=bias, scale=1.0
        )
        return out, lse, bias

    @staticmethod
    def backward(grad_out, q, k, v, out, lse, causal: bool, bias):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, lse, 0.0, causal, attn_mask=bias, scale=1.0
        )


class _Cuda:
    """CUDA: the flash kernel (half precision, at most 256 channels, no mask), else the
    memory-efficient one (float32 too, additive masks, no size limit). Both want aligned
    rows: channels padded to 8, and each call's operands copied contiguous."""

    available = _has(
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_efficient_attention_backward",
    )

    @staticmethod
    def width(channels: int) -> int:
        return -(-channels // 8) * 8

    @staticmethod
    def forward(q, k, v, causal: bool, bias):
        aten = torch.ops.aten
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        if (
            bias is None
            and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] <= 256
        ):
            out, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = (
                aten._scaled_dot_product_flash_attention(
                    q, k, v, 0.0, causal, False, scale=1.0
                )
            )
            return out, lse, (cum_q, cum_k, max_q, max_k, seed, offset)
        if (
            bias is not None
        ):  # rows of the mask aligned as the kernel reads them, then broadcast
            cols = bias.shape[-1]
            bias = F.pad(bias, (0, -cols % 8))[..., :cols].expand(*q.shape[:3], cols)
        out, lse, seed, offset = aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, True, 0.0, causal, scale=1.0
        )
        return out, lse[..., : q.shape[2]], (bias, seed, offset)

    @staticmethod
    def backward(grad_out, q, k, v, out, lse, causal: bool, state):
        aten = torch.ops.aten
        grad_out, q, k, v, out, lse = (
            x.contiguous() for x in (grad_out, q, k, v, out, lse)
        )
        if len(state) == 6:
            cum_q, cum_k, max_q, max_k, seed, offset = state
            return aten._scaled_dot_product_flash_attention_backward(
                grad_out,
                q,
                k,
                v,
                out,
                lse,
                cum_q,
                cum_k,
                max_q,
                max_k,
                0.0,
                causal,
                seed,
                offset,
                scale=1.0,
            )
        bias, seed, offset = state
        lse = F.pad(
            lse, (0, -lse.shape[-1] % 32)
        )  # the kernel's layout: query rows padded to 32
        grads = aten._scaled_dot_product_efficient_attention_backward(
            grad_out,
            q,
            k,
            v,
            bias,
            out,
            lse,
            seed,
            offset,
            0.0,
            [True, True, True, False],
            causal,
            scale=1.0,
        )
        return grads[:3]


_KERNELS = {
    "cpu": (_CpuFlash, (torch.float32, torch.bfloat16, torch.float16)),
    "cuda": (_Cuda, (torch.float32, torch.bfloat16, torch.float16)),
}


def _kernel_for(q: torch.Tensor, dropout: float):
    """The fused kernels for q's device and dtype, or None for the plain path."""
    kernel, dtypes = _KERNELS.get(q.device.type, (None, ()))
    if dropout or kernel is None or not kernel.available or q.dtype not in dtypes:
        return None
    return kernel


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """x zero-padded to ``width`` channels (itself if it has them)."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


def _flat(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, c) as (B * H, T, width), zero-padded."""
    return _pad(x, width).flatten(0, 1)


def _merge(
    out: torch.Tensor,
    lse: torch.Tensor,
    blocks: Blocks,
    part: torch.Tensor,
    part_lse: torch.Tensor,
    fresh: bool,
) -> None:
    """Merge a call's output and log-sum-exp into the running ones of its queries, in
    place."""
    out_view, lse_view = _take(out, blocks), _take(lse, blocks)
    part, part_lse = part.to(out.dtype), part_lse.to(lse.dtype)
    if fresh:
        out_view.copy_(part)
        lse_view.copy_(part_lse)
        return
    # Where neither has a key yet (both -inf) the weight is nan: keep the zeros.
    weight = torch.sigmoid(part_lse - lse_view).nan_to_num_(0.0)
    out_view.lerp_(part, weight.unsqueeze(-1))
    lse_view.copy_(torch.logaddexp(lse_view, part_lse))


class _Fused(torch.autograd.Function):
    """Every call through a fused kernel, merged in place; backward by the split-KV
    rule."""

    @staticmethod
    def forward(ctx, q, k, v, patterns, widths, kernel, coverage):
        B, H, T, C = q.shape
        Dv = v.shape[-1]
        # One head size for the kernels: zero channels change no logit, and the zero
        # value channels of the output are sliced off.
        width = kernel.width(max(C, Dv))
        q, k, v = (_flat(x, width) for x in (q, k, v))
        calls = partition(T, patterns)
        out, lse = _running(
            calls, B * H, T, Dv, torch.promote_types(v.dtype, torch.float32), v.device
        )
        states = []
        for call, fresh in zip(calls, first_touch(T, calls)):
            bias, empty = (
                _bias(call, patterns, q.dtype, q.device)
                if call.mode == "masked"
                else (None, None)
            )
            part, part_lse, state = kernel.forward(
                _class_queries(
                    q,
                    call,
                    _keep(widths, call.levels, width, q.dtype, q.device, coverage),
                ),
                _take(k, call.keys),
                _take(v, call.keys),
                call.mode == "causal",
                bias,
            )
            if empty is not None:  # rows of a tile with no key of this class
                part, part_lse = (
                    part.masked_fill(empty[..., None], 0.0),
                    part_lse.masked_fill(empty, -math.inf),
                )
            _merge(out, lse, call.queries, part[..., :Dv], part_lse, fresh)
            states.append(state)
        out = out.to(v.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.setup = (patterns, widths, kernel, states, C, coverage)
        return out.view(B, H, T, Dv)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        patterns, widths, kernel, states, C, coverage = ctx.setup
        B, H, T, Dv = grad_out.shape
        width = v.shape[-1]
        grad_out, out = _flat(grad_out.contiguous(), width), _pad(out, width)
        # A query no key scores has lse = -inf; any finite value gives its (masked)
        # logits weight 0.
        lse = lse.masked_fill(lse == -math.inf, 0.0)
        grad_q, grad_k, grad_v = (
            torch.zeros(x.shape, dtype=lse.dtype, device=x.device) for x in (q, k, v)
        )
        for call, state in zip(partition(T, patterns), states):
            keep = _keep(widths, call.levels, width, q.dtype, q.device, coverage)
            dq, dk, dv = kernel.backward(
                _take(grad_out, call.queries),
                _class_queries(q, call, keep),
                _take(k, call.keys),
                _take(v, call.keys),
                _take(out, call.queries),
                _take(lse, call.queries),
                call.mode == "causal",
                state,
            )
            # dq outside the class's channels is not a gradient (those are zeros, not
            # q); dk there is zero already (dk = dS^T q).
            _take(grad_q, call.queries).add_(dq if keep is None else dq * keep)
            _take(grad_k, call.keys).add_(dk)
            _take(grad_v, call.keys).add_(dv)
        grad_q, grad_k = (
            g[..., :C].reshape(B, H, T, C).to(q.dtype) for g in (grad_q, grad_k)
        )
        return (
            grad_q,
            grad_k,
            grad_v[..., :Dv].reshape(B, H, T, Dv).to(v.dtype),
            None,
            None,
            None,
            None,
        )


def _running(
    calls: tuple, rows: int, T: int, Dv: int, dtype: torch.dtype, device: torch.device
):
    """The running output and log-sum-exp: zeros and -inf, unless the first calls to
    touch each query (which write, not merge) cover them all."""
    written = sum(
        c.queries.count * c.queries.length
        for c, fresh in zip(calls, first_touch(T, calls))
        if fresh
    )
    if written == T:
        return torch.empty(rows, T, Dv, dtype=dtype, device=device), torch.empty(
            rows, T, dtype=dtype, device=device
        )
    return torch.zeros(rows, T, Dv, dtype=dtype, device=device), torch.full(
        (rows, T), -math.inf, dtype=dtype, device=device
    )


# -- the plain path
# ------------------------------------------------------------------------------


def _tiles(call: Call, patterns: tuple, device: torch.device):
    """A call's pairs in tiles of at most _CHUNK x _CHUNK per member: (the tile as a
    call, its mask or None)."""
    queries, keys = call.queries, call.keys
    mask = _class_mask(call, patterns, device) if call.mode == "masked" else None
    for q0 in range(0, queries.length, _CHUNK):
        rows = min(_CHUNK, queries.length - q0)
        for k0 in range(0, keys.length, _CHUNK):
            cols = min(_CHUNK, keys.length - k0)
            if call.mode == "causal" and k0 > q0 + rows - 1:
                continue  # above the diagonal
            if mask is not None:
                tile = mask[:, q0 : q0 + rows, k0 : k0 + cols]
            elif call.mode == "causal" and k0 + cols - 1 > q0:
                tile = torch.ones(rows, cols, dtype=torch.bool, device=device).tril(
                    q0 - k0
                )
            else:
                tile = None
            part = (
                queries._replace(start=queries.start + q0, length=rows),
                keys._replace(start=keys.start + k0, length=cols),
            )
            yield call._replace(queries=part[0], keys=part[1]), tile


def _plain(
    q, k, v, patterns: tuple, widths: tuple, dropout: float, coverage: bool
) -> torch.Tensor:
    """The partition as matrix products in tiles, exact, autograd through it; no T x T
    buffer.

    A first pass (no gradient) finds each query's log-sum-exp m; the second sums exp(s -
    m) v and exp(s - m) over the tiles and divides. m is only a shift: the division
    makes the softmax exact, and its gradient, whatever m is.
    """
    B, H, T, C = q.shape
    Dv = v.shape[-1]
    q, k, v = (x.reshape(B * H, T, x.shape[-1]) for x in (q, k, v))
    tiles = [
        tile
        for call in partition(T, patterns)
        for tile in _tiles(call, patterns, q.device)
    ]

    def logits(tile: Call, mask):
        keep = _keep(widths, tile.levels, C, q.dtype, q.device, coverage)
        s = _class_queries(q, tile, keep) @ _take(k, tile.keys).mT
        return s if mask is None else s.masked_fill(~mask, -math.inf)

    with torch.no_grad():
        shift = torch.full((B * H, T), -math.inf, dtype=q.dtype, device=q.device)
        for tile, mask in tiles:
            view = _take(shift, tile.queries)
            view.copy_(torch.logaddexp(view, logits(tile, mask).logsumexp(-1)))
        shift.masked_fill_(shift == -math.inf, 0.0)
    num = v.new_zeros(B * H, T, Dv)
    den = v.new_zeros(B * H, T)
    for tile, mask in tiles:
        weights = torch.exp(
            logits(tile, mask) - _take(shift, tile.queries).unsqueeze(-1)
        )
        _take(den, tile.queries).add_(weights.sum(-1))
        _take(num, tile.queries).add_(
            F.dropout(weights, dropout, True) @ _take(v, tile.keys)
        )
    den = torch.where(den > 0, den, 1.0)  # queries with no key: zero output
    return (num / den.unsqueeze(-1)).view(B, H, T, Dv)


# -- decoding
# ------------------------------------------------------------------------------------


class Cache:
    """What decoding keeps: per level a ring of ``cache_slots`` keys (key u at slot u
    mod slots), the values in a ring of the most slots, and the tokens seen so far.

    The levels' rings lie one after another in one buffer (batch x heads, elements),
    each stored channels first, so that a token's keys are written with one indexed copy
    and a query meets a ring with one product, no transpose.
    """

    def __init__(
        self,
        batch: int,
        heads: int,
        max_len: int,
        patterns: tuple,
        widths: tuple,
        v_width: int,
        dtype,
        device,
        coverage: bool,
    ):
        self.batch, self.heads, self.max_len = batch, heads, max_len
        self.patterns, self.widths, self.coverage = patterns, widths, coverage
        self.slots = [cache_slots(pattern, max_len) for pattern in patterns]
        sizes = [n * width for n, width in zip(self.slots, widths)]
        self.starts = [sum(sizes[:level]) for level in range(len(sizes))]
        self.rings = torch.zeros(batch * heads, sum(sizes), dtype=dtype, device=device)
        # Each level's ring as a (batch x heads, channels, slots) view.
        self.keys = [
            self.rings[:, start : start + n * width].view(batch * heads, width, n)
            for start, n, width in zip(self.starts, self.slots, widths)
        ]
        self.values = torch.zeros(
            batch * heads, max(self.slots), v_width, dtype=dtype, device=device
        )
        # Where a token's key channels go: channel c of level l at start_l + c * slots_l
        # plus the token's slot, t mod slots_l.
        first, period = [], []
        for start, n, width in zip(self.starts, self.slots, widths):
            first += [start + channel * n for channel in range(width)]
            period += [n] * width
        self.first = torch.tensor(first, dtype=torch.int64, device=device)
        self.period = torch.tensor(period, dtype=torch.int64, device=device)
        self.length = 0


def new_cache(
    batch: int,
    heads: int,
    max_len: int,
    patterns: tuple[Pattern, ...],
    widths: tuple[int, ...],
    v_width: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    coverage: bool = False,
) -> Cache:
    """An empty decoding cache for up to ``max_len`` tokens (``tiling.cache_elements``
    per head); ``coverage`` as in ``attention``."""
    patterns, widths = tuple(Pattern(*p) for p in patterns), tuple(widths)
    if len(widths) != len(patterns) or min(widths, default=0) < 0:
        raise ValueError(f"need one width per level ({len(patterns)}), got {widths}")
    if min(batch, heads, max_len, v_width) < 1:
        raise ValueError(
            "need a positive batch, heads, max_len and v_width, got "
            f"{batch}, {heads}, {max_len}, {v_width}"
        )
    device = torch.device(device)
    return Cache(
        batch, heads, max_len, patterns, widths, v_width, dtype, device, coverage
    )


def decode(
    cache: Cache, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Attention of n new tokens (n >= 1) to themselves and the cached ones, exactly as
    the full forward gives them; their keys and values join the cache.

    q, k: (B, H, n, C), v: (B, H, n, Dv), the cache's batch, heads and widths. Returns
    (B, H, n, Dv). A first step of several tokens runs the full forward; later tokens
    run one at a time.
    """
    n = _check_step(cache, q, k, v)
    if cache.length == 0 and n > 1:
        out = attention(q, k, v, cache.patterns, cache.widths, coverage=cache.coverage)
        _store(cache, k, v)
        return out
    outs = [
        _step(cache, q[:, :, i : i + 1], k[:, :, i : i + 1], v[:, :, i : i + 1])
        for i in range(n)
    ]
    return outs[0] if n == 1 else torch.cat(outs, dim=2)


def _check_step(cache: Cache, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "need q, k (B, H, n, C) and v (B, H, n, Dv), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, H, n, C = q.shape
    if B != cache.batch:
        raise ValueError(f"the cache holds a batch of {cache.batch}, got {B}")
    if H != cache.heads:
        raise ValueError(f"the cache holds {cache.heads} heads, got {H}")
    if C != sum(cache.widths):
        raise ValueError(
            f"the levels' widths {cache.widths} need C={sum(cache.widths)} channels, "
            f"got {C}"
        )
    if v.shape[-1] != cache.values.shape[-1]:
        raise ValueError(
            f"the cache holds values of {cache.values.shape[-1]} channels, "
            f"got {v.shape[-1]}"
        )
    if q.dtype != cache.values.dtype:
        raise ValueError(f"the cache holds {cache.values.dtype}, got {q.dtype}")
    if n < 1 or cache.length + n > cache.max_len:
        raise ValueError(
            f"{n} new tokens after {cache.length} do not fit max_len={cache.max_len}"
        )
    return n


def _ring(first: int, end: int, slots: int) -> list[tuple[int, int, int]]:
    """Positions [first, end) (at most ``slots``) in a ring: (slot, offset in the range,
    length) pieces."""
    start = first % slots
    head = min(end - first, slots - start)
    return [(start, 0, head)] + (
        [(0, head, end - first - head)] if head < end - first else []
    )


def _store(cache: Cache, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write the new tokens' keys and values (the last ones a ring can hold) and
    advance. The cache keeps data, not autograd history: decoding is inference."""
    B, H, n, C = k.shape
    end = cache.length + n
    k, v = k.reshape(B * H, n, C), v.reshape(B * H, n, -1)
    if n == 1:  # every level's slot of the token at once
        t = cache.length
        index = cache.first + t % cache.period
        cache.rings.index_copy_(1, index, k[:, 0].detach())
        cache.values[:, t % cache.values.shape[1]] = v[:, 0].detach()
        cache.length = end
        return
    rings = zip(cache.keys, k.split(cache.widths, dim=-1))
    for buffer, new in [*((keys.mT, new) for keys, new in rings), (cache.values, v)]:
        first = max(cache.length, end - buffer.shape[1])
        for slot, offset, length in _ring(first, end, buffer.shape[1]):
            at = first - cache.length + offset
            buffer[:, slot : slot + length] = new[:, at : at + length].detach()
    cache.length = end


def _step(
    cache: Cache, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """One new token: logits over its keys in position order, one product per level and
    ring piece."""
    _store(cache, k, v)
    t = cache.length - 1
    B, H = q.shape[:2]
    ranges = [level_keys(pattern, t) for pattern in cache.patterns]
    scored = sorted((a, b) for a, b in ranges if b > a)
    if not scored:
        return v.new_zeros(B, H, 1, v.shape[-1])
    first, end = scored[0][0], max(b for _, b in scored)
    parts = []  # (offset in [first, end), the level's queries, its keys there)
    for (a, b), q_level, keys in zip(
        ranges, q.reshape(B * H, 1, -1).split(cache.widths, dim=-1), cache.keys
    ):
        for slot, offset, length in _ring(a, b, keys.shape[2]) if b > a else ():
            ring = keys if length == keys.shape[2] else keys[..., slot : slot + length]
            parts.append((a - first + offset, q_level, ring))
    parts.sort(key=lambda part: -part[2].shape[-1])
    if parts[0][2].shape[-1] == end - first:  # a level scores every key: its logits
        _, q_level, ring = parts.pop(0)
        scores = torch.bmm(q_level, ring)
    else:
        scores = q.new_zeros(B * H, 1, end - first)
    for at, q_level, ring in parts:  # the others added in place, one call each
        scores[..., at : at + ring.shape[-1]].baddbmm_(q_level, ring)
    if cache.coverage:  # each key's logit over the levels that reach it
        count = scores.new_zeros(end - first)
        for a, b in scored:
            count[a - first : b - first] += 1
        scores = scores / count.clamp(min=1)
    reached = first
    for a, b in scored:  # keys no level scores
        if a > reached:
            scores[..., reached - first : a - first] = -math.inf
        reached = max(reached, b)
    weights = torch.softmax(scores, dim=-1)
    (slot, _, length), *wrapped = _ring(first, end, cache.values.shape[1])
    out = torch.bmm(weights[..., :length], cache.values[:, slot : slot + length])
    for slot, offset, length in wrapped:
        out += torch.bmm(
            weights[..., offset : offset + length],
            cache.values[:, slot : slot + length],
        )
    return out.view(B, H, 1, -1)
