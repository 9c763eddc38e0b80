"""The contraction-order optimizer: ways to compute every score of a structure, costed, the best chosen.

For each level the candidates are

* **feature maps**: every split of the factors between the query side and the key side (one
  side only and "materialise M" are splits too: the side's own opt_einsum path over all B*T
  tokens decides whether to multiply the factors together first), then one product over pairs;
* the pair product **block-batched** for a block-diagonal pattern ([g t u], p blocks of
  (T/p)^2 pairs), or **band-chunked** for a band (query chunks against their key windows), and,
  for comparison, **masked** (the whole T x T, then the pattern as a mask);
* the whole level as **one einsum** along opt_einsum's own path (what a user gets from
  ``opt_einsum.contract``), masked afterwards for a band.

The cost model estimates time as FLOPs (2 per multiply-add) plus ``BALANCE`` FLOPs for every
byte a step reads or writes, and records the largest intermediate. The cheapest estimate wins,
among the schedules with no more FLOPs than opt_einsum's path; ties go to the fused form
(feature maps then dot products, what ``scaled_dot_product_attention`` runs). Counting bytes is
what the benchmark asked for: a band computed query by query does the fewest FLOPs but gathers
a window of keys per query, and runs ~50x slower than chunks of the window's width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .network import best_path, contraction_flops, feature_maps
from .structure import Instance, Level

ITEMSIZE = 4  # bytes of a float32, the dtype the costs of bytes assume
BALANCE = 4  # FLOPs that take as long as moving one byte (2 CPU cores: 64 GFLOP/s matmul, 14 GB/s copy)


@dataclass(frozen=True)
class Tensor:
    """A named tensor with one index name per axis; ``x`` is the input, reshaped to its indices."""

    name: str
    indices: tuple[str, ...]

    def written(self) -> str:
        return f"{self.name}[{' '.join(self.indices)}]"


@dataclass(frozen=True)
class Step:
    """One operation: a contraction (an einsum of its inputs), or a zero-FLOP reshuffle of tokens
    for a band: ``chunk`` splits the queries into chunks, ``window`` gathers each chunk's keys."""

    kind: str  # "contract" | "chunk" | "window"
    inputs: tuple[Tensor, ...]
    output: Tensor
    flops: int

    def written(self) -> str:
        verb = "" if self.kind == "contract" else f"{self.kind}: "
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
class Schedule:
    """One way to compute a level's scores: steps, the score tensor they end with, and its layout.

    ``layout`` says how the score tensor maps onto the T x T matrix: ``pairs`` (every entry is a
    scored pair; shared block indices are block-diagonal), ``masked`` (the whole matrix, the
    pattern applied afterwards) or ``band`` (chunks against key windows, see ``Band``).
    """

    name: str
    steps: tuple[Step, ...]
    layout: str
    sizes: dict[str, int] = field(repr=False)
    fused: bool = False
    band: Band | None = None

    @property
    def scores(self) -> Tensor:
        return self.steps[-1].output

    @property
    def flops(self) -> int:
        return sum(step.flops for step in self.steps)

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

    @property
    def estimate(self) -> int:
        """Estimated time in FLOP units: FLOPs + BALANCE x bytes moved."""
        return self.flops + BALANCE * self.bytes

    def cost(self) -> tuple:
        """The cost model's order: the estimate, then the fused form first."""
        return self.estimate, not self.fused


@dataclass(frozen=True)
class LevelPlan:
    """One level's choice, with what it was chosen from and the two baselines it is measured by."""

    level: Level
    chosen: Schedule
    candidates: tuple[Schedule, ...]  # every schedule considered, by the cost model (chosen included)
    opt_einsum: Schedule  # the whole level as one einsum along opt_einsum's path
    naive_flops: int  # the whole level as one contraction of every operand at once


