"""Any size answers in seconds: hypothesis drives describe and plan over catalog structures and
random sizes up to T = 2^40 and D = 2^20 (docs/design.md §5), each case under a time limit."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einsearch

LIMIT_S = 2.0


@st.composite
def cases(draw):
    name = draw(st.sampled_from(["dense", "lowrank", "btt", "monarch", "kronecker", "tt", "bilinear-mlr", "mlr",
                                 "swa", "global-swa"]))  # fmt: skip
    T = 2 ** draw(st.integers(0, 40)) * draw(st.sampled_from([1, 3]))
    D = 2 ** draw(st.integers(2, 20))
    options: dict = {"T": T, "D": D}
    if name in ("mlr", "bilinear-mlr"):
        levels = draw(st.integers(1, 12))
        options.update(levels=levels, ranks=draw(st.lists(st.integers(1, 64), min_size=levels, max_size=levels)))
    if name in ("swa", "global-swa"):
        options["window"] = draw(st.integers(0, 2**41))
    if name == "tt":
        options.update(a=2, b=2)
    return name, options


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_describe_and_plan_answer_any_size_quickly(case):
    name, options = case
    try:
        instance = einsearch.load(name).resolve(options)
    except einsearch.EinsearchError:
        return  # a clean error (e.g. T not a multiple of the block count) is an answer
    start = time.perf_counter()
    d = einsearch.describe(instance)
    p = einsearch.plan(instance, batch=4)
    elapsed = time.perf_counter() - start
    assert elapsed < LIMIT_S, (name, options, elapsed)
    assert d.flops.score == einsearch.plan(instance).flops
    assert p.flops >= d.flops.score
    assert 1 <= d.rank <= min(instance.T, d.rank_bound) or instance.is_feature_structure
    assert len(d.profile.distance) <= 200  # bounded output whatever T
