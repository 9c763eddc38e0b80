"""The contraction-order optimizer: ways to compute every score of a structure, costed, the best chosen.

A plan is a recipe: plain data (enums, tensors named by their indices, steps) that the
interpreter walks and the code generator renders without re-deriving anything
(docs/design.md §4). Candidates come from small registered functions, one per ``Kind``:

* ``FEATURE_MAPS`` (one level): every split of the factors between the query side and the key
  side, each side contracted along opt_einsum's path ("one side only" and "materialise M first"
  are splits too), then one product over pairs: every pair, block-batched ``[g t u]`` for a
  block pattern, query chunks against key windows for a band, or the whole T x T then masked;
* ``ONE_EINSUM`` (one level): the whole level along opt_einsum's path, the baseline no choice
  may exceed in FLOPs;
* ``PARTITION`` (every level): each level's maps, concatenated, then the causal pairs grouped by
  the levels that cover them and cut into batched attention calls (``runtime.tiling.partition``,
  the calls a generated module runs): each pair scored once, with its levels' channels.

A cost model (an argument, ``Balanced(beta)`` by default) estimates each one-level candidate;
a level's maps are those of its cheapest feature-map candidate within opt_einsum's FLOPs (one
split for all the levels of a loop), and the plan is those maps and the partition: what the
generated module computes. The one-level candidates stay in the plan as the alternatives it
was measured against. Scales are applied where the maps are concatenated and count no FLOPs
(as ``torch.utils.flop_counter`` counts them).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from .canonical import FACTOR, INDEX, BoundedCache, Canonical, canonical
from .network import best_path, contraction_flops, splits
from .runtime.tiling import Call, Pattern, call_pairs, partition
from .structure import FrozenMap, Instance, Level

ITEMSIZE = 4  # bytes of a float32, the dtype the costs of bytes assume
CACHE_SIZE = 4096  # entries of the planner's cache: level plans, and what the analysis derives from them


class Kind(Enum):
    """How a schedule computes its levels' scores."""

    FEATURE_MAPS = "feature maps"
    ONE_EINSUM = "one einsum"
    PARTITION = "partition"


class Layout(Enum):
    """How the score tensors a schedule ends with map onto the T x T matrix."""

    PAIRS = "pairs"  # every entry a scored pair; block indices shared by both sides (block-batched)
    MASKED = "masked"  # the whole T x T (a copy of each block index per side), the pattern applied after
    BAND = "band"  # query chunks against their key windows (see Band)
    TILED = "tiled"  # one score tensor per batched attention call (see Tiling)


class Op(Enum):
    """What a step does. CONTRACT and ATTEND do arithmetic; the others move data."""

    CONTRACT = "contract"  # an einsum of the inputs
    CHUNK = "chunk"  # q[n, t, ...] -> q[n, c, t', ...]: queries in chunks, zero-padded at the end
    WINDOW = "window"  # k[n, u, ...] -> k[n, c, v, ...]: each chunk's keys, zeros off the sequence
    CONCAT = "concat"  # maps [n, seq..., channels...] -> [n, s, c]: flattened, scaled, concatenated
    ATTEND = "attend"  # q[n, s, c], k[n, s, c] -> the logits of one batched call of a Tiling


class Part(Enum):
    """Which part of the computation a step belongs to (what ``describe`` adds up)."""

    QUERY = "query map"
    KEY = "key map"
    FACTORS = "factors"  # a map's steps that multiply factors alone: once per head, not per token
    PAIRS = "pairs"
    WHOLE = "whole level"


@dataclass(frozen=True)
class Tensor:
    """A named tensor with one index name per axis; ``x`` is the input, reshaped to its indices."""

    name: str
    indices: tuple[str, ...]

    def written(self) -> str:
        """``q_1[n t r]``: a level's own index names (``r@1`` reads ``r``: the tensor names the level)."""
        return f"{self.name}[{' '.join(i.split('@')[0] for i in self.indices)}]"


@dataclass(frozen=True)
class Step:
    """One operation of a schedule, the level it serves (0: several) and the part it belongs to.

    ``scales`` (CONCAT) multiply each input; ``call`` (ATTEND) is the position of its call in the
    schedule's tiling.
    """

    op: Op
    inputs: tuple[Tensor, ...]
    output: Tensor
    flops: int
    part: Part
    level: int = 0
    scales: tuple[float, ...] = ()
    call: int = 0

    def written(self) -> str:
        verb = "" if self.op is Op.CONTRACT else f"{self.op.value}: "
        return f"{verb}{', '.join(t.written() for t in self.inputs)} -> {self.output.written()}"


