"""Code generation: a structure rendered as a standalone PyTorch attention module (Jinja2 templates).

The module takes the structure's options at construction (``terms.py`` compiles the structure
into its ``__init__``), computes each level's maps with the plan's own map steps, and attends
through the kernel layer of ``einsearch/runtime``, which the file carries after the class, so it
imports nothing but torch. The pairs are grouped by the levels that cover them and run as
batched attention calls merged through their log-sum-exp: the same partition the planner counts.
"""

from __future__ import annotations

import functools
import keyword
import linecache
import math
import re
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

from ..catalog import shipped_dir
from ..errors import OptionError
from ..structure import Instance
from .layout import lines as laid_out
from .terms import Compiled, ScoreCode, compile_structure, instance_schedules

NORMALIZE = ("none", "levels", "coverage")
QK_NORM = ("none", "pooled", "level", "key")
LOGIT_SCALE = ("structure", "sqrt", "inverse")
RUNTIME = Path(__file__).resolve().parent.parent / "runtime"
# The runtime files a module carries, in order, each as a fenced section after the class.
SECTIONS = (
    ("sizes.py", "Sizes: the structure's functions and the checks of the options"),
    ("tiling.py", "The pair rule, and the causal pairs cut into batched attention calls"),
    ("attention.py", "The kernel layer: attention over a partition, and decoding"),
)
CLASS_IMPORTS = (
    "import math",
    "from typing import NamedTuple",
    "import torch",
    "from torch import nn",
)  # the class's own


@dataclass(frozen=True)
class Research:
    """The research code's parameterisations (docs/design.md §7), all off by default.

    ``normalize``: divide the summed logit by the number of levels, or each pair's by the number
    of levels that cover it; ``qk_norm``: weight-only LayerNorms over a head's query and key
    channels (``pooled``: all levels together; ``level``: one per level; ``key``: the key map only,
    the research BTT); ``logit_scale``: the structure's own scales, or each level's replaced by
    1 / sqrt(channels) or 1 / channels (muP); ``rms_cap``: every factor scaled down to the RMS of
    its initialisation on each forward; ``separate_softmax``: one softmax per sequence pattern,
    outputs added (the research form of global + sliding window).
    """

    normalize: str = "none"
    qk_norm: str = "none"
    logit_scale: str = "structure"
    rms_cap: bool = False
    separate_softmax: bool = False

    def __post_init__(self) -> None:
        for option, value, allowed in (("normalize", self.normalize, NORMALIZE), ("qk-norm", self.qk_norm, QK_NORM),
                                       ("logit-scale", self.logit_scale, LOGIT_SCALE)):  # fmt: skip
            if value not in allowed:
                raise OptionError(option, f"must be one of {', '.join(allowed)}, got {value!r}")

    def flags(self) -> list[str]:
        """The command-line options that ask for these settings."""
        found = [f"--normalize {self.normalize}"] * (self.normalize != "none")
        found += [f"--qk-norm {self.qk_norm}"] * (self.qk_norm != "none")
        found += [f"--logit-scale {self.logit_scale}"] * (self.logit_scale != "structure")
        return found + ["--rms-cap"] * self.rms_cap + ["--separate-softmax"] * self.separate_softmax


@dataclass(frozen=True)
class Section:
    title: str
    doc: tuple[str, ...]
    code: str


def compile_module(source: str, label: str = "generated") -> types.ModuleType:
    """A generated module's source executed into a fresh module object: the one loader of generated
    code (its source is registered with linecache, so tracebacks and ``inspect`` show its lines)."""
    filename = f"<einsearch {label} {abs(hash(source)):x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = types.ModuleType(f"einsearch_generated_{abs(hash(source)):x}")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def attention_class(source: str) -> type:
    """The attention class of a generated module's source (the one class it defines)."""
    module = compile_module(source)
    return next(v for k, v in vars(module).items() if k.endswith("Attention") and isinstance(v, type))


def template_dir() -> Path:
    return shipped_dir("templates")