@dataclass(frozen=True)
class Plan:
    """The chosen way to compute every score of one head for ``batch`` sequences."""

    instance: Instance
    batch: int
    levels: tuple[LevelPlan, ...]

    @property
    def flops(self) -> int:
        return sum(lp.chosen.flops for lp in self.levels)

    @property
    def opt_einsum_flops(self) -> int:
        return sum(lp.opt_einsum.flops for lp in self.levels)

    @property
    def naive_flops(self) -> int:
        return sum(lp.naive_flops for lp in self.levels)

    @property
    def largest(self) -> int:
        return max(lp.chosen.largest for lp in self.levels)

    @property
    def bytes(self) -> int:
        return sum(lp.chosen.bytes for lp in self.levels)


def plan(instance: Instance, batch: int = 1) -> Plan:
    """The cheapest schedule of every level for ``batch`` sequences of one head."""
    return Plan(instance, batch, tuple(plan_level(level, instance.T, batch) for level in instance.levels))


def plan_level(level: Level, T: int, batch: int) -> LevelPlan:
    """Every candidate of one level, costed and sorted; the choice is the first within opt_einsum's FLOPs."""
    net = LevelNetwork(level, T, batch)
    whole = net.one_einsum()
    candidates = [whole]
    for split in feature_maps(level):
        candidates.extend(net.feature_map_schedules(split.query.factors, split.key.factors, split.interface))
    candidates.sort(key=Schedule.cost)
    chosen = next(c for c in candidates if c.flops <= whole.flops)  # never more FLOPs than opt_einsum
    return LevelPlan(level, chosen, tuple(candidates), whole, net.naive_flops())