@dataclass(frozen=True)
class Band:
    """How a band level is chunked: queries in chunks of ``chunk`` tokens, each against the
    ``window`` keys from ``c * chunk - hi`` on (zeros outside the sequence)."""

    lo: int
    hi: int
    chunk: int
    chunks: int

    @property
    def window(self) -> int:
        return self.chunk + self.hi - self.lo


@dataclass(frozen=True)
class Tiling:
    """The causal pairs of a PARTITION schedule as batched attention calls (``runtime.tiling``):
    the levels' run-time patterns, their query/key channels, and the calls."""

    patterns: tuple[Pattern, ...]
    widths: tuple[int, ...]
    calls: tuple[Call, ...]

    def channels(self, call: Call) -> int:
        """The channels a call scores its pairs with: its levels'."""
        return sum(self.widths[level] for level in call.levels)


@dataclass(frozen=True)
class Schedule:
    """One way to compute the scores of one or more levels: the steps, their sizes, the layout.

    ``sequence`` names the query's and the key's sequence indices in the score tensors (PAIRS and
    MASKED layouts: an index in both is a block index); ``renamed`` pairs each block index with
    the key side's copy of it (MASKED layout);
    ``scores`` are the tensors the steps end with, scaled by ``scales`` (one per score tensor;
    a concatenated map already carries its levels' scales).
    """

    kind: Kind
    name: str
    levels: tuple[int, ...]
    steps: tuple[Step, ...]
    layout: Layout
    sizes: FrozenMap = field(repr=False)
    scores: tuple[Tensor, ...] = ()
    scales: tuple[float, ...] = ()
    sequence: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # query and key sequence indices of the scores
    renamed: tuple[tuple[str, str], ...] = ()
    band: Band | None = None
    tiling: Tiling | None = None
    split: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # FEATURE_MAPS: the factors on each side
    interfaces: tuple[tuple[int, tuple[str, ...]], ...] = ()  # (level, indices its pairs contract)
    estimate: float = 0.0  # set by the cost model

    @property
    def fused(self) -> bool:
        """Feature maps then products over pairs: what fused attention kernels run."""
        return self.kind is not Kind.ONE_EINSUM

    @property
    def flops(self) -> int:
        return sum(step.flops for step in self.steps)

    def part_flops(self, *parts: Part) -> int:
        return sum(step.flops for step in self.steps if step.part in parts)

    def map_outputs(self) -> tuple[Tensor, Tensor]:
        """The query and key maps a one-level feature-map schedule's pairs read (before any band
        chunking): the tensors the code generator hands to attention."""
        pairs = {step.op: step for step in self.steps if step.part is Part.PAIRS}
        if Op.CHUNK in pairs:
            return pairs[Op.CHUNK].inputs[0], pairs[Op.WINDOW].inputs[0]
        q, k = pairs[Op.CONTRACT].inputs
        return q, k

    @property
    def largest(self) -> int:
        """Elements of the largest tensor a step writes."""
        return max((self.elements(s.output) for s in self.steps), default=0)

    @property
    def bytes(self) -> int:
        """Bytes every step reads and writes, in float32."""
        return ITEMSIZE * sum(self.elements(t) for s in self.steps for t in (*s.inputs, s.output))

    def elements(self, tensor: Tensor) -> int:
        return math.prod(self.sizes[i] for i in tensor.indices)


# ---------------------------------------------------------------------------------------------
# Cost models


@dataclass(frozen=True)
class Balanced:
    """Estimated time in FLOP units: FLOPs + ``beta`` x bytes moved (float32).

    beta = 4 fits the 2-core CPU it was measured on (a matmul runs ~64 GFLOP/s, a copy ~14 GB/s):
    a band computed query by query does the fewest FLOPs but runs ~50x slower than in chunks.
    """

    beta: float = 4

    def __call__(self, schedule: Schedule) -> float:
        return schedule.flops + self.beta * schedule.bytes

    def __str__(self) -> str:
        return f"FLOPs + {self.beta:g} x bytes moved (float32)" if self.beta else "FLOPs"


FLOPS = Balanced(0)  # FLOPs only
DEFAULT_COST = Balanced()


