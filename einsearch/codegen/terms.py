"""A structure compiled for a generated module: its options, sizes, factors and level maps as Python.

A generated module takes the structure's options at construction, so what ``einsearch.structure``
resolves once for given options (sizes, ``let``s, list parameters, loops, ``require``s, band
bounds, scales) is written out here as the Python statements of the module's ``__init__``, in
the order the resolver evaluates them. The maps of each score line are the plan's own map steps
(docs/design.md §4), rendered once per line (once per loop body) with the structure's index
names kept as einsum letters where they can be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..dsl import IndexDecl, Loop, Program, Require, Score, SymbolDecl
from ..errors import DSLError, OptionError
from ..expr import Expr, ListLit, Name, Num, evaluate, names_in, walk
from ..planner import Part, Schedule, Tensor
from ..structure import INPUT, Instance, Level, symbol_order
from .python import RESERVED, Names, python, size_source

SIDE_OF = {"T": "block_size", "D": "d_model"}  # the module's names for x's two axes
MODULE_ATTRIBUTES = frozenset(
    {"forward", "maps", "scores", "factors", "factor", "param_groups", "reset_parameters", "new_cache", "levels",
     "fan_in", "n_heads", "d_model", "block_size", "dropout", "init", "v_proj", "o_proj", "training", "to", "eval",
     "train", "parameters", "buffers", "children", "modules", "state_dict", "cuda", "cpu", "type", "float",
     "double", "half", "bfloat16", "apply", "zero_grad", "extra_repr", "compile", "requires_grad_"}
)  # fmt: skip  # attributes a factor may not take (nn.Module's and the generated class's own)


MAP_LOCALS = frozenset({"q", "k", "xq", "xk", "queries", "keys", "level", "levels"})  # names maps uses


@dataclass(frozen=True)
class Option:
    """One constructor keyword: a structure option other than T and D."""

    name: str  # as the structure names it
    arg: str  # the keyword (the name, unless Python or the module already uses it)
    default: str  # Python source: the value generated with, or None for "the structure's rule"
    annotation: str
    doc: str


@dataclass(frozen=True)
class EinsumStep:
    """``target = torch.einsum("spec", *operands)  # shape``."""

    target: str
    spec: str
    operands: tuple[str, ...]
    shape: str


@dataclass(frozen=True)
class Side:
    """How one token's map is computed: x viewed as a grid, einsum steps, then the map."""

    grid: str  # "" when x's features are one index
    steps: tuple[EinsumStep, ...]
    result: str  # the expression of the map, (B, H, T, channels)
    grid_shape: str = ""  # (B, T, i1, i2)


@dataclass(frozen=True)
class FactorCode:
    base: str  # the structure's name for it (without a loop's ``_value``)
    attribute: str  # the module attribute (a ParameterDict inside a loop)
    name: str  # Python source of describe's name: "WQ", or f"Q_{l}" inside a loop
    shape: tuple[str, ...]
    written: str  # Q[i, r]
    fan_in: str


@dataclass(frozen=True)
class ScoreCode:
    """One score line: what ``__init__`` builds for it and how ``maps`` computes it."""

    written: str  # the line as the structure writes it
    sizes: tuple[tuple[str, str], ...]  # (variable, Python source) of the index sizes it needs
    checks: tuple[str, ...]  # statements: x's grouped axes must fit T and D
    factors: tuple[FactorCode, ...]
    pattern: str  # Python source of its Pattern
    width: str  # Python source of its query/key channels
    scale: str  # Python source of its logit scale
    query_grid: str
    key_grid: str
    query: Side
    key: Side
    fused: tuple[str, str] | None  # (query factor, key factor) when each side is one x[t, i] W[i, c]


