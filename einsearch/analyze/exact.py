"""Exact rank of a random instance over GF(p), for p the prime of ``modular.py``.

Floating-point SVD undercounts the rank of band structures: a banded lower-triangular matrix
of random entries is full rank but exponentially ill-conditioned (a sliding window at T = 1024
showed 1011 of 1024). So every factor entry and every entry of x is drawn uniformly from GF(p),
the structure's matrix is materialised modulo p (each level's einsum, ``modular.einsum``), and
its rank is taken there (python-flint). The rank of a random instance over GF(p) is at most the
generic rank, and falls below it only when a minor that is not identically zero vanishes at the
draw: a polynomial of degree n <= r (F + 2) in the drawn entries (r its side, F the most factors of
a level), so with probability at most n / p (Schwartz-Zippel), below 1e-5 at any size the check
runs. Small integers would not do: a product of many {-1, 0, 1} matrices is degenerate far more
often (a chain of 20 factors joined by rank-2 bonds read as rank 0).
"""

from __future__ import annotations

import math

import numpy as np

from .. import reference
from ..structure import Instance
from . import modular

RANK_LIMIT = 1024  # the largest matrix side the exact rank is computed for by default (about 1 s)
SKETCH_MARGIN = 8
METHOD = "GF(2^31 - 1), SplitMix64 draws, seed 0, sketch of bound + 8"  # change it with the method: ranks are cached


def random_instance(instance: Instance, seed: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Factors with entries uniform in GF(p), and an input x (T x D) alike unless the structure is a
    feature structure, whose matrix M does not read x."""
    draw = modular.Draws(seed)
    factors = {name: draw(shape) for name, shape in instance.factor_shapes.items()}
    if instance.is_feature_structure:
        return None, factors
    return draw((instance.T, instance.D)), factors


def exact_rank(instance: Instance, bound: int, seed: int = 0) -> int:
    """Rank of the structure's matrix for one random instance over GF(p), through a sketch.

    A random k x n by n x k sketch G1 A G2 has rank min(rank A, k) with high probability, so
    with k = bound + 8 a bound that is too low still shows, while big low-rank matrices stay
    cheap.
    """
    import flint

    x, factors = random_instance(instance, seed)
    matrix = reference.structure_matrix(instance, x, factors, scaled=False, contract=modular.einsum) % modular.PRIME
    side = matrix.shape[0]
    width = bound + SKETCH_MARGIN
    if 4 * width <= side:  # a sketch pays when it is much smaller than the matrix
        draw = modular.Draws(seed + 1)
        left, right = draw((width, side)), draw((side, width))
        matrix = modular.matmul(left, modular.matmul(matrix, right))
    rows, cols = matrix.shape
    return flint.nmod_mat(rows, cols, matrix.ravel().tolist(), modular.PRIME).rank()


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
