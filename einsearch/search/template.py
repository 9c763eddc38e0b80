"""A structure file resolved once, and its levels at any option values from their symbolic sizes.

``Template`` resolves a file once, at the search's T and D and one grid point (every check of the
language runs there), and keeps each score line's level with its sizes, band and scale as
expressions of the file's symbols (``Level.symbolic``). At a grid point it evaluates those
expressions at the point's option values, with what resolution checks that depends on them
(sizes are positive whole numbers that fill x's axes, the requirements hold, a list has its
declared length), so ``build`` gives the very level ``Structure.resolve`` gives (a test compares
them).

Each level of a point is named by a key: the score line, its number, the loop value and the values
of what its expressions read that the grid changes (``ranks[l]`` of an MLR level, not the whole
list). Equal keys are equal levels, so the search builds and costs each one once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain, repeat

from ..dsl import Loop, SymbolDecl
from ..errors import DSLError, EinsearchError
from ..expr import Expr, Item, Name, Num, evaluate, names_in, walk
from ..sequence import SequencePattern
from ..structure import MAX_LEVELS, Instance, Level, Operand, Structure, is_whole, symbol_order

Reader = Callable[[dict, Sequence], list]  # the values a leaf reads at each of a loop's values
OUT_OF_RANGE = object()  # what a reader gives for an entry a list does not have


class Invalid(Exception):
    """The options give no structure (a size that does not divide, a requirement that fails)."""


@dataclass(frozen=True)
class Line:
    """One score line: the level it gives at the base options, and how to key and rebuild it."""

    index: int  # position among the file's score lines
    base: Level
    factors: tuple[str, ...]  # each operand's name as written (before a loop's suffix)
    loop: Loop | None
    leaves: tuple[Reader, ...]  # what its expressions read that the grid changes


class Template:
    """``structure`` resolved at ``values`` (T, D and one grid point), its levels evaluated at any
    values of ``options`` (the options a family's grid sets, every one at every point)."""

    def __init__(self, structure: Structure, values: dict, options: Iterable[str]) -> None:
        self.structure = structure
        self.options = tuple(options)
        declared = {decl.name for decl in structure.options}
        for name in self.options:
            if name not in declared:
                raise EinsearchError(f"{structure.source}: search sets --{name}, which this file does not declare "
                                     f"(its options: {', '.join(f'--{n}' for n in sorted(declared))})")  # fmt: skip
        self.base = structure.resolve(values)
        program = structure.program
        order = symbol_order(program)
        self.varied = set(self.options)
        for decl in order:
            if any(expr is not None and names_in(expr) & self.varied for expr in (decl.value, decl.length)):
                self.varied.add(decl.name)
        self.derived = [decl for decl in order if decl.name in self.varied and decl.name not in self.options]
        self.lists = [(decl.name, fast(decl.length)) for decl in order if decl.name in self.options and decl.length]
        self.requires = [req for req in program.requires if names_in(req.cond) & self.varied]
        self.terms = self._terms()
        names = [op.name for level in self.base.levels for op in level.factors]
        self.shares_factors = len(names) != len(set(names))

    def _terms(self) -> list[tuple[tuple | None, list[Line]]]:
        """Each term of the file: its loop's bounds (None: no loop) and its score lines."""
        found, count = [], 0
        for term_no, term in enumerate(self.structure.program.terms):
            scores = term.scores if isinstance(term, Loop) else (term,)
            loop = term if isinstance(term, Loop) else None
            bases = [level for level in self.base.levels if level.term == term_no][: len(scores)]
            lines = []
            for score, base in zip(scores, bases):
                leaves = tuple(self._leaves(base, loop))
                lines.append(Line(count, base, tuple(ref.name for ref in score.operands), loop, leaves))
                count += 1
            found.append((None if loop is None else (fast(loop.start), fast(loop.stop)), lines))
        return found

    def _leaves(self, base: Level, loop: Loop | None) -> Iterable[Reader]:
        """Readers of the symbols and list entries the line's expressions read that vary."""
        local = set(base.sizes) | ({loop.var} | {let.name for let in loop.lets} if loop else set())
        seen = set()
        for expr in expressions(base, loop):
            for node, _ in walk(expr):
                if isinstance(node, Name) and node.name not in local and node.name in self.varied:
                    key: tuple = ("name", node.name)
                elif isinstance(node, Item) and node.name in self.varied:
                    key = ("item", node.name, node.index.value if isinstance(node.index, Num) else
                           node.index.name if isinstance(node.index, Name) else node.index)  # fmt: skip
                else:
                    continue
                if key not in seen:
                    seen.add(key)
                    yield reader(node, loop)

    def keys(self, values: dict) -> tuple[dict, list[tuple]] | None:
        """The symbols at a grid point and the key of each of its levels; None when the point
        gives no structure."""
        if len(values) != len(self.options):
            raise ValueError(f"a grid point sets {sorted(values)}, not every one of {sorted(self.options)}")
        env = dict(self.base.values)
        env.update(values)
        try:
            for decl in self.derived:
                env[decl.name] = symbol_value(decl, env)
            for name, length in self.lists:
                if len(env[name]) != length(env):
                    return None
            if self.requires and not all(evaluate(req.cond, env) for req in self.requires):
                return None
            keys: list[tuple] = []
            for bounds, lines in self.terms:
                values = (None,) if bounds is None else loop_values(bounds, env)
                if len(lines) == 1:
                    line = lines[0]
                    keys += zip(repeat(line.index), range(len(keys) + 1, len(keys) + 1 + len(values)), values,
                                *[leaf(env, values) for leaf in line.leaves])  # fmt: skip
                else:
                    keys += chain.from_iterable(zip(*[self._keys(line, j, len(lines), len(keys), env, values)
                                                      for j, line in enumerate(lines)]))  # fmt: skip
        except (DSLError, Invalid):
            return None
        return env, keys

    @staticmethod
    def _keys(line: Line, j: int, step: int, before: int, env: dict, values: Sequence) -> Iterable[tuple]:
        """The keys of a loop's ``j``-th of ``step`` score lines at each value (numbered after ``before`` levels)."""
        numbers = range(before + 1 + j, before + 1 + step * len(values), step)
        return zip(repeat(line.index), numbers, values, *[leaf(env, values) for leaf in line.leaves])

    def build(self, env: dict, key: tuple) -> Level:
        """The level named by ``key`` at the symbols ``env`` (``Invalid`` when it does not resolve)."""
        index, number, value = key[:3]
        line = next(line for _, lines in self.terms for line in lines if line.index == index)
        base, symbolic = line.base, line.base.symbolic
        sizes: dict[str, int] = {}
        try:
            local = loop_env(env, line.loop, value)
            if line.loop is not None and not all(evaluate(req.cond, local) for req in line.loop.requires):
                raise Invalid
            for name, expr in symbolic.sizes.items():
                size = evaluate(expr, {**local, **sizes})
                if not is_whole(size) or size < 1:
                    raise Invalid
                sizes[name] = size
            band = None if symbolic.band is None else tuple(evaluate(e, local) for e in symbolic.band)
            scale = 1 if symbolic.scale is None else evaluate(symbolic.scale, {**local, **sizes})
        except DSLError:
            raise Invalid from None
        if band is not None and not (is_whole(band[0]) and is_whole(band[1])):
            raise Invalid
        if band is not None and SequencePattern.band_problem(*band, env["T"]):
            raise Invalid
        if isinstance(scale, bool) or not isinstance(scale, (int, Fraction, float)) or abs(scale) > 1e300:
            raise Invalid
        for op in (base.query, base.key):
            for axis, total in zip(op.axes, (env["T"], env["D"])):
                if math.prod(sizes[i] for i in axis) != total:
                    raise Invalid
        suffix = "" if line.loop is None else f"_{value}"
        operands = tuple(op if op.role != "factor" else Operand(name + suffix, op.role, op.axes)
                         for op, name in zip(base.operands, line.factors))  # fmt: skip
        return Level(number, operands, sizes, float(scale), band, base.term, value, symbolic)

    def instance(self, values: dict) -> Instance:
        """The structure at these option values, resolved as ``describe`` resolves it."""
        return self.structure.resolve({"T": self.base.T, "D": self.base.D, **values})


def expressions(base: Level, loop: Loop | None) -> list[Expr]:
    """Every expression a score line's level is built from: its sizes, band and scale, and its
    loop's lets and requirements."""
    symbolic = base.symbolic
    found = [*symbolic.sizes.values(), *(symbolic.band or ()), *([symbolic.scale] if symbolic.scale else [])]
    if loop is not None:
        found += [let.value for let in loop.lets] + [req.cond for req in loop.requires]
    return found


def loop_env(env: dict, loop: Loop | None, value: int | None) -> dict:
    """The symbols inside a loop at one value of its variable (its lets included)."""
    if loop is None:
        return env
    local = {**env, loop.var: value}
    for let in loop.lets:
        local[let.name] = evaluate(let.value, local)
    return local


def loop_values(bounds: tuple, env: dict) -> range:
    """The values of a loop's variable."""
    first, last = bounds[0](env), bounds[1](env)
    if type(first) is not int or type(last) is not int or last < first or last - first >= MAX_LEVELS:
        raise Invalid
    return range(first, last + 1)


def symbol_value(decl: SymbolDecl, env: dict):
    """A symbol the grid changes through its definition, checked as resolution checks it."""
    value = evaluate(decl.value, env)
    if decl.length is not None:
        length = evaluate(decl.length, env)
        value = value if isinstance(value, list) else [value] * length
        if len(value) != length or not all(is_whole(v) for v in value):
            raise Invalid
        return value
    if not is_whole(value) or (decl.kind == "size" and value < 1):
        raise Invalid
    return value


def fast(expr: Expr) -> Callable[[dict], object]:
    """``evaluate(expr, env)`` as a function of env, without the tree walk for a number or a name."""
    if isinstance(expr, Num):
        return lambda env: expr.value
    if isinstance(expr, Name):
        return lambda env: env[expr.name]
    return lambda env: evaluate(expr, env)


def reader(node: Name | Item, loop: Loop | None) -> Reader:
    """What a leaf of an expression reads at a point, at each of the loop's values (a list of
    hashable values: a list read whole as a tuple); fast for the common forms, a symbol and a list
    entry at a number or at the loop variable."""
    var = loop.var if loop is not None else None
    if isinstance(node, Name):
        name = node.name
        return lambda env, values: [_hashable(env[name])] * len(values)
    name, index = node.name, node.index
    if isinstance(index, Name) and index.name == var:

        def entries(env: dict, values: range) -> list:
            items = env[name]
            if isinstance(items, list) and values[0] >= 1 and values[-1] <= len(items):
                return items[values[0] - 1 : values[-1]]
            return [OUT_OF_RANGE] * len(values)

        return entries
    if isinstance(index, Num):
        i = index.value

        def entry(env: dict, values) -> list:
            items = env[name]
            return [items[i - 1] if isinstance(items, list) and 1 <= i <= len(items) else OUT_OF_RANGE] * len(values)

        return entry

    def general(env: dict, values) -> list:
        found = []
        for value in values:
            try:
                found.append(_hashable(evaluate(node, loop_env(env, loop, value))))
            except DSLError:
                found.append(OUT_OF_RANGE)
        return found

    return general


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value
