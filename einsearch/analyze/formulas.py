"""Symbolic counts: the same params and FLOPs as formulas in the structure's own symbols (sympy).

Index sizes are rebuilt symbolically from the file (declared sizes, and those inferred from x's
axes by division), then each count is the same product as its numeric twin. A loop's levels
become one ``Sum`` over the loop variable when they share a contraction plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy

from ..dsl import Loop, Score
from ..expr import Call, to_sympy, walk
from ..network import best_feature_map, contraction_flops
from ..structure import INPUT, Instance, Level, symbol_order


@dataclass(frozen=True)
class Formulas:
    params: sympy.Expr
    per_token: sympy.Expr
    pair: sympy.Expr  # FLOPs of all scored pairs
    scored_pairs: sympy.Expr  # every token's maps plus the pairs (Flops.scored_pairs)
    splits: tuple[str, ...]  # how derived sizes factor a whole one: "D = a*b = 16 x 16"


def symbol_env(instance: Instance) -> dict[str, sympy.Basic]:
    """Every symbol of the file as a sympy symbol (lists as indexed bases)."""
    env: dict[str, sympy.Basic] = {}
    for decl in symbol_order(instance.structure.program):
        if isinstance(instance.values[decl.name], list):
            env[decl.name] = sympy.IndexedBase(decl.name)
        else:
            env[decl.name] = sympy.Symbol(decl.name, positive=True, integer=True)
    return env


def _calls(expr) -> bool:
    return any(isinstance(node, Call) for node, _ in walk(expr))


def relations(instance: Instance, env: dict) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """Products to fold back: ``let b = D / a`` gives a*b -> D, so formulas read s*D*(a + b)."""
    pairs = []
    for decl in instance.structure.program.symbols.values():
        if decl.kind == "let" and not _calls(decl.value) and not isinstance(env[decl.name], sympy.IndexedBase):
            num, den = sympy.fraction(sympy.together(to_sympy(decl.value, env)))
            if den != 1:
                pairs.append((den * env[decl.name], num))
    return pairs


def term_sizes(term: Score, loop: Loop | None, instance: Instance, env: dict) -> dict[str, sympy.Expr]:
    """Symbolic size of every index of a score line."""
    program = instance.structure.program
    local = dict(env)
    decls = list(program.indices.values())
    if loop is not None:
        local[loop.var] = sympy.Symbol(loop.var, positive=True, integer=True)
        for let in loop.lets:
            local[let.name] = to_sympy(let.value, local)
        decls += list(loop.indices)
    sizes = {d.name: to_sympy(d.size, local) for d in decls}
    for ref in term.operands:
        if ref.name != INPUT:
            continue
        for axis, total in zip(ref.axes, (env["T"], env["D"])):
            unknown = [n for n in axis.names if n not in sizes]
            if unknown:
                sizes[unknown[0]] = total / math.prod(sizes[n] for n in axis.names if n in sizes)
    return sizes


def pair_formula(level: Level, sizes: dict, T: sympy.Expr, band) -> sympy.Expr:
    """Pairs the level scores: T^2 / blocks, or the band's sum of (T - |t - u|) over its diagonals."""
    if level.band is None:
        return T**2 / math.prod(sizes[i] for i in level.block_indices)
    lo, hi = band
    n = math.prod(level.sizes[i] for i in level.query.axes[0])  # T at this instance
    if level.band[0] > n - 1 or level.band[1] < 1 - n:
        return sympy.Integer(0)  # the band misses every pair
    if level.band[1] > n - 1:  # diagonals past the sequence hold no pairs: stop at T - 1
        hi = T - 1
    if level.band[0] < 1 - n:
        lo = 1 - T
    total = sympy.Integer(0)
    if level.band[1] >= 0:  # diagonals t - u = d >= 0 hold T - d pairs
        start = 0 if level.band[0] < 0 else lo
        total += _diagonals(T, start, hi)
    if level.band[0] < 0:  # and t - u = -d, d > 0, as many
        total += _diagonals(T, 1 if level.band[1] >= 0 else -hi, -lo)
    return total


def _diagonals(T: sympy.Expr, first: sympy.Expr, last: sympy.Expr) -> sympy.Expr:
    """Sum of (T - d) for d = first .. last."""
    count = last - first + 1
    return count * T - (first + last) * count / 2