def ranked(schedules: Iterable[Schedule], cost: Callable[[Schedule], float]) -> list[Schedule]:
    """Each schedule with its estimate, cheapest first, ties to the fused form."""
    costed = [dataclasses.replace(s, estimate=cost(s)) for s in schedules]
    return sorted(costed, key=lambda s: (s.estimate, not s.fused))


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class LevelPlan:
    """One level's own choice, what it was chosen from, and the two baselines it is measured by."""

    level: Level
    chosen: Schedule
    candidates: tuple[Schedule, ...]  # every one-level schedule considered, cheapest first (chosen included)
    opt_einsum: Schedule  # the whole level as one einsum along opt_einsum's path
    naive_flops: int  # the whole level as one contraction of every operand at once


@dataclass(frozen=True)
class Plan:
    """The chosen way to compute every score of one head for ``batch`` sequences.

    ``schedules`` is the recipe: each level computed by exactly one of them, in level order of
    their first level. ``levels`` keeps each level's own candidates, for the report.
    """

    instance: Instance
    batch: int
    levels: tuple[LevelPlan, ...]
    schedules: tuple[Schedule, ...]
    maps: tuple[Schedule, ...] = ()  # each level's map schedule (its feature-map candidate the plan uses)
    cost: Balanced = DEFAULT_COST

    @property
    def flops(self) -> int:
        return sum(s.flops for s in self.schedules)

    @property
    def opt_einsum_flops(self) -> int:
        return sum(lp.opt_einsum.flops for lp in self.levels)

    @property
    def naive_flops(self) -> int:
        return sum(lp.naive_flops for lp in self.levels)

    @property
    def largest(self) -> int:
        return max(s.largest for s in self.schedules)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.schedules)

    @property
    def estimate(self) -> float:
        return sum(s.estimate for s in self.schedules)

    def part_flops(self, *parts: Part) -> int:
        return sum(s.part_flops(*parts) for s in self.schedules)

    def to_dict(self, heads: int = 1, macs: bool = False) -> dict:
        """What ``einsearch plan --json`` prints."""
        from .report import plan_json

        return plan_json(self, heads, macs)

    def __str__(self) -> str:
        from .report import plan_text

        return plan_text(self, heads=1, macs=False, alternatives=5)


def plan(instance: Instance, batch: int = 1, cost: Balanced = DEFAULT_COST) -> Plan:
    """How every score of one head is computed for ``batch`` sequences: each level's maps (its
    cheapest split of the factors, one per score line), then the partition of the causal pairs
    into batched attention calls (docs/design.md §4).

    >>> import einsearch
    >>> p = einsearch.plan(einsearch.load("lowrank").resolve(T=1024, D=256, r=64))
    >>> p.maps[0].name, p.schedules[0].name
    ('feature maps (q: WQ | k: WK)', "1 batched attention call over the levels' maps")
    >>> p.flops == 2 * (2 * 1024 * 256 * 64) + 2 * 1024 * 1024 * 64
    True
    """
    levels = tuple(plan_level(level, instance.T, batch, cost) for level in instance.levels)
    maps = term_maps(levels)
    attended = tiled(levels, maps, instance.T, batch)
    chosen = (dataclasses.replace(attended, estimate=cost(attended)),)
    return Plan(instance, batch, levels, chosen, tuple(maps[lp.level.number] for lp in levels), cost)


def term_maps(levels: tuple[LevelPlan, ...]) -> dict[int, Schedule]:
    """Each level's maps: its cheapest feature-map candidate within opt_einsum's FLOPs, with one
    split of the factors for all the levels of a score line (a loop's levels share one rendering)."""
    chosen: dict[int, Schedule] = {}
    terms: dict[tuple, list[LevelPlan]] = {}  # the levels of each score line
    for lp in levels:
        terms.setdefault(score_line(lp.level), []).append(lp)
    for members in terms.values():
        best = line_split([split_choices(lp) for lp in members])
        chosen.update({lp.level.number: by_split(lp, best) for lp in members})
    return chosen


class SplitChoices(NamedTuple):
    """What a score line's choice of split reads off one level's plan: the splits within
    opt_einsum's FLOPs, and each split's estimate (its cheapest feature-map candidate's)."""

    within: frozenset
    estimates: dict


def split_choices(lp: LevelPlan) -> SplitChoices:
    """The level's ``SplitChoices``, read off its candidates."""
    maps = [s for s in lp.candidates if s.kind is Kind.FEATURE_MAPS]
    return SplitChoices(frozenset(s.split for s in feature_maps(lp)),
                        {s.split: by_split(lp, s.split).estimate for s in maps})  # fmt: skip


