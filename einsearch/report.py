"""Text, JSON and CSV renderings of what the commands compute; no click here, no computing either.

A low layer (docs/design.md §10): at run time it imports only ``network`` (a constant) and
``structure``, the planner, the analysis and the search only for type checking, so the objects
those build can render themselves through it.
"""

from __future__ import annotations

import math
from typing import Any

from .network import EXHAUSTIVE_SPLITS
from .options import value_text
from .structure import Instance, Structure

# What this module renders comes from the layers above it (planner, analyze, search), which call
# it to render themselves; it does not import them, not even for type checking (that would close
# an import circle, docs/design.md §10), so their classes are named here for the signatures only.
Description = Profile = LevelPlan = Plan = Schedule = SearchResult = Any

SHADES = " .:-=+*#%@"  # the heatmap, light to dark
TAXONOMY_LINES = {
    "psi": "rank: log R / log D (1 = full rank)",
    "omega": "parameter sharing: log(C/P) / log D (0 = each parameter used once per token)",
    "nu": "compute: log(C/D) / log D (1 = dense, about 1/2 = BTT with s = 1, log r / log D = low rank)",
}


def number(value: float) -> str:
    """1,234,567 for whole numbers, 3 significant digits otherwise."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}"


def sizes_text(instance: Instance) -> str:
    return "  ".join(f"{k}={value_text(v)}" for k, v in instance.values.items())


def unit_scale(macs: bool) -> tuple[str, int]:
    return ("MACs", 2) if macs else ("FLOPs", 1)


def describe_text(desc: Description, heads: int = 1, macs: bool = False) -> str:
    inst = desc.instance
    unit, div = unit_scale(macs)
    formulas = desc.formulas.divided(div)
    lines = [f"{inst.name}: {inst.doc}", f"source  {inst.source}", ""]
    lines.append(f"sizes   {sizes_text(inst)}")
    lines.extend(f"split   {split}" for split in formulas.splits)
    lines.append(f"counts  one head, one sequence; {unit}" + ("" if macs else " = 2 per multiply-add"))
    lines.append("")
    for level, fam in zip(inst.levels, desc.levels):
        scale = "" if level.scale == 1 else f"  scale {level.scale:.4g}"
        lines.append(f"level {level.number}  {fam.sequence_text()}  |  {fam.feature}  |  rank {fam.rank}{scale}")
        lines.append(f"    {level.written()}")
        shapes = ", ".join(f"{op.name} {'x'.join(str(math.prod(level.sizes[i] for i in a)) for a in op.axes)}"
                           for op in level.factors)  # fmt: skip
        lines.append(f"    factors  {shapes or '(none)'}")
    lines.append("")
    total = f"   ({number(desc.params * heads)} for {heads} heads)" if heads > 1 else ""
    lines.append(f"params     {number(desc.params)}  = {formulas.params}{total}")
    lines.append(f"rank       {rank_text(desc)}")
    f = desc.flops
    lines.append(f"{unit.lower():<10} per token {number(f.per_token / div)}  = {formulas.per_token}"
                 "   (map one query and one key token)")  # fmt: skip
    if f.factors:
        lines.append(f"           factors   {number(f.factors / div)}  = {formulas.factors}"
                     "   (factors multiplied together, once per head)")  # fmt: skip
    lines.append(f"           per pair  {number(f.per_pair / div)}   (mean over all T x T pairs)")
    total = f"   ({number(desc.score * heads / div)} for {heads} heads)" if heads > 1 else ""
    score = f"           score     {number(desc.score / div)}"
    if desc.score == f.scored_pairs:
        lines.append(f"{score}  = {formulas.scored_pairs}   (every causal score){total}")
    else:
        lines.append(f"{score}   (the causal scores as `einsearch plan` computes them: whole tiles){total}")
        lines.append(f"           scored pairs only {number(f.scored_pairs / div)}  = {formulas.scored_pairs}")
    if desc.taxonomy is not None:
        lines.append("")
        for n, key in enumerate(("psi", "omega", "nu")):
            head = "taxonomy" if n == 0 else ""
            lines.append(f"{head:<10} {key:<5} = {getattr(desc.taxonomy, key):.3f}   {TAXONOMY_LINES[key]}")
    lines.append("")
    lines.extend(pattern_lines(desc.profile, desc.grid, unit, div))
    return "\n".join(lines)


def pattern_lines(profile: Profile, grid, unit: str, div: int) -> list[str]:
    """The compute pattern: one line when every pair costs the same, else a profile and a heatmap."""
    if min(profile.flops) == max(profile.flops):
        return [f"pattern    uniform: every pair (t, u) costs {number(profile.flops[0] / div)} {unit}"]
    lines = [f"pattern    {unit} spent on pair (t, u), mean by distance |t - u|:"]
    lines.extend("           " + row for row in profile_rows(profile, div))
    lines.append(f"           the T x T plane (query t down, key u across; darker = more {unit}):")
    lines.extend("           " + row for row in heatmap(grid))
    return lines


def heatmap(grid) -> list[str]:
    """Text rows, one character per cell, darker for more FLOPs (two characters wide, square)."""
    top = grid.max() or 1.0
    return ["".join(SHADES[round(v / top * (len(SHADES) - 1))] * 2 for v in row) for row in grid]


def rank_text(desc: Description) -> str:
    bound = f"bound {number(desc.rank_bound)}"
    if desc.rank_numeric is None:
        why = "side above --rank-limit or over 4M random entries"
        return f"{number(desc.rank_bound)}   ({bound}; too large for the exact check: {why})"
    if desc.rank_numeric == desc.rank_bound:
        verdict = "agree"
    elif desc.rank_numeric < desc.rank_bound:
        verdict = "the bound is not tight here"
    else:  # a true rank above a proven bound means the analysis is wrong
        verdict = "ABOVE THE BOUND: please report this structure"
    return (f"{number(desc.rank)}   ({bound}; exact rank of a random instance {number(desc.rank_numeric)}: "
            f"{verdict})")  # fmt: skip


def profile_rows(profile: Profile, div: int) -> list[str]:
    """The profile at distances 0, 1, 2, 4, ... T-1: one line of `d: flops` pairs."""
    at = dict(zip(profile.distance, profile.flops))
    T = profile.distance[-1] + 1
    picks = sorted({0, T - 1, *(2**k for k in range(T.bit_length()) if 2**k < T)} & set(at))
    cells = [f"{d}: {number(at[d] / div)}" for d in picks]
    return [",  ".join(cells[i : i + 6]) for i in range(0, len(cells), 6)]


def describe_json(desc: Description, heads: int = 1, macs: bool = False, full_pattern: bool = False) -> dict:
    inst = desc.instance
    unit, div = unit_scale(macs)
    formulas = desc.formulas.divided(div)
    return {
        "structure": inst.name,
        "doc": inst.doc,
        "source": inst.source,
        "units": f"{unit} ({'1 per' if macs else '2 per'} multiply-add); one head, one sequence",
        "sizes": inst.values,
        "heads": heads,
        "params": desc.params,
        "params_formula": formulas.params,
        "rank": desc.rank,
        "rank_bound": desc.rank_bound,
        "rank_exact": desc.rank_numeric,
        "flops": {
            "per_token": desc.flops.per_token // div,
            "factors": desc.flops.factors // div,
            "per_pair": desc.flops.per_pair / div,
            "score": desc.score // div,
            "scored_pairs": desc.flops.scored_pairs // div,
            "per_token_formula": formulas.per_token,
            "factors_formula": formulas.factors,
            "scored_pairs_formula": formulas.scored_pairs,
        },
        "totals": {"params": desc.params * heads, "score": desc.score * heads // div},
        "levels": [
            {
                "einsum": level.written(),
                "factors": {op.name: list(inst.factor_shapes[op.name]) for op in level.factors},
                "scale": level.scale,
                "sequence": fam.sequence,
                "blocks": fam.blocks,
                "band": list(fam.band) if fam.band else None,
                "window": fam.window,
                "feature": fam.feature,
                "rank": fam.rank,
            }
            for level, fam in zip(inst.levels, desc.levels)
        ],
        "taxonomy": None if desc.taxonomy is None else vars(desc.taxonomy),
        "pattern": pattern_json(desc, div, full_pattern),
    }


def pattern_json(desc: Description, div: int, full: bool) -> dict:
    """Mean FLOPs per pair by distance: at the profile's few dozen distances, or at every one of
    0 .. T-1 when ``full`` (T entries: meant for moderate T)."""
    profile = desc.full_profile() if full else desc.profile
    return {"distance": profile.distance, "flops": [v / div for v in profile.flops]}


def structure_summary(structure: Structure, instance: Instance) -> list[str]:
    """What ``check`` prints: the options with defaults and docs, and the levels they give."""
    lines = [f"{structure.name}: {structure.doc or '(no doc line)'}", "options:"]
    for decl in structure.options:
        default = "|".join(decl.choices) if decl.kind == "choice" else value_text(instance.values[decl.name])
        lines.append(f"  --{decl.name:<10} {default:<24} {decl.doc}".rstrip())
    derived = [d for d in structure.program.symbols.values() if not d.is_option]
    if derived:
        lines.append("derived: " + "  ".join(f"{d.name}={value_text(instance.values[d.name])}" for d in derived))
    lines.append(f"levels: {len(instance.levels)}")
    for level in instance.levels:
        lines.append(f"  {level.number}: {level.written()}")
    lines.append("factors: " + ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in instance.factor_shapes.items()))
    return lines


def sequences(batch: int) -> str:
    return f"B = {batch} sequence" + ("s" if batch > 1 else "")


def plan_text(plan: Plan, heads: int, macs: bool, alternatives: int) -> str:
    """The chosen steps of every schedule, the best alternatives, and the speed-ups."""
    inst = plan.instance
    unit, div = unit_scale(macs)
    lines = [f"{inst.name}: {inst.doc}", f"sizes   {sizes_text(inst)}",
             f"counts  one head, {sequences(plan.batch)}; {unit}" + ("" if macs else " = 2 per multiply-add"),
             f"cost    estimate = {plan.cost}; chosen: the lowest estimate within opt_einsum's FLOPs", ""]  # fmt: skip
    for schedule in plan.schedules:
        numbers = ", ".join(map(str, schedule.levels))
        lines.append(f"level{'s' if len(schedule.levels) > 1 else ''} {numbers}: {schedule.name}")
        lines.extend(steps_lines(schedule, unit, div))
        if len(schedule.levels) > 1:
            own = [plan.levels[n - 1].chosen for n in schedule.levels]
            lines.append(f"    instead of each level's own choice: {number(sum(s.flops for s in own) / div)} {unit}, "
                         f"estimate x{ratio(sum(s.estimate for s in own), schedule.estimate)}")  # fmt: skip
        for n in schedule.levels:
            lines.extend(alternative_lines(plan.levels[n - 1], schedule, alternatives, unit, div))
        lines.append("")
    capped = [lp.level.number for lp in plan.levels if len(lp.level.factors) > EXHAUSTIVE_SPLITS]
    if capped:
        lines.append(f"splits      levels {', '.join(map(str, capped))} have more than {EXHAUSTIVE_SPLITS} factors: "
                     "only the n + 1 splits along the factors' order from the query token were tried")  # fmt: skip
    per_heads = f"   ({number(plan.flops * heads / div)} for {heads} heads)" if heads > 1 else ""
    lines += [
        f"total       {number(plan.flops / div)} {unit}{per_heads}",
        f"largest     {number(plan.largest)} elements written by one step",
        f"bytes moved {number(plan.bytes)} (float32)",
        baseline("opt_einsum", plan.opt_einsum_flops, plan, unit, div),
        baseline("naive", plan.naive_flops, plan, unit, div),
    ]
    return "\n".join(lines)


def steps_lines(schedule: Schedule, unit: str, div: int) -> list[str]:
    width = max(len(step.written()) for step in schedule.steps)
    lines = []
    for step in schedule.steps:
        shape = "x".join(str(schedule.sizes[i]) for i in step.output.indices)
        lines.append(f"    {step.written():<{width}}  {shape:>16}  {number(step.flops / div):>15} {unit}")
    return lines


def alternative_lines(lp: LevelPlan, chosen: Schedule, count: int, unit: str, div: int) -> list[str]:
    """A level's own best candidates other than the chosen schedule."""
    own = chosen if len(chosen.levels) == 1 else lp.chosen  # a group compares with the level's own choice
    others = [s for s in lp.candidates if s is not own][:count]
    head = f"    alternatives{f' for level {lp.level.number} (against its own choice)' if own is not chosen else ''}:"
    lines = [head] if others else []
    for other in others:
        slower = ratio(other.estimate, own.estimate)
        lines.append(f"      {number(other.flops / div):>18} {unit}  estimate x{slower:<7} "
                     f"largest {number(other.largest):>13}  {other.name}")  # fmt: skip
    return lines