def class_name(structure: str) -> str:
    """``global-swa`` -> ``GlobalSwaAttention``."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", structure) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Structured"
    return ("S" + name if name[0].isdigit() else name) + "Attention"


def check_class_name(name: str) -> str:
    """A class name the file can define: an identifier, not a keyword nor a name the file uses."""
    from .python import MODULE_NAMES

    if not name.isidentifier() or keyword.iskeyword(name) or name in MODULE_NAMES | {"Level", "check_input"}:
        raise OptionError("class-name", f"{name!r} cannot name the class: use a Python identifier that is not a "
                          "keyword or a name the module already uses (torch, nn, F, math, Level, ...)")  # fmt: skip
    return name


def generate(instance: Instance, heads: int = 1, name: str | None = None, command: str = "",
             research: Research = Research()) -> str:  # fmt: skip
    """The source of a standalone PyTorch module computing ``instance``'s attention."""
    import jinja2

    from ..analyze import describe

    if heads < 1 or instance.D % heads:
        raise OptionError("heads", f"must divide d_model = {instance.D}, got {heads}")
    desc = describe(instance, with_formulas=False)
    compiled = compile_structure(instance, instance_schedules(desc.plan))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir()),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["prefix"] = lambda text, before: before + text
    env.filters["wrap"] = lambda text: textwrap.fill(" ".join(text.split()), 88) + "\n"
    env.filters["suffix"] = lambda text, after: text + after
    capped = research.rms_cap
    env.globals.update(score_init=_score_init(research.logit_scale), statements=statements,
                       score_maps=lambda score, indent, var: score_maps(score, indent, var, capped),
                       loop_header=lambda factors, levels, var: loop_header(factors, levels, var, capped))  # fmt: skip
    context = {
        "name": check_class_name(name) if name else class_name(instance.name),
        "doc": instance.doc or instance.name,
        "structure": instance.name,
        "command": command,
        "source_lines": _source_lines(instance),
        "sizes_text": _sizes_text(instance),
        "desc": desc,
        "plan_lines": _plan_lines(desc.plan),
        "calls": len(desc.plan.schedules[0].tiling.calls),
        "flops": desc.flops.score,
        "cache_text": _cache_text(desc.plan, heads),
        "renamed": ", ".join(f"{k} -> {v}" for k, v in compiled.renamed.items()),
        "compiled": compiled,
        "D": instance.D,
        "T": instance.T,
        "heads": heads,
        "fused_lines": [] if capped else _fused_lines(compiled, len(instance.levels) == 1),
        "capped_lines": _capped_lines(compiled),
        "research": research,
        "runtime": runtime_sections(),
        "imports": imports(),
    }
    return env.get_template("module.py.jinja").render(context)


def module_flops(plan, heads: int, batch: int = 1, length: int | None = None, fused: bool = True) -> int:
    """FLOPs of a generated module's forward on ``batch`` sequences of ``length`` tokens (the
    structure's T by default), as ``FlopCounterMode`` counts them (2 per multiply-add; a fused
    attention call as q.k and p.v over whole rectangles): the plan's maps, the pairs of each call
    of the partition, and the value and output projections. Through the ``fused`` kernels a pair
    costs q.k and p.v at their one head size (the query/key channels or the value channels, the
    larger); on the plain path (float64, dropout) q.k twice (a pass for the log-sum-exp, one for
    the output) and p.v.

    A map step that sums no index (an outer or elementwise product) runs as a multiplication,
    which the counter does not count; the plan charges it (docs/design.md §3), so it is left out.
    """
    from ..planner import Op, Part
    from ..runtime.tiling import call_pairs, partition

    instance = plan.instance
    T, D = instance.T, instance.D
    length = T if length is None else length
    maps = 0
    for schedule in plan.maps:
        for step in schedule.steps:
            summed = set().union(*(t.indices for t in step.inputs)) - set(step.output.indices)
            if step.op is not Op.CONTRACT or len(step.inputs) < 2 or math.prod(schedule.sizes[i] for i in summed) < 2:
                continue
            if step.part in (Part.QUERY, Part.KEY):
                maps += step.flops * batch * length // (plan.batch * T)
            elif step.part is Part.FACTORS:
                maps += step.flops
    tiling = plan.schedules[0].tiling
    C, Dv = sum(tiling.widths), D // heads
    per_pair = 2 * max(C, Dv) if fused else 2 * C + Dv
    pairs = sum(call_pairs(call) for call in partition(length, tiling.patterns))
    return heads * (maps + 2 * batch * pairs * per_pair) + 2 * (2 * batch * length * D * D)


def _source_lines(instance: Instance) -> list[str]:
    text = instance.structure.text if instance.structure is not None else ""
    return [line.rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("doc ")]


