"""The optimizer: MLR costs what docs/design.md §2 and §9 say, every candidate schedule (a level's
own, and the plan's partition of the causal pairs into attention calls) computes the reference
scores and the FLOPs it claims when run with torch, and describe's numbers are the plan's
(docs/design.md §4)."""

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
    """Every number `einsearch plan` prints for a standard head, from its three matmuls: the two
    maps, then one causal attention call over the whole square (a fused kernel's FLOPs)."""
    p = plan(catalog.find("lowrank").resolve({"T": T, "D": D, "r": r}), B)
    (chosen,) = p.schedules
    assert chosen.name == "1 batched attention call over the levels' maps"
    assert p.levels[0].chosen.name == "feature maps (q: WQ | k: WK)"
    assert p.flops == p.opt_einsum_flops == 2 * (2 * B * T * D * r) + 2 * B * T * T * r
    assert p.naive_flops == 2 * B * T * T * D * D * r  # every index at once: n t u i j a
    assert p.largest == B * T * T
    maps = 2 * (B * T * D + D * r + B * T * r)  # each map reads x and its factor, writes q or k
    concat = 2 * 2 * B * T * r  # q and k read and written once more into the calls' layout
    assert p.bytes == 4 * (maps + concat + 2 * B * T * r + B * T * T)  # then reads q and k, writes s
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
def test_mlr_pairs_per_depth(T, levels, ranks):
    """docs/design.md §9: the causal pairs of MLR by depth d (same block at level d, different
    blocks at level d + 1), each scored with the channels of levels 1..d: at depth d < L, T^2 / 2^(d+1)
    pairs in rectangles of side T / 2^d; at L, the diagonal blocks, causal squares of side
    T / 2^(L-1). A class whose rectangles are shorter than 16 tokens runs as masked 16 x 16 tiles
    on the diagonal: T x 16 pairs."""
    D, tile = 512, 16
    p = plan(catalog.find("mlr").resolve({"T": T, "D": D, "levels": levels, "ranks": ranks}))
    pairs = 0
    for depth in range(1, levels + 1):
        channels = sum(ranks[:depth])
        side = T >> depth if depth < levels else T >> (levels - 1)
        if side < tile:
            pairs += T * tile * channels
        else:
            pairs += (T * T >> (depth + 1) if depth < levels else T * side) * channels
    maps = sum(2 * T * D * r for r in ranks)  # q and k of every level: T x D x r multiply-adds each
    assert p.flops == 2 * pairs + 2 * maps
    (partition,) = p.schedules
    for call in partition.tiling.calls:  # levels 1..d: a prefix of the channels
        assert call.levels == tuple(range(len(call.levels)))
    assert partition.largest <= max(T * T // 4, T * D)  # never the T x T square


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_candidate_matches_the_reference(name):
    instance, factors, xs, torch_factors, x = random_case(name)
    p = plan(instance, batch=len(xs))
    for schedule in candidates(p):
        expected = sum(np.stack([reference.level_scores(instance.levels[n - 1], xi, factors) for xi in xs])
                       for n in schedule.levels)  # fmt: skip
        if schedule.kind is Kind.PARTITION:  # the causal pairs u <= t only
            expected = np.tril(expected)
        got = schedule_scores(schedule, instance, x, torch_factors).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=schedule.name)
    total = np.stack([np.tril(reference.score_matrix(instance, xi, factors)) for xi in xs])
    np.testing.assert_allclose(score_matrix(p, x, torch_factors).numpy(), total, rtol=0, atol=1e-10)


def multiply_add_flops(schedule: Schedule) -> int:
    """What FlopCounterMode sees: the steps that sum an index of size > 1 (torch runs the others
    as elementwise products, which it does not count) and the attention calls."""
    return sum(step.flops for step in schedule.steps if counts(step, schedule.sizes))


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
    """A window of 129 keys: the level's own band schedule gathers a window per chunk of 129
    queries; the partition's calls hold the band's tiles only."""
    T = 4096
    p = plan(catalog.find("swa").resolve({"T": T, "D": 256, "r": 64, "window": 128}))
    assert p.levels[0].chosen.layout is Layout.BAND
    assert p.levels[0].chosen.band.chunk == 129  # the fewest FLOPs by far gather a window per query
    (partition,) = p.schedules
    assert partition.largest < T * T // 8
    pairs = sum(step.flops for step in partition.steps if step.op is Op.ATTEND) // (2 * 64)
    assert 129 * T - 129 * 128 // 2 <= pairs < 2 * 129 * T  # the band's causal pairs, in whole tiles


def candidates(p) -> list[Schedule]:
    """Every schedule the plan considered: each level's own, and the partition it runs."""
    return [s for lp in p.levels for s in lp.candidates] + list(p.schedules)


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
    counted = [(step, s) for s in p.schedules for step in s.steps if counts(step, s.sizes)]
    assert counter.get_total_flops() == sum(charge(step, schedule) for step, schedule in counted)


def counts(step, sizes) -> bool:
    """FlopCounterMode sees the step: a contraction that sums an index, or an attention call."""
    return step.op is Op.ATTEND or sums_an_index(step, sizes)


def test_kronecker_sum_shares_one_pair_product():
    """A Kronecker sum A (x) I + I (x) B: two terms with the same (global) pattern; one attention
    call over the concatenated maps, cheaper than opt_einsum's product per term."""
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
    assert shared.kind is Kind.PARTITION and shared.levels == (1, 2)
    assert [call.levels for call in shared.tiling.calls] == [(0, 1)]
    assert shared.flops <= sum(lp.opt_einsum.flops for lp in p.levels)


def test_cost_model_is_an_argument():
    """The cost model picks each level's own schedule (what ``plan`` lists beside the partition)."""
    instance = catalog.find("swa").resolve({"T": 4096, "D": 256, "r": 64, "window": 128})
    by_flops = plan(instance, cost=FLOPS)
    assert by_flops.levels[0].chosen.band.chunk == 1  # fewest FLOPs: each query against its own window
    assert by_flops.levels[0].chosen.flops < plan(instance).levels[0].chosen.flops
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
