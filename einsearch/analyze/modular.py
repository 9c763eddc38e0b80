"""Exact arithmetic modulo a prime on numpy int64 arrays: the matrix product and the einsum.

The exact rank (``exact.py``) materialises a structure's matrix from random entries modulo
``PRIME`` and takes its rank over GF(p). Entries stay in [0, p) with p < 2^31, so an elementwise
product or a sum of up to 2^32 entries fits in int64; a matrix product goes through float64
BLAS, the smaller operand cut into limbs so that every product is exact (below 2^53).
"""

from __future__ import annotations

import math

import numpy as np
import opt_einsum

PRIME = (1 << 31) - 1  # a Mersenne prime: products of two entries fit in int64
EXACT_BITS = 53  # float64 holds every integer below 2^53
CHUNK = 1 << 14  # most summed terms of one product (then limbs of 8 bits)


class Draws:
    """Entries uniform in GF(p), each call the next block of one SplitMix64 sequence (a counter
    hashed, so vectorised; numpy.random takes longer to import than a describe takes to draw).
    The bias of a 64-bit value reduced modulo p is below 2^-32."""

    def __init__(self, seed: int) -> None:
        self.position = seed << 32  # seeds 2^32 draws apart: no overlap at any size the check runs

    def __call__(self, shape) -> np.ndarray:
        count = math.prod(shape)
        z = np.arange(self.position + 1, self.position + count + 1, dtype=np.uint64)
        self.position += count
        with np.errstate(over="ignore"):  # arithmetic modulo 2^64 is the point
            z *= np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        return (z % np.uint64(PRIME)).astype(np.int64).reshape(shape)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo p (stacked matrices broadcast as in numpy), entries of both in [0, p)."""
    parts = [_limb_matmul(a[..., s : s + CHUNK], b[..., s : s + CHUNK, :]) for s in range(0, a.shape[-1], CHUNK)]
    return parts[0] if len(parts) == 1 else sum(parts) % PRIME


def _limb_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo p through float64 BLAS: the smaller operand is cut into limbs of ``bits``
    bits, few enough that a product of k terms, each below 2^bits x 2^31, stays below 2^53."""
    bits = EXACT_BITS - PRIME.bit_length() - (a.shape[-1] - 1).bit_length()
    left = a.size <= b.size
    small, big = (a, b) if left else (b, a)
    big = big.astype(np.float64)
    total = 0
    for shift in range(0, PRIME.bit_length(), bits):  # each term below 2^(31 + shift): the sum below 2^62
        limb = ((small >> shift) & ((1 << bits) - 1)).astype(np.float64)
        total = total + ((limb @ big if left else big @ limb).astype(np.int64) % PRIME << shift)
    return total % PRIME


def einsum(inputs: list[tuple[str, ...]], output: tuple[str, ...], arrays: list[np.ndarray]) -> np.ndarray:
    """The einsum of ``arrays`` (entries in [0, p), indices named by ``inputs``) modulo p, pairwise
    along opt_einsum's greedy path; every index of an input appears once in it."""
    from ..network import einsum_string, letters

    arrays = [np.asarray(a, dtype=np.int64) for a in arrays]
    letter = letters([i for op in (*inputs, output) for i in op])
    path, _ = opt_einsum.contract_path(einsum_string(inputs, output, letter), *arrays, optimize="greedy")
    operands = list(zip(map(tuple, inputs), arrays))
    for step in path:
        picked = [operands.pop(i) for i in sorted(step, reverse=True)]
        needed = set(output).union(*(indices for indices, _ in operands))
        operands.append(_contract_pair(picked, needed))
    ((indices, array),) = operands  # the last step summed every index the output lacks
    return np.transpose(array, [indices.index(i) for i in output])


def _sum_out(indices: tuple[str, ...], array: np.ndarray, needed: set[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Sums the axes of indices no later operand or the output needs."""
    summed = tuple(n for n, i in enumerate(indices) if i not in needed)
    if not summed:
        return indices, array
    return tuple(i for i in indices if i in needed), array.sum(axis=summed) % PRIME


def _contract_pair(picked: list, needed: set[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """One step of the path (one or two operands) as a stacked matrix product modulo p."""
    if len(picked) == 1:
        return _sum_out(*picked[0], needed)
    (a_ix, a), (b_ix, b) = picked
    a_ix, a = _sum_out(a_ix, a, needed | set(b_ix))  # an index on one side only, needed by nothing else
    b_ix, b = _sum_out(b_ix, b, needed | set(a_ix))
    batch = [i for i in a_ix if i in b_ix and i in needed]
    summed = [i for i in a_ix if i in b_ix and i not in needed]
    left = [i for i in a_ix if i not in b_ix]
    right = [i for i in b_ix if i not in a_ix]
    size = dict(zip(a_ix, a.shape)) | dict(zip(b_ix, b.shape))
    n_batch, n_left, n_summed, n_right = (math.prod(size[i] for i in group) for group in (batch, left, summed, right))
    stack = (n_batch,) if batch else ()  # numpy's stacked product is slower than a plain one
    a = np.transpose(a, [a_ix.index(i) for i in batch + left + summed]).reshape(*stack, n_left, n_summed)
    b = np.transpose(b, [b_ix.index(i) for i in batch + summed + right]).reshape(*stack, n_summed, n_right)
    product = matmul(a, b) if summed else a * b % PRIME  # nothing summed: an outer product per batch entry
    return tuple(batch + left + right), product.reshape([size[i] for i in batch + left + right])