def _sizes_text(instance: Instance) -> str:
    values = [f"d_model={instance.D}", f"block_size={instance.T}"]
    if instance.structure is not None:
        for decl in instance.structure.options:
            if decl.name not in ("T", "D"):
                value = instance.values[decl.name]
                values.append(f"{decl.name}={tuple(value) if isinstance(value, list) else value!r}")
    return ", ".join(values)


def _plan_lines(plan) -> list[str]:
    """Each score line's maps as the plan splits its factors: ``x[t, i] Q[i, r] ...: q: Q | k: K``."""
    found: dict[int, str] = {}
    for schedule in plan.maps:
        level = plan.instance.levels[schedule.levels[0] - 1]
        if level.term in found:
            continue
        names = [[level.operands[i].name for i in side] for side in schedule.split]
        if level.loop_value is not None:
            names = [[n.rsplit("_", 1)[0] for n in side] for side in names]
        sides = ["q: " + (" ".join(names[0]) or "x"), "k: " + (" ".join(names[1]) or "x")]
        found[level.term] = f"{_written(level)}  ->  {' | '.join(sides)}"
    return list(found.values())


def _written(level) -> str:
    """The level as the structure writes it, without a loop's suffixes."""
    text = level.written()
    if level.loop_value is not None:
        text = re.sub(rf"_{level.loop_value}\[", "[", text)
    return text


