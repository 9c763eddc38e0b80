"""``einsearch search``: every number against an independent reference (the analysis of the whole
instance, masks and dense matrices), the order of every objective against its definition here,
budgets, duplicates, the catalog read from its files, and bad input (the speed targets:
bench/bench_search.py)."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import einsearch
from einsearch import catalog, reference
from einsearch.analyze.counts import level_counts, pair_costs, params
from einsearch.analyze.rank import rank_bound
from einsearch.cli import main
from einsearch.planner import Kind, Part, level_kind, plan
from einsearch.search import FAMILIES, OBJECTIVES, Space, family, objective, pareto_front
from einsearch.search.sources import Shared, Source

D, T, HEADS = 32, 64, 2  # head dimension 16: every family non-empty
LEVELS = 3  # MLR allocations over at most 3 levels: some 2,000 members in all, each search well under a second


def small(**options):
    """A search at the small sizes."""
    return einsearch.search(D, T, HEADS, **{"max_levels": LEVELS, **options})


@pytest.fixture(scope="module")
def everything():
    """The whole space at small sizes, every candidate listed (no budget)."""
    return small(top=0)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["search", *args, "--max-levels", str(LEVELS)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def instance_of(candidate):
    """The structure a candidate's describe command names, resolved as describe resolves it."""
    return catalog.find(candidate.file or candidate.structure).resolve(candidate.options)


def source(name: str, space: Space) -> Source:
    file = FAMILIES[name].file
    return Source(FAMILIES[name], catalog.catalog_dir() / file, True, space, Shared(space.T))


# ---------------------------------------------------------------------------------------------
# The numbers


SIZES = [(128, 64, 1), (256, 128, 4), (1024, 256, 8)]  # (T, D, heads): every default fits


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("T, D, heads", SIZES)
def test_describe_plan_and_search_agree(name, T, D, heads):
    """Every family's file at its default options and three sizes: params, FLOPs (the plan's, which
    describe reports as its score) and the rank bound, as describe's analysis of the whole instance
    gives them and as the search adds them up from its levels."""
    structure = catalog.find(Path(FAMILIES[name].file).stem)
    instance = structure.resolve({"T": T, "D": D})
    values = {option: instance.values[option] for option in FAMILIES[name].options}
    costs, _ = source(name, Space(D, T, heads)).score(values)
    chosen = plan(instance)
    assert (costs.params, costs.flops) == (params(instance), chosen.flops)
    assert source(name, Space(D, T, heads)).rank_bound(values) == rank_bound(instance)


def test_a_score_line_at_one_split():
    """Bilinear MLR with ranks 1, 1, 1, 61 at D = 512: alone, the last level maps both factors on
    the key side and the others one per side; the plan gives the loop one split, and the search
    counts every level at that split (not each at its own)."""
    values = {"levels": 4, "ranks": [1, 1, 1, 61]}
    instance = catalog.find("bilinear-mlr").resolve({"T": 1024, "D": 512, **values})
    costs, _ = source("bilinear-mlr", Space(512, 1024, 8)).score(values)
    assert costs.flops == plan(instance).flops
    assert costs.per_token == plan(instance).part_flops(Part.QUERY, Part.KEY) // 1024


