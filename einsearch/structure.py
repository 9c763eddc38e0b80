"""The structure model: a parsed program, and its resolution to concrete levels for given sizes.

A ``Structure`` is what a ``.ein`` file defines, sizes still open. ``Structure.resolve`` fixes
every option and returns an ``Instance``: a list of ``Level``s, each one einsum over the query
token, the key token and factor tensors, with every index size known. Everything downstream
(analysis, plans, code, search) reads ``Instance`` and never the structure's name.
"""

from __future__ import annotations

import graphlib
import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path

from .dsl import Axis, IndexDecl, Loop, OperandRef, Program, Require, Score, SymbolDecl, parse
from .errors import DSLError, Pos
from .expr import Value, evaluate, names_in, walk

INPUT = "x"
MAX_LEVELS = 4096  # the most values a loop or a list parameter may have


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


@dataclass(frozen=True, eq=False)
class Level:
    """One term of the score: ``scale * P(t, u) * x_t^T M x_u`` as a single einsum.

    ``sizes`` holds every index of the einsum. Sequence indices live only on the two uses of x:
    those shared by both are the block index (block-diagonal pattern); ``band`` (inclusive
    bounds on t - u) restricts the pairs further.
    """

    number: int
    operands: tuple[Operand, ...]
    sizes: dict[str, int]
    scale: float = 1.0
    band: tuple[int, int] | None = None
    term: int = 0  # which score line (or loop) of the file it comes from
    loop_value: int | None = None

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
    """A structure with every option fixed: the levels, the factor shapes, the symbol values."""

    structure: Structure
    values: dict[str, Value]
    levels: tuple[Level, ...]

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


@dataclass
class Structure:
    """A parsed structure file; ``resolve`` turns it into an ``Instance``."""

    name: str
    program: Program

    @property
    def doc(self) -> str:
        return self.program.doc

    @property
    def source(self) -> str:
        return self.program.source

    @property
    def options(self) -> list[SymbolDecl]:
        return [s for s in self.program.symbols.values() if s.is_option]

    def resolve(self, overrides: dict[str, Value] | None = None) -> Instance:
        """Fixes every option (defaults unless overridden) and builds the levels.

        Raises DSLError for anything wrong, positioned in the structure's file.
        """
        try:
            return Resolver(self, dict(overrides or {})).instance()
        except DSLError as err:
            raise err.located(self.source) from None


def load(path: str | Path) -> Structure:
    """Parses a ``.ein`` file into a Structure named after the file."""
    path = Path(path)
    return from_text(path.read_text(), source=str(path), name=path.stem)


def from_text(text: str, source: str = "<input>", name: str = "structure") -> Structure:
    program = parse(text, source)
    structure = Structure(name, program)
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
        return Instance(self.structure, dict(self.env), tuple(self.levels))

    def check_overrides(self) -> None:
        options = {s.name: s for s in self.structure.options}
        for name in self.overrides:
            if name not in options:
                known = ", ".join(f"--{n}" for n in options) or "none"
                raise DSLError(f"{self.structure.name} has no option --{name} (its options: {known})")

    def symbol_value(self, decl: SymbolDecl) -> Value:
        given = decl.name in self.overrides
        if decl.kind == "choice":
            value = self.overrides.get(decl.name, decl.choices[0])
            if value not in decl.choices:
                raise DSLError(f"--{decl.name} must be one of {', '.join(decl.choices)}, got {value!r}", decl.pos)
            return value
        value = self.overrides[decl.name] if given else evaluate(decl.value, self.env)
        origin = f" (from --{decl.name})" if given else ""
        if decl.length is not None:
            return self.list_value(decl, value, origin)
        if isinstance(value, list):
            if decl.kind == "size":
                raise DSLError(f"size {decl.name} must be a number, got a list{origin}", decl.pos)
            return value
        if not is_whole(value):
            raise DSLError(f"{decl.name} = {value} is not a whole number{origin}", decl.pos)
        if decl.kind == "size" and value < 1:
            raise DSLError(f"size {decl.name} = {value} must be positive{origin}", decl.pos)
        return value

    def list_value(self, decl: SymbolDecl, value: Value, origin: str) -> list:
        length = evaluate(decl.length, self.env)
        if not is_whole(length) or not 0 <= length <= MAX_LEVELS:
            raise DSLError(f"the length of {decl.name} must be a whole number from 0 to {MAX_LEVELS}, got {length}",
                           decl.pos)  # fmt: skip
        if not isinstance(value, list):
            value = [value] * length  # one number stands for every entry
        if len(value) != length:
            length_text = getattr(decl.length, "name", str(length))
            hint = "" if origin else f"; pass --{decl.name} with {length} values"
            raise DSLError(f"{decl.name} has {len(value)} entries but {length_text} = {length}{origin}{hint}",
                           decl.pos)  # fmt: skip
        return value

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
                self.add_level(score, term_no, {**base_sizes, **local}, env, suffix=f"_{value}", loop_value=value)
        return True

    def add_level(self, score: Score, term_no: int, declared: dict, env: dict, suffix: str = "",
                  loop_value: int | None = None) -> None:  # fmt: skip
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
        level = Level(len(self.levels) + 1, tuple(operands), sizes, float(scale), band, term_no, loop_value)
        self.levels.append(level)

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
                self.fit_group(axis, int(env[total_name]), total_name, sizes)
        used = {i for op in operands for i in op.indices}
        for ref in score.operands:
            for axis in ref.axes:
                for name, pos in zip(axis.names, axis.positions):
                    if name not in sizes:
                        raise DSLError(f"index {name} has no size: declare it with `index {name}: ...`", pos)
        return {name: size for name, size in sizes.items() if name in used}

    @staticmethod
    def fit_group(axis: Axis, total: int, total_name: str, sizes: dict[str, int]) -> None:
        unknown = [n for n in dict.fromkeys(axis.names) if n not in sizes]
        known = math.prod(sizes[n] for n in axis.names if n in sizes)
        group = "(" + " ".join(axis.names) + ")" if len(axis.names) > 1 else axis.names[0]
        pos = axis.positions[0]
        if len(unknown) > 1:
            raise DSLError(f"cannot infer the sizes of {', '.join(unknown)} in {group}: "
                           f"declare all but one with `index`", pos)  # fmt: skip
        if unknown:
            if total % known:
                raise DSLError(f"{total_name} = {total} does not divide into {group}: "
                               f"the declared part is {known}", pos)  # fmt: skip
            sizes[unknown[0]] = total // known
        elif known != total:
            shown = " * ".join(str(sizes[n]) for n in axis.names)
            raise DSLError(f"size mismatch: {group} is {shown} = {known} but x's axis is {total_name} = {total}", pos)

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
        if bounds[0] > bounds[1]:
            raise DSLError(f"empty band: {bounds[0]} <= t - u <= {bounds[1]}", band.pos)
        return bounds[0], bounds[1]


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))
