"""The structure model: a parsed program, and its resolution to concrete levels for given sizes.

A ``Structure`` is what a ``.ein`` file defines, sizes still open. ``Structure.resolve`` fixes
every option and returns an ``Instance``: a list of ``Level``s, each one einsum over the query
token, the key token and factor tensors, with every index size known. Everything downstream
(analysis, plans, code, search) reads ``Instance`` and never the structure's name.
"""

from __future__ import annotations

import codecs
import graphlib
import math
import os
import stat
from dataclasses import dataclass, field
from difflib import get_close_matches
from fractions import Fraction
from functools import cached_property
from pathlib import Path

from .dsl import Axis, IndexDecl, Loop, OperandRef, Program, Require, Score, SymbolDecl, parse
from .errors import DSLError, NotFoundError, OptionError, Pos, reason
from .expr import Binary, Call, Expr, Item, ListLit, Name, Num, Unary, Value, evaluate, names_in, walk
from .sequence import SequencePattern

INPUT = "x"
MAX_LEVELS = 4096  # the most values a loop or a list parameter may have
MAX_FILE_BYTES = 1 << 22  # 4 MiB: far more than any structure file; a larger one is surely not one


class FrozenMap(dict):
    """A read-only dict that hashes by value, so levels and instances can be cached by value."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in self.items()))

    def _read_only(self, *args, **kwargs):
        raise TypeError("a FrozenMap is read-only")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only  # type: ignore[assignment]


@dataclass(frozen=True)
class Operand:
    """One tensor of a level's einsum: the query token, the key token, or a factor."""

    name: str
    role: str  # "query" | "key" | "factor"
    axes: tuple[tuple[str, ...], ...]

    @property
    def indices(self) -> tuple[str, ...]:
        return tuple(i for axis in self.axes for i in axis)

    def written(self) -> str:
        """``x[(g t), i]``: the operand as it reads in the DSL."""
        parts = [a[0] if len(a) == 1 else "(" + " ".join(a) + ")" for a in self.axes]
        return f"{self.name}[{', '.join(parts)}]"


@dataclass(frozen=True)
class LoopRange:
    """The ``for var in start..stop`` a level was expanded from (bounds as expressions)."""

    var: str
    start: Expr
    stop: Expr
    lets: tuple = ()  # the loop's own `let`s, which its sizes may read


@dataclass(frozen=True)
class Symbolic:
    """A level's sizes as expressions of the structure's symbols, for the printed formulas (and
    for search, which evaluates them at other option values).

    ``sizes`` maps every index to its size expression (declared, or inferred from x's axes as
    ``T / g`` or ``D / a``); inside a loop they may read the loop variable of ``loop``. ``scale``
    is the line's scale as written (None: 1).
    """

    sizes: FrozenMap
    band: tuple[Expr, Expr] | None = None
    loop: LoopRange | None = None
    scale: Expr | None = None


@dataclass(frozen=True)
class Level:
    """One term of the score: ``scale * P(t, u) * x_t^T M x_u`` as a single einsum.

    ``sizes`` holds every index of the einsum. Sequence indices live only on the two uses of x:
    those shared by both are the block index (block-diagonal pattern); ``band`` (inclusive
    bounds on t - u) restricts the pairs further. Levels compare and hash by value; ``symbolic``
    (the sizes as formulas) rides along without taking part.
    """

    number: int
    operands: tuple[Operand, ...]
    sizes: FrozenMap
    scale: float = 1.0
    band: tuple[int, int] | None = None
    term: int = 0  # which score line (or loop) of the file it comes from
    loop_value: int | None = None
    symbolic: Symbolic | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.sizes, FrozenMap):
            object.__setattr__(self, "sizes", FrozenMap(self.sizes))

    @property
    def query(self) -> Operand:
        return next(op for op in self.operands if op.role == "query")

    @property
    def key(self) -> Operand:
        return next(op for op in self.operands if op.role == "key")

    @property
    def factors(self) -> tuple[Operand, ...]:
        return tuple(op for op in self.operands if op.role == "factor")

    @property
    def block_indices(self) -> tuple[str, ...]:
        """Sequence indices kept on both sides: ``t`` and ``u`` in the same block."""
        return tuple(i for i in self.query.axes[0] if i in self.key.axes[0])

    @property
    def blocks(self) -> int:
        return math.prod(self.sizes[i] for i in self.block_indices)

    @property
    def pattern(self) -> SequencePattern:
        """The pairs this level scores (the one statement of the pair rule)."""
        return SequencePattern(self.blocks, self.band)

    @property
    def feature_block_indices(self) -> tuple[str, ...]:
        """Feature indices on both tokens: M is block-diagonal over them."""
        return tuple(i for i in self.query.axes[1] if i in self.key.axes[1])

    @property
    def query_features(self) -> tuple[str, ...]:
        return self.query.axes[1]

    @property
    def key_features(self) -> tuple[str, ...]:
        return self.key.axes[1]

    @property
    def sequence_indices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.query.axes[0] + self.key.axes[0]))

    def written(self) -> str:
        """The level as a DSL line (without the band and scale)."""
        return " ".join(op.written() for op in self.operands)


