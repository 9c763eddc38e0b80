"""Symbolic counts: params and FLOPs as formulas in the structure's own symbols (sympy).

Each level carries its index sizes as expressions (``Level.symbolic``); each count is the same
sum of products as its numeric twin in ``counts.py``, over the same plan steps, with those
expressions in place of numbers. A loop's levels become one ``Sum`` over the loop variable when
the plan computes them all the same way. Formulas are printed as text and cached per structure
text and plan shape (``formula_cache``), so most runs never import sympy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..expr import Call, to_sympy, walk
from ..planner import Part, Plan, Schedule, Step, fresh
from ..structure import Instance, Level, LoopRange, symbol_order


@dataclass(frozen=True)
class Formulas:
    """The counts of ``counts.Flops`` and ``counts.params`` as printable formulas."""

    params: str
    per_token: str
    factors: str
    scored_pairs: str  # every token's maps, the factor products, then the pairs
    splits: tuple[str, ...]  # how derived sizes factor a whole one: "D = a*b = 16 x 16"
    folds: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # ("D", "a*b", ("a", "b")): what splits show

    def divided(self, div: int) -> Formulas:
        """The FLOP formulas in multiply-adds (``div`` = 2) or unchanged (``div`` = 1)."""
        if div == 1:
            return self
        import re

        import sympy

        def halve(text: str) -> str:
            lists = {name: sympy.IndexedBase(name) for name in re.findall(r"(\w+)\[", text)}
            return str(sympy.sympify(text, locals=lists) / div)

        halved = (halve(self.per_token), halve(self.factors), halve(self.scored_pairs))
        return Formulas(self.params, *halved, self.splits, self.folds)


def _symbol(name: str):
    import sympy

    return sympy.Symbol(name, positive=True, integer=True)


def symbol_env(instance: Instance) -> dict:
    """Every symbol of the file as a sympy symbol (lists as indexed bases)."""
    import sympy

    env: dict = {}
    for decl in symbol_order(instance.structure.program):
        is_list = isinstance(instance.values[decl.name], list)
        env[decl.name] = sympy.IndexedBase(decl.name) if is_list else _symbol(decl.name)
    return env


def _calls(expr) -> bool:
    return any(isinstance(node, Call) for node, _ in walk(expr))


def relations(instance: Instance, env: dict) -> list[tuple]:
    """Products to fold back: ``let b = D / a`` gives a*b -> D, so formulas read s*D*(a + b)."""
    import sympy

    pairs = []
    for decl in instance.structure.program.symbols.values():
        if decl.kind == "let" and not _calls(decl.value) and not isinstance(env[decl.name], sympy.IndexedBase):
            num, den = sympy.fraction(sympy.together(to_sympy(decl.value, env)))
            if den != 1:
                pairs.append((den * env[decl.name], num))
    return pairs


def level_sizes(level: Level, env: dict) -> dict:
    """Symbolic size of every index of the level (the loop variable left free)."""
    local = dict(env)
    loop: LoopRange | None = level.symbolic.loop
    if loop is not None:
        local[loop.var] = _symbol(loop.var)
        for let in loop.lets:
            local[let.name] = to_sympy(let.value, local)
    sizes = {}
    for index, expr in level.symbolic.sizes.items():  # declared sizes come before those inferred from them
        sizes[index] = to_sympy(expr, {**local, **sizes})
    return sizes


def step_sizes(level: Level, schedule: Schedule, sizes: dict) -> dict:
    """Symbolic sizes of a schedule's map-step indices: the level's (``i@3`` reads ``i``), the key
    side's copy of a block index as its original, the batch index as 1 (one sequence)."""
    import sympy

    copies = dict((new, old) for old, new in schedule.renamed)
    batch = fresh("n", level.sizes)
    found = {}
    for step in schedule.steps:
        if step.level != level.number or step.part not in (Part.QUERY, Part.KEY, Part.FACTORS, Part.WHOLE):
            continue
        for tensor in (*step.inputs, step.output):
            for index in tensor.indices:
                base = copies.get(index.split("@")[0], index.split("@")[0])
                found[index] = sympy.Integer(1) if base == batch else sizes[base]
    return found


def pair_formula(level: Level, sizes: dict, T, band) -> object:
    """Causal pairs (u <= t) the level scores: T (T / blocks + 1) / 2 in equal blocks, or the
    band's sum of T - d over its diagonals t - u = d >= 0."""
    import sympy

    if level.band is None:
        blocks = math.prod(sizes[i] for i in level.block_indices)
        return T * (T / blocks + 1) / 2
    lo, hi = band
    n = math.prod(level.sizes[i] for i in level.query.axes[0])  # T at this instance
    if level.band[1] < 0 or level.band[0] > n - 1:
        return sympy.Integer(0)  # the band keeps no causal pair
    if level.band[1] > n - 1:  # diagonals past the sequence hold no pairs: stop at T - 1
        hi = T - 1
    return _diagonals(T, 0 if level.band[0] < 0 else lo, hi)


def _diagonals(T, first, last):
    """Sum of (T - d) for d = first .. last."""
    count = last - first + 1
    return count * T - (first + last) * count / 2


def _step_flops(step: Step, sizes: dict):
    from ..network import contraction_flops

    return contraction_flops(
        [t.indices for t in step.inputs], step.output.indices, sizes, [tuple(range(len(step.inputs)))]
    )


