"""The search space: families registered as a structure file and the grid of options it is
searched over (as cotengra registers a path finder with its hyper-parameter space).

A family is a ``.ein`` file under the catalog folder (``catalog/`` for the paper's structures,
``catalog/search/`` for the general ones) and a grid: a function of the search's sizes and knobs
(``Space``) that yields option values. ``FAMILIES`` lists them in the order duplicates are
resolved (the first kept); ``family`` registers one and refuses a name taken.

* ``lowrank`` and ``swa`` over a rank grid and a window grid; ``global-swa`` over the splits of
  the head dimension (in eighths) between its two terms;
* ``monarch``, ``btt`` (TT-ranks s with s (a + b) <= D) and ``kronecker`` over every split
  D = a x b but 1 x D; ``tt`` over every ordered D = a x b x c with cores of at least 2, TT-ranks
  1, 2, 4 (the mirror c x b x a left out);
* ``mlr`` and ``bilinear-mlr`` over every composition of the head dimension into 1 ..
  ``max_levels`` levels, in steps of the rank unit;
* ``multi`` (``catalog/search/multi.ein``): up to ``multi_levels`` levels, each on any of global
  or 2 .. 64 sequence blocks with a low-rank (d/4 .. 2d) or block-diagonal (4 or 16 blocks) matrix;
  ``multi-band`` (``multi-band.ein``): up to ``multi_levels - 1`` such levels and a low-rank window;
* ``einsum`` (``einsum.ein``): the two-core einsums of the einsum-search space (Potapczynski et
  al. 2024), each axis D to an exponent on a grid of step 1 / einsum_grid (sizes: divisors of D).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from difflib import get_close_matches
from functools import cached_property

from ..errors import OptionError
from ..sequence import SequencePattern

Grid = Callable[["Space"], Iterable[dict]]


@dataclass(frozen=True)
class Space:
    """The sizes of one search and the knobs of its grids."""

    D: int
    T: int
    heads: int
    max_levels: int = 8
    multi_levels: int = 2
    rank_unit: int | None = None  # None: the finest step that leaves at most 16 units in the head dimension
    einsum_grid: int = 2

    @property
    def head_dim(self) -> int:
        return self.D // self.heads

    @cached_property
    def unit(self) -> int:
        """The step of the rank allocations."""
        if self.rank_unit is not None:
            return self.rank_unit
        return next(u for u in divisors(self.head_dim) if self.head_dim // u <= 16)

    @property
    def units(self) -> int:
        return max(1, self.head_dim // self.unit)

    @cached_property
    def ranks(self) -> list[int]:
        """Low-rank heads: powers of two from a sixteenth of the head dimension to D, and the head dimension."""
        grid = {2**k for k in range(self.D.bit_length()) if self.head_dim // 16 <= 2**k <= self.D}
        return sorted(grid | {self.head_dim})

    @cached_property
    def windows(self) -> list[int]:
        """Band widths: T/4, T/8, ..., T/128."""
        return sorted({self.T >> k for k in range(2, 8) if self.T >> k >= 1})

    @cached_property
    def splits(self) -> list[int]:
        """Non-trivial splits D = a * b (a = 1 or D degenerates to another family)."""
        return [a for a in divisors(self.D) if 1 < a < self.D]


@dataclass(frozen=True)
class Family:
    """A part of the space: ``file`` (under the catalog folder) searched over ``grid``, which sets
    ``options`` (T and D are the search's). ``count``: the grid's size in closed form (None: count
    it by enumerating); ``summary``: a member's options (T and D included) in a few words."""

    name: str
    file: str
    options: tuple[str, ...]
    grid: Grid
    count: Callable[[Space], int] | None = None
    summary: Callable[[dict], str] | None = None

    def size(self, space: Space) -> int:
        return self.count(space) if self.count is not None else sum(1 for _ in self.grid(space))

    def summarize(self, options: dict) -> str:
        """``r=4 window=8``, or the family's own summary."""
        if self.summary is not None:
            return self.summary(options)
        return " ".join(f"{k}={option_text(v)}" for k, v in options.items() if k not in ("T", "D"))


FAMILIES: dict[str, Family] = {}


def family(name: str, file: str, options: Iterable[str] = (), count: Callable[[Space], int] | None = None,
           summary: Callable[[dict], str] | None = None) -> Callable[[Grid], Grid]:  # fmt: skip
    """Registers the decorated grid as the family ``name`` searched over ``file``."""

    def register(grid: Grid) -> Grid:
        if name in FAMILIES:
            raise ValueError(f"a search family {name!r} is already registered (families: {', '.join(FAMILIES)})")
        FAMILIES[name] = Family(name, file, tuple(options), grid, count, summary)
        return grid

    return register


def find_family(name: str) -> Family:
    """The registered family ``name``; an OptionError naming the families otherwise."""
    if name not in FAMILIES:
        close = get_close_matches(name, list(FAMILIES), 1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise OptionError("family", f"no family {name!r}{hint} (families: {', '.join(FAMILIES)}; or a file "
                          "given with --include)")  # fmt: skip
    return FAMILIES[name]


def option_text(value) -> str:
    """An option value as the command line takes it: ``8``, ``32,8,4``."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# ---------------------------------------------------------------------------------------------
# Grids of the paper's structures


@family("dense", "dense.ein")
def dense(space: Space) -> Iterator[dict]:
    yield {}


@family("lowrank", "lowrank.ein", ("r",))
def lowrank(space: Space) -> Iterator[dict]:
    for r in space.ranks:
        yield {"r": r}


@family("monarch", "monarch.ein", ("a",))
def monarch(space: Space) -> Iterator[dict]:
    for a in space.splits:
        yield {"a": a}


@family("btt", "btt.ein", ("a", "s"))
def btt(space: Space) -> Iterator[dict]:
    for a in space.splits:
        for s in powers(space.D):
            if s * (a + space.D // a) <= space.D:
                yield {"a": a, "s": s}


@family("kronecker", "kronecker.ein", ("a",))
def kronecker(space: Space) -> Iterator[dict]:
    yield from monarch(space)


TT_RANKS = (1, 2, 4)  # TT-ranks of the three-core train (each level planned apart: the costliest to plan)


@family("tt", "tt.ein", ("a", "b", "s"))
def tensor_train(space: Space) -> Iterator[dict]:
    """Every ordered D = a * b * c with cores of size >= 2, bond s <= a^2 and c^2 (past that it adds nothing)."""
    for a in divisors(space.D):
        for b in divisors(space.D // a):
            c = space.D // (a * b)
            if min(a, b, c) < 2 or a > c:  # a size-1 core is a two-core structure; c * b * a mirrors a * b * c
                continue
            for s in TT_RANKS:
                if s <= min(a, c) ** 2:
                    yield {"a": a, "b": b, "s": s}


@family("swa", "swa.ein", ("r", "window"))
def swa(space: Space) -> Iterator[dict]:
    for r in space.ranks:
        for w in space.windows:
            yield {"r": r, "window": w}


@family("global-swa", "global-swa.ein", ("rg", "rw", "window"))
def global_swa(space: Space) -> Iterator[dict]:
    """A global and a windowed low-rank term splitting the head dimension (rg + rw = head dim)."""
    d = space.head_dim
    step = max(space.unit, d // 8)  # eighths of the head dimension at most
    for rg in range(step, d, step):
        for w in space.windows:
            yield {"rg": rg, "rw": d - rg, "window": w}


def compositions(units: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way to write ``units`` as an ordered sum of ``parts`` positive whole numbers."""
    for cuts in itertools.combinations(range(1, units), parts - 1):
        edges = (0, *cuts, units)
        yield tuple(b - a for a, b in zip(edges, edges[1:]))


def allocations(space: Space, total: int) -> Iterator[dict]:
    """MLR's levels and ranks: the head dimension over 1 .. max_levels levels (2^(l-1) blocks
    of ``total`` tokens or features each must divide)."""
    for levels in range(1, min(space.max_levels, space.units) + 1):
        if total % 2 ** (levels - 1):
            break
        for parts in compositions(space.units, levels):
            yield {"levels": levels, "ranks": [u * space.unit for u in parts]}


def allocations_count(space: Space, total: int) -> int:
    return sum(math.comb(space.units - 1, levels - 1) for levels in range(1, min(space.max_levels, space.units) + 1)
               if total % 2 ** (levels - 1) == 0)  # fmt: skip


@family("mlr", "mlr.ein", ("levels", "ranks"), count=lambda space: allocations_count(space, space.T))
def mlr(space: Space) -> Iterator[dict]:
    """MLR attention: level l scores pairs in the same of 2^(l-1) blocks with rank r_l."""
    return allocations(space, space.T)


@family("bilinear-mlr", "bilinear-mlr.ein", ("levels", "ranks"), count=lambda space: allocations_count(space, space.D))
def bilinear_mlr(space: Space) -> Iterator[dict]:
    """Bilinear MLR: level l adds a block-diagonal low-rank matrix with 2^(l-1) feature blocks."""
    return allocations(space, space.D)


# ---------------------------------------------------------------------------------------------
# The general families of catalog/search


def level_choices(space: Space) -> list[tuple[int, int, int]]:
    """One level of ``multi``: (sequence blocks, feature blocks, rank of each), blocks first: global
    and 2 .. 64 blocks of at least 2 tokens; low rank d/4, d/2, d, 2d; 4 or 16 feature blocks of
    rank d/4, d/16."""
    D, d = space.D, space.head_dim
    patterns = [1] + [2**k for k in range(1, 7) if space.T % 2**k == 0 and space.T >> k >= 2]
    features = [(1, r) for r in sorted({max(1, d // 4), max(1, d // 2), d, min(D, 2 * d)})]
    features += [(c, max(1, d // c)) for c in (4, 16) if D % c == 0 and c < D]
    return [(p, c, r) for p in patterns for c, r in features]


def level_sets(space: Space, most: int) -> Iterator[tuple[tuple[int, int, int], ...]]:
    """Sets of 1 .. ``most`` distinct levels, at most one low-rank level per sequence pattern (two
    would be one of their summed rank)."""
    choices = level_choices(space)
    for count in range(1, most + 1):
        for chosen in itertools.combinations(choices, count):
            lowrank = [p for p, c, _ in chosen if c == 1]
            if len(set(lowrank)) == len(lowrank):
                yield chosen


def level_sets_count(space: Space, most: int) -> int:
    """How many ``level_sets``: the coefficients of x^1 .. x^most in the product over patterns of
    (1 + k x) (1 + x)^m, k low-rank and m block-diagonal choices on the pattern."""
    poly = [1]
    for p in dict.fromkeys(p for p, _, _ in level_choices(space)):
        on = [c for q, c, _ in level_choices(space) if q == p]
        factors = [[1, on.count(1)]] + [[1, 1]] * (len(on) - on.count(1))
        for factor in factors:
            poly = [sum(poly[i - j] * factor[j] for j in range(len(factor)) if 0 <= i - j < len(poly))
                    for i in range(len(poly) + len(factor) - 1)]  # fmt: skip
    return sum(poly[1 : most + 1])


def multi_values(chosen: tuple[tuple[int, int, int], ...]) -> dict:
    return {"levels": len(chosen), "blocks": [p for p, _, _ in chosen], "groups": [c for _, c, _ in chosen],
            "ranks": [r for _, _, r in chosen]}  # fmt: skip


def multi_summary(values: dict) -> str:
    """``global lr16 + 64 blocks lr128`` (low rank 16 on every pair, 128 on 64 blocks), ``bd4x16``
    (4 feature blocks of rank 16), ``band 0 <= t-u <= 8 lr4`` (the pattern's own text)."""
    parts = [f"{SequencePattern(p).text()} {'lr' + str(r) if c == 1 else f'bd{c}x{r}'}"
             for p, c, r in zip(values["blocks"], values["groups"], values["ranks"])]  # fmt: skip
    if "window" in values:
        parts.append(f"{SequencePattern(1, (0, values['window'])).text()} lr{values['rw']}")
    return " + ".join(parts)


MULTI = ("levels", "blocks", "groups", "ranks")


@family("multi", "search/multi.ein", MULTI, count=lambda space: level_sets_count(space, space.multi_levels),
        summary=multi_summary)  # fmt: skip
def multi(space: Space) -> Iterator[dict]:
    for chosen in level_sets(space, space.multi_levels):
        yield multi_values(chosen)


def band_choices(space: Space) -> list[tuple[int, int]]:
    """The windowed term of ``multi-band``: (rank, window)."""
    return [(r, w) for r in sorted({max(1, space.head_dim // 4), max(1, space.head_dim // 2), space.head_dim})
            for w in space.windows]  # fmt: skip


@family("multi-band", "search/multi-band.ein", (*MULTI, "rw", "window"), summary=multi_summary,
        count=lambda space: level_sets_count(space, space.multi_levels - 1) * len(band_choices(space)))  # fmt: skip
def multi_band(space: Space) -> Iterator[dict]:
    for chosen in level_sets(space, space.multi_levels - 1):
        for rw, window in band_choices(space):
            yield {**multi_values(chosen), "rw": rw, "window": window}


AXES = ("alpha", "beta", "delta", "epsilon", "rho")  # gamma = D / (alpha beta), phi = D / (delta epsilon)


def einsum_summary(options: dict) -> str:
    """``a16 g64 e16 f64``: the axes larger than 1, of all seven (alpha, beta, gamma, delta,
    epsilon, phi, rho)."""
    D, a, b, d, e, r = (options[k] for k in ("D", *AXES))
    sizes = {"a": a, "b": b, "g": D // (a * b), "d": d, "e": e, "f": D // (d * e), "r": r}
    return " ".join(f"{k}{v}" for k, v in sizes.items() if v > 1)


@family("einsum", "search/einsum.ein", AXES, summary=einsum_summary)
def einsum(space: Space) -> Iterator[dict]:
    """y = sum A[f, d, r, g, a] B[f, e, r, g, b] x[g, b, a]: query features (g b a), key (f e d);
    each side's three sizes from exponents i/N, j/N, the rest (N = einsum_grid), the rank too."""
    D, step = space.D, space.einsum_grid
    if D < 2:
        return
    triples = [(i, j, step - i - j) for i in range(step + 1) for j in range(step + 1 - i)]
    sides = sorted({three_sizes(D, t, step) for t in triples})
    ranks = sorted({nearest_divisor(D, D ** (k / step)) for k in range(step + 1)})
    for (a, b, g), (d, e, f), r in itertools.product(sides, sides, ranks):
        if a * d * f * g * r > 1 and b * e * f * g * r > 1:  # a factor of one entry is a scalar
            yield {"alpha": a, "beta": b, "delta": d, "epsilon": e, "rho": r}


def three_sizes(D: int, exponents: tuple[int, int, int], step: int) -> tuple[int, int, int]:
    first = nearest_divisor(D, D ** (exponents[0] / step))
    second = nearest_divisor(D // first, D ** (exponents[1] / step))
    return first, second, D // (first * second)


# ---------------------------------------------------------------------------------------------
# Numbers


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def nearest_divisor(n: int, target: float) -> int:
    """The divisor of n closest to ``target`` in log scale (the smaller on a tie)."""
    return min(divisors(n), key=lambda d: (abs(math.log(d) - math.log(max(target, 1e-9))), d))


def powers(n: int) -> list[int]:
    return [2**k for k in range(n.bit_length()) if 2**k <= n]
