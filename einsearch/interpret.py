"""Runs a plan with torch: each step as written, then the scores laid out as B x T x T.

This is the executable meaning of a plan (what ``generate`` compiles into a module), and the
tests hold it to the reference materialisation. It builds dense T x T outputs on purpose: it is
for checking, not for speed.
"""

from __future__ import annotations

import torch

from .network import einsum_string, letters
from .planner import Band, Layout, Op, Plan, Schedule, Step, Tensor, Tiling
from .runtime.tiling import Blocks, Call, covers
from .sequence import SequencePattern
from .structure import Instance

__all__ = ["run", "schedule_scores", "score_matrix"]


def score_matrix(plan: Plan, x: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """All scores, B x T x T, of input ``x`` (B x T x D): the sum of every schedule of the plan."""
    return sum(schedule_scores(s, plan.instance, x, factors) for s in plan.schedules)


def schedule_scores(schedule: Schedule, instance: Instance, x: torch.Tensor, factors: dict[str, torch.Tensor]):
    """The B x T x T contribution of the levels one schedule computes, scales and patterns applied."""
    T = x.shape[1]
    scores = run(schedule, x, factors)
    if schedule.layout is Layout.BAND:
        dense = [unchunk(scores[0], schedule.band, T)]
    elif schedule.layout is Layout.TILED:
        dense = [tiles_dense(s, schedule.tiling, call, T) for s, call in zip(scores, schedule.tiling.calls)]
    else:
        dense = [pairs_dense(s, schedule, T) for s in scores]
    if schedule.layout is Layout.MASKED:
        level = instance.levels[schedule.levels[0] - 1]
        dense = [d * torch.from_numpy(level.pattern.mask(T)).to(d.device) for d in dense]
    return sum(scale * d for scale, d in zip(schedule.scales, dense))


def run(schedule: Schedule, x: torch.Tensor, factors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Executes the steps; returns the score tensors in the schedule's own layout."""
    values: dict[str, torch.Tensor] = dict(factors)
    for step in schedule.steps:
        inputs = [_value(t, values, x, schedule) for t in step.inputs]
        values[step.output.name] = _execute(step, inputs, schedule, x.shape[1])
    return [_value(t, values, x, schedule) for t in schedule.scores]


def _value(tensor: Tensor, values: dict[str, torch.Tensor], x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """A step's input: ``x`` reshaped to its indices, a factor reshaped to its index sizes, or an
    earlier result (reshaped too: a result may be read with its sequence axis split)."""
    data = x if tensor.name == "x" else values[tensor.name]
    return data.reshape([schedule.sizes[i] for i in tensor.indices])


def _execute(step: Step, inputs: list[torch.Tensor], schedule: Schedule, T: int) -> torch.Tensor:
    if step.op is Op.CHUNK:
        return chunk_queries(inputs[0], schedule.band, T)
    if step.op is Op.WINDOW:
        return key_windows(inputs[0], schedule.band, T)
    if step.op is Op.CONCAT:
        return torch.cat([scale * t.reshape(t.shape[0], T, -1) for scale, t in zip(step.scales, inputs)], dim=-1)
    if step.op is Op.ATTEND:
        return attend(*inputs, schedule.tiling, schedule.tiling.calls[step.call])
    letter = letters(i for t in (*step.inputs, step.output) for i in t.indices)
    return torch.einsum(einsum_string([t.indices for t in step.inputs], step.output.indices, letter), *inputs)


def positions(blocks: Blocks, device=None) -> torch.Tensor:
    """The token positions of a call's ranges, (count, length)."""
    start, count, stride, length = blocks
    return start + stride * torch.arange(count, device=device)[:, None] + torch.arange(length, device=device)


def attend(q: torch.Tensor, k: torch.Tensor, tiling: Tiling, call: Call) -> torch.Tensor:
    """One call's logits s[n, g, t, u]: its query ranges against its key ranges, with the channels of
    its levels only."""
    starts = [sum(tiling.widths[:level]) for level in range(len(tiling.widths))]
    channels = [c for level in call.levels for c in range(starts[level], starts[level] + tiling.widths[level])]
    queries, keys = positions(call.queries, q.device), positions(call.keys, q.device)
    return q[:, queries][..., channels] @ k[:, keys][..., channels].transpose(-1, -2)


def tiles_dense(scores: torch.Tensor, tiling: Tiling, call: Call, T: int) -> torch.Tensor:
    """A call's logits laid on B x T x T, keeping the pairs it scores: u <= t of a causal square,
    every pair of a dense rectangle, the pairs covered by exactly its levels in a masked tile."""
    t = positions(call.queries, scores.device)[:, :, None]
    u = positions(call.keys, scores.device)[:, None, :]
    keep = (u - u[:, :, :1] <= t - t[:, :1]) if call.mode == "causal" else torch.ones_like(t == u)
    if call.mode == "masked":
        keep = u <= t
        for level, pattern in enumerate(tiling.patterns):
            covered = covers(pattern, t, u)
            keep = keep & (covered if level in call.levels else ~covered)
    dense = scores.new_zeros(scores.shape[0], T, T)
    t, u = torch.broadcast_tensors(t, u)
    dense[:, t[keep], u[keep]] = scores[:, keep]
    return dense


def chunk_queries(q: torch.Tensor, band: Band, T: int) -> torch.Tensor:
    """q[n, t, ...] -> q[n, c, t', ...]: chunks of ``band.chunk`` queries, zero-padded at the end."""
    pad = band.chunks * band.chunk - T
    q = torch.cat([q, q.new_zeros(q.shape[0], pad, *q.shape[2:])], dim=1) if pad else q
    return q.reshape(q.shape[0], band.chunks, band.chunk, *q.shape[2:])


def window_keys(band: Band, T: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The key position of each (chunk, window slot) and whether it lies inside the sequence."""
    start = torch.arange(band.chunks, device=device)[:, None] * band.chunk - band.hi
    keys = start + torch.arange(band.window, device=device)
    return keys.clamp(0, T - 1), (keys >= 0) & (keys < T)


def key_windows(k: torch.Tensor, band: Band, T: int) -> torch.Tensor:
    """k[n, u, ...] -> k[n, c, v, ...]: the keys each query chunk can reach, zeros off the sequence."""
    keys, inside = window_keys(band, T, k.device)
    windows = k[:, keys]
    return windows * inside.reshape(*inside.shape, *[1] * (k.dim() - 2)).to(k.dtype)


def unchunk(scores: torch.Tensor, band: Band, T: int) -> torch.Tensor:
    """s[n, c, t', v] -> B x T x T, keeping only the pairs inside the band."""
    keys, inside = window_keys(band, T, scores.device)
    query = torch.arange(band.chunks * band.chunk, device=scores.device).reshape(band.chunks, band.chunk, 1)
    key = keys[:, None, :].expand(-1, band.chunk, -1)
    keep = inside[:, None, :] & SequencePattern(1, (band.lo, band.hi)).covers(T, query, key)
    dense = scores.new_zeros(scores.shape[0], T, T)
    dense[:, query.expand_as(key)[keep], key[keep]] = scores[:, keep]
    return dense


def pairs_dense(scores: torch.Tensor, schedule: Schedule, T: int) -> torch.Tensor:
    """Scores indexed [n, query seq, key seq] -> B x T x T: an index on both sides is a block
    index and becomes a block diagonal (pairs in different blocks are zero)."""
    query_seq, key_seq = schedule.sequence
    shared = [i for i in query_seq if i in key_seq]
    copies = {i: i + "'" for i in shared}
    output = ("n", *query_seq, *(copies.get(i, i) for i in key_seq))
    stored = ("n", *query_seq, *(i for i in key_seq if i not in shared))
    eyes = [torch.eye(schedule.sizes[i], dtype=scores.dtype, device=scores.device) for i in shared]
    inputs = [stored, *((i, copies[i]) for i in shared)]
    letter = letters(i for idx in (*inputs, output) for i in idx)
    dense = torch.einsum(einsum_string(inputs, output, letter), scores, *eyes)
    return dense.reshape(scores.shape[0], T, T)