def _cache_text(plan, heads: int) -> str:
    """The decoding cache's bytes per token at the generated sizes (float32, all heads)."""
    from ..runtime.tiling import cache_elements

    T, D = plan.instance.T, plan.instance.D
    tiling = plan.schedules[0].tiling
    per_token = -(-4 * heads * cache_elements(tiling.patterns, tiling.widths, D // heads, T) // T)
    return (
        f"Decoding cache: at most {per_token:,} bytes per token of a {T}-token context (float32, all heads): "
        "each level keeps only the keys later queries can still reach."
    )


def _fused_lines(compiled: Compiled, single: bool) -> list:
    """The one query and one key matrix of a structure whose levels are all plain projections:
    every level's matrices side by side, each query matrix times its level's scale."""
    if not compiled.fused:
        return []
    queries, keys = _fused_lists(compiled)
    if single:
        return [(f"Q, K = {queries[0]}, {keys[0]}", "(H, D, C)")]
    return [(f"Q = {_joined(queries)}", "(H, D, C)"), (f"K = {_joined(keys)}", "(H, D, C)")]


def _joined(tensors: list[str]) -> str:
    """The tensors concatenated along their last axis (a loop's dict of them as its values)."""
    if len(tensors) == 1 and tensors[0].startswith("*"):
        return f"torch.cat(list({tensors[0][1:]}), dim=-1)"
    return f"torch.cat([{', '.join(tensors)}], dim=-1)"


def _capped_lines(compiled: Compiled) -> list[str]:
    """``L = rms_cap(self.L, ...)`` for every factor outside a loop (a loop caps its own)."""
    return [f'{f.attribute} = rms_cap(self.{f.attribute}, self.fan_in[{f.name}])'
            for term in compiled.terms if not term.loop for f in term.factors]  # fmt: skip


def loop_header(factors: list[str], levels: str | None, var: str, capped: bool) -> str:
    """``for level, Q, K in zip(levels, self.Q.values(), self.K.values()):`` (with the loop's
    value too when the factors are capped, to name them); a loop of several score lines counts
    its values instead (``levels`` None): ``for n, (Q, K, ...) in enumerate(zip(...)):``."""
    first, *rest = factors
    names = [f"({var}, {first})" if capped else first, *rest]
    lists = ", ".join([f"self.{first}.{'items' if capped else 'values'}()", *(f"self.{f}.values()" for f in rest)])
    if levels is None:
        return f"for n, ({', '.join(names)}) in enumerate(zip({lists})):"
    return f"for level, {', '.join(names)} in zip({levels}, {lists}):"


def _fused_lists(compiled: Compiled) -> tuple[list[str], list[str]]:
    """The query and the key factor tensors of every level, in level order, as Python."""
    queries, keys = [], []
    for term in compiled.terms:
        for score in term.scores:
            q, k = score.fused
            queries.append(f"*self.{q}.values()" if term.loop else f"self.{q}")
            keys.append(f"*self.{k}.values()" if term.loop else f"self.{k}")
    return queries, keys


def _score_init(logit_scale: str):
    """The statements ``__init__`` runs for one score line (once per loop value in a loop)."""
    seen: set[str] = set()

    def render(score: ScoreCode, var: str | None, indent: str) -> str:
        lines = [f"{size} = {value}" for size, value in score.sizes if not value.isidentifier()]
        lines += list(score.checks)
        for factor in score.factors:
            key = factor.attribute + ("" if var is None else f"[{var}]")
            if key in seen:
                continue
            seen.add(key)
            target = f"self.{factor.attribute}" + ("" if var is None else f"[str({var})]")
            shape = ", ".join(factor.shape)
            lines.append((f"{target} = self.factor({factor.name}, {shape}, fan_in={factor.fan_in})", factor.written))
        grids = "".join(f", {role}_grid={grid}" for role, grid in (("query", score.query_grid),
                                                                    ("key", score.key_grid)) if grid)  # fmt: skip
        pattern = score.pattern
        if pattern != "Pattern()":
            lines.append(f"pattern = {pattern}")
            pattern = "pattern"
        scale = {
            "structure": score.scale,
            "sqrt": f"1 / math.sqrt({score.width})",
            "inverse": f"1 / {score.width}" if score.width.isidentifier() else f"1 / ({score.width})",
        }[logit_scale]
        lines.append(f"self.levels.append(Level({pattern}, width={score.width}, scale={scale}{grids}))")
        return statements(lines, indent)

    return render


def score_maps(score: ScoreCode, indent: str, var: str | None, capped: bool) -> str:
    """The statements ``maps`` runs for one score line: its query and key maps appended."""
    lines: list = []
    if capped and var is not None:  # a loop's factors, capped under their names
        lines += [f"{f.attribute} = rms_cap({f.attribute}, self.fan_in[{f.name}])" for f in score.factors]
    for side in (score.query, score.key):
        if side.grid:
            lines.append((f"x{'q' if side is score.query else 'k'} = {side.grid}", side.grid_shape))
        for step in side.steps:
            operands = [o.removeprefix("self.") if capped else o for o in step.operands]
            lines.append((f'{step.target} = torch.einsum("{step.spec}", {", ".join(operands)})', step.shape))
    lines.append(f"queries.append({score.query.result})")
    lines.append(f"keys.append({score.key.result})")
    return statements(lines, indent)


def statements(items: list, indent: str) -> str:
    """Statements (or (statement, comment) pairs) laid out at ``indent`` as ruff formats them."""
    laid = []
    for item in items:
        code, comment = item if isinstance(item, tuple) else (item, "")
        laid += laid_out(indent, code, comment)
    return "\n".join(laid)


def imports() -> list[list[str]]:
    """The file's imports, once each, in ruff's order: the standard library's, then torch's."""
    found = set(CLASS_IMPORTS)
    for filename, _ in SECTIONS:
        found |= {line for line in (RUNTIME / filename).read_text().splitlines()
                  if line.startswith(("import ", "from ")) and not line.startswith("from .")}  # fmt: skip
    merged: dict[tuple[str, str], set[str]] = {}
    for line in found:
        words = line.split()
        key = ("import", line) if words[0] == "import" else ("from", words[1])
        merged.setdefault(key, set()).update(w.strip(",") for w in words[3:] if words[0] == "from")
    groups: list[list[str]] = [[], []]
    for (kind, module), names in sorted(merged.items(), key=lambda item: (item[0][0] == "from", item[0][1])):
        line = module if kind == "import" else f"from {module} import {', '.join(sorted(names))}"
        groups[line.split()[1].split(".")[0] == "torch"].append(line)
    return groups


def import_lines(code: str) -> set[int]:
    """The line numbers of ``code``'s top-level imports: the module makes them once, at its top
    (a runtime file's import of another is of the same file once pasted)."""
    import ast

    found: set[int] = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(range(node.lineno, node.end_lineno + 1))
    return found


@functools.cache
def runtime_sections() -> tuple[Section, ...]:
    """The runtime files as fenced sections: each file's docstring as comments, then its code
    without the imports the module makes once at its top."""
    sections = []
    for filename, title in SECTIONS:
        _, doc, code = (RUNTIME / filename).read_text().split('"""', 2)
        code = code.strip("\n")
        imported = import_lines(code)
        lines = [line for n, line in enumerate(code.splitlines(), 1) if n not in imported]
        sections.append(Section(title, tuple(line.rstrip() for line in doc.strip().splitlines()),
                                "\n".join(lines).strip("\n")))  # fmt: skip
    return tuple(sections)
