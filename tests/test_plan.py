"""The optimizer: MLR costs what docs/design.md §2 says, every candidate schedule (one level or
several) computes the reference scores and the FLOPs it claims when run with torch, and describe's
numbers are the plan's (docs/design.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support import SMALL, chain_text, charge, charged, random_case
from torch.utils.flop_counter import FlopCounterMode

import einsearch
from einsearch import catalog, reference
from einsearch.interpret import run, schedule_scores, score_matrix
from einsearch.network import splits
from einsearch.planner import FLOPS, Kind, Layout, Op, Schedule, plan
from einsearch.structure import from_text


def test_small_cases_cover_the_catalog():
    assert sorted(SMALL) == sorted(catalog.names())


@pytest.mark.parametrize("B, T, D, r", [(1, 1024, 256, 64), (8, 512, 128, 16)])
def test_lowrank_plan_numbers_by_hand(B, T, D, r):
    """Every number `einsearch plan` prints for a standard head, from its three matmuls."""
    p = plan(catalog.find("lowrank").resolve({"T": T, "D": D, "r": r}), B)
    (chosen,) = p.schedules
    assert chosen.name == "feature maps (q: WQ | k: WK)"
    assert p.flops == p.opt_einsum_flops == 2 * (2 * B * T * D * r) + 2 * B * T * T * r
    assert p.naive_flops == 2 * B * T * T * D * D * r  # every index at once: n t u i j a
    assert p.largest == B * T * T
    maps = 2 * (B * T * D + D * r + B * T * r)  # each map reads x and its factor, writes q or k
    assert p.bytes == 4 * (maps + 2 * B * T * r + B * T * T)  # then reads q and k, writes s
    assert chosen.estimate == p.flops + 4 * p.bytes


def grid():
    """Catalog structures over T in 16..16384, D in 64..4096, s and levels varied."""
    for T in (16, 256, 4096, 16384):
        for D in (64, 256, 4096):
            yield "dense", {"T": T, "D": D}
            yield "lowrank", {"T": T, "D": D, "r": 64}
            yield "kronecker", {"T": T, "D": D}
            yield "monarch", {"T": T, "D": D, "split": "research"}
            yield "tt", {"T": T, "D": D, "a": 4, "b": 4}
            for s in (1, 4):
                yield "btt", {"T": T, "D": D, "s": s}
            yield "bilinear-mlr", {"T": T, "D": D, "levels": 3, "ranks": [32, 16, 8]}
            yield "swa", {"T": T, "D": D, "window": min(128, T - 1)}
            yield "global-swa", {"T": T, "D": D, "window": min(64, T - 1)}
            for levels in (1, 4, int(math.log2(T)) + 1):
                yield "mlr", {"T": T, "D": D, "levels": levels, "ranks": [8] * levels}


@pytest.mark.parametrize("batch", [1, 8])
def test_every_level_computed_once(batch):
    """The recipe covers each level exactly once, in level order of the schedules' first levels."""
    for name, options in grid():
        p = plan(catalog.find(name).resolve(options), batch)
        covered = [n for s in p.schedules for n in s.levels]
        assert sorted(covered) == [lv.number for lv in p.instance.levels], (name, options)
        assert [s.levels[0] for s in p.schedules] == sorted(s.levels[0] for s in p.schedules)


@pytest.mark.parametrize(
    "T, levels, ranks",
    [(1024, 8, [32, 8, 6, 4, 4, 4, 4, 2]), (256, 3, [16, 16, 16]), (16384, 15, [4] * 15), (64, 2, [1, 3])],
)
def test_mlr_pair_part_is_t2_sum_r_over_p(T, levels, ranks):
    D = 512
    p = plan(catalog.find("mlr").resolve({"T": T, "D": D, "levels": levels, "ranks": ranks}))
    pair_macs = T * T * sum(r / 2 ** (level - 1) for level, r in enumerate(ranks, 1))  # docs/design.md §2
    maps = sum(2 * T * D * r for r in ranks)  # q and k of every level: T x D x r multiply-adds each
    assert p.flops == 2 * pair_macs + 2 * maps
    for schedule in p.schedules:  # never a T x T buffer for a blocked level
        assert schedule.largest <= max(T * T // min(p.instance.levels[n - 1].blocks for n in schedule.levels), T * D)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_candidate_matches_the_reference(name):
    instance, factors, xs, torch_factors, x = random_case(name)
    p = plan(instance, batch=len(xs))
    for schedule in candidates(p):
        expected = sum(np.stack([reference.level_scores(instance.levels[n - 1], xi, factors) for xi in xs])
                       for n in schedule.levels)  # fmt: skip
        got = schedule_scores(schedule, instance, x, torch_factors).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=schedule.name)
    total = np.stack([reference.score_matrix(instance, xi, factors) for xi in xs])
    np.testing.assert_allclose(score_matrix(p, x, torch_factors).numpy(), total, rtol=0, atol=1e-10)


def multiply_add_flops(schedule: Schedule) -> int:
    """What FlopCounterMode sees: the steps that sum an index of size > 1 (torch runs the others
    as elementwise products, which it does not count)."""
    return sum(step.flops for step in schedule.steps if sums_an_index(step, schedule.sizes))