@dataclass(frozen=True)
class TermCode:
    """A score line, or a loop with its variable, bounds, lets, requires and score lines."""

    scores: tuple[ScoreCode, ...]
    offset: str  # Python source: the position of its first level in the module's levels
    loop: tuple[str, str, str] | None = None  # (variable, first, last)
    lets: tuple[tuple[str, str], ...] = ()
    requires: tuple[str, ...] = ()
    level_sizes: tuple[tuple[str, str], ...] = ()  # the loop's own index sizes, per loop value

    @property
    def body(self) -> list[str]:
        """The loop body's statements before its score lines: lets, requires, index sizes."""
        return [f"{n} = {v}" for n, v in self.lets] + list(self.requires) + [f"{n} = {v}" for n, v in self.level_sizes]

    @property
    def factors(self) -> tuple[FactorCode, ...]:
        """Its factors, each once (the score lines of a loop may share one)."""
        return tuple({f.attribute: f for score in self.scores for f in score.factors}.values())


@dataclass(frozen=True)
class Compiled:
    """Everything the template needs of the structure itself."""

    options: tuple[Option, ...]
    setup: tuple[str, ...]  # statements: options checked, lets, requires, global index sizes
    terms: tuple[TermCode, ...]
    renamed: dict[str, str]  # structure names that changed in Python

    @property
    def fused(self) -> bool:
        """Every level maps each token through one matrix: one projection per side for all of them
        (a loop of several score lines interleaves its levels: it is rendered level by level)."""
        return all(score.fused and (not term.loop or len(term.scores) == 1) for term in self.terms
                   for score in term.scores)  # fmt: skip

    @property
    def renamed_factors(self) -> dict[str, str]:
        """Factors whose attribute is not their name (which Python or the module already uses)."""
        found = {}
        for term in self.terms:
            for factor in term.factors:
                if factor.attribute != factor.base:
                    found[factor.base] = factor.attribute
        return found

    @property
    def looped(self) -> bool:
        return any(term.loop for term in self.terms)


def compile_structure(instance: Instance, schedules: dict[int, Schedule]) -> Compiled:
    """The structure of ``instance`` as module code; ``schedules`` gives each level's maps."""
    if instance.structure is None:
        raise OptionError(None, "only a structure read from a .ein file can be generated")
    program = instance.structure.program
    names = Names()
    options = tuple(_option(decl, instance, names) for decl in program.symbols.values() if decl.is_option
                    and decl.name not in ("T", "D"))  # fmt: skip
    setup = _setup(program, instance, names)
    terms, offset = [], "0"
    for term_no, term in enumerate(program.terms):
        levels = [lv for lv in instance.levels if lv.term == term_no]
        code = _term(term, levels, schedules, names, program, offset)
        terms.append(code)
        count = str(len(term.scores)) + " * " if isinstance(term, Loop) and len(term.scores) > 1 else ""
        added = f"{count}len(self.{code.scores[0].factors[0].attribute})" if code.loop else str(len(code.scores))
        offset = added if offset == "0" else f"{offset} + {added}"
    return Compiled(options, setup, tuple(terms), names.renamed())


# ---------------------------------------------------------------------------------------------
# Options and symbols


def _option(decl: SymbolDecl, instance: Instance, names: Names) -> Option:
    value = instance.values[decl.name]
    literal = decl.kind == "choice" or isinstance(decl.value, Num) or _is_literal_list(decl.value)
    given = instance.structure is not None and _given(decl, instance)
    default = _literal(value) if literal or given else "None"
    annotation = {"choice": "str"}.get(decl.kind, "tuple" if isinstance(value, list) else "int")
    if default == "None":
        annotation += " | None"
    return Option(decl.name, names[decl.name], default, annotation, decl.doc)


def _given(decl: SymbolDecl, instance: Instance) -> bool:
    """Whether the option's value differs from what its default rule gives (it was set by hand)."""
    if decl.kind == "choice" or decl.value is None:
        return False
    try:
        rule = evaluate(decl.value, dict(instance.values))
    except DSLError:  # the rule fails at these values: the option was given
        return True
    return rule != instance.values[decl.name]


