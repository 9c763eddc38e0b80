"""Text and JSON renderings of what the commands compute; no click here, no computing either."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .structure import Instance, Structure

if TYPE_CHECKING:  # rendering needs none of these at import time (keeps `check` fast)
    from .analyze import Description
    from .analyze.formulas import Formulas
    from .analyze.pattern import Profile

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
    return "  ".join(f"{k}={_value(v)}" for k, v in instance.values.items())


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def unit_scale(macs: bool) -> tuple[str, int]:
    return ("MACs", 2) if macs else ("FLOPs", 1)


def describe_text(desc: Description, formulas: Formulas, profile: Profile, grid, heads: int, macs: bool) -> str:
    inst = desc.instance
    unit, div = unit_scale(macs)
    lines = [f"{inst.structure.name}: {inst.structure.doc}", f"source  {inst.structure.source}", ""]
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
    lines.append(f"{unit.lower():<10} per token {number(f.per_token / div)}  = {formulas.per_token / div}"
                 "   (map one query and one key token)")  # fmt: skip
    lines.append(f"           per pair  {number(f.per_pair / div)}   (mean over all T x T pairs)")
    total = f"   ({number(f.score * heads / div)} for {heads} heads)" if heads > 1 else ""
    lines.append(f"           score     {number(f.score / div)}  = {formulas.score / div}   (all T x T scores){total}")
    if desc.taxonomy is not None:
        lines.append("")
        for n, key in enumerate(("psi", "omega", "nu")):
            head = "taxonomy" if n == 0 else ""
            lines.append(f"{head:<10} {key:<5} = {getattr(desc.taxonomy, key):.3f}   {TAXONOMY_LINES[key]}")
    lines.append("")
    lines.extend(pattern_lines(profile, grid, unit, div))
    return "\n".join(lines)


def pattern_lines(profile: Profile, grid, unit: str, div: int) -> list[str]:
    """The compute pattern: one line when every pair costs the same, else a profile and a heatmap."""
    from .analyze.pattern import heatmap

    if min(profile.flops) == max(profile.flops):
        return [f"pattern    uniform: every pair (t, u) costs {number(profile.flops[0] / div)} {unit}"]
    lines = [f"pattern    {unit} spent on pair (t, u), mean by distance |t - u|:"]
    lines.extend("           " + row for row in profile_rows(profile, div))
    lines.append(f"           the T x T plane (query t down, key u across; darker = more {unit}):")
    lines.extend("           " + row for row in heatmap(grid))
    return lines


def rank_text(desc: Description) -> str:
    bound = f"cut bound {number(desc.rank_bound)}"
    if desc.rank_numeric is None:
        return f"{number(desc.rank_bound)}   ({bound}; too large for the exact check, raise --rank-limit)"
    verdict = "agree" if desc.rank_numeric == desc.rank_bound else "DISAGREE"
    return (f"{number(desc.rank)}   ({bound}; exact rank of a random instance {number(desc.rank_numeric)}: "
            f"{verdict})")  # fmt: skip


def profile_rows(profile: Profile, div: int) -> list[str]:
    """The profile at distances 0, 1, 2, 4, ... T-1: one line of `d: flops` pairs."""
    T = len(profile.distance)
    picks = sorted({0, T - 1, *(2**k for k in range(T.bit_length()) if 2**k < T)})
    cells = [f"{d}: {number(profile.flops[d] / div)}" for d in picks]
    return [",  ".join(cells[i : i + 6]) for i in range(0, len(cells), 6)]


def describe_json(desc: Description, formulas: Formulas, profile: Profile, heads: int, macs: bool) -> dict:
    inst = desc.instance
    unit, div = unit_scale(macs)
    return {
        "structure": inst.structure.name,
        "doc": inst.structure.doc,
        "source": inst.structure.source,
        "units": f"{unit} ({'1 per' if macs else '2 per'} multiply-add); one head, one sequence",
        "sizes": inst.values,
        "heads": heads,
        "params": desc.params,
        "params_formula": str(formulas.params),
        "rank": desc.rank,
        "rank_bound": desc.rank_bound,
        "rank_exact": desc.rank_numeric,
        "flops": {
            "per_token": desc.flops.per_token // div,
            "per_pair": desc.flops.per_pair / div,
            "score": desc.flops.score // div,
            "per_token_formula": str(formulas.per_token / div),
            "score_formula": str(formulas.score / div),
        },
        "totals": {"params": desc.params * heads, "score": desc.flops.score * heads // div},
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
        "pattern": {"distance": profile.distance, "flops": [v / div for v in profile.flops]},
    }


def structure_summary(structure: Structure, instance: Instance) -> list[str]:
    """What ``check`` prints: the options with defaults and docs, and the levels they give."""
    lines = [f"{structure.name}: {structure.doc or '(no doc line)'}", "options:"]
    for decl in structure.options:
        default = "|".join(decl.choices) if decl.kind == "choice" else _value(instance.values[decl.name])
        lines.append(f"  --{decl.name:<10} {default:<24} {decl.doc}")
    derived = [d for d in structure.program.symbols.values() if not d.is_option]
    if derived:
        lines.append("derived: " + "  ".join(f"{d.name}={_value(instance.values[d.name])}" for d in derived))
    lines.append(f"levels: {len(instance.levels)}")
    for level in instance.levels:
        lines.append(f"  {level.number}: {level.written()}")
    lines.append("factors: " + ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in instance.factor_shapes.items()))
    return lines
