"""Ground truth: materialise a structure's matrices from random factors, one einsum per level.

Nothing clever happens here on purpose: each level is contracted in one ``opt_einsum.contract``
straight from its definition, block patterns enter as Kronecker deltas and bands as an explicit
mask, and the result is a dense float64 array. Tests compare counts, plans and generated modules
with it. numpy keeps ``describe`` free of torch; ``torch.from_numpy`` makes tensors of the results.
The einsum itself is an argument (``contract``): the exact rank runs the same networks modulo a
prime (``analyze/modular.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import opt_einsum

from .network import einsum_string, letters
from .structure import Instance, Level

Contract = Callable[[list[tuple[str, ...]], tuple[str, ...], list[np.ndarray]], np.ndarray]


def float_einsum(inputs: list[tuple[str, ...]], output: tuple[str, ...], arrays: list[np.ndarray]) -> np.ndarray:
    """One ``opt_einsum.contract`` of index-name tuples (greedy path)."""
    letter = letters([i for op in inputs for i in op])
    return opt_einsum.contract(einsum_string(inputs, output, letter), *arrays, optimize="greedy")


def random_factors(instance: Instance, seed: int = 0) -> dict[str, np.ndarray]:
    """Gaussian factors N(0, 1/fan_in), fan_in the size of a factor's first axis."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) / np.sqrt(shape[0]) for name, shape in instance.factor_shapes.items()}


def random_input(instance: Instance, seed: int = 1) -> np.ndarray:
    """A random T x D input sequence."""
    return np.random.default_rng(seed).standard_normal((instance.T, instance.D))


def level_scores(level: Level, x: np.ndarray, factors: dict[str, np.ndarray], scaled: bool = True,
                 contract: Contract = float_einsum) -> np.ndarray:  # fmt: skip
    """The level's T x T contribution: scale * P(t, u) * x_t^T M x_u, masks included."""
    T = x.shape[0]
    renamed = {i: i + "'" for i in level.block_indices}  # the key's copy of each block index
    key_seq = tuple(renamed.get(i, i) for i in level.key.axes[0])
    sizes = dict(level.sizes, **{new: level.sizes[old] for old, new in renamed.items()})
    deltas = [((old, new), np.eye(level.sizes[old])) for old, new in renamed.items()]
    output = level.query.axes[0] + key_seq
    scores = _contract(level, factors, sizes, (level.query.axes[0], x), (key_seq, x), output, contract, deltas)
    scores = scores.reshape(T, T)
    if level.band is not None:  # the blocks are already in the deltas; the band is a mask
        scores = scores * level.pattern.mask(T)
    return level.scale * scores if scaled else scores


def score_matrix(instance: Instance, x: np.ndarray, factors: dict[str, np.ndarray], scaled: bool = True,
                 contract: Contract = float_einsum) -> np.ndarray:  # fmt: skip
    """The T x T score matrix: the sum of every level."""
    return sum(level_scores(level, x, factors, scaled, contract) for level in instance.levels)


def feature_matrix(level: Level, factors: dict[str, np.ndarray], scaled: bool = True,
                   contract: Contract = float_einsum) -> np.ndarray:  # fmt: skip
    """The level's D x D matrix M_l (scale included), read off by feeding identity tokens."""
    D = math.prod(level.sizes[i] for i in level.query.axes[1])
    eye = np.eye(D)
    sizes = dict(level.sizes, row=D, col=D)
    matrix = _contract(level, factors, sizes, (("row",), eye), (("col",), eye), ("row", "col"), contract)
    return level.scale * matrix if scaled else matrix


def structure_matrix(instance: Instance, x: np.ndarray | None, factors: dict[str, np.ndarray], scaled: bool = True,
                     contract: Contract = float_einsum) -> np.ndarray:  # fmt: skip
    """The matrix whose rank describes the structure: M (D x D) if every level scores every pair,
    else the T x T score matrix of the input ``x``."""
    if instance.is_feature_structure:
        return sum(feature_matrix(level, factors, scaled, contract) for level in instance.levels)
    return score_matrix(instance, x, factors, scaled, contract)


def _contract(level: Level, factors, sizes, query, key, output, contract: Contract, extra=()) -> np.ndarray:
    """One einsum over the level's operands; ``query``/``key`` give x's sequence indices and data."""
    inputs, arrays = [], []
    for op in level.operands:
        if op.role == "factor":
            indices, data = op.indices, factors[op.name]
        else:
            seq, data = query if op.role == "query" else key
            indices = seq + op.axes[1]
        inputs.append(indices)
        arrays.append(data.reshape([sizes[i] for i in indices]))
    for indices, data in extra:
        inputs.append(indices)
        arrays.append(data)
    return contract(inputs, output, arrays)
