"""The optimizer: plans are never worse than opt_einsum, MLR costs what DESIGN.md says, and every
candidate schedule computes the reference scores (and the FLOPs it claims) when run with torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from einsearch import catalog, reference
from einsearch.interpret import level_scores, run, score_matrix
from einsearch.plan import Schedule, plan

SMALL = {
    "dense": {"D": 16, "T": 16},
    "lowrank": {"D": 16, "T": 16, "r": 4},
    "btt": {"D": 36, "T": 8, "s": 2},
    "monarch": {"D": 24, "T": 8},
    "kronecker": {"D": 12, "T": 8},
    "tt": {"D": 24, "a": 2, "b": 3, "T": 8},
    "bilinear-mlr": {"D": 16, "T": 8, "levels": 3, "ranks": [3, 2, 1]},
    "mlr": {"D": 16, "T": 32, "levels": 4, "ranks": [4, 3, 2, 1]},
    "swa": {"D": 16, "T": 37, "r": 4, "window": 5},
    "global-swa": {"D": 16, "T": 19, "rg": 3, "rw": 2, "window": 4},
}


def test_small_cases_cover_the_catalog():
    assert sorted(SMALL) == sorted(catalog.names())


@pytest.mark.parametrize("B, T, D, r", [(1, 1024, 256, 64), (8, 512, 128, 16)])
def test_lowrank_plan_numbers_by_hand(B, T, D, r):
    """Every number `einsearch plan` prints for a standard head, from its three matmuls."""
    p = plan(catalog.find("lowrank").resolve({"T": T, "D": D, "r": r}), B)
    chosen = p.levels[0].chosen
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
def test_plan_never_above_opt_einsum(batch):
    for name, options in grid():
        p = plan(catalog.find(name).resolve(options), batch)
        assert p.flops <= p.opt_einsum_flops, (name, options)
        assert p.flops <= p.naive_flops, (name, options)
        for lp in p.levels:
            eligible = [s for s in lp.candidates if s.flops <= lp.opt_einsum.flops]
            assert lp.chosen.estimate == min(s.estimate for s in eligible)


@pytest.mark.parametrize(
    "T, levels, ranks",
    [(1024, 8, [32, 8, 6, 4, 4, 4, 4, 2]), (256, 3, [16, 16, 16]), (16384, 15, [4] * 15), (64, 2, [1, 3])],
)
def test_mlr_pair_part_is_t2_sum_r_over_p(T, levels, ranks):
    D = 512
    p = plan(catalog.find("mlr").resolve({"T": T, "D": D, "levels": levels, "ranks": ranks}))
    pair_macs = T * T * sum(r / 2 ** (level - 1) for level, r in enumerate(ranks, 1))  # DESIGN.md section 1
    maps = sum(2 * T * D * r for r in ranks)  # q and k of every level: T x D x r multiply-adds each
    assert p.flops == 2 * pair_macs + 2 * maps
    for lp in p.levels:
        assert "block-batched" in lp.chosen.name or lp.level.blocks == 1
        assert lp.chosen.largest <= max(T * T // lp.level.blocks, T * D)  # never a T x T buffer per level


def test_btt_with_tt_rank_above_one_maps_one_side_only():
    """BTT with s > 1: the inner size D*s exceeds D, so M goes to the key side whole."""
    p = plan(catalog.find("btt").resolve({"T": 1024, "D": 256, "s": 4}))
    chosen = p.levels[0].chosen
    assert "q: x |" in chosen.name or "| k: x)" in chosen.name
    assert chosen.flops < p.opt_einsum_flops or chosen.flops == p.opt_einsum_flops


def test_small_sequence_materialises_m():
    """With few tokens and a wide head, multiplying the factors first (M, D x D) is cheaper."""
    p = plan(catalog.find("lowrank").resolve({"T": 4, "D": 64, "r": 64}), batch=1)
    # x W_Q W_K^T x^T: per token 2 D r on each side vs M once (2 D^2 r) then 2 D^2 per key
    assert p.flops <= 2 * 4 * 64 * 64 * 2 + 2 * 16 * 64


def random_case(name: str, batch: int = 2):
    instance = catalog.find(name).resolve(SMALL[name])
    factors = reference.random_factors(instance)
    xs = [reference.random_input(instance, seed=seed) for seed in range(1, batch + 1)]
    torch_factors = {k: torch.from_numpy(v) for k, v in factors.items()}
    return instance, factors, xs, torch_factors, torch.from_numpy(np.stack(xs))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_candidate_matches_the_reference(name):
    instance, factors, xs, torch_factors, x = random_case(name)
    p = plan(instance, batch=len(xs))
    for lp in p.levels:
        expected = np.stack([reference.level_scores(lp.level, xi, factors) for xi in xs])
        for schedule in lp.candidates:
            got = level_scores(schedule, lp.level, x, torch_factors).numpy()
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=schedule.name)
    total = np.stack([reference.score_matrix(instance, xi, factors) for xi in xs])
    np.testing.assert_allclose(score_matrix(p, x, torch_factors).numpy(), total, rtol=0, atol=1e-10)


def multiply_add_flops(schedule: Schedule) -> int:
    """What FlopCounterMode sees: the steps that sum an index of size > 1 (torch runs the others
    as elementwise products, which it does not count)."""
    total = 0
    for step in schedule.steps:
        summed = set().union(*(t.indices for t in step.inputs)) - set(step.output.indices)
        if step.kind == "contract" and len(step.inputs) > 1 and math.prod(schedule.sizes[i] for i in summed) > 1:
            total += step.flops
    return total


@pytest.mark.parametrize("name", sorted(SMALL))
def test_flop_counter_agrees_with_the_plan(name):
    instance, _, _, torch_factors, x = random_case(name)
    p = plan(instance, batch=x.shape[0])
    for lp in p.levels:
        for schedule in lp.candidates:
            with FlopCounterMode(display=False) as counter:
                run(schedule, x, torch_factors)
            assert counter.get_total_flops() == multiply_add_flops(schedule), schedule.name


def test_band_schedules_only_touch_the_band():
    p = plan(catalog.find("swa").resolve({"T": 4096, "D": 256, "r": 64, "window": 128}))
    chosen = p.levels[0].chosen
    assert chosen.layout == "band"
    assert chosen.band.chunk == 129  # the window's width: the fewest FLOPs by far gather a window per query
    assert chosen.largest < 4096 * 4096 // 8