def test_levels_of_a_grid_point_are_those_resolve_gives():
    """The levels a family's file gives at a grid point, evaluated from their symbolic sizes, equal
    (and hash as) the levels ``Structure.resolve`` builds, for a sample of every family."""
    space = Space(D, T, HEADS)
    for name, fam in FAMILIES.items():
        points = list(fam.grid(space))
        src = source(name, space)
        for values in points[:: max(1, len(points) // 6)]:
            src.score(values)
            env, keys = src.template.keys(values)
            built = tuple(src.template.build(env, key) for key in keys)
            resolved = src.template.instance(values).levels
            assert built == resolved and [hash(b) for b in built] == [hash(r) for r in resolved], (name, values)


TRICKY = """
size T = 64
size D = 16
param levels = 3
param ranks[levels] = [4, 2, 2]
param lag = 1
size w = 2
let half = D / 2
require lag >= 0
for l in 1..levels:
    let g = 2^(l - 1)
    require g <= T
    index b: g, r: ranks[l], s: ranks[1] + l
    score += x[(b t), i] Q[i, r] K[j, r] x[(b u), j]  scale 1/r
    score += x[t, (c k)] L[c, k, s] R[c, m, s] x[u, (c m)]  where lag <= t - u <= lag + w * l  scale 1/(s * l)
index c: 2
"""


def test_template_levels_equal_resolve_on_a_tricky_file(tmp_path):
    """Loops of two score lines, a loop's lets and requirements, list entries at the loop variable,
    at a number and at an expression, derived symbols, bands and scales from options: at every point
    the template builds the levels ``resolve`` builds, and refuses the points ``resolve`` refuses."""
    from einsearch.search.template import Invalid, Template

    (tmp_path / "tricky.ein").write_text(TRICKY)
    structure = catalog.find(str(tmp_path / "tricky.ein"))
    options = ("levels", "ranks", "lag", "w")
    template = Template(structure, {"T": 64, "D": 16}, options)
    checked = refused = 0
    for levels in (1, 2, 3, 6, 8):  # 8: a level of 128 blocks fails the loop's requirement
        for ranks in ([4] * levels, [1 + n % 3 for n in range(levels)], [2] * (levels + 1)):
            for lag, w in ((0, 1), (1, 2), (-1, 3), (70, 1), (2, 40)):
                values = {"levels": levels, "ranks": ranks, "lag": lag, "w": w}
                try:
                    expected = structure.resolve({"T": 64, "D": 16, **values}).levels
                except einsearch.EinsearchError:
                    expected = None
                found = template.keys(values)
                try:
                    built = None if found is None else tuple(template.build(found[0], key) for key in found[1])
                except Invalid:
                    built = None
                assert built == expected, values
                checked += expected is not None
                refused += expected is None
    assert checked > 20 and refused > 20


def test_sampled_candidates_equal_the_whole_analysis(everything):
    """A sample of every family: the listed numbers equal the analysis of the instance its describe
    command names, and the decode FLOPs and cache bytes counted by hand from the plan."""
    by_family: dict[str, list] = {}
    for c in everything.candidates:
        by_family.setdefault(c.family, []).append(c)
    assert set(by_family) == set(FAMILIES)
    for members in by_family.values():
        for c in members[:: max(1, len(members) // 3)]:
            instance = instance_of(c)
            chosen = plan(instance)
            assert (c.params, c.flops, c.rank_bound) == (HEADS * params(instance), HEADS * chosen.flops,
                                                         rank_bound(instance)), c.describe  # fmt: skip
            assert c.cache_bytes == cache_by_hand(instance, chosen), c.describe


def cache_by_hand(instance, chosen) -> int:
    """Float32 bytes per token at context T, all heads: each level keeps its key channels for the
    keys of the last token's block (counted on the mask), or for a band the keys later queries still
    score (counted on the mask of a longer sequence) and the newest, and D values of the most kept."""
    kept = []
    for level, counts in zip(instance.levels, level_counts(chosen)):
        if level.band is None:
            keys = int(level.pattern.mask(T)[T - 1].sum())
        else:
            keys = int(level.pattern.mask(2 * T)[T:, :T].any(axis=0).sum()) + 1
        kept.append((keys, counts.channels))
    key_slots = sum(keys * channels for keys, channels in kept)
    return math.ceil(4 * (HEADS * key_slots + D * max(keys for keys, _ in kept)) / T)


def test_near_far_ranks_and_coverage_against_dense_matrices(everything):
    """The rank of the D x D form a pair is scored with, numerically, from the levels whose masks
    score every pair on the diagonal (near) and every pair at distance >= T/8 (far); the share of
    causal pairs scored, from the masks."""
    t, u = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    causal = u <= t
    far = (t - u) >= T // 8
    picks = [c for c in everything.candidates if c.family in ("mlr", "multi", "multi-band", "global-swa", "swa",
                                                              "bilinear-mlr", "kronecker")][::40]  # fmt: skip
    assert len({c.family for c in picks}) >= 5
    for c in picks:
        instance = instance_of(c)
        factors = reference.random_factors(instance, seed=3)
        masks = [level.pattern.mask(T) for level in instance.levels]
        union = np.logical_or.reduce(masks)
        assert c.covered == pytest.approx((union & causal).sum() / causal.sum()), c.describe
        for where, listed in ((np.eye(T, dtype=bool), c.rank_near), (far & causal, c.rank_far)):
            chosen = [lv for lv, m in zip(instance.levels, masks) if m[where].all()]
            matrix = sum((reference.feature_matrix(lv, factors) for lv in chosen), np.zeros((D, D)))
            assert np.linalg.matrix_rank(matrix) == listed, c.describe


def test_local_share_against_masks(everything):
    """The share of the pair FLOPs c(t, u) on causal pairs with t - u <= T/8, summed over the
    causal masks."""
    t, u = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    near = (u <= t) & (t - u <= T // 8)
    for c in [c for c in everything.candidates if c.family in ("mlr", "global-swa", "multi-band")][::50]:
        instance = instance_of(c)
        costs = pair_costs(plan(instance))
        total = sum(cost * np.tril(lv.pattern.mask(T)).sum() for lv, cost in zip(instance.levels, costs))
        close = sum(cost * (lv.pattern.mask(T) & near).sum() for lv, cost in zip(instance.levels, costs))
        assert c.near_share == pytest.approx(close / total), c.describe


def test_decode_and_cache_of_mlr_by_hand():
    """MLR: the token at position T - 1 sees r_l x (its level-l block) keys; the cache keeps, per
    level, its channels for its block, and D values of all T tokens."""
    ranks = [8, 4, 2, 2]
    result = small(families=["mlr"], top=0, max_levels=4)
    mlr = next(c for c in result.candidates if c.options["ranks"] == ranks)
    maps = sum(2 * 2 * D * r for r in ranks)
    pairs = sum(2 * r * (T // 2 ** (level - 1)) for level, r in enumerate(ranks, 1))
    assert mlr.decode_flops == HEADS * (maps + pairs)
    kept = HEADS * sum(r * (T // 2 ** (level - 1)) for level, r in enumerate(ranks, 1)) + D * T
    assert mlr.cache_bytes == -(-4 * kept // T)
    assert (mlr.rank_near, mlr.rank_far, mlr.covered) == (sum(ranks), ranks[0], 1.0)


# ---------------------------------------------------------------------------------------------
# The objectives and the order


EXPECTED = {  # each objective's value from a listed candidate, as the README defines it (None: not ranked)
    "rank": lambda c: c.rank_far,
    "params": lambda c: c.params if c.covered == 1 else None,
    "rank-per-flop": lambda c: c.rank_far / c.flops,
    "local-bias": lambda c: c.near_share if c.covered == 1 else None,
    "decode": lambda c: c.decode_flops / c.rank_far if c.rank_far else None,
}


def test_every_objective_is_defined_here():
    assert set(EXPECTED) == set(OBJECTIVES)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sorted_by_the_objective_as_defined(name, everything):
    """Each listed value is the definition above, the list sorted by it (ties: fewer FLOPs), and a
    candidate the definition leaves out is not listed."""
    result = small(budget=2e6, objective=name, top=0)
    expected = [EXPECTED[name](c) for c in result.candidates]
    assert None not in expected and len(expected) > 50
    assert [c.value for c in result.candidates] == pytest.approx(expected)
    sign = 1 if OBJECTIVES[name].maximize else -1
    keys = [(-sign * v, c.flops) for v, c in zip(expected, result.candidates)]
    assert keys == sorted(keys)
    left_out = [c for c in everything.candidates if c.flops <= 2e6 and EXPECTED[name](c) is None]
    assert bool(result.unranked) == bool(left_out)


def test_rank_ranks_full_rank_forms_first_and_windows_last():
    """The researcher's question: windows and block-diagonal members score no distant pair and
    rank last; the top forms score every pair with full rank D."""
    result = small(objective="rank", top=0)
    top = result.candidates[:10]
    assert all(c.rank_far == D and c.covered == 1 for c in top)
    windows = [n for n, c in enumerate(result.candidates) if c.family == "swa"]
    assert all(result.candidates[n].rank_far == 0 for n in windows)
    assert all(c.rank_far > 0 for c in result.candidates[: min(windows)])  # after every member scoring far pairs


def test_decode_and_params_answer_with_global_members():
    decode = small(objective="decode", top=10).candidates
    assert all(c.rank_far >= D // HEADS for c in decode)  # not a rank-1 einsum
    front = small(objective="params", pareto=True, top=10).candidates
    assert front and all(c.covered == 1 and c.rank_far > 0 for c in front)  # each holds a global level


def test_pareto_front_by_hand():
    # (FLOPs, score to maximise): 0 and 2 tie on FLOPs (2 is worse), 3 is beaten by 1 (fewer FLOPs, more),
    # 4 ties 1 on both (kept), 5 is the best at the most FLOPs, 6 costs more for no gain over 5
    points = [(10, 1.0), (20, 5.0), (10, 0.5), (30, 4.0), (20, 5.0), (40, 9.0), (50, 9.0)]
    assert pareto_front(points) == [0, 1, 4, 5]
    assert pareto_front([]) == []


def test_pareto_option_keeps_only_the_front():
    result = small(budget=3e6, objective="params", pareto=True, top=0)
    front = [(c.flops, c.params) for c in result.candidates]
    assert front and sorted(front) == sorted(result.front)
    for flops, n in front:  # nothing ranked has no more FLOPs and more params (or fewer FLOPs, as many)
        assert not any((f <= flops and p > n) or (f < flops and p >= n) for f, p in result.cloud)


# ---------------------------------------------------------------------------------------------
# The space


def test_budgets_and_duplicates(everything):
    budget = 3e6
    roomy = small(budget=budget, top=0)
    cache = sorted(c.cache_bytes for c in roomy.candidates)[len(roomy.candidates) // 2]
    result = small(budget="3M", cache_budget=f"{cache}", top=0)
    assert result.query["budget"] == budget and result.query["cache_budget"] == cache
    assert result.candidates and all(c.flops <= budget and c.cache_bytes <= cache for c in result.candidates)
    assert len(roomy.candidates) > len(result.candidates) and result.within_budget < result.scored
    names = [(c.family, c.options.get("a"), c.options.get("s"), c.options.get("levels")) for c in everything.candidates]
    assert not [n for n in names if n[0] == "btt" and n[2] == 1]  # btt with s = 1 is monarch, listed once as monarch
    assert sorted(a for f, a, _, _ in names if f == "kronecker") == [2, 4]  # a x b and b x a: once
    assert not [n for n in names if n[0] in ("mlr", "bilinear-mlr") and n[3] == 1]  # one level: the low-rank head
    assert len(everything.candidates) == everything.within_budget - everything.duplicates - everything.unranked


def test_space_sizes_are_counted_before_enumerating():
    space = Space(1024, 8192, 16, multi_levels=3)
    for name in ("mlr", "bilinear-mlr", "multi", "multi-band"):
        assert FAMILIES[name].size(space) == sum(1 for _ in FAMILIES[name].grid(space)), name


def test_an_edited_catalog_file_changes_the_numbers(tmp_path):
    """Search reads the catalog's files: a copy of the catalog whose lowrank einsum gains a factor
    (x W_Q A W_K^T x, an extra r x r core) gives other params and FLOPs."""
    shutil.copytree(catalog.catalog_dir(), tmp_path / "catalog")
    lowrank = tmp_path / "catalog" / "lowrank.ein"
    lowrank.write_text(lowrank.read_text().replace("WQ[i, a] WK[j, a]", "WQ[i, a] A[a, b] WK[j, b]")
                       .replace("index a: r", "index a: r, b: r"))  # fmt: skip
    shipped = small(families=["lowrank"], top=0)
    edited = small(families=["lowrank"], top=0, catalog=tmp_path / "catalog")
    by_rank = {c.options["r"]: c for c in shipped.candidates}
    for c in edited.candidates:
        r = c.options["r"]
        assert c.params == by_rank[r].params + HEADS * r * r
        assert c.flops > by_rank[r].flops
        assert c.describe.startswith(f"einsearch describe {lowrank} ")


def test_printed_commands_run(tmp_path):
    """The describe command of a member of every general family, pasted, prints its numbers."""
    result = small(families=["mlr", "multi", "multi-band", "einsum"], budget=3e6, top=0)
    for name in ("mlr", "multi", "multi-band", "einsum"):
        c = next(c for c in result.candidates if c.family == name)
        words = shlex.split(c.describe)
        out = CliRunner().invoke(main, [*words[1:], "--json", "--rank-limit", "1"], catch_exceptions=False)
        data = json.loads(out.stdout)
        assert (data["totals"]["params"], data["totals"]["score"], data["rank_bound"]) == (c.params, c.flops,
                                                                                           c.rank_bound)  # fmt: skip
        generate = shlex.split(c.generate)
        assert generate[:3] == ["einsearch", "generate", words[2]] and generate[-2] == "-o"


def test_include_a_users_file(tmp_path):
    mine = tmp_path / "mine.ein"
    mine.write_text("size T = 64\nsize D = 16\nsize r = 4\nindex a: r\nscore = x[t, i] Q[i, a] K[j, a] x[u, j]\n")
    result = einsearch.search(16, 64, 2, families=["mine"], include=[mine], top=0)
    assert [c.options["r"] for c in result.candidates] == [16, 8, 4, 2, 1]  # default 4 x 4, 2, 1, 1/2, 1/4
    best = result.candidates[0]
    assert best.describe == f"einsearch describe {shlex.quote(str(mine))} --T 64 --D 16 --r 16 --heads 2"
    instance = catalog.find(str(mine)).resolve(best.options)
    assert (best.params, best.flops, best.rank_bound) == (2 * params(instance), 2 * plan(instance).flops,
                                                          rank_bound(instance))  # fmt: skip
    wide = tmp_path / "wide.ein"  # 5 options of 5 values each: 3,125 points, the first 2,048 tried
    wide.write_text("size T = 64\nsize D = 16\n" + "".join(f"size r{n} = 4\n" for n in range(5))
                    + "index a: r0 * r1 + r2 + r3 + r4\nscore = x[t, i] Q[i, a] K[j, a] x[u, j]\n")  # fmt: skip
    result = einsearch.search(16, 64, 2, families=[], include=[wide], top=0)
    assert result.scored == 2048 and result.notes == (f"{wide}: only the first 2048 option combinations were tried",)


def test_a_registered_family_is_searched():
    """A family of one's own: a catalog file and a grid (here, the low-rank head at odd ranks)."""
    family("odd-lowrank", "lowrank.ein", ("r",))(lambda space: ({"r": r} for r in range(1, 8, 2)))
    try:
        result = small(families=["odd-lowrank"], top=0)
    finally:
        del FAMILIES["odd-lowrank"]
    assert sorted(c.options["r"] for c in result.candidates) == [1, 3, 5, 7]
    assert all(c.family == "odd-lowrank" and c.describe.startswith("einsearch describe lowrank ")
               for c in result.candidates)  # fmt: skip


def test_registries_refuse_a_taken_name_and_list_the_names():
    with pytest.raises(ValueError, match="already registered.*lowrank"):
        family("lowrank", "lowrank.ein")(lambda space: iter([{}]))
    with pytest.raises(ValueError, match="already registered.*local-bias"):
        objective("rank", "again")(lambda costs, heads: 0)
    with pytest.raises(einsearch.OptionError, match="rank, params, rank-per-flop, local-bias, decode"):
        small(objective="speed")
    with pytest.raises(ValueError, match="ONE_EINSUM already has .*kinds registered: .*FEATURE_MAPS"):
        level_kind(Kind.ONE_EINSUM)(lambda net: iter(()))


# ---------------------------------------------------------------------------------------------
# The command


def test_json_csv_text_and_plot(tmp_path):
    code, out, _ = run("--D", "32", "--T", "64", "--heads", "2", "--budget", "3e6", "--top", "5", "--json",
                       "--family", "lowrank,mlr,multi")  # fmt: skip
    data = json.loads(out)
    assert code == 0 and set(data) == {"query", "candidates"} and len(data["candidates"]) == 5
    assert set(data["query"]["units"]) <= set(data["candidates"][0])
    code, out, _ = run("--D", "32", "--T", "64", "--heads", "2", "--budget", "3e6", "--top", "3", "--csv",
                       "--family", "mlr")  # fmt: skip
    assert code == 0 and out.splitlines()[0].startswith("structure,family,options,params,flops,rank_bound")
    assert len(out.splitlines()) == 4
    plot = tmp_path / "front.png"
    code, out, _ = run("--D", "32", "--T", "64", "--heads", "2", "--budget", "3e6", "--family", "lowrank,mlr,swa",
                       "--pareto", "--plot", str(plot))  # fmt: skip
    assert code == 0 and plot.stat().st_size > 0
    assert "objective rank  (Pareto front)" in out and "best    einsearch describe" in out


def test_ein_dir_copies_the_listed_files(tmp_path):
    found = tmp_path / "found"
    code, out, _ = run("--D", "32", "--T", "64", "--heads", "2", "--family", "multi", "--top", "2", "--ein-dir",
                       str(found))  # fmt: skip
    assert code == 0 and [p.name for p in found.iterdir()] == ["multi.ein"]
    assert (found / "multi.ein").read_text() == (catalog.search_dir() / "multi.ein").read_text()
    assert f"einsearch describe {found / 'multi.ein'} " in out


def test_impossible_budget_is_empty_and_exit_0():
    code, out, err = run("--D", "32", "--T", "64", "--budget", "10", "--family", "lowrank,swa")
    assert code == 0 and "no candidate fits" in out
    code, out, err = run("--D", "32", "--T", "64", "--budget", "10", "--json", "--family", "lowrank")
    assert code == 0 and json.loads(out)["candidates"] == [] and "no candidate fits" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--T", "64"], "--D is required"),
        (["--D", "x", "--T", "64"], "--D: expected a whole number"),
        (["--D", "32", "--T", "64", "--objective", "speed"], "--objective: must be one of rank, params"),
        (["--D", "32", "--T", "64", "--budget", "lots"], "--budget: expected a number"),
        (["--D", "32", "--T", "64", "--budget", "-5"], "--budget: must be a positive number"),
        (["--D", "32", "--T", "64", "--heads", "5"], "--heads: must divide D"),
        (["--D", "32", "--T", "64", "--family", "bt"], "no family 'bt'; did you mean btt?"),
        (["--D", "32", "--T", "64", "--json", "--csv"], "give one"),
        (["--D", "32", "--T", "64", "--top", "-1"], "--top: must be a whole number >= 0"),
        (["--D", "32", "--T", "64", "--include", "missing.ein"], "missing.ein: no such file"),
        (["--D", "1099511627776", "--T", "1024"], "--D: search takes widths up to 2^20"),
        (["--D", "64", "--T", "2199023255552"], "--T: search takes sequences up to 2^40"),
        (
            ["--D", "1024", "--T", "8192", "--heads", "16", "--family", "multi", "--multi-levels", "5"],
            "more than 250,000: lower --multi-levels",
        ),
    ],
)
def test_bad_options_exit_2(args, message):
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert err.startswith("einsearch: error: ") and message in err, err


def test_output_places_are_checked_before_the_work(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases = [(["--ein-dir", str(a_file)], "is not a directory"), (["--ein-dir", str(a_file / "dir")],
             "is not a directory"), (["--plot", str(tmp_path / "no" / "f.png")], "does not exist")]  # fmt: skip
    if not os.access(locked, os.W_OK):  # (root writes anywhere)
        cases += [(["--ein-dir", str(locked / "found")], "is not writable"),
                  (["--plot", str(locked / "f.png")], "is not writable")]  # fmt: skip
    for extra, message in cases:
        code, out, err = run("--D", "32", "--T", "64", "--limit", "1", *extra)
        assert code == 2 and message in err and out == "", (extra, err)
    assert not (tmp_path / "no").exists()


def test_limit_and_progress():
    seen = []
    result = small(limit=300, progress=lambda done, total: seen.append((done, total)))
    assert result.scored == 300 and result.truncated
    assert seen and seen[-1] == (300, 300)
    assert "stopped at --limit" in result.text()