def sums_an_index(step, sizes) -> bool:
    summed = set().union(*(t.indices for t in step.inputs)) - set(step.output.indices)
    return step.op is Op.CONTRACT and len(step.inputs) > 1 and math.prod(sizes[i] for i in summed) > 1


@pytest.mark.parametrize("name", sorted(SMALL))
def test_flop_counter_agrees_with_the_plan(name):
    instance, _, _, torch_factors, x = random_case(name)
    p = plan(instance, batch=x.shape[0])
    for schedule in candidates(p):
        with FlopCounterMode(display=False) as counter:
            run(schedule, x, torch_factors)
        assert counter.get_total_flops() == multiply_add_flops(schedule), schedule.name


def test_band_schedules_only_touch_the_band():
    p = plan(catalog.find("swa").resolve({"T": 4096, "D": 256, "r": 64, "window": 128}))
    (chosen,) = p.schedules
    assert chosen.layout is Layout.BAND
    assert chosen.band.chunk == 129  # the window's width: the fewest FLOPs by far gather a window per query
    assert chosen.largest < 4096 * 4096 // 8


def candidates(p) -> list[Schedule]:
    """Every schedule the plan considered: each level's own, and those spanning levels."""
    return [s for lp in p.levels for s in lp.candidates] + list(p.groups)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_describe_flops_are_the_plans_and_the_flop_counters(name):
    """One plan behind every number, counted twice without the plan's own totals: describe's score
    is the §3 charge of the plan's steps, worked out here from their tensors and sizes; and
    FlopCounterMode, on the interpreter running that plan, counts those steps that sum an index of
    size > 1 (torch runs the others as elementwise products, which it does not count)."""
    instance, _, _, torch_factors, x = random_case(name, batch=1)
    p = plan(instance)
    assert einsearch.describe(instance).flops.score == charged(p.schedules)
    with FlopCounterMode(display=False) as counter:
        score_matrix(p, x, torch_factors)
    counted = [(step, s.sizes) for s in p.schedules for step in s.steps if sums_an_index(step, s.sizes)]
    assert counter.get_total_flops() == sum(charge(step, sizes) for step, sizes in counted)


def test_mlr_runs_per_depth_at_length():
    """MLR at T = 4096: the nested per-depth form wins (one score write per pair), FLOPs unchanged."""
    instance = catalog.find("mlr").resolve({"T": 4096, "D": 256})
    p = plan(instance)
    (nested,) = p.schedules
    assert nested.kind is Kind.NESTED_BLOCKS and nested.layout is Layout.NESTED
    assert nested.nesting.channels == (32, 40, 46, 50, 54, 58, 62, 64)
    T, ranks = 4096, [32, 8, 6, 4, 4, 4, 4, 2]
    assert p.flops == 2 * T * T * sum(r / 2 ** (n - 1) for n, r in enumerate(ranks, 1)) + 2 * 2 * T * 256 * 64
    assert nested.largest == T * T // 2  # depth 1: each half of the sequence against the other, 2 x (T/2)^2


def test_kronecker_sum_shares_one_pair_product():
    """A Kronecker sum A (x) I + I (x) B: two terms with the same (global) pattern; one pair product
    over the concatenated maps is cheaper than a product per term."""
    text = """
size T = 4096
size D = 256
let a = 16
index i1: a, j1: a, i2: a, j2: a
score = x[t, (i1 i2)] A[i1, j1] x[u, (j1 i2)]
score += x[t, (i1 i2)] B[i2, j2] x[u, (i1 j2)]
"""
    p = plan(from_text(text, name="kron-sum").resolve())
    (shared,) = p.schedules
    assert shared.kind is Kind.SHARED_PAIRS and shared.levels == (1, 2)
    assert shared.flops <= sum(lp.opt_einsum.flops for lp in p.levels)
    assert shared.estimate < sum(lp.chosen.estimate for lp in p.levels)


def test_cost_model_is_an_argument():
    instance = catalog.find("swa").resolve({"T": 4096, "D": 256, "r": 64, "window": 128})
    by_flops = plan(instance, cost=FLOPS)
    assert by_flops.schedules[0].band.chunk == 1  # fewest FLOPs: each query against its own window
    assert by_flops.flops < plan(instance).flops
    assert by_flops.cost.beta == 0


def test_the_split_limit_is_the_one_the_design_states():
    """docs/design.md §4 gives the number of factors up to which every query/key split is tried."""
    import re
    from pathlib import Path

    design = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text()
    stated = int(re.search(r"exhaustive \(2\^n\s+splits\) up to n = (\d+) factors", design).group(1))
    for n, expected in ((stated, 2**stated), (stated + 1, stated + 2)):
        assert len(splits(from_text(chain_text(n, D=2)).resolve().levels[0])) == expected


def test_a_long_chain_is_planned():
    """64 factors: the split enumeration is capped (n + 1 cuts of the chain), and says so."""
    instance = from_text(chain_text(64, D=4, T=64), name="chain").resolve()
    p = plan(instance)
    assert len(p.levels[0].candidates) < 200  # not 2^64
    assert "only the n + 1 splits" in str(p)