def ratio(a: int, b: int) -> str:
    """``a / b`` to three significant digits, with thousands separators: 1.26, 5,400."""
    return number(float(f"{a / b:.3g}"))


def baseline(label: str, flops: int, plan: Plan, unit: str, div: int) -> str:
    """``opt_einsum  1,234 FLOPs: the plan does x5.98 fewer``, the ratio to three digits."""
    verdict = "the same" if flops == plan.flops else f"x{ratio(flops, plan.flops)} fewer"
    return f"{label:<11} {number(flops / div)} {unit}: the plan does {verdict}"


def plan_json(plan: Plan, heads: int, macs: bool) -> dict:
    inst = plan.instance
    unit, div = unit_scale(macs)
    return {
        "structure": inst.name,
        "sizes": inst.values,
        "batch": plan.batch,
        "heads": heads,
        "units": f"{unit} ({'1 per' if macs else '2 per'} multiply-add); one head, {sequences(plan.batch)}; "
        "elements; bytes of float32",
        "flops": plan.flops // div,
        "opt_einsum_flops": plan.opt_einsum_flops // div,
        "naive_flops": plan.naive_flops // div,
        "speedup_vs_opt_einsum": plan.opt_einsum_flops / plan.flops,
        "speedup_vs_naive": plan.naive_flops / plan.flops,
        "largest": plan.largest,
        "bytes": plan.bytes,
        "totals": {"flops": plan.flops * heads // div},
        "cost": str(plan.cost),
        "schedules": [schedule_json(s, div, steps=True) for s in plan.schedules],
        "levels": [
            {
                "level": lp.level.number,
                "chosen": schedule_json(lp.chosen, div, steps=True),
                "alternatives": [schedule_json(s, div) for s in lp.candidates if s is not lp.chosen],
            }
            for lp in plan.levels
        ],
    }


def schedule_json(schedule: Schedule, div: int, steps: bool = False) -> dict:
    found = {
        "name": schedule.name,
        "kind": schedule.kind.value,
        "levels": list(schedule.levels),
        "layout": schedule.layout.value,
        "fused": schedule.fused,
        "flops": schedule.flops // div,
        "largest": schedule.largest,
        "bytes": schedule.bytes,
        "estimate": schedule.estimate,
    }
    if steps:
        found["steps"] = [
            {
                "step": step.written(),
                "op": step.op.value,
                "part": step.part.value,
                "shape": [schedule.sizes[i] for i in step.output.indices],
                "flops": step.flops // div,
                "elements": schedule.elements(step.output),
            }
            for step in schedule.steps
        ]
    return found


# ---------------------------------------------------------------------------------------------
# Search results (einsearch search)

SEARCH_UNITS = {
    "params": "scoring parameters, all heads",
    "flops": "FLOPs (2 per multiply-add) of all heads' T x T scores of one sequence: describe's score x heads",
    "rank_bound": "describe's rank bound of one head: of M (D x D) for a feature structure, else of the T x T scores",
    "rank_near": "rank bound of the D x D form x_t^T (sum of the levels' M) x_u scoring a pair at distance 0",
    "rank_far": "rank bound of the D x D form scoring every pair at distance t - u >= T/8 (0: some are not scored)",
    "covered": "share of the causal pairs (u <= t) some level scores",
    "near_share": "share of the pair FLOPs on pairs with |t - u| <= T/8",
    "decode_flops": "FLOPs to score the token at position T against the cache, all heads",
    "cache_bytes": "float32 bytes per token the decoding cache holds at context T, all heads",
    "value": "the objective's value",
}
SEARCH_COLUMNS = ("structure", "family", "options", "params", "flops", "rank_bound", "rank_near", "rank_far",
                  "covered", "near_share", "decode_flops", "cache_bytes", "value", "psi", "omega", "nu", "describe",
                  "generate")  # fmt: skip


def si(value: float) -> str:
    """12.3G: three significant digits with a decimal prefix."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if not float(value).is_integer() else str(int(value))


def search_json(result: SearchResult) -> dict:
    """What ``einsearch search --json`` prints: {query, candidates}."""
    query = dict(result.query)
    query.update({"scored": result.scored, "within_budget": result.within_budget, "duplicates": result.duplicates,
                  "unranked": result.unranked, "truncated": result.truncated, "seconds": round(result.seconds, 3),
                  "units": SEARCH_UNITS})  # fmt: skip
    if result.notes:
        query["notes"] = list(result.notes)
    return {"query": query, "candidates": [c.to_dict() for c in result.candidates]}


def search_csv(result: SearchResult) -> str:
    """One row per candidate, the columns of ``SEARCH_COLUMNS``."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SEARCH_COLUMNS)
    for c in result.candidates:
        tax = c.taxonomy or {}
        row = {**c.to_dict(), **{k: f"{v:.6g}" for k, v in tax.items()}, "options": c.summary}
        row.update({k: f"{row[k]:.6g}" for k in ("covered", "near_share", "value")})
        writer.writerow([row.get(k, "") for k in SEARCH_COLUMNS])
    return buffer.getvalue()


def search_text(result: SearchResult) -> str:
    """The search's report: what was asked, what was done, the table, the best's commands."""
    q = result.query
    budget = "none" if q["budget"] is None else f"{q['budget']:.4g} FLOPs"
    if q["cache_budget"] is not None:
        budget += f", cache {q['cache_budget']:.4g} B/token"
    stopped = "; stopped at --limit" if result.truncated else ""
    lines = [f"search  D={q['D']}  T={q['T']}  heads={q['heads']}  budget {budget}  objective {q['objective']}"
             + ("  (Pareto front)" if q["pareto"] else ""),
             f"scored {result.scored:,} candidates in {result.seconds:.2f} s: {result.within_budget:,} within budget, "
             f"{result.duplicates:,} duplicate{'' if result.duplicates == 1 else 's'} removed{stopped}"]  # fmt: skip
    lines += [f"note: {n}" for n in result.notes]
    if not result.candidates:
        lines.append("no candidate fits: raise --budget or --cache-budget, or widen --family")
        return "\n".join(lines)
    direction = "most" if q["maximize"] else "fewest"
    extra = (q["column"],) if q["column"] else ()
    header = ("#", "structure", "options", "params", "FLOPs", "far", "near", "rank", "pairs", "local", "decode",
              "cache B", *extra)  # fmt: skip
    rows = [(str(n), c.structure, c.summary, si(c.params), si(c.flops), f"{c.rank_far:,}", f"{c.rank_near:,}",
             f"{c.rank_bound:,}", f"{c.covered:.2f}", f"{c.near_share:.2f}", si(c.decode_flops), f"{c.cache_bytes:,}",
             *((si(c.value) if abs(c.value) >= 1 else f"{c.value:.3g}",) if extra else ()))
            for n, c in enumerate(result.candidates, 1)]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r):
        return "  ".join(v.ljust(w) if i in (1, 2) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    lines += ["", fmt(header), *(fmt(r).rstrip() for r in rows), ""]
    lines += [f"{q['objective']}: {q['objective_label']} ({direction} first; ties: fewer FLOPs)",
              "far, near: rank of the D x D form x_t^T (sum of the levels' M) x_u that scores every pair at distance "
              ">= T/8, and a pair at distance 0;",
              "rank: describe's rank bound (M for a feature structure, else the T x T scores); pairs: share of causal "
              "pairs scored;",
              "local: share of causal pair FLOPs within T/8; params, FLOPs (2 per multiply-add, one sequence's "
              "scores as planned) and decode",
              "(FLOPs for the token at position T) are for all heads; cache: float32 bytes per token of the decoding "
              "cache at context T"]  # fmt: skip
    best = result.candidates[0]
    lines += ["", f"best    {best.describe}", f"        {best.generate}"]
    return "\n".join(lines)


# --- experiments: the results of `einsearch experiment icr` and `lm` (their to_dict payloads) -----


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def icr_columns(d: int, examples: int) -> list[int]:
    """The k shown: 1, d/2, d, 3d/2 and N - 1 = 2d - 1 (the last query)."""
    return sorted({k for k in (1, d // 2, d, 3 * d // 2, 2 * d - 1) if 0 <= k < examples})


def icr_table(payload: dict) -> str:
    """The normalised test error at several k of the model, least squares and the zero predictor."""
    errors = payload["errors"]
    ks = icr_columns(payload["config"]["d"], len(errors["model"]))
    rows = []
    for name, key in (("model", "model"), ("least squares", "least_squares"), ("zero", "zero")):
        values = errors[key]
        rows.append([name, *(f"{values[k]:.4f}" for k in ks), f"{sum(values) / len(values):.4f}"])
    return markdown_table(["predictor", *(f"k={k}" for k in ks), "mean over k"], rows)


def icr_text(payload: dict) -> str:
    """What `einsearch experiment icr` prints."""
    c, s = payload["config"], payload["structure"]
    curriculum = f", curriculum every {c['curriculum_every']} steps" if c["curriculum_every"] else ""
    return "\n".join([
        f"in-context regression: {s['name']} ({plural(s['heads'], 'head')}), d = {c['d']}, N = {c['examples']}, "
        f"encoding {c['encoding']}, D = {c['width']}, {plural(c['layers'], 'layer')}, {c['steps']} steps of "
        f"{c['batch']} prompts, lr {c['lr']:g} ({c['schedule']}){curriculum}, seed {c['seed']}",
        f"attention per layer: {s['params'] * s['heads']:,} scoring params, rank {s['rank']} per head; "
        f"model {payload['model_params']:,} params; {payload['seconds']:.1f} s",
        f"final training loss {payload['losses'][-1][1]:.4f}",
        f"test error (MSE / zero predictor's; {c['test_prompts']} prompts) after k examples:",
        icr_table(payload),
    ])  # fmt: skip


def icr_sweep_table(runs: list[tuple[str, dict]]) -> str:
    """One row per labelled run of a sweep (error after d/2, d and 2d - 1 examples, its costs),
    then least squares and the zero predictor (the test set is the same for every run)."""
    first = runs[0][1]
    d = first["config"]["d"]
    ks = (d // 2, d, 2 * d - 1)
    head = ["D", "structure", "params / head", "rank / head", "score GFLOPs / prompt", "model params",
            "train TFLOPs", "wall s", *(f"k = {k}" for k in ks), "mean over k"]  # fmt: skip
    rows = []
    for label, run in runs:
        s, errors = run["structure"], run["errors"]["model"]
        score = s["score_flops"] * s["heads"] * run["config"]["layers"] / 1e9
        rows.append([str(run["config"]["width"]), label, f"{s['params']:,}", str(s["rank"]), f"{score:.4f}",
                     f"{run['model_params']:,}", f"{run['train_flops'] / 1e12:.2f}", f"{run['seconds']:.0f}",
                     *(f"{errors[k]:.3f}" for k in ks), f"{sum(errors) / len(errors):.3f}"])  # fmt: skip
    for name, key in (("least squares (min-norm)", "least_squares"), ("zero predictor", "zero")):
        errors = first["errors"][key]
        rows.append(["", name, *[""] * 6, *(f"{errors[k]:.3f}" for k in ks), f"{sum(errors) / len(errors):.3f}"])
    return markdown_table(head, rows)


def lm_flops_text(flops: dict) -> str:
    """The forward FLOPs per token of the blocks, the analyzer's parts beside FlopCounterMode's."""
    per_layer = flops["analyzer"]["per_layer"].items()
    parts = ", ".join(f"{name.replace('_', ' ')} {number(value)}" for name, value in per_layer)
    return (f"forward FLOPs per token (2 per multiply-add), blocks: analyzer {number(flops['analyzer']['per_token'])} "
            f"(per layer: {parts}), FlopCounterMode {number(flops['flop_counter'])}; read-out "
            f"{number(flops['read_out'])}")  # fmt: skip


def lm_text(payload: dict) -> str:
    """What `einsearch experiment lm` prints."""
    c, s, corpus = payload["config"], payload["structure"], payload["corpus"]
    losses = payload["losses"]
    documented = "documented" if corpus["documented"] else "NOT the documented corpus"
    return "\n".join([
        f"language modelling: {s['name']} ({plural(s['heads'], 'head')}), D = {c['width']}, "
        f"{plural(c['layers'], 'layer')}, T = {c['context']}, {c['steps']} steps of {c['batch']} sequences "
        f"({payload['tokens']:,} characters), lr {c['lr']:g} ({c['schedule']}), seed {c['seed']}",
        f"corpus: Python {corpus['python']} standard library, {len(corpus['train_files'])} files "
        f"({corpus['train_characters']:,} characters) to train, {len(corpus['validation_files'])} to validate "
        f"({corpus['validation_characters']:,}), {corpus['vocabulary']} characters; sha256 {corpus['sha256'][:12]} "
        f"({documented})",
        f"attention per layer: {s['params'] * s['heads']:,} scoring params, rank {s['rank']} per head; model "
        f"{payload['model_params']:,} params ({payload['non_embedding_params']:,} in the blocks)",
        lm_flops_text(payload["flops_per_token"]),
        f"training: {payload['train_flops']:.3g} FLOPs (3 x forward x characters), {payload['seconds']:.1f} s, "
        f"{payload['tokens_per_second']:,.0f} characters/s",
        f"training loss {losses[0][1]:.4f} (first {losses[0][0]} steps) -> {losses[-1][1]:.4f} (last)",
        f"validation loss {payload['validation_loss']:.4f} nats per character "
        f"({payload['validation_loss'] / math.log(2):.4f} bits)",
    ])  # fmt: skip


def lm_sweep_table(runs: list[tuple[str, dict]]) -> str:
    """One row per labelled run of a language-modelling sweep: its size, costs and losses."""
    head = ["D", "heads", "structure", "seed", "params (blocks)", "forward FLOPs / token (analyzer)",
            "FlopCounterMode", "train TFLOPs", "characters/s", "train loss", "validation loss"]  # fmt: skip
    rows = []
    for label, run in runs:
        c, flops = run["config"], run["flops_per_token"]
        rows.append([str(c["width"]), str(c["heads"]), label, str(c["seed"]), f"{run['non_embedding_params']:,}",
                     number(round(flops["analyzer"]["per_token"])), number(round(flops["flop_counter"])),
                     f"{run['train_flops'] / 1e12:.2f}", f"{run['tokens_per_second']:,.0f}",
                     f"{run['losses'][-1][1]:.4f}", f"{run['validation_loss']:.4f}"])  # fmt: skip
    return markdown_table(head, rows)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"