def formulas(instance: Instance) -> Formulas:
    """params, per-token, pair and score FLOPs as sympy expressions (feature-map form)."""
    env = symbol_env(instance)
    T = env["T"]
    parts = {"params": [], "per_token": [], "pair": []}
    seen_factors: set[str] = set()
    program = instance.structure.program
    for term_no, term in enumerate(program.terms):
        levels = [lv for lv in instance.levels if lv.term == term_no]
        scores = term.scores if isinstance(term, Loop) else (term,)
        loop = term if isinstance(term, Loop) else None
        per_score = {}
        for score in scores:
            sizes = term_sizes(score, loop, instance, env)
            local = dict(env, **({loop.var: sympy.Symbol(loop.var, positive=True, integer=True)} if loop else {}))
            band = None
            if score.band is not None:
                band = (to_sympy(score.band.lo, local), to_sympy(score.band.hi, local))
            per_score[id(score)] = (sizes, band)
        counts = {k: sympy.Integer(0) for k in parts}
        unrolled = {k: sympy.Integer(0) for k in parts}  # each level with its loop value substituted
        var = sympy.Symbol(loop.var, positive=True, integer=True) if loop else None
        for level in levels:
            before = dict(counts)
            score = scores[(level.number - levels[0].number) % len(scores)]
            sizes, band = per_score[id(score)]
            fm = best_feature_map(level, instance.T)
            counts["per_token"] += sum(
                contraction_flops(s.inputs(level, tok), s.output, sizes, s.path)
                for s, tok in ((fm.query, level.query), (fm.key, level.key))
            )
            counts["pair"] += pair_formula(level, sizes, T, band) * 2 * math.prod(sizes[i] for i in fm.interface)
            for op in level.factors:
                base = op.name if loop is None else f"{op.name}@{term_no}"
                if base not in seen_factors:
                    seen_factors.add(base)
                    counts["params"] += math.prod(sizes[i] for i in op.indices)
            if loop is not None:
                for key in counts:
                    unrolled[key] += (counts[key] - before[key]).subs(var, level.loop_value)
                    if level is not levels[0]:
                        counts[key] = before[key]  # the first level stands for all in a Sum
        for key, value in counts.items():
            if loop is not None:
                same_plan = len({_split_key(lv, instance.T) for lv in levels}) == 1
                bounds = (var, to_sympy(loop.start, env), to_sympy(loop.stop, env))
                value = sympy.Sum(value, bounds) if same_plan else unrolled[key]
            parts[key].append(value)
    folds = relations(instance, env)
    result = {k: _tidy(sum(v, sympy.Integer(0)), folds) for k, v in parts.items()}
    scored_pairs = _tidy(T * result["per_token"] + result["pair"], folds)
    return Formulas(result["params"], result["per_token"], result["pair"], scored_pairs, _splits(folds, instance))


def _splits(folds, instance: Instance) -> tuple[str, ...]:
    lines = []
    for product, whole in folds:
        factors = [instance.values[str(f)] for f in sympy.Mul.make_args(product)]
        lines.append(f"{whole} = {product} = {' x '.join(map(str, factors))}")
    return tuple(lines)


def _split_key(level: Level, T: int) -> tuple:
    fm = best_feature_map(level, T)
    return fm.query.factors, fm.key.factors, fm.query.path, fm.key.path


def _tidy(expr: sympy.Expr, folds) -> sympy.Expr:
    """Expanded, common factors pulled out, ``a*b`` folded back to ``D``; factored when polynomial."""
    expr = sympy.factor_terms(sympy.expand(expr))
    for product, value in folds:
        expr = sympy.factor_terms(expr.subs(product, value))
    return expr if expr.has(sympy.Sum) else sympy.factor(expr)


def evaluate(expr: sympy.Expr, instance: Instance) -> int:
    """The formula's value at the instance's sizes (what the tests compare with the counts)."""
    env = symbol_env(instance)
    subs = {}
    for name, sym in env.items():
        value = instance.values[name]
        if isinstance(sym, sympy.IndexedBase):
            continue
        subs[sym] = value
    lists = {env[n]: v for n, v in instance.values.items() if isinstance(env.get(n), sympy.IndexedBase)}
    expr = expr.subs(subs).doit()
    for base, values in lists.items():
        expr = expr.replace(lambda e, b=base: isinstance(e, sympy.Indexed) and e.base == b,
                            lambda e, v=values: sympy.Integer(v[int(e.indices[0]) - 1]))  # fmt: skip
    return sympy.nsimplify(expr)