def line_split(levels: Sequence[SplitChoices]) -> tuple:
    """The split a score line's levels share: the least summed estimate among the splits within
    opt_einsum's FLOPs for every level, else among the splits every level has (putting all
    factors on one side always is one)."""
    common = frozenset.intersection(*(c.within for c in levels)) or frozenset.intersection(
        *(frozenset(c.estimates) for c in levels)
    )
    return min(common, key=lambda split: (sum(c.estimates[split] for c in levels), split))


def score_line(level: Level) -> tuple:
    """Which score line of the structure a level comes from: its term, and its operands' axes (a
    loop may hold several lines). The levels of a line share one split of their factors."""
    return level.term, tuple((op.role, op.axes) for op in level.operands)


def feature_maps(lp: LevelPlan) -> list[Schedule]:
    """The level's feature-map candidates within opt_einsum's FLOPs (every level has one: the
    split that puts all factors on one side never costs more), cheapest first."""
    return [s for s in lp.candidates if s.kind is Kind.FEATURE_MAPS and s.flops <= lp.opt_einsum.flops] or [
        s for s in lp.candidates if s.kind is Kind.FEATURE_MAPS
    ]


def by_split(lp: LevelPlan, split) -> Schedule:
    """The level's cheapest feature-map candidate with this split of its factors."""
    ranked = feature_maps(lp) + [s for s in lp.candidates if s.kind is Kind.FEATURE_MAPS]
    return next(s for s in ranked if s.split == split)


# ---------------------------------------------------------------------------------------------
# The cache: one bounded memo keyed by a level's name-free form (canonical.py)

CACHE = BoundedCache(CACHE_SIZE)


def memo(key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key`` while it stays in the planner's cache (a key names what is
    kept, e.g. ``("plan", canonical key, T, batch, cost)``)."""
    return CACHE.get(key, compute)


def plan_level(level: Level, T: int, batch: int = 1, cost: Balanced = DEFAULT_COST) -> LevelPlan:
    """Every one-level candidate, costed and sorted; the choice is the first within opt_einsum's FLOPs.

    Levels equal up to the names of their factors and indices (``canonical.canonical``) are
    planned once, in standard names, and the plan is handed back in the level's own names.
    """
    form = canonical(level)
    found = canonical_plan(form, T, batch, cost)
    return found if form.level == level else Renamer(form, level).level_plan(found, level)


def canonical_plan(form: Canonical, T: int, batch: int = 1, cost: Balanced = DEFAULT_COST, keep: bool = True
                   ) -> LevelPlan:  # fmt: skip
    """The plan of ``form.level`` (standard names), from the cache; ``keep=False`` for a caller that
    keeps only what it reads off the plan (a plan is thousands of small objects, the rest little)."""
    key = ("plan", form.key, T, batch, cost)
    if not keep and key not in CACHE:
        return _plan_level(form.level, T, batch, cost)
    return memo(key, lambda: _plan_level(form.level, T, batch, cost))


def _plan_level(level: Level, T: int, batch: int, cost: Balanced) -> LevelPlan:
    net = LevelNetwork(level, T, batch)
    candidates = ranked((s for kind in LEVEL_KINDS.values() for s in kind(net)), cost)
    whole = next(c for c in candidates if c.kind is Kind.ONE_EINSUM)
    chosen = next(c for c in candidates if c.flops <= whole.flops)  # never more FLOPs than opt_einsum
    return LevelPlan(level, chosen, tuple(candidates), whole, net.naive_flops())


# ---------------------------------------------------------------------------------------------
# Candidate kinds: a new kind is one registered function

LEVEL_KINDS: dict[Kind, Callable[[LevelNetwork], Iterable[Schedule]]] = {}


def _registrar(table: dict, what: str):
    def kind(key: Kind):
        def register(func):
            if key in table:
                taken = ", ".join(k.name for k in table)
                raise ValueError(f"{key.name} already has a function that yields {what} ({table[key].__name__}); "
                                 f"kinds registered: {taken}")  # fmt: skip
            table[key] = func
            return func

        return register

    kind.__doc__ = f"Registers a function that yields {what} of a ``Kind``."
    return kind


level_kind = _registrar(LEVEL_KINDS, "one level's candidate schedules")


@level_kind(Kind.ONE_EINSUM)
def one_einsum(net: LevelNetwork) -> Iterable[Schedule]:
    yield net.one_einsum()


@level_kind(Kind.FEATURE_MAPS)
def feature_map_candidates(net: LevelNetwork) -> Iterable[Schedule]:
    for query_ids, key_ids in splits(net.level):
        yield from net.feature_map_schedules(query_ids, key_ids)


def fresh(name: str, taken) -> str:
    """``name``, or ``name`` with primes until it is not in ``taken``."""
    while name in taken:
        name += "'"
    return name


def batch_first(output: tuple[str, ...], indices) -> tuple[str, ...]:
    """An intermediate's indices: those of the final output first, in its order, then the rest."""
    indices = dict.fromkeys(indices)
    return tuple(i for i in output if i in indices) + tuple(i for i in indices if i not in output)


