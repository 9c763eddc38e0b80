"""The analyzer against independent computations (docs/design.md §2).

Every expected value here is computed without the analyzer: closed-form formulas from docs/design.md §2,
a split of D found by trial division, brute-force contraction orders and factor splits, opt_einsum's
own path costs, torch's FlopCounterMode on hand-written torch code, matrix ranks of the reference
materialisation, and pair masks read off the reference score matrices.

FLOP convention (docs/design.md §3, einsearch.network.contraction_flops): a multiply-add is 2
FLOPs. Per contraction step over the indices it touches, einsearch charges 2 per element for a
pairwise step that sums an index, 1 per element for a pairwise step that only multiplies (outer or
elementwise product), 1 per element for a lone operand that is summed, 0 for a lone operand already
in shape. opt_einsum's ``opt_cost`` charges ``size * (max(1, terms - 1) + inner)``: the same on
pairwise steps, but 2 per element for a lone summed operand and 1 for a lone copy. The opt_einsum
comparison below therefore takes opt_einsum's optimal path and its per-step costs from
``contraction_list``, and replaces only the lone-operand steps by einsearch's charge; the brute
force enumerates every pairwise order under einsearch's charges.
"""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction
from functools import cache

import numpy as np
import opt_einsum
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import chain_text, flop_counts, map_flops, pair_cost
from torch.utils.flop_counter import FlopCounterMode

from einsearch import catalog, reference
from einsearch.analyze import describe, modular
from einsearch.analyze.counts import pair_flops, params
from einsearch.analyze.exact import exact_rank
from einsearch.analyze.family import level_family
from einsearch.analyze.formulas import evaluate, formulas
from einsearch.analyze.pattern import distance_profile, pair_flops_grid
from einsearch.analyze.rank import rank_bound, rank_bounds
from einsearch.errors import DSLError
from einsearch.planner import DEFAULT_COST, FLOPS, Part, plan
from einsearch.sequence import SequencePattern
from einsearch.structure import from_text

# ---------------------------------------------------------------------------------------------
# Independent helpers


def balanced_split(D: int) -> tuple[int, int]:
    """a = the largest divisor of D with a*a <= D, b = D / a."""
    a = max(d for d in range(1, D + 1) if D % d == 0 and d * d <= D)
    return a, D // a


def research_split(D: int) -> tuple[int, int]:
    """b = the smallest divisor of D with b*b > D, a = D / b."""
    b = min(d for d in range(1, D + 1) if D % d == 0 and d * d > D)
    return D // b, b


def split_of(D: int, mode: str = "balanced") -> tuple[int, int]:
    return balanced_split(D) if mode == "balanced" else research_split(D)


def resolve(name: str, sizes: dict):
    return catalog.find(name).resolve(dict(sizes))


def resolve_text(text: str, sizes: dict | None = None, name: str = "custom", source: str = "<input>"):
    return from_text(text, source, name).resolve(dict(sizes or {}))


def p_l(level_number: int) -> int:
    return 2 ** (level_number - 1)


# Small instances of every catalog structure (two or three per structure).
SMALL = {
    "dense": [{"T": 16, "D": 16}, {"T": 32, "D": 24}],
    "lowrank": [{"T": 16, "D": 32, "r": 5}, {"T": 32, "D": 24, "r": 8}],
    "btt": [{"T": 16, "D": 64, "s": 1}, {"T": 16, "D": 96, "s": 2}, {"T": 16, "D": 36, "s": 3, "split": "research"}],
    "monarch": [{"T": 16, "D": 64}, {"T": 16, "D": 48, "split": "research"}],
    "kronecker": [{"T": 16, "D": 36}, {"T": 16, "D": 48}],
    "bilinear-mlr": [{"T": 16, "D": 64, "levels": 4, "ranks": [2, 2, 1, 1]}, {"T": 16, "D": 32, "levels": 3,
                                                                             "ranks": [3, 2, 1]}],
    "mlr": [{"T": 64, "D": 32, "levels": 4, "ranks": [2, 1, 1, 1]},
            {"T": 32, "D": 16, "levels": 3, "ranks": [4, 2, 1]}],
    "swa": [{"T": 32, "D": 16, "r": 3, "window": 4}, {"T": 24, "D": 8, "r": 2, "window": 0}],
    "global-swa": [{"T": 32, "D": 16, "rg": 2, "rw": 3, "window": 5},
                   {"T": 20, "D": 12, "rg": 1, "rw": 1, "window": 19}],
    "tt": [{"T": 16, "D": 64, "a": 4, "b": 4, "s": 2}, {"T": 16, "D": 48, "a": 2, "b": 3, "s": 3}],
}  # fmt: skip

SMALL_CASES = [pytest.param(name, sizes, id=f"{name}-{i}") for name, cases in SMALL.items() for i, sizes in
               enumerate(cases)]  # fmt: skip


def test_small_cases_cover_the_catalog():
    assert set(SMALL) == set(catalog.names())


# ---------------------------------------------------------------------------------------------
# Parameters


