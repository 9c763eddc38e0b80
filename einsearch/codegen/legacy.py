"""Code generation: a plan rendered as a standalone PyTorch attention module (Jinja2 templates).

Each level's feature maps are the plan's own map steps (docs/design.md §4), one ``torch.einsum``
per pairwise step, with a batch axis ``b``, a head axis ``h`` on everything a factor touched, and
the sequence as one axis ``t`` (maps are per token: block patterns only matter to the pairs).
The pairs are attended by one of the computation forms in ``templates/forms/``, chosen from the
levels' sequence patterns, never from the structure's name.
"""

from __future__ import annotations

import dataclasses
import linecache
import math
import re
import types
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .analyze.counts import cache_bytes_per_token
from .catalog import shipped_dir
from .errors import OptionError
from .planner import Kind, LevelPlan, Part, Schedule, Step, Tensor, fresh
from .sequence import SequencePattern
from .structure import Instance, Level

LETTERS = "acdefgijklmnopqrsuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # b, h, t are the batch, head and token axes


NORMALIZE = ("none", "levels", "coverage")


@dataclass(frozen=True)
class Research:
    """Options of the research code's modules (docs/design.md §7), all off by default.

    ``normalize``: divide the summed logit by the number of levels, or each pair's by the number
    of levels that cover it (MLR); ``qk_norm``: a per-head LayerNorm on the query and the key
    channels; ``separate_softmax``: levels of different sequence patterns get their own softmaxes,
    whose outputs are added (the research form of global + sliding window).
    """

    normalize: str = "none"
    qk_norm: bool = False
    separate_softmax: bool = False

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE:
            raise OptionError("normalize", f"must be one of {', '.join(NORMALIZE)}, got {self.normalize!r}")


class Form(Enum):
    """How the generated module attends: the template under ``templates/forms/``."""

    FEATURE_MAPS = "feature_maps"  # every level global: one fused attention over concatenated maps
    NESTED = "nested"  # block levels that nest (MLR): per depth, merged by log-sum-exp
    BAND = "band"  # every level on one band: query chunks against their key windows
    MASKED = "masked"  # anything else (mixed patterns): the scores, masked, then softmax


KERNELS = {Form.NESTED: "nested_attention", Form.BAND: "band_attention"}  # templates/partials/*.py


@dataclass(frozen=True)
class MapStep:
    """One rendered contraction: ``target = torch.einsum("spec", *operands)``."""

    target: str
    spec: str
    operands: tuple[str, ...]


@dataclass(frozen=True)
class LevelCode:
    """What the templates need of one level."""

    number: int
    einsum: str  # the level as written in the structure file
    scale: float
    blocks: int
    band: tuple[int, int] | None
    channels: int  # size of the interface its pairs contract
    query: tuple[MapStep, ...]
    key: tuple[MapStep, ...]
    query_out: str
    key_out: str
    grid: tuple[int, ...] = ()  # x's features viewed as this grid (``x{number}``) when grouped
    params: int = 0  # of its factors (a factor shared with an earlier level counted there)


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


def softmax_groups(instance: Instance) -> list[tuple[int, ...]]:
    """Level positions grouped by sequence pattern, in order of first appearance."""
    groups: dict = {}
    for n, level in enumerate(instance.levels):
        groups.setdefault(level.pattern, []).append(n)
    return [tuple(g) for g in groups.values()]


def form_of(instance: Instance, research: Research = Research()) -> Form:
    """The computation form for the levels' sequence patterns (and the research options)."""
    levels = instance.levels
    if all(lv.blocks == 1 and lv.band is None for lv in levels):
        return Form.FEATURE_MAPS
    if research.separate_softmax or research.normalize == "coverage":
        return Form.MASKED
    if all(lv.band is not None and lv.band == levels[0].band for lv in levels):
        return Form.BAND
    blocks = sorted(lv.blocks for lv in levels)
    nests = all(b % a == 0 and b > a for a, b in zip(blocks, blocks[1:]))  # distinct, each dividing the next
    if all(lv.band is None for lv in levels) and nests:
        return Form.NESTED
    return Form.MASKED


def map_schedule(lp: LevelPlan) -> Schedule:
    """The level's cheapest feature-map candidate: the maps the module computes."""
    return next(s for s in lp.candidates if s.kind is Kind.FEATURE_MAPS)


def level_code(lp: LevelPlan) -> LevelCode:
    """The level's maps as einsum steps over (batch, head, token, index letters)."""
    level = lp.level
    schedule = map_schedule(lp)
    letters = Letters(level, schedule)
    query, key = [], []
    for step in schedule.steps:
        if step.part is Part.PAIRS:
            continue
        rendered = letters.step(step)
        (key if letters.side(step) == "k" else query).append(rendered)
    q_out, k_out = (letters.name(t) for t in schedule.map_outputs())
    channels = math.prod(schedule.sizes[i] for i in dict(schedule.interfaces)[level.number])
    return LevelCode(level.number, level.written(), level.scale, level.blocks, level.band, channels,
                     tuple(query), tuple(key), q_out, k_out, letters.grid)  # fmt: skip