def contract(
    inputs: list[Tensor], output: tuple[str, ...], name: str, sizes, taken, part: Part, level: int
) -> list[Step]:
    """Steps contracting ``inputs`` into ``name[output]`` along opt_einsum's path; a map's step
    that reads no token (factors multiplied together) belongs to ``Part.FACTORS``."""
    if len(inputs) == 1 and inputs[0].indices == output:
        return []
    path = best_path([t.indices for t in inputs], output, sizes)
    tensors, steps = list(inputs), []
    tokens = {"x"}  # the input and what is computed from it
    for number, pair in enumerate(path, 1):
        picked = [tensors[i] for i in pair]
        for i in sorted(pair, reverse=True):
            tensors.pop(i)
        rest = set(output).union(*(t.indices for t in tensors))
        last = number == len(path)
        kept = output if last else batch_first(output, (i for t in picked for i in t.indices if i in rest))
        result = Tensor(fresh(name if last else f"{name}{number}", taken), kept)
        flops = contraction_flops([t.indices for t in picked], kept, sizes, [tuple(range(len(picked)))])
        reads_tokens = any(t.name in tokens for t in picked)
        tokens |= {result.name} if reads_tokens else set()
        step_part = part if reads_tokens or part is Part.WHOLE else Part.FACTORS
        steps.append(Step(Op.CONTRACT, tuple(picked), result, flops, step_part, level))
        tensors.append(result)
    return steps


def product(q: Tensor, k: Tensor, output: tuple[str, ...], name: str, sizes, level: int = 0) -> Step:
    """The pair product of two maps."""
    scores = Tensor(name, output)
    return Step(
        Op.CONTRACT,
        (q, k),
        scores,
        contraction_flops([q.indices, k.indices], output, sizes, [(0, 1)]),
        Part.PAIRS,
        level,
    )


