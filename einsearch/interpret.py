"""Runs a plan with torch: each step as ``torch.einsum``, then the scores laid out as B x T x T.

This is the executable meaning of a plan (what ``generate`` compiles into a module), and the
tests hold it to the reference materialisation. It builds dense T x T outputs on purpose: it is
for checking, not for speed.
"""

from __future__ import annotations

import math

import torch

from .network import einsum_string, letters
from .plan import Band, Plan, Schedule, Step, Tensor, fresh
from .structure import Level

__all__ = ["level_scores", "run", "score_matrix"]


def score_matrix(plan: Plan, x: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """All scores, B x T x T, of input ``x`` (B x T x D): the sum of every level's chosen schedule."""
    return sum(level_scores(lp.chosen, lp.level, x, factors) for lp in plan.levels)


def level_scores(schedule: Schedule, level: Level, x: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """One level's B x T x T contribution: the schedule's scores, the pattern applied, scaled."""
    scores = run(schedule, x, factors)
    if schedule.layout == "band":
        dense = unchunk(scores, schedule.band, x.shape[1])
    else:
        dense = block_diagonal(scores, schedule, level)
        if level.band is not None:
            dense = dense * band_mask(level.band, x.shape[1], x.device)
    return level.scale * dense


def run(schedule: Schedule, x: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Executes the steps; returns the score tensor in the schedule's own layout."""
    values: dict[str, torch.Tensor] = dict(factors)
    for step in schedule.steps:
        inputs = [_value(t, values, x, schedule.sizes) for t in step.inputs]
        values[step.output.name] = _execute(step, inputs, schedule, x.shape[1])
    return values[schedule.scores.name]


def _value(tensor: Tensor, values: dict[str, torch.Tensor], x: torch.Tensor, sizes: dict[str, int]) -> torch.Tensor:
    """A step's input: ``x`` reshaped to its indices, a factor reshaped to its index sizes, or an
    earlier result."""
    data = x if tensor.name == "x" else values[tensor.name]
    return data.reshape([sizes[i] for i in tensor.indices])


def _execute(step: Step, inputs: list[torch.Tensor], schedule: Schedule, T: int) -> torch.Tensor:
    if step.kind == "chunk":
        return chunk_queries(inputs[0], schedule.band, T)
    if step.kind == "window":
        return key_windows(inputs[0], schedule.band, T)
    letter = letters(i for t in (*step.inputs, step.output) for i in t.indices)
    return torch.einsum(einsum_string([t.indices for t in step.inputs], step.output.indices, letter), *inputs)


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
    gap = query - key
    keep = inside[:, None, :] & (query < T) & (gap >= band.lo) & (gap <= band.hi)
    dense = scores.new_zeros(scores.shape[0], T, T)
    dense[:, query.expand_as(key)[keep], key[keep]] = scores[:, keep]
    return dense


def block_diagonal(scores: torch.Tensor, schedule: Schedule, level: Level) -> torch.Tensor:
    """Scores indexed [n, query seq, key seq] -> B x T x T: a block index shared by both sides
    becomes a diagonal (pairs in other blocks are zero); a masked schedule keeps only that diagonal."""
    head = schedule.scores.indices[: 1 + len(level.query.axes[0])]
    if schedule.layout == "masked":  # the key side already carries its own copy of each block index
        key_seq = schedule.scores.indices[len(head) :]
    else:
        key_seq = tuple(fresh(i + "'", level.sizes) if i in level.block_indices else i for i in level.key.axes[0])
    copies = [(i, j) for i, j in zip(level.key.axes[0], key_seq) if i in level.block_indices]
    eyes = [torch.eye(level.sizes[i], dtype=scores.dtype, device=scores.device) for i, _ in copies]
    output = (*head, *key_seq)
    inputs = [output if schedule.layout == "masked" else schedule.scores.indices, *copies]
    letter = letters(i for idx in (*inputs, output) for i in idx)
    dense = torch.einsum(einsum_string(inputs, output, letter), scores, *eyes)
    return dense.reshape(scores.shape[0], *[math.prod(level.sizes[i] for i in level.query.axes[0])] * 2)


def band_mask(band: tuple[int, int], T: int, device=None) -> torch.Tensor:
    gap = torch.arange(T, device=device)[:, None] - torch.arange(T, device=device)
    return (gap >= band[0]) & (gap <= band[1])
