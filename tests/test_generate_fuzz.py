"""Hypothesis writes random valid structures (blocks, bands, loops, several terms, grouped features,
factors on one side or both) and each generated module must equal the independent reference in
float64, decode exactly, and survive construction at other sizes' clean errors."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_generate import check_decoding, check_reference

import einsearch
from einsearch.codegen import attention_class
from einsearch.structure import from_text

FEATURES = {  # the feature side of a term: (query axis, factors, key axis, index lines), D = 12
    "lowrank": ("i", "Q{n}[i, a{n}] K{n}[j, a{n}]", "j", "index a{n}: {r}"),
    "dense": ("i", "W{n}[i, j]", "j", ""),
    "key side": ("i", "x2{n}[i, c{n}] y2{n}[c{n}, j]", "j", "index c{n}: {r}"),
    "kronecker": ("(i1 i2)", "A{n}[i1, j1] B{n}[i2, j2]", "(j1 j2)", ""),
    "block diagonal": ("(p i)", "L{n}[p, i, a{n}] R{n}[p, j, a{n}]", "(p j)", "index a{n}: {r}"),
}


@st.composite
def structures(draw) -> str:
    """The text of a random structure over T = 12 tokens (block_size) and D = 12 features."""
    lines = ['doc "random"', "size T = 12", "size D = 12", "index i1: 3, j1: 3, p: 2"]
    for n in range(draw(st.integers(1, 3))):
        query, factors, key, index = FEATURES[draw(st.sampled_from(sorted(FEATURES)))]
        r = draw(st.integers(1, 4))
        if index:
            lines.append(index.format(n=n, r=r))
        pattern = draw(st.sampled_from(["global", "blocks", "band"]))
        blocks = draw(st.sampled_from([2, 3, 4])) if pattern == "blocks" else 1
        if pattern == "blocks":
            lines.append(f"index g{n}: {blocks}")
        t, u = (f"(g{n} t)", f"(g{n} u)") if pattern == "blocks" else ("t", "u")
        line = f"score {'+=' if n else '='} x[{t}, {query}] {factors.format(n=n)} x[{u}, {key}]"
        if pattern == "band":
            lo = draw(st.integers(0, 3))
            line += f"  where {lo} <= t - u <= {lo + draw(st.integers(0, 14))}"
        if draw(st.booleans()):
            line += f"  scale 1/{draw(st.integers(1, 5))}"
        lines.append(line)
    return "\n".join(lines) + "\n"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structures(), st.integers(1, 2))
def test_random_structures_generate_exact_modules(text, heads):
    instance = from_text(text, name="random").resolve()
    cls = attention_class(einsearch.generate(instance, heads=heads))
    torch.manual_seed(0)
    module = cls().double()
    check_reference(module, instance, lengths=(5, 17))
    check_decoding(module, torch.randn(1, 14, 12, dtype=torch.float64), steps=(1, 4))