def level_counts(level: Level, schedule: Schedule, env: dict) -> dict[str, object]:
    """The level's params, per-token map FLOPs, factor FLOPs and scored-pair FLOPs, symbolically."""
    import sympy

    T = env["T"]
    sizes = level_sizes(level, env)
    counts = {key: sympy.Integer(0) for key in ("params", "per_token", "factors", "pairs")}
    counts["params"] = sum((math.prod(sizes[i] for i in op.indices) for op in level.factors), sympy.Integer(0))
    if not schedule.fused:  # one einsum: a single contraction over every index, all of it "pairs"
        whole = [s for s in schedule.steps if s.level == level.number]
        counts["pairs"] = sum((_step_flops(s, step_sizes(level, schedule, sizes)) for s in whole), sympy.Integer(0))
        return counts
    symbolic = step_sizes(level, schedule, sizes)
    for step in schedule.steps:
        if step.level == level.number and step.part in (Part.QUERY, Part.KEY):
            counts["per_token"] += _step_flops(step, symbolic) / T
        elif step.level == level.number and step.part is Part.FACTORS:
            counts["factors"] += _step_flops(step, symbolic)
    interface = dict(schedule.interfaces)[level.number]
    band = None
    if level.symbolic.band is not None:
        local = dict(
            env, **({level.symbolic.loop.var: _symbol(level.symbolic.loop.var)} if level.symbolic.loop else {})
        )
        band = tuple(to_sympy(e, local) for e in level.symbolic.band)
    size = math.prod((symbolic[i] for i in interface), start=sympy.Integer(1))
    counts["pairs"] = pair_formula(level, sizes, T, band) * 2 * size
    return counts


def shape_key(level: Level, schedule: Schedule) -> tuple:
    """How the plan computes a level, with sizes left out: equal keys give one formula."""
    own = [(s.op, s.part, tuple(tuple(i.split("@")[0] for i in t.indices) for t in (*s.inputs, s.output)))
           for s in schedule.steps if s.level == level.number]  # fmt: skip
    return tuple(own), schedule.kind, schedule.fused


def formulas(plan: Plan) -> Formulas:
    """params, per-token, factor and scored-pair FLOPs of ``plan`` (batch 1) as formulas."""
    import sympy

    instance = plan.instance
    env = symbol_env(instance)
    owner = {n: s for s in plan.schedules for n in s.levels}
    keys = ("params", "per_token", "factors", "pairs")
    totals = {k: sympy.Integer(0) for k in keys}
    seen: set[str] = set()
    for term in sorted({level.term for level in instance.levels}):
        levels = [lv for lv in instance.levels if lv.term == term]
        counts = [level_counts(lv, owner[lv.number], env) for lv in levels]
        for lv, count in zip(levels, counts):  # a factor shared by terms counts once
            if all(op.name in seen for op in lv.factors):
                count["params"] = sympy.Integer(0)
            seen.update(op.name for op in lv.factors)
        loop = levels[0].symbolic.loop
        same = len({shape_key(lv, owner[lv.number]) for lv in levels}) == 1
        for key in keys:
            if loop is not None and same:
                var = _symbol(loop.var)
                totals[key] += sympy.Sum(counts[0][key], (var, to_sympy(loop.start, env), to_sympy(loop.stop, env)))
            else:
                for lv, count in zip(levels, counts):
                    value = count[key]
                    totals[key] += value.subs(_symbol(loop.var), lv.loop_value) if loop is not None else value
    folds = relations(instance, env)
    tidy = {k: _tidy(v, folds) for k, v in totals.items()}
    T = env["T"]
    scored = _tidy(T * tidy["per_token"] + tidy["factors"] + tidy["pairs"], folds)
    named = tuple((str(whole), str(product), tuple(str(f) for f in sympy.Mul.make_args(product)))
                  for product, whole in folds)  # fmt: skip
    return Formulas(str(tidy["params"]), str(tidy["per_token"]), str(tidy["factors"]), str(scored),
                    split_lines(named, instance), named)  # fmt: skip


def split_lines(folds, instance: Instance) -> tuple[str, ...]:
    """``D = a*b = 16 x 16`` for each fold (whole, product, factor names)."""
    return tuple(f"{whole} = {product} = {' x '.join(str(instance.values[n]) for n in names)}"
                 for whole, product, names in folds)  # fmt: skip


def _tidy(expr, folds):
    """Expanded, common factors pulled out, ``a*b`` folded back to ``D``; factored when polynomial."""
    import sympy

    expr = sympy.factor_terms(sympy.expand(expr))
    for product, value in folds:
        expr = sympy.factor_terms(expr.subs(product, value))
    return expr if expr.has(sympy.Sum) else sympy.factor(expr)


def evaluate(formula: str, instance: Instance) -> int:
    """The formula's value at the instance's sizes (what the tests compare with the counts)."""
    import sympy

    env = symbol_env(instance)
    expr = sympy.sympify(formula, locals={**{str(k): v for k, v in env.items()}, "Sum": sympy.Sum})
    subs = {sym: instance.values[name] for name, sym in env.items() if not isinstance(sym, sympy.IndexedBase)}
    expr = expr.subs(subs).doit()
    for name, sym in env.items():
        if isinstance(sym, sympy.IndexedBase):
            values = instance.values[name]
            expr = expr.replace(lambda e, b=sym: isinstance(e, sympy.Indexed) and e.base == b,
                                lambda e, v=values: sympy.Integer(v[int(e.indices[0]) - 1]))  # fmt: skip
    return sympy.nsimplify(expr)
