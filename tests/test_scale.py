"""Any size answers: hypothesis drives describe and plan over catalog structures and sizes up to
T = 2^40 and D = 2^20 (docs/design.md §5). Every drawn case is a valid structure, and its numbers
are checked against counts made here in exact integers: the §3 charge of every plan step from its
index sizes, and the pairs each level's pattern scores, in closed form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support import causal_pairs, charged

import einsearch
from einsearch.analyze.counts import pair_flops

CATALOG = ["dense", "lowrank", "btt", "monarch", "kronecker", "tt", "bilinear-mlr", "mlr", "swa", "global-swa"]


@st.composite
def cases(draw):
    """A catalog structure at sizes it accepts: MLR's 2^(levels - 1) blocks divide T, bilinear
    MLR's feature blocks divide D."""
    name = draw(st.sampled_from(CATALOG))
    twos = draw(st.integers(0, 40))
    T = 2**twos * draw(st.sampled_from([1, 3]))
    D = 2 ** draw(st.integers(2, 20))
    options: dict = {"T": T, "D": D}
    if name in ("mlr", "bilinear-mlr"):
        most = twos + 1 if name == "mlr" else D.bit_length()
        levels = draw(st.integers(1, min(12, most)))
        options.update(levels=levels, ranks=draw(st.lists(st.integers(1, 64), min_size=levels, max_size=levels)))
    if name in ("swa", "global-swa"):
        options["window"] = draw(st.integers(0, 2**41))
    if name == "tt":
        options.update(a=2, b=2)
    return name, options


@settings(max_examples=40, deadline=None, derandomize=True)
@given(cases())
def test_describe_and_plan_answer_any_size(case):
    name, options = case
    instance = einsearch.load(name).resolve(options)  # every case is valid: an error fails the test
    d = einsearch.describe(instance, rank_limit=1)  # the bound: the exact rank is tested at its own sizes
    p = einsearch.plan(instance, batch=4)
    assert d.flops.score == charged(d.plan.schedules)  # exact: a float anywhere would lose T^2 = 2^80
    assert p.flops == charged(p.schedules) and p.batch == 4
    T = instance.T
    pairs = 0
    for schedule in d.plan.schedules:
        if not schedule.fused:  # one einsum: all of it is the level's pairs
            pairs += schedule.flops
            continue
        for number, flops in pair_flops(schedule).items():
            level = instance.levels[number - 1]
            scored = causal_pairs(T, level.blocks, level.band)
            pairs += scored * flops
    assert d.flops.scored_pairs == T * d.flops.per_token + d.flops.factors + pairs
    assert 1 <= d.rank <= (instance.D if instance.is_feature_structure else T)
    assert len(d.profile.distance) <= 200  # bounded output whatever T