def expected_params(name: str, sizes: dict) -> int:
    """docs/design.md §2's formulas, with D split by trial division (never read back from the instance)."""
    D = sizes["D"]
    if name == "dense":
        return D * D
    if name in ("lowrank", "swa"):
        return 2 * D * sizes["r"]
    if name in ("btt", "monarch"):
        s = sizes.get("s", 1)
        a = sizes["a"] if "a" in sizes else split_of(D, sizes.get("split", "balanced"))[0]
        return s * D * (a + D // a)
    if name == "kronecker":
        a, b = (sizes["a"], D // sizes["a"]) if "a" in sizes else split_of(D, sizes.get("split", "balanced"))
        return a * a + b * b
    if name in ("bilinear-mlr", "mlr"):
        return 2 * D * sum(sizes["ranks"])
    if name == "global-swa":
        return 2 * D * (sizes["rg"] + sizes["rw"])
    if name == "tt":
        a, b, s = sizes["a"], sizes["b"], sizes["s"]
        c = D // (a * b)
        return a * a * s + s * b * b * s + s * c * c  # G1[a,a,s], G2[s,b,b,s], G3[s,c,c]
    raise KeyError(name)


PARAM_CASES = [
    ("dense", {"D": 8}),
    ("dense", {"D": 256}),
    ("dense", {"D": 97}),
    ("lowrank", {"D": 256, "r": 64}),
    ("lowrank", {"D": 96, "r": 7}),
    ("swa", {"D": 64, "r": 16, "window": 3}),
    ("global-swa", {"D": 64, "rg": 8, "rw": 24, "window": 3}),
    ("global-swa", {"D": 256, "rg": 32, "rw": 32}),
    ("kronecker", {"D": 256}),
    ("kronecker", {"D": 96}),
    ("kronecker", {"D": 144, "split": "research"}),
    ("kronecker", {"D": 64, "a": 2}),
    ("bilinear-mlr", {"D": 256, "levels": 4, "ranks": [32, 16, 8, 8]}),
    ("bilinear-mlr", {"D": 64, "levels": 2, "ranks": [5, 3]}),
    ("mlr", {"T": 1024, "D": 512, "levels": 8, "ranks": [32, 8, 6, 4, 4, 4, 4, 2]}),
    ("mlr", {"T": 64, "D": 48, "levels": 3, "ranks": [7, 2, 1]}),
    ("tt", {"D": 512, "a": 8, "b": 8, "s": 2}),
    ("tt", {"D": 60, "a": 3, "b": 4, "s": 3}),
    ("monarch", {"D": 256}),
    ("monarch", {"D": 256, "split": "research"}),
    ("monarch", {"D": 96}),
]
for _D in (96, 144, 256, 512):
    for _mode in ("balanced", "research"):
        for _s in (1, 2, 3):
            PARAM_CASES.append(("btt", {"D": _D, "s": _s, "split": _mode}))
PARAM_CASES += [("btt", {"D": 64, "s": 2, "a": 2}), ("btt", {"D": 97, "s": 1}), ("btt", {"D": 60, "s": 2, "a": 5})]


@pytest.mark.parametrize("name,sizes", PARAM_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_params_match_design_formulas(name, sizes):
    assert params(resolve(name, sizes)) == expected_params(name, sizes)


@pytest.mark.parametrize(
    "D,mode,a,b",
    [(256, "balanced", 16, 16), (96, "balanced", 8, 12), (144, "balanced", 12, 12), (512, "balanced", 16, 32),
     (97, "balanced", 1, 97), (256, "research", 8, 32), (144, "research", 9, 16), (96, "research", 8, 12),
     (512, "research", 16, 32), (36, "research", 4, 9)],
)  # fmt: skip
def test_split_of_D(D, mode, a, b):
    """docs/design.md §2's worked examples of both splitting rules, for BTT, Monarch and Kronecker alike."""
    assert split_of(D, mode) == (a, b)
    for name in ("btt", "monarch", "kronecker"):
        inst = resolve(name, {"D": D, "split": mode})
        assert (inst.values["a"], inst.values["b"]) == (a, b)
    assert params(resolve("btt", {"D": D, "split": mode, "s": 2})) == 2 * D * (a + b)
    assert params(resolve("kronecker", {"D": D, "split": mode})) == a * a + b * b


def test_monarch_is_btt_with_s_1():
    for D in (64, 96, 144, 256):
        for mode in ("balanced", "research"):
            mon = resolve("monarch", {"D": D, "split": mode, "T": 16})
            btt = resolve("btt", {"D": D, "split": mode, "s": 1, "T": 16})
            assert params(mon) == params(btt)
            assert flop_counts(mon) == flop_counts(btt)
            assert rank_bound(mon) == rank_bound(btt) == D
    m = resolve("monarch", {"D": 16, "T": 4})
    b = resolve("btt", {"D": 16, "T": 4, "s": 1})
    fm, fb = reference.random_factors(m, seed=3), reference.random_factors(b, seed=3)
    fb = {"L": fm["L"][..., None], "R": fm["R"][..., None]}
    x = reference.random_input(m)
    np.testing.assert_allclose(reference.structure_matrix(m, x, fm), reference.structure_matrix(b, x, fb))


def test_params_count_a_shared_factor_once():
    text = """
size T = 8
size D = 6
size r = 2
index a: r
score = x[t, i] W[i, a] W[j, a] x[u, j]
score += x[t, i] W[i, a] V[j, a] x[u, j]
"""
    assert params(resolve_text(text)) == 6 * 2 * 2


# ---------------------------------------------------------------------------------------------
# Rank


def expected_rank(name: str, inst) -> int:
    v = inst.values
    D, T = inst.D, inst.T
    if name == "dense":
        return D
    if name == "lowrank":
        return min(v["r"], D)
    if name in ("btt", "monarch"):
        a, b, s = v["a"], v["b"], v.get("s", 1)
        return min(D, b * a * s)  # cut {i2, j1, sigma}
    if name in ("kronecker", "tt"):
        return D
    if name == "bilinear-mlr":
        return min(D, sum(r * p_l(n) for n, r in enumerate(v["ranks"], 1)))
    if name == "mlr":
        return min(T, sum(r * p_l(n) for n, r in enumerate(v["ranks"], 1)))
    if name in ("swa", "global-swa"):
        return T  # a band 0 <= t-u <= w keeps the full diagonal: lower triangular, generically invertible
    raise KeyError(name)


@pytest.mark.parametrize("name,sizes", SMALL_CASES)
def test_rank_bound_and_exact_rank_match_formula(name, sizes):
    inst = resolve(name, sizes)
    bound = rank_bound(inst)
    assert bound == expected_rank(name, inst)
    assert exact_rank(inst, bound) == bound
    d = describe(inst)
    assert d.rank_bound == bound and d.rank_numeric == bound


RANK_TORCH_CASES = [
    ("lowrank", {"T": 8, "D": 32, "r": 5}, 5),
    ("lowrank", {"T": 8, "D": 12, "r": 20}, 12),
    ("bilinear-mlr", {"T": 8, "D": 64, "levels": 4, "ranks": [2, 2, 1, 1]}, 2 + 4 + 4 + 8),
    ("bilinear-mlr", {"T": 8, "D": 64, "levels": 3, "ranks": [3, 1, 2]}, 3 + 2 + 8),
    ("bilinear-mlr", {"T": 8, "D": 16, "levels": 3, "ranks": [8, 4, 2]}, 16),  # sum r_l p_l = 24 > D
    ("mlr", {"T": 64, "D": 32, "levels": 4, "ranks": [2, 1, 1, 1]}, 2 + 2 + 4 + 8),
    ("mlr", {"T": 64, "D": 32, "levels": 3, "ranks": [5, 3, 2]}, 5 + 6 + 8),
    ("mlr", {"T": 32, "D": 32, "levels": 4, "ranks": [4, 4, 4, 2]}, 32),  # sum r_l p_l = 44 > T
    ("kronecker", {"T": 8, "D": 36}, 36),
    ("btt", {"T": 8, "D": 64, "s": 1}, 64),
    ("btt", {"T": 8, "D": 48, "s": 2, "split": "research"}, 48),
    ("monarch", {"T": 8, "D": 64}, 64),
    ("tt", {"T": 8, "D": 48, "a": 2, "b": 3, "s": 2}, 48),
    ("dense", {"T": 8, "D": 40}, 40),
    ("global-swa", {"T": 12, "D": 16, "rg": 2, "rw": 2, "window": 3}, 12),
]


@pytest.mark.parametrize("name,sizes,rank", RANK_TORCH_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_rank_against_torch_matrix_rank(name, sizes, rank):
    inst = resolve(name, sizes)
    x = reference.random_input(inst, seed=11)
    factors = reference.random_factors(inst, seed=12)
    matrix = reference.structure_matrix(inst, x, factors)
    assert matrix.shape == ((inst.D, inst.D) if inst.is_feature_structure else (inst.T, inst.T))
    numeric = int(torch.linalg.matrix_rank(torch.from_numpy(matrix).double()))
    assert numeric == rank
    bound = rank_bound(inst)
    assert bound == rank
    assert exact_rank(inst, bound) == rank


def test_exact_rank_can_fall_below_the_bound():
    """A rank-1 symmetric tridiagonal band: P o (u v^T) = diag(u) P diag(v), and the all-ones
    tridiagonal P of size 8 is singular (eigenvalue 1 + 2 cos(6 pi / 9) = 0): rank 7, bound 8."""
    text = """
size T = 8
size D = 4
size r = 1
index a: r
score = x[t, i] Q[i, a] K[j, a] x[u, j]  where -1 <= t - u <= 1
"""
    inst = resolve_text(text)
    bound = rank_bound(inst)
    assert bound == 8
    x, f = reference.random_input(inst, 5), reference.random_factors(inst, 6)
    numeric = int(torch.linalg.matrix_rank(torch.from_numpy(reference.structure_matrix(inst, x, f))))
    assert numeric == 7
    assert exact_rank(inst, bound) == 7


@pytest.mark.parametrize("lo,hi,rank", [(1, 4, 11), (3, 4, 9), (2, 2, 10), (0, 0, 12), (-2, 3, 12)])
def test_band_ranks(lo, hi, rank):
    """Strict bands lose lo rows; bands through the diagonal are full rank for r = 3."""
    text = f"""
size T = 12
size D = 6
size r = 3
index a: r
score = x[t, i] Q[i, a] K[j, a] x[u, j]  where {lo} <= t - u <= {hi}
"""
    inst = resolve_text(text)
    x, f = reference.random_input(inst, 5), reference.random_factors(inst, 6)
    numeric = int(torch.linalg.matrix_rank(torch.from_numpy(reference.structure_matrix(inst, x, f))))
    assert numeric == rank
    assert rank_bound(inst) == rank
    assert exact_rank(inst, rank) == rank


def test_exact_rank_is_not_fooled_by_a_loose_bound():
    """The sketch width follows the bound: with a bound too low by less than the margin the true
    rank still shows (large D, small bound, so the sketch is used)."""
    inst = resolve("lowrank", {"T": 8, "D": 96, "r": 6})
    assert exact_rank(inst, 6) == 6
    assert exact_rank(inst, 1) == 6  # width 9 >= 6


@pytest.mark.parametrize("n", [10, 20, 40])
def test_exact_rank_of_a_long_chain_is_the_generic_rank(n):
    """A product of n random matrices through bonds of 2 has rank 2: entries uniform modulo the
    prime keep it so (entries from {-1, 0, 1} read rank 1 at n = 10 and 0 at n = 20)."""
    inst = resolve_text(chain_text(n, D=16))
    assert rank_bound(inst) == 2
    assert [exact_rank(inst, 2, seed) for seed in range(3)] == [2, 2, 2]


def test_modular_einsum_against_python_integers():
    """The exact rank's arithmetic: einsums modulo p (batched, summed, outer and lone-summed
    indices, and sums longer than one float64 product holds) against Python integers."""
    draw = modular.Draws(0)
    cases = [
        ([("a", "b"), ("b", "c")], ("a", "c"), {"a": 3, "b": 40000, "c": 2}),
        ([("g", "t", "i"), ("i", "r"), ("g", "u", "r")], ("g", "t", "u"), {"g": 3, "t": 4, "u": 5, "i": 6, "r": 7}),
        ([("t", "s"), ("u",)], ("u", "t"), {"t": 3, "s": 4, "u": 5}),
        ([("a", "b", "c"), ("c", "d"), ("a", "d")], ("b",), {"a": 2, "b": 3, "c": 70, "d": 2}),
    ]
    for inputs, output, size in cases:
        arrays = [draw([size[i] for i in indices]) for indices in inputs]
        letter = {name: chr(97 + n) for n, name in enumerate(size)}
        spec = ",".join("".join(letter[i] for i in op) for op in inputs) + "->" + "".join(letter[i] for i in output)
        expected = np.einsum(spec, *[a.astype(object) for a in arrays]) % modular.PRIME
        np.testing.assert_array_equal(modular.einsum(inputs, output, arrays), expected.astype(np.int64))


def test_low_rank_factor_product_chain():
    """A chain x W1 W2 W3 x: the cheapest cut is the smallest bond."""
    text = """
size T = 8
size D = 20
index a: 7, b: 3, c: 9
score = x[t, i] A[i, a] B[a, b] C[b, c] E[j, c] x[u, j]
"""
    inst = resolve_text(text)
    assert rank_bound(inst) == 3
    assert exact_rank(inst, 3) == 3
    x, f = reference.random_input(inst), reference.random_factors(inst)
    assert int(torch.linalg.matrix_rank(torch.from_numpy(reference.structure_matrix(inst, x, f)))) == 3


def mlr_generic_rank(T: int, ranks: list[int]) -> int:
    """min(T, sum_l p_l r_l), each level capped by its block length T / p_l."""
    return min(T, sum(p_l(n) * min(r, T // p_l(n)) for n, r in enumerate(ranks, 1)))


mlr_configs = st.integers(1, 4).flatmap(
    lambda L: st.tuples(
        st.just(L),
        st.integers(max(L - 1, 2), 6).map(lambda e: 2**e),  # T
        st.sampled_from([8, 16, 32]),  # D
        st.lists(st.integers(1, 6), min_size=L, max_size=L),
    )
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(mlr_configs)
def test_mlr_rank_property(config):
    """Head dim sum r_l <= D (the paper's regime): the cut bound is the generic rank exactly.
    Otherwise the levels overlap inside x's column span and the bound may be loose, but stays a bound."""
    L, T, D, ranks = config
    inst = resolve("mlr", {"T": T, "D": D, "levels": L, "ranks": ranks})
    bound = rank_bound(inst)
    numeric = exact_rank(inst, bound)
    matrix = reference.structure_matrix(inst, reference.random_input(inst, 3), reference.random_factors(inst, 4))
    assert numeric == np.linalg.matrix_rank(matrix)
    assert bound >= numeric
    if sum(ranks) <= D:
        assert bound == numeric == mlr_generic_rank(T, ranks)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.sampled_from([8, 16, 32, 64]), st.data())
def test_bilinear_mlr_rank_property(L, D, data):
    ranks = data.draw(st.lists(st.integers(1, max(1, D // 2 ** (L - 1))), min_size=L, max_size=L))
    inst = resolve("bilinear-mlr", {"T": 4, "D": D, "levels": L, "ranks": ranks})
    bound = rank_bound(inst)
    assert bound == min(D, sum(r * p_l(n) for n, r in enumerate(ranks, 1)))
    assert exact_rank(inst, bound) == bound
    matrix = reference.structure_matrix(inst, reference.random_input(inst), reference.random_factors(inst, 4))
    assert np.linalg.matrix_rank(matrix) == bound


@pytest.mark.parametrize(
    "T,D,ranks,true_rank",
    [(64, 4, [4, 4, 4], 16), (256, 8, [8, 8, 8, 8], 64), (64, 4, [4, 4, 1], 10), (32, 4, [6, 5], 8)],
)
def test_mlr_rank_small_D_numeric(T, D, ranks, true_rank):
    """With sum r_l > D the MLR levels share x's column span: rank(S) <= (finest blocks) * D, below
    sum r_l p_l. The numeric rank sees it (and torch agrees); the cut bound stays an upper bound."""
    inst = resolve("mlr", {"T": T, "D": D, "levels": len(ranks), "ranks": ranks})
    bound = rank_bound(inst)
    matrix = reference.structure_matrix(inst, reference.random_input(inst, 7), reference.random_factors(inst, 8))
    assert int(torch.linalg.matrix_rank(torch.from_numpy(matrix))) == true_rank
    assert exact_rank(inst, bound) == true_rank
    assert bound >= true_rank
    assert true_rank <= 2 ** (len(ranks) - 1) * min(D, T // 2 ** (len(ranks) - 1))


@pytest.mark.parametrize(
    "T,D,ranks,rank",
    [(64, 4, [4, 4, 4], 16), (256, 8, [8, 8, 8, 8], 64), (64, 4, [4, 4, 1], 10), (32, 4, [6, 5], 8),
     (1024, 5, [32, 8, 6, 4, 4, 4, 4, 2], 448), (1024, 16, [32, 8, 6, 4, 4, 4, 4, 2], 720)],
)  # fmt: skip
def test_mlr_rank_bound_tight_for_small_D(T, D, ranks, rank):
    """sum r_l > D: the levels overlap in x's column span, so the sum of the levels' cuts is loose
    (28 vs 16 in the first case). The bound over the nested blocks sees it: it equals the exact rank
    here (the catalog's MLR at D = 5 and D = 16 included)."""
    inst = resolve("mlr", {"T": T, "D": D, "levels": len(ranks), "ranks": ranks})
    assert rank_bound(inst) == exact_rank(inst, T) == rank
    assert rank_bounds(inst)["levels"] > rank


def test_catalog_mlr_rank_bound_at_D_5():
    inst = resolve("mlr", {"T": 2048, "D": 5})
    bounds = rank_bounds(inst)
    assert bounds["levels"] == 771 and rank_bound(inst) == 448


mlr_long_blocks = st.integers(1, 4).flatmap(
    lambda L: st.tuples(
        st.just(L),
        st.integers(1, 4),  # D
        st.integers(0, 1),  # T = 2^(L-1) * D * 2^k: every finest block has at least D tokens
        st.lists(st.integers(1, 6), min_size=L, max_size=L),
    )
)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(mlr_long_blocks)
def test_mlr_rank_bound_exact_when_blocks_hold_D_tokens(config):
    """Finest blocks of at least D tokens: x cut to the blocks has full column rank, so the bound
    over the nested blocks is the generic rank (the exact rank over GF(p) and numpy's agree)."""
    L, D, k, ranks = config
    T = 2 ** (L - 1) * D * 2**k
    inst = resolve("mlr", {"T": T, "D": D, "levels": L, "ranks": ranks})
    matrix = reference.structure_matrix(inst, reference.random_input(inst, 3), reference.random_factors(inst, 4))
    assert rank_bound(inst) == exact_rank(inst, T) == np.linalg.matrix_rank(matrix)


def random_structure(data) -> str:
    """A score of 1 to 4 levels: blocks (any divisor of T, so counts need not nest), bands (through
    or beside the diagonal, past the sequence's end, each keeping a causal pair), block-diagonal
    feature maps, factors shared between levels."""
    T = data.draw(st.sampled_from([4, 6, 8, 12, 16, 18]), label="T")
    D = data.draw(st.sampled_from([1, 2, 3, 4, 6, 8]), label="D")
    lines = [f"size T = {T}", f"size D = {D}"]
    for n in range(1, data.draw(st.integers(1, 4), label="levels") + 1):
        r = data.draw(st.integers(1, 5), label="rank")
        kind = data.draw(st.sampled_from(["blocks", "band", "feature blocks", "shared"]), label="kind")
        if kind == "shared" and n > 1:  # the first level's factors again, on other blocks
            p = data.draw(st.sampled_from([d for d in range(1, T + 1) if T % d == 0]), label="p")
            lines += [f"index g{n}: {p}", f"score += x[(g{n} t), i] Q1[i, r1] K1[j, r1] x[(g{n} u), j]"]
            continue
        lines.append(f"index r{n}: {r}")
        if kind == "band":
            lo = data.draw(st.integers(-T - 1, T - 1), label="lo")
            hi = data.draw(st.integers(max(lo, 0), T + 2), label="hi")
            lines.append(f"score += x[t, i] Q{n}[i, r{n}] K{n}[j, r{n}] x[u, j]  where {lo} <= t - u <= {hi}")
            continue
        p = data.draw(st.sampled_from([d for d in range(1, T + 1) if T % d == 0]), label="p")
        lines.append(f"index g{n}: {p}")
        if kind == "feature blocks":
            k = data.draw(st.sampled_from([d for d in range(1, D + 1) if D % d == 0]), label="k")
            query, key = f"x[(g{n} t), (k{n} i)]", f"x[(g{n} u), (k{n} j)]"
            lines += [f"index k{n}: {k}", f"score += {query} L{n}[k{n}, i, r{n}] R{n}[k{n}, j, r{n}] {key}"]
        else:
            lines.append(f"score += x[(g{n} t), i] Q{n}[i, r{n}] K{n}[j, r{n}] x[(g{n} u), j]")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_every_rank_bound_holds(data):
    """Each cheap bound is at least the exact rank of a random instance (GF(p), no sketch)."""
    inst = resolve_text(random_structure(data))
    side = inst.D if inst.is_feature_structure else inst.T
    exact = exact_rank(inst, side)
    bounds = rank_bounds(inst)
    assert all(bound >= exact for bound in bounds.values()), (bounds, exact)
    assert rank_bound(inst) == min(bounds.values())


def test_exact_rank_runs_by_the_matrix_side():
    """The exact check runs when the matrix's side (D for a feature structure, else T) is within
    the limit, however long the sequence; above it, the bound is reported alone."""
    d = describe(resolve("lowrank", {"T": 1 << 20, "D": 16, "r": 3}), rank_limit=16)
    assert d.rank_numeric == 3 == d.rank_bound
    d = describe(resolve("mlr", {"T": 64, "D": 8, "levels": 2, "ranks": [2, 1]}), rank_limit=63)
    assert d.rank_numeric is None and d.rank_bound == d.rank == 4
    d = describe(resolve("mlr", {"T": 64, "D": 8, "levels": 2, "ranks": [2, 1]}), rank_limit=64)
    assert d.rank_numeric == 4


@pytest.mark.parametrize("lo,hi,rank", [(-11, 10, 4), (-9, 11, 5), (-10, 10, 5), (-8, 9, 3 + 3 + 2)])
def test_wide_band_rank(lo, hi, rank):
    """A band that keeps most pairs is the low-rank level less the pairs past its edges: rank at
    most r plus the rows holding those (1 + 0, 0 + 2, 1 + 1 and 2 + 3 here, r = 3, T = 12)."""
    inst = resolve_text(BAND_TEXT.format(T=12, lo=lo, hi=hi).replace("size r = 2", "size r = 3"))
    x, f = reference.random_input(inst, 5), reference.random_factors(inst, 6)
    numeric = int(torch.linalg.matrix_rank(torch.from_numpy(reference.structure_matrix(inst, x, f))))
    assert rank_bound(inst) == rank == numeric == exact_rank(inst, 12)


# ---------------------------------------------------------------------------------------------
# FLOPs


def step_cost(union: frozenset, kept: frozenset, operands: int, sizes: dict[str, int]) -> int:
    size = math.prod(sizes[i] for i in union)
    sums = kept != union
    if operands > 1:
        return (2 if sums else 1) * size
    return size if sums else 0


def brute_side_cost(inputs: list[tuple[str, ...]], output: tuple[str, ...], sizes: dict[str, int]) -> int:
    """Cheapest pairwise contraction order (every order tried), then the lone result to the output."""

    @cache
    def best(ops: tuple[frozenset, ...]) -> int:
        if len(ops) == 1:
            return step_cost(ops[0], frozenset(output), 1, sizes)
        costs = []
        for i, j in itertools.combinations(range(len(ops)), 2):
            rest = [op for n, op in enumerate(ops) if n not in (i, j)]
            union = ops[i] | ops[j]
            kept = frozenset(union & (set(output).union(*rest)))
            step = step_cost(union, kept, 2, sizes)
            costs.append(step + best(tuple(sorted(rest + [kept], key=sorted))))
        return min(costs)

    return best(tuple(sorted((frozenset(op) for op in inputs), key=sorted)))


def pair_count_brute(level, T: int) -> int:
    """Pairs the level scores, read off the reference materialisation (nonzero scores)."""
    inst_x = np.random.default_rng(0).standard_normal((T, math.prod(level.sizes[i] for i in level.query_features)))
    factors = {}
    rng = np.random.default_rng(1)
    for op in level.factors:
        factors[op.name] = rng.standard_normal(tuple(math.prod(level.sizes[i] for i in ax) for ax in op.axes))
    return int(np.count_nonzero(reference.level_scores(level, inst_x, factors)))


def level_mask(level, T: int) -> np.ndarray:
    D = math.prod(level.sizes[i] for i in level.query_features)
    x = np.random.default_rng(0).standard_normal((T, D))
    rng = np.random.default_rng(1)
    factors = {
        op.name: rng.standard_normal(tuple(math.prod(level.sizes[i] for i in ax) for ax in op.axes))
        for op in level.factors
    }
    return reference.level_scores(level, x, factors) != 0


def brute_level(level, T: int, pairs: int):
    """Every split of the factors between the two tokens, each side over all T tokens (so a
    product of factors alone is paid once); the cheapest score (ties: smaller interface).
    Returns (score, maps of all tokens, pair_flops)."""
    factor_ids = [n for n, op in enumerate(level.operands) if op.role == "factor"]
    options = []
    for mask in itertools.product((0, 1), repeat=len(factor_ids)):
        q_ids = [f for f, m in zip(factor_ids, mask) if m]
        k_ids = [f for f, m in zip(factor_ids, mask) if not m]
        q_inputs = [level.query_features] + [level.operands[f].indices for f in q_ids]
        k_inputs = [level.key_features] + [level.operands[f].indices for f in k_ids]
        interface = tuple(sorted(set().union(*q_inputs) & set().union(*k_inputs)))
        cost = 0
        for token, inputs in ((level.query, q_inputs), (level.key, k_inputs)):
            seq = token.axes[0]
            cost += brute_side_cost([seq + inputs[0], *inputs[1:]], seq + interface, level.sizes)
        pair = 2 * math.prod(level.sizes[i] for i in interface)
        options.append((cost + pairs * pair, pair, cost))
    score, pair, cost = min(options)
    return score, cost, pair


@pytest.mark.parametrize("name,sizes", SMALL_CASES)
def test_flops_against_brute_force_splits(name, sizes):
    """Each level's own choice is the cheapest split over the pairs it scores (every one, both
    ways: the one-level schedules compute the whole pattern), read off the reference; describe's
    scored pairs are those maps with one dot product per causal pair (u <= t)."""
    inst = resolve(name, sizes)
    T = inst.T
    flops = flop_counts(inst)
    total_token = total_pairs = 0
    for level in inst.levels:
        score, cost, pair = brute_level(level, T, pair_count_brute(level, T))
        own = plan(inst, 1, FLOPS).levels[level.number - 1]  # FLOPs only: the choice is the brute-force minimum
        factors = sum(s.flops for s in own.chosen.steps if s.part.name == "FACTORS")
        assert map_flops(own.chosen, level.number) + factors == cost
        assert pair_cost(own) == pair
        if level.band is None:  # (a band's own schedules compute whole windows of keys)
            assert own.chosen.flops == score
        total_token += cost
        total_pairs += int(np.tril(level_mask(level, T)).sum()) * pair
    assert T * flops.per_token + flops.factors == total_token
    assert flops.scored_pairs == total_token + total_pairs


def side_steps(schedule, tensor_name):
    """The steps that produce ``tensor_name``, and the leaves (x, factors) they start from."""
    by_output = {step.output.name: step for step in schedule.steps}
    steps, leaves, todo = [], [], [tensor_name]
    while todo:
        name = todo.pop()
        if name not in by_output:
            continue
        step = by_output[name]
        steps.append(step)
        for t in step.inputs:
            (todo if t.name in by_output else leaves).append(t.name if t.name in by_output else t)
    return steps, leaves


@pytest.mark.parametrize("name,sizes", SMALL_CASES)
def test_side_flops_equal_opt_einsum_cost(name, sizes):
    """Each side of every feature-map candidate costs what opt_einsum's optimal path costs for that
    side's einsum (see module doc: the two differ only on lone-operand steps, where einsearch's
    charge replaces opt_einsum's)."""
    inst = resolve(name, sizes)
    for lp in plan(inst).levels:
        for schedule in lp.candidates:
            if schedule.kind.name != "FEATURE_MAPS" or schedule.layout.name == "BAND":
                continue
            pair = next(s for s in schedule.steps if s.part.name == "PAIRS")
            for side in pair.inputs:
                steps, leaves = side_steps(schedule, side.name)
                if not steps:
                    continue
                inputs = [t.indices for t in leaves]
                names = list(dict.fromkeys(i for op in (*inputs, side.indices) for i in op))
                letter = {n: opt_einsum.get_symbol(k) for k, n in enumerate(names)}
                eq = ",".join("".join(letter[i] for i in op) for op in inputs) + "->"
                eq += "".join(letter[i] for i in side.indices)
                shapes = [tuple(schedule.sizes[i] for i in op) for op in inputs]
                _, info = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize="optimal")
                ours = 0
                for contract_inds, removed, step_eq, _, _ in info.contraction_list:
                    lhs, _ = step_eq.split("->")
                    size = math.prod(schedule.sizes[names[n]] for n, c in enumerate(letter.values())
                                     if c in lhs.replace(",", ""))  # fmt: skip
                    per = max(1, len(contract_inds) - 1) + bool(removed)  # opt_einsum.helpers.flop_count
                    ours += size * per if len(contract_inds) > 1 else (size if removed else 0)
                assert sum(s.flops for s in steps) == ours, (schedule.name, side)


def shapes_by_letter(inputs, letter, sizes) -> dict[str, int]:
    return {letter[i]: sizes[i] for op in inputs for i in op}


def expected_score(name: str, inst) -> int:
    """Closed forms of the maps and one dot product per causal pair (u <= t) the pattern scores,
    in the feature-map form (2 FLOPs per multiply-add)."""
    v, T, D = inst.values, inst.T, inst.D
    causal = T * (T + 1) // 2  # every causal pair

    def band_pairs(lo, hi):
        return sum(1 for t in range(T) for u in range(t + 1) if lo <= t - u <= hi)

    def block_pairs(p):  # p blocks of T / p tokens, each causal inside
        return T * (T // p + 1) // 2

    if name == "dense":
        return 2 * T * D * D + 2 * causal * D
    if name == "lowrank":
        return 4 * T * D * v["r"] + 2 * causal * v["r"]
    if name == "swa":
        return 4 * T * D * v["r"] + 2 * v["r"] * band_pairs(0, v["window"])
    if name == "global-swa":
        return 4 * T * D * (v["rg"] + v["rw"]) + 2 * causal * v["rg"] + 2 * v["rw"] * band_pairs(0, v["window"])
    if name == "mlr":
        ranks = v["ranks"]
        return T * 4 * D * sum(ranks) + sum(2 * block_pairs(p_l(n)) * r for n, r in enumerate(ranks, 1))
    if name == "bilinear-mlr":  # per level: 2 D r_l per token and side, pairs over p_l r_l channels
        return sum(4 * T * D * r + 2 * causal * min(D, p_l(n) * r) for n, r in enumerate(v["ranks"], 1))
    if name in ("btt", "monarch"):  # x L | x R with interface a b s, or everything on one side (interface D)
        a, b, s = v["a"], v["b"], v.get("s", 1)
        return 2 * T * D * s * (a + b) + 2 * causal * D * min(s, 1)
    if name == "kronecker":
        a, b = v["a"], v["b"]
        return 2 * T * D * (a + b) + 2 * causal * D
    raise KeyError(name)


@pytest.mark.parametrize("name,sizes", [c for c in SMALL_CASES if c.values[0] != "tt"])
def test_score_flops_closed_forms(name, sizes):
    inst = resolve(name, sizes)
    assert flop_counts(inst).scored_pairs == expected_score(name, inst)


@pytest.mark.parametrize(
    "ranks,T,D",
    [([32, 8, 6, 4, 4, 4, 4, 2], 1024, 512), ([32, 8, 6, 4, 4, 4, 4, 2], 256, 64), ([3, 5, 1], 64, 16), ([7], 8, 16)],
)
def test_mlr_score_formula(ranks, T, D):
    """docs/design.md §2: the causal MLR scores cost sum_l r_l T (T / p_l + 1) / 2 multiply-adds
    beyond the per-token maps (T^2 sum r_l / p_l for all of them, both ways)."""
    inst = resolve("mlr", {"T": T, "D": D, "levels": len(ranks), "ranks": ranks})
    f = flop_counts(inst)
    assert f.per_token == 2 * 2 * D * sum(ranks)
    pairs = sum(r * T * (T // 2 ** (n - 1) + 1) for n, r in enumerate(ranks, 1))
    assert f.scored_pairs == T * f.per_token + pairs
    # against a standard head of the same r = sum r_l: strictly cheaper whenever there are > 1 levels
    std = flop_counts(resolve("lowrank", {"T": T, "D": D, "r": sum(ranks)}))
    assert (f.scored_pairs < std.scored_pairs) == (len(ranks) > 1 and any(ranks[1:]))


def level_choices(inst) -> int:
    """FLOPs of every level's own choice among its one-level schedules (each computing its whole
    pattern, both ways): what these torch programs compute, against which the plan is measured."""
    return sum(lp.chosen.flops for lp in plan(inst).levels)


def count_flops(fn) -> tuple[int, torch.Tensor]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def torch_factors(inst, seed=0):
    return {k: torch.from_numpy(v) for k, v in reference.random_factors(inst, seed).items()}


def check_against_reference(inst, x, factors, scores):
    ref = reference.score_matrix(inst, x.numpy(), {k: v.numpy() for k, v in factors.items()}, scaled=False)
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("D,r,T", [(32, 5, 16), (24, 24, 8), (16, 40, 12)])
def test_flop_counter_lowrank(D, r, T):
    inst = resolve("lowrank", {"T": T, "D": D, "r": r})
    f, x = torch_factors(inst), torch.from_numpy(reference.random_input(inst))

    orders = [
        lambda: (x @ f["WQ"]) @ (x @ f["WK"]).T,  # x WQ, x WK, q k^T
        lambda: (x @ f["WQ"]) @ f["WK"].T @ x.T,  # both factors on the query side, a dot product over D
        lambda: x @ (f["WQ"] @ f["WK"].T) @ x.T,  # M = WQ WK^T once, then x M, then a dot product over D
    ]
    counts = []
    for run in orders:
        counted, scores = count_flops(run)
        check_against_reference(inst, x, f, scores)
        counts.append(counted)
    assert level_choices(inst) == min(counts)
    assert counts[0] == 4 * T * D * r + 2 * T * T * r


@pytest.mark.parametrize("D,T", [(16, 8), (24, 32)])
def test_flop_counter_dense(D, T):
    inst = resolve("dense", {"T": T, "D": D})
    f, x = torch_factors(inst), torch.from_numpy(reference.random_input(inst))
    counted, scores = count_flops(lambda: x @ (x @ f["W"].T).T)  # k_u = W x_u, then x_t . k_u
    check_against_reference(inst, x, f, scores)
    assert counted == level_choices(inst)


@pytest.mark.parametrize("D,s,split,T", [(64, 1, "balanced", 16), (48, 1, "research", 8), (36, 2, "balanced", 8),
                                         (96, 3, "research", 16)])  # fmt: skip
def test_flop_counter_btt(D, s, split, T):
    """Two torch programs: query and key maps meeting at (i2, j1, sigma), or the whole of M applied to
    the key (interface D); the analyzer's score is the cheaper of the two."""
    inst = resolve("btt", {"T": T, "D": D, "s": s, "split": split})
    a, b = inst.values["a"], inst.values["b"]
    f, x = torch_factors(inst), torch.from_numpy(reference.random_input(inst))
    L, R = f["L"], f["R"]  # L[i2, i1, j1, k], R[j1, j2, i2, k]

    def two_sided():
        xq = x.reshape(T, a, b).permute(2, 0, 1)  # (i2, t, i1)
        q = torch.bmm(xq, L.reshape(b, a, a * s))  # (i2, t, j1 k)
        xk = x.reshape(T, a, b).permute(1, 0, 2)  # (j1, u, j2)
        k = torch.bmm(xk, R.reshape(a, b, b * s))  # (j1, u, i2 k)
        q = q.reshape(b, T, a, s).permute(1, 0, 2, 3).reshape(T, -1)  # (t, [i2 j1 k])
        k = k.reshape(a, T, b, s).permute(1, 2, 0, 3).reshape(T, -1)  # (u, [i2 j1 k])
        return q @ k.T

    def key_only():
        xk = x.reshape(T, a, b).permute(1, 0, 2)  # (j1, u, j2)
        k = torch.bmm(xk, R.reshape(a, b, b * s))  # (j1, u, i2 k)
        k = k.reshape(a, T, b, s).permute(2, 1, 0, 3).reshape(b, T, a * s)  # (i2, u, [j1 k])
        m = torch.bmm(k, L.permute(0, 2, 3, 1).reshape(b, a * s, a))  # (i2, u, i1)
        m = m.permute(1, 2, 0).reshape(T, D)  # (u, [i1 i2])
        return x @ m.T

    counts = []
    for program in (two_sided, key_only):
        counted, scores = count_flops(program)
        check_against_reference(inst, x, f, scores)
        counts.append(counted)
    assert counts[0] == 2 * T * D * s * (a + b) + 2 * T * T * a * b * s
    assert counts[1] == 2 * T * D * s * (a + b) + 2 * T * T * D
    assert level_choices(inst) == min(counts)


@pytest.mark.parametrize("D,T,ranks", [(64, 16, [2, 2, 1, 1]), (32, 8, [8, 4, 4]), (16, 8, [8, 8])])
def test_flop_counter_bilinear_mlr(D, T, ranks):
    inst = resolve("bilinear-mlr", {"T": T, "D": D, "levels": len(ranks), "ranks": ranks})
    f, x = torch_factors(inst), torch.from_numpy(reference.random_input(inst))
    counted_total, total = 0, torch.zeros(T, T, dtype=torch.float64)
    for n, r in enumerate(ranks, 1):
        p = p_l(n)
        Lf, Rf = f[f"L_{n}"], f[f"R_{n}"]  # (k, i, r)

        def level(p=p, Lf=Lf, Rf=Rf, r=r):
            xb = x.reshape(T, p, D // p).permute(1, 0, 2)  # (k, t, i)
            if r * p <= D:  # maps to (k, r) on both sides
                q, k = torch.bmm(xb, Lf), torch.bmm(xb, Rf)  # (k, t, r)
                return q.permute(1, 0, 2).reshape(T, -1) @ k.permute(1, 0, 2).reshape(T, -1).T
            m = torch.bmm(torch.bmm(xb, Rf), Lf.transpose(1, 2))  # key side through R then L: (k, u, i)
            return x @ m.permute(1, 0, 2).reshape(T, D).T

        counted, scores = count_flops(level)
        counted_total += counted
        total += scores
        assert counted == 4 * T * D * r + 2 * T * T * min(D, p * r)
    check_against_reference(inst, x, f, total)
    assert level_choices(inst) == counted_total


@pytest.mark.parametrize("D,T,ranks", [(16, 16, [2, 1, 1]), (32, 64, [4, 2, 2, 1])])
def test_flop_counter_mlr_blocks(D, T, ranks):
    """Block levels as batched matmuls over the 2^(l-1) sequence blocks."""
    inst = resolve("mlr", {"T": T, "D": D, "levels": len(ranks), "ranks": ranks})
    f, x = torch_factors(inst), torch.from_numpy(reference.random_input(inst))
    counted_total, total = 0, torch.zeros(T, T, dtype=torch.float64)
    for n, _ in enumerate(ranks, 1):
        p = p_l(n)
        Q, K = f[f"Q_{n}"], f[f"K_{n}"]

        def level(p=p, Q=Q, K=K):
            q, k = (x @ Q).reshape(p, T // p, -1), (x @ K).reshape(p, T // p, -1)
            return torch.block_diag(*torch.bmm(q, k.transpose(1, 2)))

        counted, scores = count_flops(level)
        counted_total += counted
        total += scores
    check_against_reference(inst, x, f, total)
    assert level_choices(inst) == counted_total


@pytest.mark.parametrize("D,T", [(36, 8), (48, 16)])
def test_flop_counter_kronecker(D, T):
    inst = resolve("kronecker", {"T": T, "D": D})
    a, b = inst.values["a"], inst.values["b"]
    f, x = torch_factors(inst), torch.from_numpy(reference.random_input(inst))

    def run():  # k_u = (A (x) B) x_u as B X A^T per token, then x_t . k_u
        X = x.reshape(T, a, b)
        k = torch.matmul(torch.matmul(f["A"], X), f["B"].T)  # (u, i1, i2)
        return x @ k.reshape(T, D).T

    counted, scores = count_flops(run)
    check_against_reference(inst, x, f, scores)
    assert counted == 2 * T * D * (a + b) + 2 * T * T * D
    assert level_choices(inst) == counted


# ---------------------------------------------------------------------------------------------
# Formulas


@pytest.mark.parametrize("name,sizes", SMALL_CASES)
def test_formulas_evaluate_to_the_counts(name, sizes):
    inst = resolve(name, sizes)
    f = formulas(plan(inst))
    counts = flop_counts(inst, DEFAULT_COST)
    assert evaluate(f.params, inst) == params(inst)
    assert evaluate(f.per_token, inst) == counts.per_token
    assert evaluate(f.factors, inst) == counts.factors
    assert evaluate(f.scored_pairs, inst) == counts.scored_pairs


@pytest.mark.parametrize("name", ["btt", "kronecker", "monarch"])
def test_formulas_fold_the_split(name):
    inst = resolve(name, {"D": 96, "T": 8})
    f = formulas(plan(inst))
    assert f.splits == ("D = a*b = 8 x 12",)


BAND_TEXT = """
size T = {T}
size D = 6
size r = 2
index a: r
score = x[t, i] Q[i, a] K[j, a] x[u, j]  where {lo} <= t - u <= {hi}
"""


@pytest.mark.parametrize(
    "lo,hi",
    [
        (0, 3),
        (-2, 3),
        (1, 4),
        (0, 0),
        (-5, 5),
        (2, 20),
        (-40, 40),
        (0, 7),
        (-7, 12),
        (7, 20),
    ],
)
@pytest.mark.parametrize("T", [8, 13])
def test_band_counts_and_formula(lo, hi, T):
    inst = resolve_text(BAND_TEXT.format(T=T, lo=lo, hi=hi))
    pairs = sum(1 for t in range(T) for u in range(t + 1) if lo <= t - u <= hi)
    flops = flop_counts(inst)
    assert flops.scored_pairs == T * 4 * 6 * 2 + pairs * 2 * 2
    f = formulas(plan(inst))
    assert evaluate(f.scored_pairs, inst) - T * evaluate(f.per_token, inst) == pairs * 2 * 2
    assert evaluate(f.scored_pairs, inst) == flops.scored_pairs


@pytest.mark.parametrize("lo,hi", [(-3, -1), (-30, -4), (-20, -14), (14, 20), (13, 13)])
def test_a_band_with_no_causal_pair_is_refused(lo, hi):
    """Keys only after their query, or only beyond the sequence: after the causal mask the level
    scores nothing, so resolving refuses it, at the band, saying why (T = 13)."""
    why = "comes after its query" if hi < 0 else "t - u is at most T - 1 = 12"
    with pytest.raises(DSLError, match=rf"^custom:6:48: the band {lo} <= t - u <= {hi} scores no pair: .*{why}"):
        resolve_text(BAND_TEXT.format(T=13, lo=lo, hi=hi), source="custom")
    assert SequencePattern(1, (lo, hi)).causal_count(13) == 0 < SequencePattern(1, (lo, hi)).count(50)


@pytest.mark.parametrize("window", [31, 32, 40])
def test_swa_window_at_least_T(window):
    """A window wider than the sequence keeps every causal pair, and the formula must say so too."""
    T, D, r = 32, 8, 2
    inst = resolve("swa", {"T": T, "D": D, "r": r, "window": window})
    causal = T * (T + 1) // 2
    assert flop_counts(inst).scored_pairs == 4 * T * D * r + 2 * r * causal
    assert evaluate(formulas(plan(inst)).scored_pairs, inst) == flop_counts(inst).scored_pairs


def test_maps_that_share_no_index_score_a_pair_with_one_channel():
    """A rank-1 two-core einsum: q_t = x_t . A and k_u = x_u . B are numbers, so its pairs run as
    attention over one channel (2 FLOPs a pair, a multiply-add), one causal call over the
    sequence. The score counts that call whole; scored pairs count the causal pairs; neither is
    smaller than the other the wrong way round (they used to read score 8,388,608 against scored
    pairs 12,582,912 at T = 2048, D = 512)."""
    T, D = 64, 8
    inst = resolve_text(f"size T = {T}\nsize D = {D}\nscore = x[t, b] A[b] B[d] x[u, d]\n")
    maps = 2 * (2 * T * D)  # two maps of T x D multiply-adds
    d = describe(inst)
    assert d.flops.score == maps + 2 * T * T
    assert d.flops.scored_pairs == maps + 2 * (T * (T + 1) // 2) <= d.flops.score
    assert evaluate(d.formulas.scored_pairs, inst) == d.flops.scored_pairs
    assert set(d.profile.flops) == {2}


def test_levels_on_one_pattern_share_one_call():
    """Two such levels: their maps concatenated into 2 channels, one causal call, a pair a dot
    product of 2 (4 FLOPs)."""
    T, D = 64, 8
    text = f"size T = {T}\nsize D = {D}\nscore = x[t, b] A[b] B[d] x[u, d]\nscore += x[t, b] C[b] E[d] x[u, d]\n"
    inst = resolve_text(text)
    chosen = plan(inst)
    (partition,) = chosen.schedules
    assert pair_flops(partition) == {1: 2, 2: 2}
    assert len(partition.tiling.calls) == 1 and partition.tiling.calls[0].levels == (0, 1)
    maps = chosen.part_flops(Part.QUERY, Part.KEY)
    assert chosen.flops == maps + 4 * T * T
    assert flop_counts(inst, DEFAULT_COST).scored_pairs == maps + 4 * (T * (T + 1) // 2)


# ---------------------------------------------------------------------------------------------
# Family


def family_rows(inst):
    return [(f.sequence, f.blocks, f.band, f.feature, f.rank) for f in map(level_family, inst.levels)]


def test_family_mlr():
    ranks = [4, 3, 2, 1]
    inst = resolve("mlr", {"T": 64, "D": 16, "levels": 4, "ranks": ranks})
    fams = [level_family(lv) for lv in inst.levels]
    assert [f.sequence for f in fams] == ["global", "blocks", "blocks", "blocks"]
    assert [f.blocks for f in fams] == [p_l(n) for n in range(1, 5)]
    for f, r in zip(fams, ranks):
        assert "low rank" in f.feature and str(r) in f.feature and "block" not in f.feature
        assert f.rank == r and f.band is None and f.window is None


def test_family_bilinear_mlr():
    ranks = [4, 3, 2, 1]
    inst = resolve("bilinear-mlr", {"T": 8, "D": 64, "levels": 4, "ranks": ranks})
    fams = [level_family(lv) for lv in inst.levels]
    assert all(f.sequence == "global" and f.blocks == 1 for f in fams)
    assert fams[0].feature == "low rank 4"
    for n, (f, r) in enumerate(zip(fams[1:], ranks[1:]), 2):
        assert f.feature.startswith("block-diagonal") and "low rank" in f.feature
        assert f"({p_l(n)} blocks)" in f.feature and f"low rank {r}" in f.feature
    assert [f.rank for f in fams] == [r * p_l(n) for n, r in enumerate(ranks, 1)]


@pytest.mark.parametrize("window", [0, 3, 7])
def test_family_swa(window):
    (fam,) = map(level_family, resolve("swa", {"T": 16, "D": 8, "r": 2, "window": window}).levels)
    assert fam.sequence == "band" and fam.band == (0, window) and fam.window == window + 1
    assert fam.feature == "low rank 2"
    g, w = map(level_family, resolve("global-swa", {"T": 16, "D": 8, "rg": 3, "rw": 2, "window": window}).levels)
    assert (g.sequence, g.band, g.feature) == ("global", None, "low rank 3")
    assert (w.sequence, w.band, w.window, w.feature) == ("band", (0, window), window + 1, "low rank 2")


@pytest.mark.parametrize(
    "name,sizes,word",
    [("dense", {"D": 16}, "dense"), ("lowrank", {"D": 16, "r": 3}, "low rank 3"), ("btt", {"D": 64, "s": 2}, "BTT"),
     ("btt", {"D": 64, "s": 1}, "BTT"), ("monarch", {"D": 64}, "BTT"), ("kronecker", {"D": 36}, "Kronecker"),
     ("tt", {"D": 64, "a": 4, "b": 4, "s": 2}, "tensor train")],
)  # fmt: skip
def test_family_feature_class(name, sizes, word):
    (fam,) = map(level_family, resolve(name, dict(sizes, T=8)).levels)
    assert word in fam.feature
    assert fam.sequence == "global" and fam.blocks == 1
    if word != "low rank 3":
        assert "low rank" not in fam.feature


RENAMES = {
    # name: (factor renames, index renames)
    "btt": ({"L": "Left", "R": "Right"}, {"i1": "p", "i2": "q", "j1": "v", "j2": "w", "k": "bond"}),
    "kronecker": ({"A": "Big", "B": "Small"}, {"i1": "m", "j1": "n"}),
    "lowrank": ({"WQ": "Foo", "WK": "Bar"}, {"a": "h"}),
    "dense": ({"W": "Z"}, {}),
    "mlr": ({"Q": "U", "K": "V"}, {"g": "blk"}),
    "bilinear-mlr": ({"L": "P", "R": "S"}, {"k": "blk"}),
    "swa": ({"WQ": "A1", "WK": "A2"}, {}),
    "global-swa": ({"QG": "P1", "KG": "P2", "QW": "P3", "KW": "P4"}, {}),
    "monarch": ({"L": "Right", "R": "Left"}, {}),
    "tt": ({"G1": "C", "G2": "B", "G3": "A"}, {"k": "bond1", "m": "bond2"}),
}


def rename(text: str, mapping: dict[str, str]) -> str:
    score_lines = []
    for line in text.splitlines():
        if line.strip().startswith(("score", "index")):
            for old, new in mapping.items():
                line = re.sub(rf"(?<![\w.]){re.escape(old)}(?!\w)", new, line)
        score_lines.append(line)
    return "\n".join(score_lines) + "\n"


@pytest.mark.parametrize("name,sizes", SMALL_CASES)
def test_family_does_not_depend_on_names(name, sizes):
    text = (catalog.catalog_dir() / f"{name}.ein").read_text()
    factors, indices = RENAMES[name]
    renamed = rename(rename(text, factors), indices)
    assert renamed != text or not (factors or indices)
    copy = from_text(renamed, name="foo").resolve(dict(sizes))
    original = resolve(name, sizes)
    assert family_rows(copy) == family_rows(original)
    assert params(copy) == params(original)
    assert flop_counts(copy) == flop_counts(original)
    assert rank_bound(copy) == rank_bound(original)
    # the catalog text, unchanged but under another name, too
    same = from_text(text, name="foo").resolve(dict(sizes))
    assert family_rows(same) == family_rows(original)


def test_family_btt_with_factors_listed_in_reverse():
    text = """
size T = 8
size D = 64
index i1: 8, j1: 8, i2: 8, j2: 8, k: 2
score = x[t, (i1 i2)] R[j1, j2, i2, k] L[i2, i1, j1, k] x[u, (j1 j2)]
"""
    (fam,) = family_rows(resolve_text(text))
    assert fam[:3] == ("global", 1, None) and "BTT" in fam[3] and fam[4] == 64


def test_family_kronecker_with_transposed_factor_axes():
    text = """
size T = 8
size D = 24
index i1: 4, j1: 4, i2: 6, j2: 6
score = x[t, (i1 i2)] A[j1, i1] B[j2, i2] x[u, (j1 j2)]
"""
    (fam,) = family_rows(resolve_text(text))
    assert fam[3] == "Kronecker" and fam[4] == 24


# ---------------------------------------------------------------------------------------------
# Sequence patterns: the pair rule, against every (t, u)


def rule_by_hand(T: int, blocks: int, band, t: int, u: int) -> bool:
    """t and u in the same of ``blocks`` contiguous equal blocks, and lo <= t - u <= hi."""
    inside = 0 <= t < T and 0 <= u < T and t // (T // blocks) == u // (T // blocks)
    return inside and (band is None or band[0] <= t - u <= band[1])


bands = st.one_of(st.none(), st.tuples(st.integers(-40, 40), st.integers(0, 45)).map(lambda a: (a[0], a[0] + a[1])))
patterns = st.tuples(st.integers(1, 5), st.integers(1, 8), bands).map(lambda a: (a[0] * a[1], a[0], a[2]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(patterns, st.data())
def test_sequence_pattern_brute_force(case, data):
    """Every count of the rule against a loop over all (t, u): bands through, beside and past the
    sequence (negative lo, hi >= T, bands that miss every pair), blocks with and without a band."""
    T, blocks, band = case
    pattern = SequencePattern(blocks, band)
    positions = range(-2, T + 2)  # two beyond each end of the sequence
    inside = np.array([[rule_by_hand(T, blocks, band, t, u) for u in positions] for t in positions], dtype=bool)
    mask = inside[2:-2, 2:-2]
    np.testing.assert_array_equal(pattern.mask(T), mask)
    assert [[bool(pattern.covers(T, t, u)) for u in positions] for t in positions] == inside.tolist()
    grid = np.arange(-2, T + 2)
    np.testing.assert_array_equal(pattern.covers(T, grid[:, None], grid[None, :]), inside)
    torch_positions = torch.arange(T)
    assert torch.equal(pattern.covers(T, torch_positions[:, None], torch_positions[None, :]), torch.from_numpy(mask))
    assert pattern.count(T) == int(mask.sum())
    assert pattern.rows(T) == int(mask.any(axis=1).sum())
    gap = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    at = [int((mask & (gap == d)).sum()) for d in range(T + 2)]
    assert [pattern.count_at_distance(T, d) for d in range(T + 2)] == at
    assert pattern.count_at_distance(T, np.arange(T + 2)).tolist() == at
    for d in range(2, T - 1):  # the distances where the count bends or jumps are listed
        if at[d - 1] + at[d + 1] != 2 * at[d]:
            assert d in pattern.changes(T)
    rectangles = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(-3, T + 4, (20, 4))
    for t0, t1, u0, u1 in rectangles.tolist():
        expected = int(mask[max(t0, 0) : max(t1, 0), max(u0, 0) : max(u1, 0)].sum())
        assert pattern.count_in(T, t0, t1, u0, u1) == expected
    edges = np.arange(T + 1)
    cells = pattern.count_in(T, edges[:-1, None], edges[1:, None], edges[None, :-1], edges[None, 1:])
    np.testing.assert_array_equal(cells, mask.astype(int))
    rows = sorted(set(data.draw(st.lists(st.integers(0, T), min_size=2, max_size=6), label="row edges")))
    cols = sorted(set(data.draw(st.lists(st.integers(0, T), min_size=2, max_size=6), label="column edges")))
    expected = [[int(mask[a:b, c:e].sum()) for c, e in zip(cols, cols[1:])] for a, b in zip(rows, rows[1:])]
    assert pattern.count_grid(T, rows, cols).tolist() == expected


HUGE = 1 << 40


@pytest.mark.parametrize("blocks", [1, 2, 1 << 10, 1 << 39, HUGE])
def test_sequence_pattern_blocks_at_huge_T(blocks):
    """p blocks of T / p: T^2 / p pairs, 2 p (T/p - d) at distance 0 < d < T/p."""
    pattern = SequencePattern(blocks)
    B = HUGE // blocks
    assert pattern.count(HUGE) == HUGE * HUGE // blocks
    assert pattern.rows(HUGE) == HUGE
    assert pattern.count_at_distance(HUGE, 0) == HUGE
    for d in {1, B // 2, B - 1, B, B + 1, HUGE - 1} - {0}:
        assert pattern.count_at_distance(HUGE, d) == (2 * blocks * (B - d) if 0 < d < B else 0)
    # the first half of the queries against every key: half of the blocks' pairs
    assert pattern.count_in(HUGE, 0, HUGE // 2, 0, HUGE) == HUGE * HUGE // blocks // 2
    # a 2 x 2 grid of the plane, from arrays of Python ints (no int64 overflow): with blocks, the
    # off-diagonal quadrants hold no pair and the diagonal ones half of them each
    edges = np.array([0, HUGE // 2, HUGE], dtype=object)
    grid = pattern.count_in(HUGE, edges[:-1, None], edges[1:, None], edges[None, :-1], edges[None, 1:])
    half, quarter = HUGE * HUGE // blocks // 2, HUGE * HUGE // 4
    expected = [[half, 0], [0, half]] if blocks > 1 else [[quarter, quarter], [quarter, quarter]]
    assert grid.tolist() == expected


@pytest.mark.parametrize(
    "lo,hi", [(0, 128), (-7, 300), (-300, -2), (HUGE - 5, HUGE + 3), (-HUGE - 2, 1 - HUGE), (HUGE, HUGE + 9), (5, 5)]
)
def test_sequence_pattern_band_at_huge_T(lo, hi):
    """A band's pairs summed diagonal by diagonal (T - |k| on t - u = k), and a window of the plane
    far down the diagonal counted position by position."""
    pattern = SequencePattern(1, (lo, hi))
    assert pattern.count(HUGE) == sum(max(0, HUGE - abs(k)) for k in range(lo, hi + 1))
    for d in (0, 1, 5, 128, 129, HUGE - 1):
        diagonals = sum(1 for k in {d, -d} if lo <= k <= hi)
        assert pattern.count_at_distance(HUGE, d) == diagonals * (HUGE - d)
    start = HUGE // 3
    for t0, t1, u0, u1 in [(start, start + 40, start - 10, start + 50), (HUGE - 30, HUGE + 5, HUGE - 40, HUGE)]:
        expected = sum(1 for t in range(t0, min(t1, HUGE)) for u in range(u0, min(u1, HUGE)) if lo <= t - u <= hi)
        assert pattern.count_in(HUGE, t0, t1, u0, u1) == expected


# ---------------------------------------------------------------------------------------------
# Compute pattern


def brute_pair_flops(inst) -> np.ndarray:
    """c(t, u): for each level, the pair's dot product over the brute-force split's interface,
    where the reference materialisation of that level is nonzero."""
    T = inst.T
    grid = np.zeros((T, T), dtype=np.int64)
    for level in inst.levels:
        mask = level_mask(level, T)
        _, _, pair = brute_level(level, T, int(mask.sum()))
        grid += pair * mask
    return grid


def profile_of(grid: np.ndarray) -> list[float]:
    T = grid.shape[0]
    out = []
    for d in range(T):
        cells = [grid[t, u] for t in range(T) for u in range(T) if abs(t - u) == d]
        out.append(float(Fraction(int(sum(cells)), len(cells))))
    return out


PATTERN_CASES = [
    ("mlr", {"T": 32, "D": 8, "levels": 4, "ranks": [4, 3, 2, 1]}),
    ("mlr", {"T": 64, "D": 8, "levels": 3, "ranks": [5, 1, 2]}),
    ("swa", {"T": 24, "D": 8, "r": 3, "window": 5}),
    ("swa", {"T": 16, "D": 8, "r": 3, "window": 0}),
    ("swa", {"T": 16, "D": 8, "r": 3, "window": 20}),
    ("global-swa", {"T": 32, "D": 8, "rg": 2, "rw": 3, "window": 7}),
    ("lowrank", {"T": 16, "D": 8, "r": 3}),
    ("bilinear-mlr", {"T": 16, "D": 32, "levels": 3, "ranks": [2, 1, 1]}),
    ("btt", {"T": 16, "D": 16, "s": 2}),
]


@pytest.mark.parametrize("name,sizes", PATTERN_CASES)
def test_distance_profile_brute_force(name, sizes):
    inst = resolve(name, sizes)
    grid = brute_pair_flops(inst)
    profile = distance_profile(inst)
    assert profile.distance == list(range(inst.T))
    assert profile.flops == profile_of(grid)
    counts = flop_counts(inst)
    pairs = counts.scored_pairs - inst.T * counts.per_token - counts.factors
    assert np.tril(np.asarray(grid)).sum() == pytest.approx(pairs, rel=1e-12)  # the causal pairs' FLOPs


@pytest.mark.parametrize("lo,hi", [(-2, 3), (1, 4), (-3, 0), (0, 0), (-5, 5), (2, 20)])
def test_distance_profile_custom_bands(lo, hi):
    inst = resolve_text(BAND_TEXT.format(T=12, lo=lo, hi=hi))
    assert distance_profile(inst).flops == profile_of(brute_pair_flops(inst))
    np.testing.assert_array_equal(pair_flops_grid(inst, cells=12), brute_pair_flops(inst))


@pytest.mark.parametrize("name,sizes", PATTERN_CASES)
@pytest.mark.parametrize("cells", [4, 8])
def test_pair_flops_grid_brute_force(name, sizes, cells):
    inst = resolve(name, sizes)
    T = inst.T
    grid = brute_pair_flops(inst).astype(float)
    c = T // cells
    expected = grid.reshape(cells, c, cells, c).mean(axis=(1, 3))
    np.testing.assert_allclose(pair_flops_grid(inst, cells=cells), expected, rtol=1e-12, atol=0)


def test_mlr_pair_cost_is_distance_dependent():
    """docs/design.md §2: pair (t, u) costs sum of r_l over the levels where t and u share a block (x2 FLOPs)."""
    ranks = [4, 3, 2, 1]
    T = 16
    inst = resolve("mlr", {"T": T, "D": 8, "levels": 4, "ranks": ranks})
    grid = pair_flops_grid(inst, cells=T)
    for t in range(T):
        for u in range(T):
            shared = sum(r for n, r in enumerate(ranks, 1) if t // (T // p_l(n)) == u // (T // p_l(n)))
            assert grid[t, u] == 2 * shared
    profile = distance_profile(inst).flops
    assert profile[0] == 2 * sum(ranks)
    assert all(a >= b for a, b in zip(profile, profile[1:]))  # nearby pairs get more compute
    assert profile[-1] == 2 * ranks[0]


def profile_at(grid: np.ndarray, distances) -> list[float]:
    """Mean of c(t, u) over the pairs at each distance, read off a brute-force grid."""
    T = grid.shape[0]
    gap = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    return [float(Fraction(int(grid[gap == d].sum()), int((gap == d).sum()))) for d in distances]


LONG_CASES = [
    ("mlr", {"T": 256, "D": 8, "levels": 4, "ranks": [4, 3, 2, 1]}),
    ("mlr", {"T": 96, "D": 8, "levels": 2, "ranks": [3, 1]}),
    ("swa", {"T": 200, "D": 8, "r": 3, "window": 37}),
    ("global-swa", {"T": 150, "D": 8, "rg": 2, "rw": 3, "window": 20}),
    ("lowrank", {"T": 100, "D": 8, "r": 3}),
]


@pytest.mark.parametrize("name,sizes", LONG_CASES)
def test_distance_profile_long_T_brute_force(name, sizes):
    """Past 64 tokens the profile lists log-spaced distances (and T - 1, and where a level starts or
    stops), each value exact against the brute-force grid."""
    inst = resolve(name, sizes)
    T = inst.T
    profile = distance_profile(inst)
    d = profile.distance
    assert d[:7] == [0, 1, 2, 3, 4, 6, 8] and d[-1] == T - 1 and d == sorted(set(d)) and len(d) <= 40
    assert {2**k for k in range(T.bit_length()) if 2**k < T} <= set(d)
    grid = brute_pair_flops(inst)
    assert profile.flops == profile_at(grid, d)
    every = distance_profile(inst, range(T))  # every distance, when asked for
    assert every.distance == list(range(T)) and every.flops == profile_at(grid, range(T))
    if "window" in sizes:
        assert {sizes["window"], sizes["window"] + 1} <= set(d)  # both sides of the band's edge


@pytest.mark.parametrize("lo,hi", [(-7, 13), (30, 41), (-90, 70), (-5, 200)])
def test_distance_profile_long_T_custom_bands(lo, hi):
    inst = resolve_text(BAND_TEXT.format(T=100, lo=lo, hi=hi))
    profile = distance_profile(inst)
    assert profile.flops == profile_at(brute_pair_flops(inst), profile.distance)
    edges = {abs(e) for e in (lo - 1, lo, hi, hi + 1) if abs(e) < 100} - {0}
    assert edges <= set(profile.distance)


@pytest.mark.parametrize("name,sizes", LONG_CASES + [("mlr", {"T": 64, "D": 8, "levels": 3, "ranks": [5, 1, 2]})])
@pytest.mark.parametrize("cells", [7, 16])
def test_pair_flops_grid_uneven_cells(name, sizes, cells):
    """Cells of unequal size (edges at k T // cells): the exact mean of c(t, u) over each."""
    inst = resolve(name, sizes)
    T = inst.T
    grid = brute_pair_flops(inst)
    edges = [k * T // cells for k in range(cells + 1)]
    expected = [[float(Fraction(int(grid[a:b, c:e].sum()), (b - a) * (e - c))) for c, e in zip(edges, edges[1:])]
                for a, b in zip(edges, edges[1:])]  # fmt: skip
    assert pair_flops_grid(inst, cells=cells).tolist() == expected


def test_pattern_at_huge_T_closed_forms():
    """T = 2^40: the MLR profile is sum_l 2 r_l p_l (T/p_l - d) over the pairs at distance d, and
    each heatmap cell is 2 r_l where a level's block holds the whole cell (16 / p_l of it for blocks
    smaller than a cell, on the diagonal)."""
    ranks = [3, 1, 2, 1, 1, 2, 1, 1]
    inst = resolve("mlr", {"T": HUGE, "D": 16, "levels": len(ranks), "ranks": ranks})
    profile = distance_profile(inst)
    assert len(profile.distance) <= 128 and profile.distance[-1] == HUGE - 1
    for d, flops in zip(profile.distance, profile.flops):
        diagonals = 1 if d == 0 else 2
        covered = sum(2 * r * p_l(n) * max(0, HUGE // p_l(n) - d) * diagonals for n, r in enumerate(ranks, 1))
        assert flops == covered / (HUGE if d == 0 else 2 * (HUGE - d))
    grid = pair_flops_grid(inst, cells=16)
    for a in range(16):
        for b in range(16):
            expected = Fraction(0)
            for n, r in enumerate(ranks, 1):
                p = p_l(n)
                if p <= 16 and a // (16 // p) == b // (16 // p):
                    expected += 2 * r
                elif p > 16 and a == b:
                    expected += Fraction(2 * r * 16, p)
            assert grid[a, b] == float(expected)
    swa = resolve("swa", {"T": HUGE, "D": 8, "r": 3, "window": 100})
    profile = distance_profile(swa)
    expected = {0: 6, 1: 3, 100: 3, 101: 0, HUGE - 1: 0}
    assert {d: f for d, f in zip(profile.distance, profile.flops) if d in expected} == expected


# ---------------------------------------------------------------------------------------------
# Taxonomy


def taxonomy_by_hand(D: int, P: int, C_macs: int, R: int) -> tuple[float, float, float]:
    """docs/design.md §2: psi = log R / log D, omega = log(C/P) / log D, nu = log(C/D) / log D."""
    log_d = math.log(D)
    return math.log(R) / log_d, math.log(C_macs / P) / log_d, math.log(C_macs / D) / log_d


@pytest.mark.parametrize("D", [16, 64, 144])
def test_taxonomy_dense(D):
    tax = describe(resolve("dense", {"T": 8, "D": D})).taxonomy
    assert (tax.psi, tax.omega, tax.nu) == pytest.approx((1.0, 0.0, 1.0), abs=1e-12)


@pytest.mark.parametrize("D", [16, 64, 256])
def test_taxonomy_kronecker_balanced(D):
    """a = b = sqrt D: P = 2D, C = 2 D^(3/2) (x.A on one token, x.B on the other): omega = 1/2."""
    tax = describe(resolve("kronecker", {"T": 8, "D": D})).taxonomy
    root = math.isqrt(D)
    expected = taxonomy_by_hand(D, 2 * D, 2 * D * root, D)
    assert tax.omega == pytest.approx(0.5, abs=1e-12)
    assert (tax.psi, tax.omega, tax.nu) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("D,r", [(64, 8), (256, 64), (36, 1)])
def test_taxonomy_lowrank(D, r):
    tax = describe(resolve("lowrank", {"T": 8, "D": D, "r": r})).taxonomy
    assert (tax.psi, tax.omega, tax.nu) == pytest.approx(taxonomy_by_hand(D, 2 * D * r, 2 * D * r, r), abs=1e-12)
    assert tax.psi == pytest.approx(math.log(r) / math.log(D), abs=1e-12)


@pytest.mark.parametrize("D,s", [(64, 1), (256, 1), (144, 2)])
def test_taxonomy_btt(D, s):
    a, b = balanced_split(D)
    tax = describe(resolve("btt", {"T": 8, "D": D, "s": s})).taxonomy
    P = s * D * (a + b)
    assert (tax.psi, tax.omega, tax.nu) == pytest.approx(taxonomy_by_hand(D, P, P, D), abs=1e-12)
    if s == 1:  # nu = 1/2 + log 2 / log D for a = b = sqrt D
        assert tax.nu == pytest.approx(0.5 + math.log(2) / math.log(D), abs=1e-12)


def test_taxonomy_bilinear_mlr_and_tt():
    ranks = [2, 2, 1, 1]
    inst = resolve("bilinear-mlr", {"T": 8, "D": 64, "levels": 4, "ranks": ranks})
    R = sum(r * p_l(n) for n, r in enumerate(ranks, 1))
    tax = describe(inst).taxonomy
    P = 2 * 64 * sum(ranks)
    assert (tax.psi, tax.omega, tax.nu) == pytest.approx(taxonomy_by_hand(64, P, P, R), abs=1e-12)
    inst = resolve("tt", {"T": 1024, "D": 64, "a": 4, "b": 4, "s": 2})  # long enough that no factor is pre-multiplied
    tax = describe(inst).taxonomy
    P = 4 * 4 * 2 + 2 * 4 * 4 * 2 + 2 * 4 * 4
    C = brute_level(inst.levels[0], 1024, 1024**2)[1] // (2 * 1024)
    assert (tax.psi, tax.omega, tax.nu) == pytest.approx(taxonomy_by_hand(64, P, C, 64), abs=1e-12)


@pytest.mark.parametrize("name", ["mlr", "swa", "global-swa"])
def test_no_taxonomy_for_sequence_structures(name):
    inst = resolve(name, SMALL[name][0])
    assert describe(inst).taxonomy is None
