"""Exact rank of a random integer instance, modulo a 61-bit prime (python-flint).

Floating-point SVD undercounts the rank of band structures: a banded lower-triangular matrix
of random entries is full rank but exponentially ill-conditioned (a sliding window at T = 1024
showed 1011 of 1024). So the numeric check draws small random integers, materialises the matrix
exactly (every intermediate stays below 2^53 in float64), and takes the rank over GF(p). Over
the rationals the rank can only be higher, and it equals the GF(p) rank unless p divides one
specific minor, which a 61-bit random-looking prime does with negligible probability.
"""

from __future__ import annotations

import math

import numpy as np

from .. import reference
from ..structure import Instance

PRIME = (1 << 61) - 1
RANK_LIMIT = 1024  # the largest matrix side the exact rank is computed for by default (about 1 s)
EXACT = 2**52  # float64 holds every integer below this exactly
SKETCH_MARGIN = 8


def entry_range(instance: Instance) -> int:
    """Largest R such that entries drawn from [-R, R] keep every matrix entry exact in float64."""
    worst = 1.0
    for level in instance.levels:
        summed = math.prod(level.sizes[i] for i in level.sizes if i not in level.sequence_indices)
        worst = max(worst, summed)
    operands = max(len(level.operands) for level in instance.levels)
    return max(1, int((EXACT / (worst * len(instance.levels))) ** (1 / operands)))


def random_integers(instance: Instance, seed: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Random integer factors, and a random integer input x (T x D) unless the structure is a
    feature structure, whose matrix M does not read x."""
    rng = np.random.default_rng(seed)
    bound = entry_range(instance)
    factors = {n: rng.integers(-bound, bound + 1, s).astype(float) for n, s in instance.factor_shapes.items()}
    if instance.is_feature_structure:
        return None, factors
    return rng.integers(-bound, bound + 1, (instance.T, instance.D)).astype(float), factors


def exact_rank(instance: Instance, bound: int, seed: int = 0) -> int:
    """Rank of the structure's matrix for one random integer instance, through a GF(p) sketch.

    A random k x n by n x k sketch G1 A G2 has rank min(rank A, k) with high probability, so
    with k = bound + 8 a bound that is too low still shows, while big low-rank matrices stay
    cheap.
    """
    x, factors = random_integers(instance, seed)
    matrix = reference.structure_matrix(instance, x, factors, scaled=False)
    side = matrix.shape[0]
    modular = _nmod(matrix)
    width = bound + SKETCH_MARGIN
    if 4 * width <= side:  # a sketch pays when it is much smaller than the matrix
        rng = np.random.default_rng(seed + 1)
        left = _nmod(rng.integers(0, 1 << 30, (width, side)).astype(float))
        right = _nmod(rng.integers(0, 1 << 30, (side, width)).astype(float))
        modular = left * modular * right
    return modular.rank()


MAX_ENTRIES = 1 << 22  # random entries (x and factors) the exact check may draw: about 0.2 s of work


def affordable(instance: Instance, rank_limit: int) -> bool:
    """Whether the exact rank fits: the matrix side within ``rank_limit``, and no more than
    ``MAX_ENTRIES`` random entries to draw (x is T x D unless M alone decides the rank)."""
    entries = sum(math.prod(shape) for shape in instance.factor_shapes.values())
    entries += 0 if instance.is_feature_structure else instance.T * instance.D
    return rank_side(instance) <= rank_limit and entries <= MAX_ENTRIES


def rank_side(instance: Instance) -> int:
    """The side of the matrix whose rank describes the structure (what a size limit compares):
    D for a feature structure, else T. ``exact_rank`` materialises it whatever the sketch."""
    return instance.D if instance.is_feature_structure else instance.T


def _nmod(matrix: np.ndarray):
    import flint

    rows, cols = matrix.shape
    entries = np.mod(matrix.astype(np.int64), PRIME).ravel().tolist()
    return flint.nmod_mat(rows, cols, entries, PRIME)