@dataclass(frozen=True)
class Instance:
    """A structure with every option fixed: the levels, the factor shapes, the symbol values.

    Built by ``Structure.resolve``, or from plain data (a name, the values of T and D at least,
    and the levels); compares and hashes by value. ``structure`` (the parsed file, when there
    is one) rides along for the formulas.
    """

    name: str
    values: FrozenMap
    levels: tuple[Level, ...]
    doc: str = ""
    source: str = ""
    structure: Structure | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.values, FrozenMap):
            object.__setattr__(self, "values", FrozenMap(self.values))
        object.__setattr__(self, "levels", tuple(self.levels))

    @cached_property
    def factor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each distinct factor tensor once (a name used by several terms is one tensor)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for level in self.levels:
            for op in level.factors:
                shapes[op.name] = tuple(math.prod(level.sizes[i] for i in axis) for axis in op.axes)
        return shapes

    @property
    def is_feature_structure(self) -> bool:
        """Every level scores every pair: the structure is one D x D matrix M = sum of M_l."""
        return all(level.blocks == 1 and level.band is None for level in self.levels)

    @property
    def T(self) -> int:
        return int(self.values["T"])

    @property
    def D(self) -> int:
        return int(self.values["D"])


@dataclass(frozen=True, eq=False)
class Structure:
    """A parsed structure file; ``resolve`` turns it into an ``Instance``.

    Two structures are equal when they have the same name, source and text.
    """

    name: str
    program: Program
    text: str = ""

    def _key(self) -> tuple[str, str, str]:
        return self.name, self.program.source, self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Structure) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def doc(self) -> str:
        return self.program.doc

    @property
    def source(self) -> str:
        return self.program.source

    @property
    def options(self) -> list[SymbolDecl]:
        return [s for s in self.program.symbols.values() if s.is_option]

    def resolve(self, overrides: dict[str, Value] | None = None, /, **options: Value) -> Instance:
        """Fixes every option (defaults unless overridden) and builds the levels.

        Options come as a dict, as keywords, or both: ``resolve({"D": 256}, s=2)``. Raises
        OptionError for a bad option value (named as the user gave it), DSLError for anything
        else wrong, positioned in the structure's file.
        """
        try:
            return Resolver(self, {**(overrides or {}), **options}).instance()
        except DSLError as err:
            raise err.located(self.source) from None


def load(path: str | Path) -> Structure:
    """Parses a ``.ein`` file into a Structure named after the file (see ``read_source``)."""
    path = Path(path)
    return from_text(read_source(path), source=str(path), name=path.stem)