def _is_literal_list(expr: Expr | None) -> bool:
    return expr is not None and all(isinstance(node, (Num, ListLit)) for node, _ in walk(expr))


def _literal(value) -> str:
    """A value as ruff writes it: double-quoted strings, tuples for lists."""
    if isinstance(value, (list, tuple)):
        items = [_literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return f'"{value}"' if isinstance(value, str) else str(value)


def _setup(program: Program, instance: Instance, names: Names) -> tuple[str, ...]:
    """Statements that check every option and compute every ``let``, then the structure's
    ``require``s and its global index sizes, in the resolver's order."""
    lines = []
    sized = size_symbols(program)
    pending = list(program.requires)  # each written as soon as the symbols it reads are known
    known: set[str] = set()
    for decl in symbol_order(program):
        lines.extend(_symbol_lines(decl, names, decl.name in sized))
        known.add(decl.name)
        ready = [req for req in pending if names_in(req.cond) <= known]
        lines.extend(_require(req, names) for req in ready)
        pending = [req for req in pending if req not in ready]
    for decl in program.indices.values():
        if _used(decl.name, program) and not _alias(decl, names):
            lines.append(f"{names[decl.name]} = {size_source(decl.size, names, f'index {decl.name}')}")
    return tuple(lines)


def _alias(decl: IndexDecl, names: Names) -> bool:
    """An index whose size is a symbol (``index i1: a``) reads as that symbol, with no variable of
    its own: ``names`` maps the index to it."""
    if not isinstance(decl.size, Name):
        return False
    names.fixed[decl.name] = names[decl.size.name]
    return True


def size_symbols(program: Program) -> set[str]:
    """The symbols a size reads, directly or through ``let``s: an index size, a list's length, a
    loop bound, a band bound. A ``let`` among them must be a whole number."""
    exprs = [d.size for d in program.indices.values()]
    exprs += [d.length for d in program.symbols.values() if d.length is not None]
    for term in program.terms:
        if isinstance(term, Loop):
            exprs += [term.start, term.stop, *(d.size for d in term.indices)]
        exprs += [e for score in _scores(term) if score.band for e in (score.band.lo, score.band.hi)]
    found: set[str] = set()
    pending = [node.name for e in exprs for node, _ in walk(e) if isinstance(node, Name)]
    while pending:
        name = pending.pop()
        decl = program.symbols.get(name)
        if name in found or decl is None:
            continue
        found.add(name)
        if decl.kind == "let":
            pending += [node.name for node, _ in walk(decl.value) if isinstance(node, Name)]
    return found


def _symbol_lines(decl: SymbolDecl, names: Names, sized: bool) -> list[str]:
    target = names[decl.name]
    if decl.name in SIDE_OF:
        checked = f'check_size({SIDE_OF[decl.name]}, "{SIDE_OF[decl.name]}")'
        if decl.kind == "let":
            rule = size_source(decl.value, names, decl.name)
            return [f"{target} = {checked}", f'require({target} == {rule}, "{SIDE_OF[decl.name]} must be '
                    f'{python(decl.value, names)} = {{{rule}}}, got {{{target}}}")']  # fmt: skip
        return [f"{target} = {checked}"]
    if decl.kind == "let":
        what = f"{decl.name} = {python(decl.value, Names())}"
        value = size_source(decl.value, names, what) if sized else python(decl.value, names)
        return [f"{target} = {value}"]
    rule = None if decl.value is None else python(decl.value, names)
    given = target if rule is None or rule == _literal_rule(decl) else f"{rule} if {target} is None else {target}"
    if decl.kind == "choice":
        return [f'{target} = check_choice({target}, "{decl.name}", {_literal(decl.choices)})']
    if decl.length is not None:
        length = size_source(decl.length, names, f"the length of {decl.name}")
        return [f'{target} = check_list({given}, "{decl.name}", {length})']
    check = "check_size" if decl.kind == "size" else "whole"
    return [f'{target} = {check}({given}, "{decl.name}")']


def _literal_rule(decl: SymbolDecl) -> str | None:
    """The default as written when it is a plain number or list (the keyword's default holds it)."""
    if isinstance(decl.value, Num) or _is_literal_list(decl.value):
        return python(decl.value, Names())
    return None


def _require(req: Require, names: Names) -> str:
    shown = ", ".join(f"{n} = {{{names[n]}}}" for n in sorted({node.name for node, _ in walk(req.cond)
                                                                if isinstance(node, Name)}))  # fmt: skip
    reason = f": {req.message}" if req.message else ""
    message = f"requirement {req.text} does not hold ({shown}){reason}"
    return f'require({python(req.cond, names)}, f"{message}")'


def _used(index: str, program: Program) -> bool:
    return any(index in axis.names for term in program.terms for score in _scores(term)
               for ref in score.operands for axis in ref.axes)  # fmt: skip


def _scores(term) -> tuple[Score, ...]:
    return term.scores if isinstance(term, Loop) else (term,)


# ---------------------------------------------------------------------------------------------
# Terms


def _term(term, levels: list[Level], schedules: dict[int, Schedule], names: Names, program: Program,
          offset: str) -> TermCode:  # fmt: skip
    if isinstance(term, Score):
        code = _score(term, levels[0], schedules[levels[0].number], names, program, None)
        return TermCode((code,), offset)
    var = names[term.var]
    lets = tuple((names[let.name], python(let.value, names)) for let in term.lets)
    requires = tuple(_require(req, names) for req in term.requires)
    local = {decl.name: decl for decl in term.indices}
    level_sizes = tuple((names[d.name], size_source(d.size, names, f"index {d.name}")) for d in term.indices
                        if _used_in(d.name, term.scores) and not _alias(d, names))  # fmt: skip
    scores = tuple(_score(score, levels[n], schedules[levels[n].number], names, program, term, local)
                   for n, score in enumerate(term.scores))  # fmt: skip
    bounds = (var, python(term.start, names), python(term.stop, names))
    return TermCode(scores, offset, bounds, lets, requires, level_sizes)


def _used_in(index: str, scores) -> bool:
    return any(index in axis.names for score in scores for ref in score.operands for axis in ref.axes)


def _score(score: Score, level: Level, schedule: Schedule, names: Names, program: Program, loop: Loop | None,
           local: dict[str, IndexDecl] | None = None) -> ScoreCode:  # fmt: skip
    declared = {**program.indices, **(local or {})}
    sizes: dict[str, str] = {}  # index -> Python source of its size, for those inferred from x
    checks: list[str] = []
    for ref in _x_refs(score):
        for axis, total in zip(ref.axes, ("T", "D")):
            _fit(axis.names, total, declared, names, sizes, checks, _x_text(ref))
    size_of = {i: sizes.get(i) or names[i] for i in level.sizes}
    variables = {i: names[i] for i, value in sizes.items() if _needs_variable(i, level) and not value.isidentifier()}
    size_of.update(variables)
    factors = _factors(level, loop, names, size_of)
    query_grid, key_grid = (_grid(axis, size_of) for axis in (level.query.axes[1], level.key.axes[1]))
    interface = dict(schedule.interfaces)[level.number]
    letters = Letters(level, schedule)
    query, key = letters.sides(query_grid != "", key_grid != "", loop is not None)
    lo_hi = ""
    if score.band is not None:
        lo = size_source(score.band.lo, names, "a band bound")
        hi = size_source(score.band.hi, names, "a band bound")
        lo_hi = f"lo={lo}, hi={hi}"
    length = ""
    if level.block_indices:
        blocks = _product(size_of[i] for i in level.block_indices) or "1"
        length = f'length=block_length(T, {blocks}, "block_size in {_x_text(_x_refs(score)[0])}")'
    pattern = f"Pattern({', '.join(p for p in (length, lo_hi) if p)})"
    scale = "1" if score.scale is None else python(score.scale, _with_sizes(names, size_of))
    return ScoreCode(written(score), tuple((names[i], sizes[i]) for i in variables),
                     tuple(checks), factors, pattern, _product(size_of[i] for i in interface) or "1", scale,
                     query_grid, key_grid, query, key, _fused(level, schedule, loop is not None))  # fmt: skip


def written(score: Score) -> str:
    """The score line's einsum as the structure writes it (without its band and scale)."""
    return " ".join(f"{ref.name}[{', '.join(_axis_text(a.names) for a in ref.axes)}]" for ref in score.operands)


def _x_refs(score: Score) -> list:
    """The query's and the key's use of x in a score line."""
    return [ref for ref in score.operands if ref.name == INPUT]


def _x_text(ref) -> str:
    """``x[(g t), i]``: one use of x as written."""
    return f"x[{', '.join(_axis_text(a.names) for a in ref.axes)}]"


def _axis_text(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else "(" + " ".join(names) + ")"


def _fit(axis: tuple[str, ...], total: str, declared: dict, names: Names, sizes: dict[str, str],
         checks: list[str], line: str) -> None:  # fmt: skip
    """The one index of a group on x's axis that is not declared takes what is left of T or D
    (``divide`` refuses a remainder); a group of declared indices must make up the axis."""
    unknown = [n for n in axis if n not in declared and n not in sizes]
    known = _product(sizes.get(n) or names[n] for n in axis if n in declared or n in sizes)
    what = f"{SIDE_OF[total]} in {line}"
    if unknown:
        sizes[unknown[0]] = total if not known else f'divide({total}, {known}, "{what}")'
    elif axis and f"{known} == {total}" not in (c.split("require(")[-1].split(",")[0] for c in checks):
        checks.append(f'require({known} == {total}, "{what}: {_axis_text(axis)} must make up {SIDE_OF[total]}")')


def _needs_variable(index: str, level: Level) -> bool:
    """Sequence sizes are only read by the pattern (inlined there); feature sizes get a variable."""
    return index not in level.sequence_indices


def _product(parts) -> str:
    parts = [p for p in parts if p != "1"]
    return " * ".join(f"({p})" if any(c in p for c in "+-/%") else p for p in parts)


def _with_sizes(names: Names, size_of: dict[str, str]) -> Names:
    """Names that read an index size as its variable (a scale may read them: ``scale 1/r``)."""
    scoped = Names(dict(names.fixed), set(names.taken))
    scoped.fixed.update({i: s for i, s in size_of.items() if s.isidentifier()})
    return scoped


def _grid(features: tuple[str, ...], size_of: dict[str, str]) -> str:
    if len(features) == 1:
        return ""
    return "(" + ", ".join(size_of[i] for i in features) + ")"


def _factors(level: Level, loop: Loop | None, names: Names, size_of: dict[str, str]) -> tuple[FactorCode, ...]:
    found = []
    for op in level.factors:
        if any(len(axis) > 1 for axis in op.axes):
            raise OptionError(None, f"factor {op.written()}: generate does not yet support a factor axis that "
                              "groups several indices (write one index per axis)")  # fmt: skip
        base = op.name.rsplit("_", 1)[0] if loop is not None else op.name
        attribute = _attribute(op.name, loop is not None)
        name = f'f"{base}_{{{names[loop.var]}}}"' if loop is not None else f'"{base}"'
        shape = tuple(size_of[i] for i in op.indices)
        found.append(FactorCode(base, attribute, name, shape, op.written().replace(op.name, base, 1),
                                _fan_in(level, op, size_of)))  # fmt: skip
    return tuple(found)


def _fan_in(level: Level, op, size_of: dict[str, str]) -> str:
    """The feature size a factor contracts with one token (the smaller, when it touches both
    tokens, as a BTT core's block input), feature-block indices left out."""
    inputs = []
    for token in (level.query, level.key):
        shared = [i for i in op.indices if i in token.axes[1] and i not in level.feature_block_indices]
        if shared:
            inputs.append(_product(size_of[i] for i in shared) or "1")
    if not inputs:
        return _product(size_of[i] for i in op.indices[:-1]) or "1"
    return inputs[0] if len(inputs) == 1 or inputs[0] == inputs[1] else f"min({inputs[0]}, {inputs[1]})"


def _fused(level: Level, schedule: Schedule, looped: bool) -> tuple[str, str] | None:
    """The query and key factors' attributes when each side is ``x[t, i] W[i, c]`` over the whole feature axis:
    a plain projection, which the module fuses with the other levels' into one matrix per side."""
    sides = []
    for role, part in (("query", Part.QUERY), ("key", Part.KEY)):
        steps = [s for s in schedule.steps if s.part is part]
        token = level.query if role == "query" else level.key
        if len(steps) != 1 or len(token.axes[1]) != 1:
            return None
        factor = next((t for t in steps[0].inputs if t.name != "x"), None)
        if factor is None or len(factor.indices) != 2 or factor.indices[0] != token.axes[1][0]:
            return None
        sides.append(_attribute(factor.name, looped))
    return sides[0], sides[1]


def _attribute(factor: str, looped: bool) -> str:
    """The module attribute of a factor: its name (without a loop's ``_value``), with a trailing
    ``_`` where Python, nn.Module, the module or the names ``maps`` uses already take it (a loop's
    factors are local variables there too)."""
    base = factor.rsplit("_", 1)[0] if looped else factor
    while base in MODULE_ATTRIBUTES or base in RESERVED or base in MAP_LOCALS or re.fullmatch(r"[qk]\d+", base):
        base += "_"
    return base


# ---------------------------------------------------------------------------------------------
# Einsum letters

LETTERS = "acdefgijklmnopqrsuvwxyzACDEFGIJKLMNOPQRSUVWXYZ"  # b, h and t are batch, head and token


class Letters:
    """The einsum letters and Python names of one level's map steps: the structure's own
    one-letter index names where they are free, then the first free letter."""

    def __init__(self, level: Level, schedule: Schedule) -> None:
        self.level = level
        self.schedule = schedule
        self.sequence = {*level.query.axes[0], *level.key.axes[0], *(new for _, new in schedule.renamed)}
        self.batch = next(i for i in schedule.sizes if i not in level.sizes)  # the batch index the plan added
        features = [i for i in level.sizes if i not in self.sequence]
        if len(features) > len(LETTERS):
            raise OptionError(None, f"{level.written()} has {len(features)} indices: more than torch.einsum can name")
        self.letter = {}
        for index in features:
            if len(index) == 1 and index in LETTERS and index not in self.letter.values():
                self.letter[index] = index
        free = iter(c for c in LETTERS if c not in self.letter.values())
        for index in features:
            self.letter.setdefault(index, next(free))
        self.headed = {op.name for op in level.factors}
        self.side_of: dict[str, str] = {}

    def sides(self, query_grid: bool, key_grid: bool, looped: bool) -> tuple[Side, Side]:
        self.grids = {"query": query_grid, "key": key_grid}
        self.looped = looped
        steps: dict[str, list[EinsumStep]] = {"q": [], "k": []}
        for step in self.schedule.steps:
            if step.part is Part.PAIRS:
                continue
            side = self.side(step)
            steps[side].append(self.einsum(step))
        q_map, k_map = self.schedule.map_outputs()
        return (Side(self.grid_source("query"), tuple(steps["q"]), self.result(q_map, "query"),
                     self.grid_shape(self.level.query)),
                Side(self.grid_source("key"), tuple(steps["k"]), self.result(k_map, "key"),
                     self.grid_shape(self.level.key)))  # fmt: skip

    @staticmethod
    def grid_shape(token) -> str:
        return "(B, T, " + ", ".join(token.axes[1]) + ")"

    def grid_source(self, role: str) -> str:
        """``x.unflatten(...)`` when a step of this side reads x's features as a grid."""
        part = Part.QUERY if role == "query" else Part.KEY
        reads = any(t.name == "x" for step in self.schedule.steps if step.part is part for t in step.inputs)
        return f"x.unflatten(-1, level.{role}_grid)" if self.grids[role] and reads else ""

    def side(self, step) -> str:
        if any(t.name in self.headed for t in step.inputs):
            self.headed.add(step.output.name)
        sources = [self.side_of.get(t.name) for t in step.inputs]
        side = next((s for s in sources if s), None)
        if side is None:  # reads x or factors only: the side its part or name says
            side = "k" if step.part is Part.KEY or step.output.name.startswith("k") else "q"
        self.side_of[step.output.name] = side
        return side

    def einsum(self, step) -> EinsumStep:
        spec = ",".join(self.subscripts(t) for t in step.inputs) + "->" + self.subscripts(step.output)
        operands = tuple(self.name(t, step.part) for t in step.inputs)
        return EinsumStep(self.name(step.output, step.part), spec, operands, self.shape(step.output))

    def name(self, tensor: Tensor, part: Part) -> str:
        if tensor.name == "x":
            role = "key" if part is Part.KEY else "query"
            return f"x{role[0]}" if self.grids[role] else "x"
        factor = next((op for op in self.level.factors if op.name == tensor.name), None)
        if factor is not None:
            attribute = _attribute(factor.name, self.looped)
            return attribute if self.looped else f"self.{attribute}"
        return tensor.name.replace("'", "_")

    def subscripts(self, tensor: Tensor) -> str:
        batch = "b" if self.batch in tensor.indices else ""
        head = "h" if tensor.name in self.headed else ""
        token = "t" if any(i in self.sequence for i in tensor.indices) else ""
        rest = "".join(self.letter[i] for i in tensor.indices if i != self.batch and i not in self.sequence)
        return batch + head + token + rest

    def shape(self, tensor: Tensor) -> str:
        """``(B, H, T, i2, j1)``: a tensor's axes as the structure names them."""
        axes = (["B"] if self.batch in tensor.indices else []) + (["H"] if tensor.name in self.headed else [])
        axes += ["T"] if any(i in self.sequence for i in tensor.indices) else []
        axes += [i for i in tensor.indices if i != self.batch and i not in self.sequence]
        return "(" + ", ".join(axes) + ")"

    def result(self, tensor: Tensor, role: str) -> str:
        """The map as (B, H, T, channels): flattened, a head axis added when no factor gave one,
        and x's own grid (no step on this side) read in the interface's order."""
        features = [i for i in tensor.indices if i != self.batch and i not in self.sequence]
        if tensor.name == "x":  # no step on this side: the map is x itself
            token = self.level.query if role == "query" else self.level.key
            expr = "x"
            if list(token.axes[1]) != features:  # its grid read in another order: a permutation
                grid, order = ("".join(self.letter[i] for i in axes) for axes in (token.axes[1], features))
                expr = f'torch.einsum("bt{grid}->bt{order}", x.unflatten(-1, level.{role}_grid)).flatten(2)'
            return f"{expr}[:, None].expand(-1, self.n_heads, -1, -1)"
        expr = self.name(tensor, Part.KEY if role == "key" else Part.QUERY)
        if tensor.name not in self.headed:
            expr = f"{expr}[:, None].expand(-1, self.n_heads, -1{', -1' * len(features)})"
        return f"{expr}.flatten(3)" if len(features) > 1 else expr


def instance_schedules(plan) -> dict[int, Schedule]:
    """Each level's map schedule in a plan."""
    return {schedule.levels[0]: schedule for schedule in plan.maps}