class Letters:
    """Names and einsum letters for one level's map steps."""

    def __init__(self, level: Level, schedule: Schedule) -> None:
        self.level = level
        self.schedule = schedule
        self.sequence = {*level.query.axes[0], *level.key.axes[0], *(new for _, new in schedule.renamed)}
        self.batch = fresh("n", level.sizes)
        names = [i for i in level.sizes if i not in self.sequence]
        if len(names) > len(LETTERS):
            raise OptionError(None, f"level {level.number} has {len(names)} indices: more than torch.einsum can name")
        self.letter = dict(zip(names, LETTERS))
        self.headed = {op.name for op in level.factors}  # tensors that carry the head axis
        self.sides = {}
        self.grid: tuple[int, ...] = ()

    def side(self, step: Step) -> str:
        return self.sides[step.output.name]

    def name(self, tensor: Tensor) -> str:
        """The Python expression of a step's operand: x (its features viewed as a grid when
        grouped), a factor (viewed per index when an axis groups several), or an intermediate."""
        sizes = self.level.sizes
        if tensor.name == "x":
            features = [i for i in tensor.indices if i != self.batch and i not in self.sequence]
            if len(features) == 1:
                return "x"
            grid = tuple(sizes[i] for i in features)
            if self.grid and self.grid != grid:
                raise OptionError(None, f"level {self.level.number}: the query and key group x's features differently")
            self.grid = grid
            return f"x{self.level.number}"
        factor = next((op for op in self.level.factors if op.name == tensor.name), None)
        if factor is not None:
            if all(len(axis) == 1 for axis in factor.axes):
                return f"self.{factor.name}"
            return f"self.{factor.name}.view(-1, {', '.join(str(sizes[i]) for i in factor.indices)})"
        base, number, primes = re.fullmatch(r"(\D*?)(\d*)('*)", tensor.name).groups()
        return f"{base}{self.level.number}" + (f"_{number}" if number else "") + "_p" * len(primes)

    def subscripts(self, tensor: Tensor) -> str:
        batch = "b" if self.batch in tensor.indices else ""
        head = "h" if tensor.name in self.headed else ""
        token = "t" if any(i in self.sequence for i in tensor.indices) else ""
        rest = "".join(self.letter[i] for i in tensor.indices if i != self.batch and i not in self.sequence)
        return batch + head + token + rest

    def step(self, step: Step) -> MapStep:
        if any(t.name in self.headed for t in step.inputs):
            self.headed.add(step.output.name)
        sources = [self.sides.get(t.name) for t in step.inputs]
        side = next((s for s in sources if s), None)
        if side is None:  # reads x or factors only: the side its name says (q..., k...)
            side = "k" if step.part is Part.KEY or step.output.name.startswith("k") else "q"
        self.sides[step.output.name] = side
        spec = ",".join(self.subscripts(t) for t in step.inputs) + "->" + self.subscripts(step.output)
        return MapStep(self.name(step.output), spec, tuple(self.name(t) for t in step.inputs))


def generate(instance: Instance, heads: int = 1, name: str | None = None, command: str = "",
             research: Research = Research(), form: Form | None = None) -> str:  # fmt: skip
    """The source of a standalone PyTorch module computing ``instance``'s attention (see the
    templates). ``form`` overrides the computation form (the benchmark's naive contender is
    ``Form.MASKED``: every level's T x T logits)."""
    import jinja2

    from .analyze import describe

    if heads < 1 or instance.D % heads:
        raise OptionError("heads", f"must divide d_model = {instance.D}, got {heads}")
    desc = describe(instance)
    chosen = desc.plan
    form = form or form_of(instance, research)
    levels = with_params([level_code(lp) for lp in chosen.levels], instance)
    groups = softmax_groups(instance) if research.separate_softmax else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir()),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    context = {
        "name": name or class_name(instance.name),
        "instance": instance,
        "desc": desc,
        "form": form.value,
        "levels": levels,
        "heads": heads,
        "factors": [(n, s, fan_in(instance, n)) for n, s in instance.factor_shapes.items()],
        "options": options_of(instance),
        "command": command,
        "prefix": prefix_channels(levels),
        "block_counts": sorted({lv.blocks for lv in instance.levels if lv.blocks > 1}),
        "research": research,
        "groups": groups if len(groups) > 1 else [],
        "sdpa_scale": 1.0 if research.normalize == "none" else 1 / len(levels),  # all global: coverage = L
        "cache_text": cache_text(levels, instance.T, heads, instance.D),
    }
    kernel, imports = kernel_source(form)
    order = coarse_to_fine(instance)
    context.update(kernel=kernel, imports=imports, order=order,
                   blocks_sorted=tuple(instance.levels[n].blocks for n in order))  # fmt: skip
    env.filters["pyrepr"] = pyrepr
    env.filters["pyrepr_list"] = lambda values: pyrepr(tuple(values))
    env.filters["times"] = times
    env.globals.update(pattern_text=pattern_text, cover_expr=cover_expr, reach_expr=reach_expr)
    return env.get_template("module.py.jinja").render(context)