def read_source(path: str | Path) -> str:
    """The text of a structure file, read as UTF-8 (a leading byte-order mark is dropped).

    Never blocks and never lets an OSError or a UnicodeDecodeError out: a FIFO, socket or device
    is refused before it is opened; a path that leads to no file is a NotFoundError; a file that
    cannot be read, or is not UTF-8 text, a DSLError (at the line and column of the bad byte).
    """
    name = str(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the path
        raise NotFoundError(name, "no such file") from None
    except OSError as err:
        raise DSLError(f"cannot be read: {reason(err)}", source=name) from None
    if stat.S_ISDIR(info.st_mode):
        raise NotFoundError(name, "is a directory, not a .ein file")
    if not stat.S_ISREG(info.st_mode):
        raise NotFoundError(name, "is not a regular file (a FIFO, socket or device), not a .ein file")
    try:  # O_NONBLOCK: should a FIFO replace the file since the stat, opening it does not wait
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise NotFoundError(name, "is not a regular file (a FIFO, socket or device), not a .ein file")
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise DSLError(f"cannot be read: {reason(err)}", source=name) from None
    if len(data) > MAX_FILE_BYTES:
        raise DSLError(f"is larger than {MAX_FILE_BYTES} bytes: not a structure file", source=name)
    return decode_source(data, name)


def decode_source(data: bytes, source: str = "<input>") -> str:
    """``data`` as UTF-8 text without a byte-order mark; DSLError at the first byte that is not text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DSLError("not UTF-8: the file starts with a UTF-16 byte-order mark (save the file as UTF-8)",
                       Pos(1, 1), source)  # fmt: skip
    data = data.removeprefix(codecs.BOM_UTF8)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DSLError("binary file: a NUL byte (a .ein file is UTF-8 text)", _byte_pos(data, nul), source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DSLError(f"not UTF-8: byte 0x{data[err.start]:02x} (save the file as UTF-8)",
                       _byte_pos(data, err.start), source) from None  # fmt: skip


def _byte_pos(data: bytes, offset: int) -> Pos:
    """The line and column of byte ``offset``, counted in characters as the tokenizer counts them."""
    lines = (data[:offset].decode("utf-8", errors="replace") + "x").splitlines()
    return Pos(len(lines), len(lines[-1]))


def from_text(text: str, source: str = "<input>", name: str = "structure") -> Structure:
    program = parse(text, source)
    structure = Structure(name, program, text)
    try:
        check_static(structure)
    except DSLError as err:
        raise err.located(source) from None
    return structure


# ---------------------------------------------------------------------------------------------
# Checks that need no sizes


def check_static(structure: Structure) -> None:
    """Unknown names, cycles and a missing T or D: what is wrong whatever the sizes."""
    program = structure.program
    for needed in ("T", "D"):
        if needed not in program.symbols:
            raise DSLError(f"declare `size {needed} = ...`: x is T x D (sequence x features)",
                           Pos(1, 1), program.source)  # fmt: skip
    symbol_order(program)  # raises on unknown names and cycles


def symbol_order(program: Program) -> list[SymbolDecl]:
    """Symbols in an order where each comes after what it reads; DSLError on a cycle."""
    graph = {}
    for decl in program.symbols.values():
        deps = set()
        for expr in (decl.value, decl.length):
            if expr is not None:
                deps |= _known_names(expr, program.symbols)
        graph[decl.name] = deps
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        cycle = err.args[1]
        first = program.symbols[cycle[0]]
        raise DSLError(f"cyclic definition: {' -> '.join(cycle)}", first.pos, program.source) from None
    return [program.symbols[n] for n in order]


def _known_names(expr, known) -> set[str]:
    """The names ``expr`` reads; DSLError at the first one not in ``known``."""
    names = names_in(expr)
    for name in sorted(names - set(known)):
        raise DSLError(f"unknown name '{name}'", _find_pos(expr, name))
    return names


def is_whole(value: Value) -> bool:
    """An int, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _find_pos(expr, name: str) -> Pos:
    """The position of the first use of ``name`` in ``expr`` (for error messages)."""
    return next((node.pos for node, _ in walk(expr) if getattr(node, "name", None) == name), expr.pos)


# ---------------------------------------------------------------------------------------------
# Resolution


@dataclass
class Resolver:
    """Evaluates symbols, expands loops and builds one Level per score line and loop value."""

    structure: Structure
    overrides: dict[str, Value]
    env: dict[str, Value] = field(default_factory=dict)
    levels: list[Level] = field(default_factory=list)
    factor_shapes: dict[str, tuple[tuple[int, ...], Pos]] = field(default_factory=dict)

    @property
    def program(self) -> Program:
        return self.structure.program

    def instance(self) -> Instance:
        self.check_overrides()
        for decl in symbol_order(self.program):
            self.env[decl.name] = self.symbol_value(decl)
        for name in ("T", "D"):  # x is T x D, whatever kind of symbol declares them
            value = self.env[name]
            if not is_whole(value) or value < 1:
                raise DSLError(f"{name} must be a positive whole number (x is T x D), got {value!r}",
                               self.program.symbols[name].pos)  # fmt: skip
        for req in self.program.requires:
            self.check_requirement(req, self.env)
        base_sizes = self.declared_sizes(self.program.indices.values(), self.env)
        seen_first = False
        for term_no, term in enumerate(self.program.terms):
            if isinstance(term, Score):
                seen_first = self.check_score_op(term, seen_first)
                self.add_level(term, term_no, base_sizes, self.env)
            else:
                seen_first = self.expand_loop(term, term_no, base_sizes, seen_first)
        s = self.structure
        return Instance(s.name, self.env, tuple(self.levels), s.doc, s.source, s)

    def check_overrides(self) -> None:
        options = [s.name for s in self.structure.options]
        for name in self.overrides:
            if name not in options:
                known = ", ".join(f"--{n}" for n in options) or "none"
                same_but_case = [n for n in options if n.lower() == str(name).lower()]
                close = same_but_case or get_close_matches(str(name), options, 1)
                hint = f"; did you mean --{close[0]}?" if close else ""
                raise OptionError(name, f"{self.structure.name} has no option --{name}{hint} (its options: {known})")

    def symbol_value(self, decl: SymbolDecl) -> Value:
        """The option's value (given, else its default) or the ``let``'s. A bad given value is an
        OptionError naming it; a bad default one naming the given option it reads, if any (else
        the file is wrong: a DSLError at the declaration)."""
        given = decl.name in self.overrides
        if decl.kind == "choice":
            value = self.overrides.get(decl.name, decl.choices[0])
            if value not in decl.choices:
                close = get_close_matches(str(value), decl.choices, 1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise OptionError(decl.name, f"must be one of {', '.join(decl.choices)}, got {_shown(value)}{hint}")
            return value
        value = self.overrides[decl.name] if given else evaluate(decl.value, self.env)
        if decl.length is not None:
            return self.list_value(decl, value, given)
        if given:
            if isinstance(value, list) and decl.kind != "size":
                return value  # a param may hold a list
            if not is_whole(value) or (decl.kind == "size" and value < 1):
                wanted = "a positive whole number" if decl.kind == "size" else "a whole number"
                raise OptionError(decl.name, f"expected {wanted}, got {_shown(value)}")
            return value
        problem = ""
        if isinstance(value, list):
            problem = "must be a number, got a list" if decl.kind == "size" else ""
        elif not is_whole(value):
            problem = "is not a whole number"
        elif decl.kind == "size" and value < 1:
            problem = "must be positive"
        if problem:
            by = self.given_options(decl.value)
            if by:
                shown = ", ".join(f"{n} = {_shown(self.env[n])}" for n in _names(decl.value) if n in self.env)
                raise OptionError(by[0], f"{decl.name} = {_written(decl.value)} = {_shown(value)} {problem} ({shown})")
            kind = "size " if decl.kind == "size" and problem != "is not a whole number" else ""
            raise DSLError(f"{kind}{decl.name} {problem}" if isinstance(value, list)
                           else f"{kind}{decl.name} = {value} {problem}", decl.pos)  # fmt: skip
        return value

    def list_value(self, decl: SymbolDecl, value: Value, given: bool) -> list:
        length = evaluate(decl.length, self.env)
        by = self.given_options(decl.length)  # options the user gave that set the length
        named = decl.length.name if isinstance(decl.length, Name) else _written(decl.length)
        lowest = 1 if by else 0  # an empty list cannot be written on the command line
        if not is_whole(length) or not lowest <= length <= MAX_LEVELS:
            allowed = f"a whole number from {lowest} to {MAX_LEVELS}"
            if by and isinstance(decl.length, Name) and decl.length.name == by[0]:
                raise OptionError(by[0], f"must be {allowed} (the number of entries of {decl.name}), "
                                  f"got {_shown(length)}")  # fmt: skip
            if by:
                raise OptionError(by[0], f"makes the length of {decl.name} {named} = {_shown(length)}; "
                                  f"it must be {allowed}")  # fmt: skip
            raise DSLError(f"the length of {decl.name} must be {allowed}, got {length}", decl.pos)
        numbers = value if isinstance(value, list) else [value]
        if given and not all(is_whole(v) for v in numbers):
            raise OptionError(decl.name, f"expected whole numbers separated by commas, got {_shown(value)}")
        if not isinstance(value, list):
            value = [value] * length  # one number stands for every entry
        if len(value) != length:
            needs = f"it needs {length}" if isinstance(decl.length, Num) else f"{named} = {length} needs {length}"
            if given:
                raise OptionError(decl.name, f"has {len(value)} entries but {needs} (pass {_values(length)})")
            if by:
                raise OptionError(by[0], f"{named} = {length} needs {length} entries of {decl.name} but its "
                                  f"default has {len(value)} (pass --{decl.name} with {_values(length)})")  # fmt: skip
            hint = f"; pass --{decl.name} with {_values(length)}" if length else ""
            raise DSLError(f"{decl.name} has {len(value)} entries but {needs}{hint}", decl.pos)
        return value

    def given_options(self, *exprs: Expr | None, local: dict[str, tuple] | None = None) -> list[str]:
        """The options the user gave that ``exprs`` read, directly or through the defaults of other
        symbols (and ``local``: a loop's lets and variable), in reading order."""
        local = local or {}
        found: list[str] = []
        seen: set[str] = set()
        pending = [n for e in exprs if e is not None for n in _names(e)][::-1]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.overrides:
                found.append(name)
                continue
            decl = self.program.symbols.get(name)
            inner = local.get(name, ()) if decl is None else (decl.value, decl.length)
            pending.extend([n for e in inner if e is not None for n in _names(e)][::-1])
        return found

    def check_requirement(self, req: Require, env: dict[str, Value]) -> None:
        _known_names(req.cond, set(env))
        if not evaluate(req.cond, env):
            shown = ", ".join(f"{n} = {env[n]}" for n in sorted(names_in(req.cond)) if n in env)
            why = f": {req.message}" if req.message else ""
            raise DSLError(f"requirement {req.text or 'failed'} does not hold ({shown}){why}", req.pos)

    def declared_sizes(self, decls, env: dict[str, Value]) -> dict[str, tuple[int, Pos]]:
        sizes = {}
        for decl in decls:
            _known_names(decl.size, set(env))
            sizes[decl.name] = (self.size_value(decl, env), decl.pos)
        return sizes

    @staticmethod
    def size_value(decl: IndexDecl, env: dict[str, Value]) -> int:
        value = evaluate(decl.size, env)
        if isinstance(value, (Fraction, float)):
            raise DSLError(f"index {decl.name} has size {value}, which is not a whole number", decl.pos)
        if not is_whole(value):
            raise DSLError(f"index {decl.name} needs a number for its size, got {value!r}", decl.pos)
        if value < 1:
            raise DSLError(f"index {decl.name} has size {value}: sizes must be positive", decl.pos)
        return value

    def check_score_op(self, score: Score, seen_first: bool) -> bool:
        if score.op == "=" and seen_first:
            raise DSLError("score is already defined above: use `score += ...` to add a term", score.pos)
        return True

    def expand_loop(self, loop: Loop, term_no: int, base_sizes: dict, seen_first: bool) -> bool:
        for score in loop.scores:
            if score.op == "=":
                raise DSLError("inside a loop, add terms with `score += ...`", score.pos)
        for expr in (loop.start, loop.stop):
            _known_names(expr, set(self.env))
        first, last = evaluate(loop.start, self.env), evaluate(loop.stop, self.env)
        if not (isinstance(first, int) and isinstance(last, int)) or last < first:
            raise DSLError(f"loop range {first}..{last} is empty or not whole numbers", loop.pos)
        if last - first >= MAX_LEVELS:
            raise DSLError(f"loop range {first}..{last} has more than {MAX_LEVELS} values", loop.pos)
        if loop.var in self.env or loop.var in self.program.indices:
            raise DSLError(f"loop variable '{loop.var}' is already defined", loop.pos)
        loop_range = LoopRange(loop.var, loop.start, loop.stop, loop.lets)
        for value in range(first, last + 1):
            env = dict(self.env, **{loop.var: value})
            for let in loop.lets:
                _known_names(let.value, set(env))
                env[let.name] = evaluate(let.value, env)
            for req in loop.requires:
                self.check_requirement(req, env)
            local = self.declared_sizes(loop.indices, env)
            for name, (_, pos) in local.items():
                if name in env:
                    raise DSLError(f"'{name}' is a symbol; give the index another name", pos)
                if name in base_sizes:
                    raise DSLError(f"index {name} is already declared at line {base_sizes[name][1].line}", pos)
            for score in loop.scores:
                self.add_level(score, term_no, {**base_sizes, **local}, env, suffix=f"_{value}", loop_value=value,
                               loop=loop_range, local=loop.indices)  # fmt: skip
        return True

    def add_level(self, score: Score, term_no: int, declared: dict, env: dict, suffix: str = "",
                  loop_value: int | None = None, loop: LoopRange | None = None, local=()) -> None:  # fmt: skip
        operands = self.operands(score, suffix)
        sizes = self.index_sizes(score, operands, declared, env)
        self.check_indices(score, operands)
        for ref, op in zip(score.operands, operands):
            if op.role == "factor":
                self.record_factor(ref, op, sizes)
        band = self.band(score, operands, env) if score.band else None
        scale = Fraction(1)
        if score.scale is not None:  # may read index sizes too: `scale 1/r`
            _known_names(score.scale, set(env) | set(sizes))
            scale = evaluate(score.scale, {**env, **sizes})
            if not isinstance(scale, (int, Fraction, float)) or isinstance(scale, bool):
                raise DSLError(f"scale must be a number, got {scale!r}", score.scale.pos)
            if abs(scale) > 1e300:  # float() of it would overflow
                raise DSLError("scale is out of range", score.scale.pos)
        symbolic = self.symbolic(score, [*self.program.indices.values(), *local], loop)
        level = Level(len(self.levels) + 1, tuple(operands), sizes, float(scale), band, term_no, loop_value, symbolic)
        self.levels.append(level)

    @staticmethod
    def symbolic(score: Score, decls, loop: LoopRange | None) -> Symbolic:
        """The level's sizes as expressions: declared ones as written, the one left in a group on
        x's axes as the axis total over the rest (``T / g``), like ``fit_group`` computes them."""
        sizes: dict[str, Expr] = {d.name: d.size for d in decls}
        for ref in score.operands:
            if ref.name != INPUT:
                continue
            for axis, total in zip(ref.axes, ("T", "D")):
                unknown = [n for n in axis.names if n not in sizes]
                if unknown:
                    known = [Name(n, axis.positions[0]) for n in axis.names if n in sizes]
                    size: Expr = Name(total, axis.positions[0])
                    for divisor in known:
                        size = Binary("/", size, divisor, axis.positions[0])
                    sizes[unknown[0]] = size
        used = {i for ref in score.operands for a in ref.axes for i in a.names}
        band = (score.band.lo, score.band.hi) if score.band else None
        return Symbolic(FrozenMap({n: e for n, e in sizes.items() if n in used}), band, loop, score.scale)

    def operands(self, score: Score, suffix: str) -> list[Operand]:
        uses = [ref for ref in score.operands if ref.name == INPUT]
        if len(uses) != 2:
            raise DSLError(f"x must appear twice in a score (the query token, then the key token), "
                           f"found {len(uses)}", score.pos)  # fmt: skip
        operands = []
        for ref in score.operands:
            if ref.name == INPUT:
                if len(ref.axes) != 2:
                    raise DSLError("x has two axes: x[sequence, features]", ref.pos)
                role = "query" if ref is uses[0] else "key"
                operands.append(Operand(INPUT, role, tuple(a.names for a in ref.axes)))
            else:
                if ref.name in self.program.symbols:
                    raise DSLError(f"{ref.name} is a symbol, not a tensor", ref.pos)
                operands.append(Operand(ref.name + suffix, "factor", tuple(a.names for a in ref.axes)))
            seen = set()
            for axis in ref.axes:
                for name, pos in zip(axis.names, axis.positions):
                    if name in seen:
                        raise DSLError(f"index {name} appears twice on {ref.name}", pos)
                    seen.add(name)
        return operands

    def index_sizes(self, score: Score, operands: list[Operand], declared: dict, env: dict) -> dict[str, int]:
        """Declared sizes, plus those inferred from x's axes (T and D) by exact division."""
        sizes = {name: size for name, (size, _) in declared.items()}
        x_refs = [ref for ref in score.operands if ref.name == INPUT]
        for ref in x_refs:
            for axis, total_name in zip(ref.axes, ("T", "D")):
                self.fit_group(axis, int(env[total_name]), total_name, sizes, env)
        used = {i for op in operands for i in op.indices}
        for ref in score.operands:
            for axis in ref.axes:
                for name, pos in zip(axis.names, axis.positions):
                    if name not in sizes:
                        raise DSLError(f"index {name} has no size: declare it with `index {name}: ...`", pos)
        return {name: size for name, size in sizes.items() if name in used}

    def fit_group(self, axis: Axis, total: int, total_name: str, sizes: dict[str, int],
                  env: dict | None = None) -> None:  # fmt: skip
        """Infers the one unsized index of a group on x's axis (``t`` in ``(g t)``) by exact division.

        A failure states the rule (T must be a multiple of N, and why), at which loop value, and,
        inside a loop, the multiple that every loop value needs. It is an OptionError naming the
        option the user gave that led to it (--T, --levels, ...), else a DSLError at the group.
        """
        unknown = [n for n in dict.fromkeys(axis.names) if n not in sizes]
        parts = [n for n in axis.names if n in sizes]
        known = math.prod(sizes[n] for n in parts)
        group = "(" + " ".join(axis.names) + ")" if len(axis.names) > 1 else axis.names[0]
        pos = axis.positions[0]
        if len(unknown) > 1:
            raise DSLError(f"cannot infer the sizes of {', '.join(unknown)} in {group}: "
                           f"declare all but one with `index`", pos)  # fmt: skip
        if unknown and not total % known:
            sizes[unknown[0]] = total // known
            return
        if not unknown and known == total:
            return
        env = self.env if env is None else env
        loop = next((t for t in self.program.terms if isinstance(t, Loop)
                     and any(axis in ref.axes for score in t.scores for ref in score.operands)), None)  # fmt: skip
        decls = {**self.program.indices, **({d.name: d for d in loop.indices} if loop else {})}
        at = f" at {loop.var} = {env[loop.var]}" if loop else ""
        if unknown:
            product = f" = {' * '.join(parts)}" if len(parts) > 1 else ""
            shown = ", ".join(_size_text(n, sizes[n], decls.get(n)) for n in parts)
            message = (f"{total_name} = {total} does not divide into {group}{at}: {total_name} must be a multiple "
                       f"of {known}{product} ({shown}){self.loop_multiple(loop, parts, known, sizes)}")  # fmt: skip
        else:
            shown = " * ".join(str(sizes[n]) for n in axis.names)
            message = f"size mismatch: {group} is {shown} = {known} but x's axis is {total_name} = {total}{at}"
        local = {loop.var: (loop.start, loop.stop), **{let.name: (let.value,) for let in loop.lets}} if loop else {}
        sized = [decls[n].size for n in parts if n in decls]
        by = self.given_options(Name(total_name, pos), *sized, local=local)
        if by:
            raise OptionError(by[0], message)
        raise DSLError(message, pos)

    def loop_multiple(self, loop: Loop | None, parts: list[str], known: int, sizes: dict[str, int]) -> str:
        """``; for every l in 1..8 it must be a multiple of 128``: what a divisibility rule inside
        a loop asks over all its values (empty when that is what the failing value asks)."""
        if loop is None:
            return ""
        local = {d.name: d for d in loop.indices}
        if any(n not in local and n not in self.program.indices for n in parts):
            return ""  # a part inferred from another axis: not worked out here
        need = known
        try:
            first, last = evaluate(loop.start, self.env), evaluate(loop.stop, self.env)
            for value in range(first, last + 1):
                env = dict(self.env, **{loop.var: value})
                for let in loop.lets:
                    env[let.name] = evaluate(let.value, env)
                need = math.lcm(need, *(self.size_value(local[n], env) if n in local else sizes[n] for n in parts))
        except DSLError:
            return ""  # another value fails in its own way, reported when the loop gets there
        if need == known or len(str(need)) > 40:
            return ""
        return f"; for every {loop.var} in {first}..{last} it must be a multiple of {need}"

    def check_indices(self, score: Score, operands: list[Operand]) -> None:
        """Sequence indices only on x; every other index used at least twice unless `sum`med."""
        query, key = (op for op in operands if op.role in ("query", "key"))
        positions = {n: p for ref in score.operands for a in ref.axes for n, p in zip(a.names, a.positions)}
        sequence = set(query.axes[0]) | set(key.axes[0])
        features = set(query.axes[1]) | set(key.axes[1])
        for name in sequence & features:
            raise DSLError(f"index {name} is on both a sequence and a feature axis of x", positions[name])
        for op in operands:
            if op.role == "factor":
                for name in sequence & set(op.indices):
                    raise DSLError(f"sequence index {name} may only appear on x, not on {op.name}", positions[name])
        shared = [n for n in query.axes[0] if n in key.axes[0]]
        if shared and (list(query.axes[0][: len(shared)]) != shared or list(key.axes[0][: len(shared)]) != shared):
            raise DSLError("block indices shared by the query and key go first, in the same order: "
                           "x[(g t), i] ... x[(g u), j]", positions[shared[0]])  # fmt: skip
        counts: dict[str, int] = {}
        for op in operands:
            for name in op.indices:
                counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            if count == 1 and name not in sequence and name not in self.program.summed:
                raise DSLError(f"index {name} is used only once: a typo? (write `sum {name}` if it is "
                               f"summed on purpose)", positions[name])  # fmt: skip

    def record_factor(self, ref: OperandRef, op: Operand, sizes: dict[str, int]) -> None:
        shape = tuple(math.prod(sizes[i] for i in axis) for axis in op.axes)
        if op.name in self.factor_shapes and self.factor_shapes[op.name][0] != shape:
            earlier, pos = self.factor_shapes[op.name]
            raise DSLError(f"size mismatch: {ref.name} is {_shape(shape)} here but {_shape(earlier)} at line "
                           f"{pos.line}", ref.pos)  # fmt: skip
        self.factor_shapes.setdefault(op.name, (shape, ref.pos))

    def band(self, score: Score, operands: list[Operand], env: dict) -> tuple[int, int]:
        band = score.band
        query, key = (op for op in operands if op.role in ("query", "key"))
        if query.axes[0] != (band.query,) or key.axes[0] != (band.key,):
            raise DSLError(f"a band is written on the sequence indices, here {' '.join(query.axes[0])} - "
                           f"{' '.join(key.axes[0])}, and needs them unsplit", band.pos)  # fmt: skip
        bounds = []
        for expr in (band.lo, band.hi):
            _known_names(expr, set(env))
            value = evaluate(expr, env)
            if not is_whole(value):
                raise DSLError(f"band bounds must be whole numbers, got {value}", band.pos)
            bounds.append(value)
        lo, hi = bounds
        problem = SequencePattern.band_problem(lo, hi, int(env["T"]))
        if problem:
            raise DSLError(problem, band.pos)
        return lo, hi


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def _shown(value: Value) -> str:
    """A value as a user would type it: ``'a,b'``, ``8``, ``'32,8'`` (a list, as on the command line)."""
    if isinstance(value, list):
        return repr(",".join(map(str, value)))
    return repr(value) if isinstance(value, str) else str(value)


def _values(count: int) -> str:
    return "1 value" if count == 1 else f"{count} comma-separated values"


def _names(expr: Expr) -> list[str]:
    """The symbol names ``expr`` reads, in reading order, each once."""
    return list(dict.fromkeys(node.name for node, _ in walk(expr) if isinstance(node, (Name, Item))))


def _size_text(name: str, value: int, decl: IndexDecl | None) -> str:
    """``g = 2^(l - 1) = 128``: an index's size with its declaration, when that says more."""
    if decl is None or isinstance(decl.size, Num):
        return f"{name} = {value}"
    return f"{name} = {_written(decl.size)} = {value}"


PRECEDENCE = {"or": 1, "and": 1, "not": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "+": 4, "-": 4,
              "*": 5, "/": 5, "//": 5, "%": 5, "neg": 6, "^": 7}  # fmt: skip


def _written(expr: Expr, context: int = 0) -> str:
    """``expr`` as DSL text, with the brackets its precedence needs (for messages)."""
    if isinstance(expr, Num):
        return str(expr.value)
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Item):
        return f"{expr.name}[{_written(expr.index)}]"
    if isinstance(expr, Call):
        return f"{expr.func}({', '.join(_written(a) for a in expr.args)})"
    if isinstance(expr, ListLit):
        return f"[{', '.join(_written(a) for a in expr.items)}]"
    if isinstance(expr, Unary):
        level = PRECEDENCE["not" if expr.op == "not" else "neg"]
        text = ("not " if expr.op == "not" else "-") + _written(expr.operand, level)
    else:
        level = PRECEDENCE[expr.op]
        if expr.op == "^":  # right-associative, and binds tighter than a sign on its left
            text = f"{_written(expr.left, level + 1)}^{_written(expr.right, PRECEDENCE['neg'])}"
        else:
            text = f"{_written(expr.left, level)} {expr.op} {_written(expr.right, level + 1)}"
    return f"({text})" if level < context else text
