"""``einsearch search``: budgets, ordering, the Pareto front, costs equal to describe's, duplicates,
decode and cache by hand, the JSON shape and bad options (the speed targets: bench/bench_search.py)."""

from __future__ import annotations

import json
import random
import shlex

import numpy as np
import pytest
from click.testing import CliRunner

import einsearch
from einsearch import catalog, space
from einsearch.analyze import describe
from einsearch.analyze.counts import pair_costs
from einsearch.cli import main
from einsearch.planner import plan
from einsearch.structure import from_text

D, T, HEADS = 64, 256, 4  # head dimension 16: rank unit 1, every family non-empty and quick


@pytest.fixture(scope="module")
def everything():
    """The whole space, every candidate listed (no budget)."""
    return einsearch.search(D, T, HEADS, top=0)


def run(*args: str) -> tuple[int, str, str]:
    """``einsearch search ARGS`` (MLR up to 4 levels: quicker, every family still there)."""
    result = CliRunner().invoke(main, ["search", *args, "--max-levels", "4"], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def described(candidate: space.Candidate):
    """``describe`` of a candidate, the instance resolved from what its describe command names
    (rank_limit 1: the cut bound is what search reports)."""
    if candidate.ein is not None:
        instance = from_text(candidate.ein, candidate.file, candidate.structure).resolve()
    else:
        instance = catalog.find(candidate.structure).resolve(candidate.options)
    return describe(instance, rank_limit=1)


def test_every_family_is_searched(everything):
    found = {c.family for c in everything.candidates}
    assert found == set(space.FAMILIES)
    assert everything.scored > 20_000 and len(everything.candidates) == everything.within_budget - everything.duplicates


def test_every_candidate_within_budget():
    budget = 5e7
    roomy = einsearch.search(D, T, HEADS, budget=budget, top=0, max_levels=4)
    cache = sorted(c.cache_bytes for c in roomy.candidates)[len(roomy.candidates) // 2]  # halves the field
    result = einsearch.search(D, T, HEADS, budget="50M", cache_budget=f"{cache}", top=0, max_levels=4)
    assert result.query["budget"] == budget and result.query["cache_budget"] == cache
    assert result.candidates and all(c.flops <= budget and c.cache_bytes <= cache for c in result.candidates)
    assert result.within_budget < result.scored
    assert len(roomy.candidates) > len(result.candidates)
    assert einsearch.search(D, T, HEADS, budget="50M", cache_budget="2k", top=0).query["cache_budget"] == 2000
    assert {c.describe for c in result.candidates} <= {c.describe for c in roomy.candidates}


@pytest.mark.parametrize("objective", space.OBJECTIVES)
def test_sorted_by_objective(objective):
    result = einsearch.search(D, T, HEADS, budget=2e7, objective=objective, top=0, max_levels=4)
    keys = [(-space.candidate_value(objective, c), c.flops) for c in result.candidates]
    assert keys == sorted(keys) and len(keys) > 100
    if objective == "decode":
        assert [c.decode_flops for c in result.candidates] == sorted(c.decode_flops for c in result.candidates)


def test_pareto_front_by_hand():
    # (FLOPs, objective to maximise): 0 and 2 tie on FLOPs (2 is worse), 3 is beaten by 1 (fewer FLOPs, more),
    # 4 ties 1 on both (kept), 5 is the best at the most FLOPs, 6 costs more for no gain over 5
    points = [(10, 1.0), (20, 5.0), (10, 0.5), (30, 4.0), (20, 5.0), (40, 9.0), (50, 9.0)]
    assert space.pareto_front(points) == [0, 1, 4, 5]
    assert space.pareto_front([]) == []


def test_pareto_option_keeps_only_the_front(everything):
    result = einsearch.search(D, T, HEADS, budget=3e7, objective="params", pareto=True, top=0, max_levels=4)
    front = [(c.flops, c.params) for c in result.candidates]
    assert front and len(front) == len(result.front)
    for flops, params in front:  # nothing within budget has no more FLOPs and more params (or fewer FLOPs, as many)
        assert not any((f <= flops and p > params) or (f < flops and p >= params) for f, p in result.cloud)
    assert [c.params for c in result.candidates] == sorted((c.params for c in result.candidates), reverse=True)


def test_sampled_costs_equal_describe(everything):
    """Params, FLOPs (describe's score x heads), the rank bound and the taxonomy of a sample from every family."""
    rng = random.Random(15)
    by_family: dict[str, list] = {}
    for c in everything.candidates:
        by_family.setdefault(c.family, []).append(c)
    for _, members in sorted(by_family.items()):
        for c in rng.sample(members, min(4, len(members))):
            d = described(c)
            assert (d.params * HEADS, d.score * HEADS, d.rank_bound) == (c.params, c.flops, c.rank_bound), c.describe
            assert (c.taxonomy is None) == (d.taxonomy is None), c.describe
            if d.taxonomy is not None:
                assert vars(d.taxonomy) == pytest.approx(c.taxonomy), c.describe


def test_printed_commands_run(tmp_path):
    """The describe command of candidates with and without a catalog file, as printed, gives their numbers."""
    result = einsearch.search(D, T, HEADS, families=["mlr", "multi", "einsum"], budget=4e7, top=0, ein_dir=tmp_path)
    picks = [next(c for c in result.candidates if c.family == f) for f in ("mlr", "multi", "einsum")]
    for c in picks:
        if c.ein is not None:
            (tmp_path / f"{c.structure}.ein").write_text(c.ein)
        words = shlex.split(c.describe)
        assert words[:2] == ["einsearch", "describe"] and words[-2:] == ["--heads", str(HEADS)]
        out = CliRunner().invoke(main, [*words[1:], "--json", "--rank-limit", "1"], catch_exceptions=False)
        data = json.loads(out.stdout)
        assert (data["totals"]["params"], data["totals"]["score"], data["rank_bound"]) == (
            c.params,
            c.flops,
            c.rank_bound,
        )
        generate = shlex.split(c.generate)
        assert generate[1] == "generate" and generate[2] == words[2] and generate[-2] == "-o"


def test_planning_a_whole_candidate_agrees(everything):
    """The exact path (the candidate's levels planned together) gives what its levels' counts give."""
    grid = space.Space(D, T, HEADS)
    for family in (space.Mlr(), space.GlobalSwa(), space.Multi(), space.BilinearMlr()):
        for spec in family.specs(grid)[:: max(1, len(family.specs(grid)) // 5)]:
            levels = family.costs(grid, spec)
            assert space.planned_costs(levels, T, D) == space.combine(levels, T, D)


def test_duplicates_removed(everything):
    names = [(c.family, c.options.get("a"), c.options.get("s"), c.options.get("levels")) for c in everything.candidates]
    assert not [n for n in names if n[0] == "btt" and n[2] == 1]  # btt with s = 1 is monarch, listed once as monarch
    kron = sorted(a for f, a, _, _ in names if f == "kronecker")
    assert kron == [a for a in space.divisors(D) if 1 < a and a * a <= D]  # a x b and b x a: once
    assert not [n for n in names if n[0] in ("mlr", "bilinear-mlr") and n[3] == 1]  # one level: the low-rank head
    assert everything.duplicates >= len(space.Space(D, T, HEADS).splits) * 2
    seen = {(c.summary if c.ein else json.dumps(c.options, sort_keys=True), c.family) for c in everything.candidates}
    assert len(seen) == len(everything.candidates)


def _one(result, **options):
    return next(c for c in result.candidates if all(c.options.get(k) == v for k, v in options.items()))


def test_decode_and_cache_by_hand():
    """MLR: the token at position T sees r_l x (its level-l block) keys; a window: w + 1 keys."""
    heads, ranks = 2, [16, 8, 4, 4]
    result = einsearch.search(D, T, heads, families=["mlr", "swa"], top=0)
    mlr = _one(result, levels=4, ranks=ranks)
    maps = sum(2 * 2 * D * r for r in ranks)  # a query and a key map per level, D x r_l each
    pairs = sum(2 * r * (T // 2 ** (level - 1)) for level, r in enumerate(ranks, 1))
    assert mlr.decode_flops == heads * (maps + pairs)
    # the cache at context T: level l keeps r_l channels of the T / 2^(l-1) keys of its block, and D values of all T
    kept = heads * sum(r * (T // 2 ** (level - 1)) for level, r in enumerate(ranks, 1)) + D * T
    assert mlr.cache_bytes == -(-4 * kept // T)
    window = 16
    swa = _one(result, r=8, window=window)
    assert swa.decode_flops == heads * (2 * 2 * D * 8 + 2 * 8 * (window + 1))
    assert swa.cache_bytes == -(-4 * (heads * 8 + D) * (window + 1) // T)  # the last w + 1 keys and values


def test_near_share_by_hand(everything):
    """The share of the pair FLOPs c(t, u) on pairs with |t - u| <= T/8, summed over the T x T masks."""
    picks = [c for c in everything.candidates if c.family in ("mlr", "global-swa", "multi", "lowrank")][::997][:6]
    t, u = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    near = np.abs(t - u) <= T // 8
    for c in picks:
        instance = described(c).instance
        total = close = 0
        for level, cost in zip(instance.levels, pair_costs(plan(instance))):
            mask = level.pattern.mask(T)
            total += cost * mask.sum()
            close += cost * (mask & near).sum()
        assert c.near_share == pytest.approx(close / total), c.describe


def test_include_a_users_file(tmp_path):
    mine = tmp_path / "mine.ein"
    mine.write_text("size T = 64\nsize D = 16\nsize r = 4\nindex a: r\nscore = x[t, i] Q[i, a] K[j, a] x[u, j]\n")
    result = einsearch.search(16, 64, 2, families=["mine"], include=[mine], top=0)
    assert [c.options["r"] for c in result.candidates] == [16, 8, 4, 2, 1]  # default 4 x 4, 2, 1, 1/2, 1/4
    best = result.candidates[0]
    assert best.describe == f"einsearch describe {shlex.quote(str(mine))} --T 64 --D 16 --r 16 --heads 2"
    d = describe(catalog.find(str(mine)).resolve(best.options), rank_limit=1)
    assert (d.params * 2, d.score * 2, d.rank_bound) == (best.params, best.flops, best.rank_bound)


def test_json_shape():
    code, out, _ = run("--D", "64", "--T", "256", "--heads", "4", "--budget", "2e7", "--top", "5", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"query", "candidates"}
    assert data["query"]["D"] == 64 and data["query"]["budget"] == 2e7 and data["query"]["objective"] == "rank"
    assert set(data["query"]["units"]) == {"params", "flops", "rank_bound", "near_share", "decode_flops", "cache_bytes"}
    assert len(data["candidates"]) == 5
    for c in data["candidates"]:
        assert {"structure", "options", "params", "flops", "rank_bound", "near_share", "decode_flops", "cache_bytes",
                "describe", "generate", "taxonomy"} <= set(c)  # fmt: skip
        assert c["flops"] <= 2e7 and c["describe"].startswith("einsearch describe ")
        assert ("ein" in c) == (c["family"] in ("multi", "einsum"))


def test_csv_text_and_plot(tmp_path):
    code, out, _ = run("--D", "64", "--T", "256", "--heads", "4", "--budget", "2e7", "--top", "3", "--csv")
    assert code == 0 and out.splitlines()[0].startswith("structure,family,options,params,flops,rank_bound")
    assert len(out.splitlines()) == 4
    plot = tmp_path / "front.png"
    code, out, _ = run("--D", "64", "--T", "256", "--heads", "4", "--budget", "2e7", "--family", "lowrank,mlr,swa",
                       "--pareto", "--plot", str(plot))  # fmt: skip
    assert code == 0 and plot.stat().st_size > 0
    assert "objective rank  (Pareto front)" in out and "best    einsearch describe" in out


def test_ein_dir_writes_the_listed_files(tmp_path):
    code, out, _ = run("--D", "64", "--T", "256", "--heads", "4", "--family", "multi", "--top", "2",
                       "--ein-dir", str(tmp_path / "found"))  # fmt: skip
    assert code == 0
    files = sorted((tmp_path / "found").glob("multi-*.ein"))
    assert len(files) == 2 and str(files[0].parent) in out


def test_impossible_budget_is_empty_and_exit_0():
    code, out, err = run("--D", "64", "--T", "256", "--heads", "4", "--budget", "10")
    assert code == 0 and "no candidate fits" in out
    code, out, err = run("--D", "64", "--T", "256", "--budget", "10", "--json")
    assert code == 0 and json.loads(out)["candidates"] == [] and "no candidate fits" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--T", "256"], "--D is required"),
        (["--D", "x", "--T", "256"], "--D: expected a whole number"),
        (["--D", "64", "--T", "256", "--objective", "speed"], "--objective: must be one of"),
        (["--D", "64", "--T", "256", "--budget", "lots"], "--budget: expected a number"),
        (["--D", "64", "--T", "256", "--budget", "-5"], "--budget: must be a positive number"),
        (["--D", "64", "--T", "256", "--heads", "5"], "--heads: must divide D"),
        (["--D", "64", "--T", "256", "--family", "bt"], "no family 'bt'; did you mean btt?"),
        (["--D", "64", "--T", "256", "--json", "--csv"], "give one"),
        (["--D", "64", "--T", "256", "--top", "-1"], "--top: must be a whole number >= 0"),
        (["--D", "64", "--T", "256", "--include", "missing.ein"], "missing.ein: no such file"),
    ],
)
def test_bad_options_exit_2(args, message):
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert err.startswith("einsearch: error: ") and message in err, err


def test_limit_and_progress():
    seen = []
    result = einsearch.search(D, T, HEADS, limit=1000, progress=lambda done, total: seen.append((done, total)))
    assert result.scored == 1000 and result.truncated
    assert seen and seen[-1] == (1000, 1000)
    assert "stopped at --limit" in result.text()