def fresh(name: str, taken) -> str:
    """``name``, or ``name`` with primes until it is not in ``taken``."""
    while name in taken:
        name += "'"
    return name


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
        self.operands = [self.x(op.role, op.axes[0]) if op.role != "factor" else Tensor(op.name, op.indices)
                         for op in level.operands]  # fmt: skip

    def x(self, role: str, seq: tuple[str, ...]) -> Tensor:
        """The input as the query (or key) token with sequence indices ``seq``."""
        features = self.level.query.axes[1] if role == "query" else self.level.key.axes[1]
        return Tensor("x", (self.n, *seq, *features))

    def score_indices(self, key_seq: tuple[str, ...]) -> tuple[str, ...]:
        return (self.n, *self.query_seq, *(i for i in key_seq if i not in self.query_seq))

    def name(self, wanted: str) -> str:
        """A tensor name that no factor of the level uses."""
        return fresh(wanted, self.taken)

    def naive_flops(self) -> int:
        """One contraction of every operand at once: 2 x the product of every index size."""
        return 2 * math.prod(self.sizes.values())

    def contract(self, inputs: list[Tensor], output: tuple[str, ...], name: str, sizes: dict) -> list[Step]:
        """Steps contracting ``inputs`` into ``name[output]`` along opt_einsum's path."""
        if len(inputs) == 1 and inputs[0].indices == output:
            return []
        path = best_path([t.indices for t in inputs], output, sizes)
        tensors, steps = list(inputs), []
        for number, pair in enumerate(path, 1):
            picked = [tensors[i] for i in pair]
            for i in sorted(pair, reverse=True):
                tensors.pop(i)
            rest = set(output).union(*(t.indices for t in tensors))
            last = number == len(path)
            kept = output if last else batch_first(output, (i for t in picked for i in t.indices if i in rest))
            result = Tensor(self.name(name if last else f"{name}{number}"), kept)
            flops = contraction_flops([t.indices for t in picked], kept, sizes, [tuple(range(len(picked)))])
            steps.append(Step("contract", tuple(picked), result, flops))
            tensors.append(result)
        return steps

    def one_einsum(self) -> Schedule:
        """The whole level along opt_einsum's path; a band is masked afterwards."""
        output = self.score_indices(self.key_seq)
        layout = "masked" if self.level.band is not None else "pairs"
        steps = self.contract(self.operands, output, "s", self.sizes)
        return Schedule("one einsum (opt_einsum path)", tuple(steps), layout, self.sizes)

    def feature_map_schedules(self, query_ids, key_ids, interface) -> list[Schedule]:
        """Feature maps for one split of the factors, then the pairs: block-batched (or every pair
        for a global level), masked, and band-chunked for a band."""
        label = f"feature maps (q: {self.side_label(query_ids)} | k: {self.side_label(key_ids)})"
        found = []
        renamed = {i: fresh(i + "'", self.sizes) for i in self.level.block_indices}
        blocked = self.level.blocks > 1
        for layout in ["masked"] if self.level.band is not None else ["pairs", "masked"] if blocked else ["pairs"]:
            key_seq = self.key_seq if layout == "pairs" else tuple(renamed.get(i, i) for i in self.key_seq)
            sizes = dict(self.sizes, **{new: self.sizes[old] for old, new in renamed.items()})
            steps, q, k = self.maps(query_ids, key_ids, interface, key_seq, sizes)
            scores = Tensor(self.name("s"), self.score_indices(key_seq))
            steps.append(Step("contract", (q, k), scores, pair_flops(q, k, scores.indices, sizes)))
            name = label + (", block-batched" if blocked and layout == "pairs" else "")
            name += ", masked" if layout == "masked" else ""
            found.append(Schedule(name, tuple(steps), layout, sizes, fused=True))
        if self.level.band is not None:
            found.extend(self.band_schedules(query_ids, key_ids, interface, label))
        return found

    def maps(self, query_ids, key_ids, interface, key_seq, sizes) -> tuple[list[Step], Tensor, Tensor]:
        """The two feature maps q[n, seq, interface] and k[n, key seq, interface]."""
        steps = []
        ends = []
        for side, role, ids, seq in (("q", "query", query_ids, self.query_seq), ("k", "key", key_ids, key_seq)):
            x = self.x(role, seq)
            side_steps = self.contract([x] + [self.operands[i] for i in ids], (self.n, *seq, *interface), side, sizes)
            steps.extend(side_steps)
            ends.append(side_steps[-1].output if side_steps else x)
        return steps, ends[0], ends[1]

    def band_schedules(self, query_ids, key_ids, interface, label: str) -> list[Schedule]:
        """Queries in chunks against their key windows, for a few chunk sizes."""
        lo, hi = self.level.band
        width = hi - lo + 1
        found = []
        for chunk in sorted({1, min(width, self.T), min(4 * width, self.T)}):
            band = Band(lo, hi, chunk, -(-self.T // chunk))
            c, t, v = (fresh(name, self.sizes) for name in ("c", "t'", "v"))
            sizes = dict(self.sizes, **{c: band.chunks, t: chunk, v: band.window})
            steps, q, k = self.maps(query_ids, key_ids, interface, self.key_seq, sizes)
            qc = Tensor(self.name("qc"), (self.n, c, t, *q.indices[2:]))
            kw = Tensor(self.name("kw"), (self.n, c, v, *k.indices[2:]))
            scores = Tensor(self.name("s"), (self.n, c, t, v))
            steps += [Step("chunk", (q,), qc, 0), Step("window", (k,), kw, 0),
                      Step("contract", (qc, kw), scores, pair_flops(qc, kw, scores.indices, sizes))]  # fmt: skip
            name = f"{label}, band in chunks of {chunk}"
            found.append(Schedule(name, tuple(steps), "band", sizes, fused=True, band=band))
        return found

    def side_label(self, ids) -> str:
        return " ".join(self.level.operands[i].name for i in ids) or "x"


def batch_first(output: tuple[str, ...], indices) -> tuple[str, ...]:
    """An intermediate's indices: those of the final output first, in its order, then the rest."""
    indices = dict.fromkeys(indices)
    return tuple(i for i in output if i in indices) + tuple(i for i in indices if i not in output)


def pair_flops(q: Tensor, k: Tensor, output: tuple[str, ...], sizes: dict) -> int:
    return contraction_flops([q.indices, k.indices], output, sizes, [(0, 1)])