def pyrepr(value: object) -> str:
    """A value as ruff formats it: double-quoted strings, tuples with a trailing comma when single."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        items = [pyrepr(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return repr(value)


def times(name: str, scale: float) -> str:
    """``name`` multiplied by ``scale``, as a division when the scale is 1 / an integer."""
    if scale == 1:
        return name
    inverse = 1 / scale
    if inverse == round(inverse) and 1 / round(inverse) == scale:
        return f"{name} / {round(inverse)}"
    return f"{name} * {pyrepr(scale)}"


def pattern_text(level: LevelCode) -> str:
    if level.band is not None:
        return f"band {level.band[0]} <= t - u <= {level.band[1]}"
    return "global" if level.blocks == 1 else f"{level.blocks} blocks of block_size / {level.blocks} tokens"


def cover_expr(level: LevelCode) -> str:
    """The level's pair rule on position grids t (T, 1) and u (1, T), as Python."""
    if level.band is not None:
        return f"(t - u >= {level.band[0]}) & (t - u <= {level.band[1]})"
    if level.blocks == 1:
        return "everywhere"
    length = block_length(level)
    return f"t // {length} == u // {length}"


def reach_expr(level: LevelCode) -> str:
    """The first key position a query at ``position`` or later can score through the level."""
    if level.band is not None:
        return f"max(0, position - {level.band[1]})"
    if level.blocks == 1:
        return "0"
    length = block_length(level)
    return f"position // {length} * {length}"


def block_length(level: LevelCode) -> str:
    """A block level's block length in the module: fixed by ``block_size``, not the input."""
    return f"(self.block_size // {level.blocks})"


def kernel_source(form: Form) -> tuple[str, list[str]]:
    """A form's attention kernel from ``templates/partials``, to paste into the module: its
    docstring as comments and its code, and the standard-library imports it needs."""
    if form not in KERNELS:
        return "", []
    text = (template_dir() / "partials" / f"{KERNELS[form]}.py").read_text()
    _, doc, code = text.split('"""', 2)
    lines = code.strip("\n").splitlines()
    imports = [line for line in lines if line.startswith("import ") and not line.startswith("import torch")]
    body = "\n".join(line for line in lines if not line.startswith(("import ", "from "))).strip("\n")
    comment = "\n".join(f"# {line}".rstrip() for line in doc.strip().splitlines())
    return f"{comment}\n\n{body}\n", imports


def coarse_to_fine(instance: Instance) -> tuple[int, ...]:
    """Level positions by block count, coarse first (the nested kernel's channel order)."""
    return tuple(sorted(range(len(instance.levels)), key=lambda n: instance.levels[n].blocks))


def with_params(levels: list[LevelCode], instance: Instance) -> list[LevelCode]:
    """Each level's parameter count, a factor shared by several levels counted at its first."""
    seen: set[str] = set()
    counted = []
    for code, level in zip(levels, instance.levels):
        new = [op.name for op in level.factors if op.name not in seen]
        seen.update(new)
        counted.append(dataclasses.replace(code, params=sum(math.prod(instance.factor_shapes[n]) for n in new)))
    return counted


def options_of(instance: Instance) -> list[tuple[str, object]]:
    """The structure's options other than T and D, with their values (the module's keyword arguments)."""
    if instance.structure is None:
        return []
    values = [(d.name, instance.values[d.name]) for d in instance.structure.options if d.name not in ("T", "D")]
    return [(name, tuple(v) if isinstance(v, list) else v) for name, v in values]


def fan_in(instance: Instance, name: str) -> int:
    """The input size of a factor: what it contracts with one token's features (the smaller, when
    it touches both tokens, as a BTT core's block input), block indices left out."""
    level, op = next((lv, op) for lv in instance.levels for op in lv.factors if op.name == name)
    shared = []
    for token in (level.query, level.key):
        inputs = [i for i in op.indices if i in token.axes[1] and i not in level.feature_block_indices]
        if inputs:
            shared.append(math.prod(level.sizes[i] for i in inputs))
    return min(shared) if shared else math.prod(level.sizes[i] for i in op.indices[:-1]) or 1


def cache_text(levels: list[LevelCode], T: int, heads: int, D: int) -> str:
    """What the decoding cache keeps, in bytes (float32), for the module docstring."""
    patterns = ((SequencePattern(lv.blocks, lv.band), lv.channels) for lv in levels)
    per_token = cache_bytes_per_token(patterns, T, heads, D)
    return (
        f"Decoding cache: at most {per_token:,} bytes per token of a {T}-token context (float32, all\n"
        "heads and levels): each level's keys that later queries can still reach (all of them for a\n"
        "global level, the current block for a block level, the last hi + 1 for a band) and the values\n"
        "of the longest of these."
    )


def prefix_channels(levels: list[LevelCode]) -> tuple[int, ...]:
    """R_m: the channels that score a pair at depth m (levels coarse to fine)."""
    total, prefix = 0, []
    for level in sorted(levels, key=lambda lv: lv.blocks):
        total += level.channels
        prefix.append(total)
    return tuple(prefix)