class LevelNetwork:
    """A level's tensor network over ``batch`` sequences: x carries a batch index and its sequence
    indices, and each candidate schedule is built from pairwise opt_einsum paths over it."""

    def __init__(self, level: Level, T: int, batch: int) -> None:
        self.level = level
        self.T = T
        self.sizes = dict(level.sizes)
        self.n = fresh("n", self.sizes)
        self.sizes[self.n] = batch
        self.query_seq, self.key_seq = level.query.axes[0], level.key.axes[0]
        self.taken = {"x"} | {op.name for op in level.factors}
        self.operands = [
            self.x(op.role, op.axes[0]) if op.role != "factor" else Tensor(op.name, op.indices) for op in level.operands
        ]

    def x(self, role: str, seq: tuple[str, ...]) -> Tensor:
        """The input as the query (or key) token with sequence indices ``seq``."""
        features = self.level.query.axes[1] if role == "query" else self.level.key.axes[1]
        return Tensor("x", (self.n, *seq, *features))

    def score_indices(self, key_seq: tuple[str, ...]) -> tuple[str, ...]:
        return (self.n, *self.query_seq, *(i for i in key_seq if i not in self.query_seq))

    def naive_flops(self) -> int:
        """One contraction of every operand at once: 2 x the product of every index size."""
        return 2 * math.prod(self.sizes.values())

    def schedule(self, kind: Kind, name: str, steps, layout: Layout, sizes, **extra) -> Schedule:
        scores = (steps[-1].output,)
        return Schedule(
            kind,
            name,
            (self.level.number,),
            tuple(steps),
            layout,
            FrozenMap(sizes),
            scores,
            (self.level.scale,),
            **extra,
        )

    def one_einsum(self) -> Schedule:
        """The whole level along opt_einsum's path; a band is masked afterwards."""
        output = self.score_indices(self.key_seq)
        layout = Layout.MASKED if self.level.band is not None else Layout.PAIRS
        steps = contract(self.operands, output, "s", self.sizes, self.taken, Part.WHOLE, self.level.number)
        return self.schedule(
            Kind.ONE_EINSUM,
            "one einsum (opt_einsum path)",
            steps,
            layout,
            self.sizes,
            sequence=(self.query_seq, self.key_seq),
        )

    def interface(self, query_ids, key_ids) -> tuple[str, ...]:
        """The indices the two sides share: what each pair's dot product sums over."""
        level = self.level
        k = set(level.key.axes[1]).union(*(level.operands[i].indices for i in key_ids))
        order = [i for op in (level.query, *(level.operands[i] for i in query_ids)) for i in op.indices]
        return tuple(i for i in dict.fromkeys(order) if i in k and i not in level.sequence_indices)

    def maps(self, query_ids, key_ids, key_seq, sizes) -> tuple[list[Step], Tensor, Tensor]:
        """The two feature maps q[n, seq, interface] and k[n, key seq, interface]."""
        interface = self.interface(query_ids, key_ids)
        steps, ends = [], []
        for side, role, ids, seq, part in (
            ("q", "query", query_ids, self.query_seq, Part.QUERY),
            ("k", "key", key_ids, key_seq, Part.KEY),
        ):
            x = self.x(role, seq)
            inputs = [x] + [self.operands[i] for i in ids]
            side_steps = contract(inputs, (self.n, *seq, *interface), side, sizes, self.taken, part, self.level.number)
            steps.extend(side_steps)
            ends.append(side_steps[-1].output if side_steps else x)
        return steps, ends[0], ends[1]

    def feature_map_schedules(self, query_ids, key_ids) -> list[Schedule]:
        """Feature maps for one split of the factors, then the pairs: block-batched (or every pair
        for a global level), masked, and band-chunked for a band."""
        label = f"feature maps (q: {self.side_label(query_ids)} | k: {self.side_label(key_ids)})"
        interface = ((self.level.number, self.interface(query_ids, key_ids)),)
        found = []
        renamed = tuple((i, fresh(i + "'", self.sizes)) for i in self.level.block_indices)
        blocked = self.level.blocks > 1
        layouts = [Layout.MASKED] if self.level.band is not None else [Layout.PAIRS]
        layouts += [Layout.MASKED] if blocked else []
        for layout in layouts:
            copies = dict(renamed) if layout is Layout.MASKED else {}
            key_seq = tuple(copies.get(i, i) for i in self.key_seq)
            sizes = dict(self.sizes, **{new: self.sizes[old] for old, new in copies.items()})
            steps, q, k = self.maps(query_ids, key_ids, key_seq, sizes)
            steps.append(product(q, k, self.score_indices(key_seq), fresh("s", self.taken), sizes, self.level.number))
            name = label + (", block-batched" if blocked and layout is Layout.PAIRS else "")
            name += ", masked" if layout is Layout.MASKED else ""
            found.append(
                self.schedule(
                    Kind.FEATURE_MAPS,
                    name,
                    steps,
                    layout,
                    sizes,
                    sequence=(self.query_seq, key_seq),
                    renamed=tuple(copies.items()),
                    interfaces=interface,
                    split=(tuple(query_ids), tuple(key_ids)),
                )
            )
        if self.level.band is not None:
            found.extend(self.band_schedules(query_ids, key_ids, label, interface))
        return found

    def band_schedules(self, query_ids, key_ids, label: str, interface) -> list[Schedule]:
        """Queries in chunks against their key windows, for a few chunk sizes."""
        lo, hi = self.level.band
        width = hi - lo + 1
        found = []
        for chunk in sorted({1, min(width, self.T), min(4 * width, self.T)}):
            band = Band(lo, hi, chunk, -(-self.T // chunk))
            c, t, v = (fresh(name, self.sizes) for name in ("c", "t'", "v"))
            sizes = dict(self.sizes, **{c: band.chunks, t: chunk, v: band.window})
            steps, q, k = self.maps(query_ids, key_ids, self.key_seq, sizes)
            qc = Tensor(fresh("qc", self.taken), (self.n, c, t, *q.indices[2:]))
            kw = Tensor(fresh("kw", self.taken), (self.n, c, v, *k.indices[2:]))
            steps += [
                Step(Op.CHUNK, (q,), qc, 0, Part.PAIRS, self.level.number),
                Step(Op.WINDOW, (k,), kw, 0, Part.PAIRS, self.level.number),
                product(qc, kw, (self.n, c, t, v), fresh("s", self.taken), sizes, self.level.number),
            ]
            name = f"{label}, band in chunks of {chunk}"
            found.append(
                self.schedule(
                    Kind.FEATURE_MAPS,
                    name,
                    steps,
                    Layout.BAND,
                    sizes,
                    band=band,
                    interfaces=interface,
                    split=(tuple(query_ids), tuple(key_ids)),
                )
            )
        return found

    def side_label(self, ids) -> str:
        return " ".join(self.level.operands[i].name for i in ids) or "x"


# ---------------------------------------------------------------------------------------------
# The partition: every level's pairs as batched attention calls


def member_maps(schedule: Schedule, number: int) -> tuple[list[Step], Tensor, Tensor]:
    """A level's map steps with their names made unique across levels (``q1_3``, index ``i@3``),
    and the query and key maps its pairs read."""
    produced = {step.output.name for step in schedule.steps if step.part is not Part.PAIRS}

    def own(tensor: Tensor) -> Tensor:
        name = f"{tensor.name}_{number}" if tensor.name in produced else tensor.name
        return Tensor(name, tuple(f"{i}@{number}" for i in tensor.indices))

    steps = [
        dataclasses.replace(step, inputs=tuple(own(t) for t in step.inputs), output=own(step.output))
        for step in schedule.steps
        if step.part is not Part.PAIRS
    ]
    q, k = schedule.map_outputs()
    return steps, own(q), own(k)


PARTITION_LIMIT = 1 << 16  # the longest sequence cut into calls; past it, pairs in closed form


def level_pairs(T: int, patterns: tuple[Pattern, ...]) -> tuple[int, ...]:
    """For each level, the pairs of the partition's calls it takes part in: its pair FLOPs are
    2 x its channels x these (the calls sum their levels' channels). Past ``PARTITION_LIMIT`` the
    partition is not cut (its cuts grow with T): each level's causal pairs, in closed form, which
    the calls exceed by their diagonal squares and edge tiles only. Kept in the plan cache."""

    def count() -> tuple[int, ...]:
        if T > PARTITION_LIMIT:
            return tuple(causal_pairs(pattern, T) for pattern in patterns)
        pairs = [0] * len(patterns)
        for call in partition(T, patterns):
            for level in call.levels:
                pairs[level] += call_pairs(call)
        return tuple(pairs)

    return memo(("level pairs", T, patterns), count)


def causal_pairs(pattern: Pattern, T: int) -> int:
    """The pairs u <= t a run-time pattern scores in a T-token sequence, in closed form."""
    from .sequence import SequencePattern

    length, lo, hi = pattern
    blocks = 1 if length is None else T // length
    band = None if lo is None and hi is None else (lo if lo is not None else -T, hi if hi is not None else T)
    return SequencePattern(blocks, band).causal_count(T)


def tiled(levels: tuple[LevelPlan, ...], maps: dict[int, Schedule], T: int, batch: int) -> Schedule:
    """Every level's maps, concatenated (each level's scale folded into its query channels), then
    one ATTEND step per call of the partition of the causal pairs by the levels that cover them."""
    steps: list[Step] = []
    ends: tuple[list[Tensor], list[Tensor]] = ([], [])
    sizes: dict[str, int] = {}
    widths = []
    for lp in levels:
        number, schedule = lp.level.number, maps[lp.level.number]
        own_steps, q, k = member_maps(schedule, number)
        steps += own_steps
        ends[0].append(q)
        ends[1].append(k)
        sizes.update({f"{i}@{number}": size for i, size in schedule.sizes.items()})
        widths.append(math.prod(schedule.sizes[i] for i in dict(schedule.interfaces)[number]))
    sizes.update({"n": batch, "s": T, "c": sum(widths)})
    q, k = Tensor("q", ("n", "s", "c")), Tensor("k", ("n", "s", "c"))
    steps.append(Step(Op.CONCAT, tuple(ends[0]), q, 0, Part.QUERY, 0, tuple(lp.level.scale for lp in levels)))
    steps.append(Step(Op.CONCAT, tuple(ends[1]), k, 0, Part.KEY, 0, (1.0,) * len(levels)))
    patterns = tuple(lp.level.pattern.at(T) for lp in levels)
    numbers = tuple(lp.level.number for lp in levels)
    interfaces = tuple((n, tuple(f"{i}@{n}" for i in dict(maps[n].interfaces)[n])) for n in numbers)
    if T > PARTITION_LIMIT:  # pairs in closed form: one step per level, its causal pairs
        tiling = Tiling(patterns, tuple(widths), ())
        scores = [Tensor(f"s{n}", ("n", "s", "s'")) for n in numbers]
        sizes["s'"] = T
        for n, width, pairs, output in zip(numbers, widths, level_pairs(T, patterns), scores):
            steps.append(Step(Op.ATTEND, (q, k), output, 2 * batch * pairs * width, Part.PAIRS, n, call=-1))
        name = f"each level's causal pairs, counted in closed form (T > {PARTITION_LIMIT:,}: no partition cut)"
        return Schedule(Kind.PARTITION, name, numbers, tuple(steps), Layout.TILED, FrozenMap(sizes), tuple(scores),
                        (1.0,) * len(scores), tiling=tiling, interfaces=interfaces)  # fmt: skip
    tiling = Tiling(patterns, tuple(widths), partition(T, patterns))
    scores = []
    for n, call in enumerate(tiling.calls):
        g, t, u = f"g{n}", f"t{n}", f"u{n}"
        sizes.update({g: call.queries.count, t: call.queries.length, u: call.keys.length})
        output = Tensor(f"s{n}", ("n", g, t, u))
        flops = 2 * batch * call_pairs(call) * tiling.channels(call)
        steps.append(Step(Op.ATTEND, (q, k), output, flops, Part.PAIRS, call=n))
        scores.append(output)
    calls = len(tiling.calls)
    name = f"{calls} batched attention call{'s' * (calls != 1)} over the levels' maps"
    return Schedule(Kind.PARTITION, name, numbers,
                    tuple(steps), Layout.TILED, FrozenMap(sizes), tuple(scores), (1.0,) * len(scores),
                    tiling=tiling, interfaces=interfaces)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# A cached plan in a level's own names

_STANDARD = re.compile(r"^(" + INDEX.format(r"\d+") + r")('*)$")
_FACTOR_WORD = re.compile(FACTOR.format(r"\d+"))


class Renamer:
    """Puts a plan made in standard names (``canonical``) into a level's own: its indices and
    factors back, its number, and each name the planner made (``n``, ``q1``, ``s``, a block
    index's copy ``g'``) kept unless the level already uses it, else primed until free."""

    def __init__(self, form: Canonical, level: Level) -> None:
        self.number = level.number
        self.indices = dict(form.indices)
        self.tensors = {"x": "x", **form.factors}
        self.taken_indices = set(level.sizes)
        self.taken_tensors = {op.name for op in level.operands}

    def index(self, name: str) -> str:
        found = self.indices.get(name)
        if found is None:
            standard = _STANDARD.match(name)  # a copy of a level index, e.g. _3'
            stem = self.indices[standard.group(1)] + standard.group(2) if standard else name
            found = self.indices[name] = fresh(stem, self.taken_indices)
            self.taken_indices.add(found)
        return found

    def tensor(self, tensor: Tensor) -> Tensor:
        name = self.tensors.get(tensor.name)
        if name is None:
            name = self.tensors[tensor.name] = fresh(tensor.name, self.taken_tensors)
            self.taken_tensors.add(name)
        return Tensor(name, tuple(self.index(i) for i in tensor.indices))

    def step(self, step: Step) -> Step:
        inputs = tuple(self.tensor(t) for t in step.inputs)
        return dataclasses.replace(step, inputs=inputs, output=self.tensor(step.output), level=self.number)

    def schedule(self, schedule: Schedule) -> Schedule:
        steps = tuple(self.step(s) for s in schedule.steps)  # first: the names in the order they are made
        return dataclasses.replace(
            schedule,
            name=_FACTOR_WORD.sub(lambda m: self.tensors[m.group()], schedule.name),
            levels=(self.number,),
            steps=steps,
            sizes=FrozenMap({self.index(i): size for i, size in schedule.sizes.items()}),
            scores=tuple(self.tensor(t) for t in schedule.scores),
            sequence=tuple(tuple(self.index(i) for i in side) for side in schedule.sequence),
            renamed=tuple((self.index(a), self.index(b)) for a, b in schedule.renamed),
            interfaces=tuple((self.number, tuple(self.index(i) for i in ids)) for _, ids in schedule.interfaces),
        )

    def level_plan(self, lp: LevelPlan, level: Level) -> LevelPlan:
        renamed = {id(s): self.schedule(s) for s in lp.candidates}
        return LevelPlan(
            level,
            renamed[id(lp.chosen)],
            tuple(renamed[id(s)] for s in lp.candidates),
            renamed.get(id(lp.opt_einsum)) or self.schedule(lp.opt_einsum),
            lp.naive_flops,
        )
