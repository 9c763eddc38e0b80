"""Generated modules: exact against the structure's own einsums, causal, prefix-stable, decodable,
ruff-clean and byte-identical (docs/design.md §3 conventions; the reference is independent of the
generated code: each level's D x D matrix from ``reference.feature_matrix`` and the pair rule
written out here on absolute positions)."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import einsearch
from einsearch import reference
from einsearch.codegen import attention_class

HERE = Path(__file__).resolve().parent

# Two sizes per catalog structure: non-square splits, s > 1, T not a multiple of a block count
# (the input, not block_size), inputs longer than block_size.
CASES = {
    "dense": [{"D": 12, "T": 16}, {"D": 8, "T": 8}],
    "lowrank": [{"D": 12, "T": 16, "r": 3}, {"D": 8, "T": 8, "r": 8}],
    "btt": [{"D": 24, "T": 16, "s": 2}, {"D": 18, "T": 8, "s": 3, "split": "research"}],
    "monarch": [{"D": 24, "T": 16}, {"D": 12, "T": 8, "split": "research"}],
    "kronecker": [{"D": 12, "T": 16}, {"D": 18, "T": 8, "split": "research"}],
    "tt": [{"D": 24, "T": 16, "a": 2, "b": 3, "s": 2}, {"D": 8, "T": 8, "a": 2, "b": 2, "s": 1}],
    "bilinear-mlr": [{"D": 16, "T": 16, "levels": 3, "ranks": [3, 2, 1]},
                     {"D": 8, "T": 8, "levels": 2, "ranks": [2, 2]}],
    "mlr": [{"D": 12, "T": 16, "levels": 3, "ranks": [4, 2, 1]}, {"D": 8, "T": 12, "levels": 2, "ranks": [2, 3]}],
    "swa": [{"D": 12, "T": 16, "r": 3, "window": 4}, {"D": 8, "T": 8, "r": 2, "window": 0}],
    "global-swa": [{"D": 12, "T": 16, "rg": 2, "rw": 3, "window": 3}, {"D": 8, "T": 8, "rg": 1, "rw": 2, "window": 7}],
}  # fmt: skip
USER_FILES = {"kronecker_sum": {"T": 16, "D": 12, "a": 3}, "local_kron": {"T": 16, "D": 12, "a": 2},
              "reversed_tt": {}, "python_names": {}, "two_terms_loop": {"n": 3}}  # fmt: skip
LENGTHS = (1, 7, 19)  # input lengths: one token, not a multiple of any block count, past block_size


def instance_params() -> list:
    params = [pytest.param(name, options, id=f"{name}-{n}") for name, cases in CASES.items()
              for n, options in enumerate(cases)]  # fmt: skip
    params += [pytest.param(str(HERE / "structures" / f"{name}.ein"), options, id=name)
               for name, options in USER_FILES.items()]  # fmt: skip
    return params


INSTANCES = instance_params()


def test_cases_cover_the_catalog():
    assert sorted(CASES) == einsearch.catalog_names()


def build(name: str, options: dict, heads: int = 2, **research):
    """The instance, the source generated for it and one module of it in float64 (seeded)."""
    instance = einsearch.load(name).resolve(options)
    source = generated(name, frozen(options), heads, frozen(research))
    torch.manual_seed(0)
    return instance, source, attention_class(source)().double()


def frozen(options: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


@functools.cache
def generated(name: str, options: tuple, heads: int, research: tuple) -> str:
    """Each source once per test session (generating describes the structure, which takes a while)."""
    instance = einsearch.load(name).resolve({k: list(v) if isinstance(v, tuple) else v for k, v in options})
    return einsearch.generate(instance, heads=heads, **dict(research))


def covers(level, block_size: int, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The pair rule on absolute positions: blocks of block_size / p tokens (p = 1: global), bands."""
    if level.band is not None:
        lo, hi = level.band
        return (t - u >= lo) & (t - u <= hi)
    if level.blocks == 1:
        return np.ones(np.broadcast(t, u).shape, dtype=bool)
    length = block_size // level.blocks
    return t // length == u // length


def reference_logits(instance, factors: dict, x: np.ndarray) -> np.ndarray:
    """(T, T) logits of one head: sum over covering levels of scale x_t^T M_l x_u, -inf elsewhere
    and above the diagonal."""
    T = x.shape[0]
    t, u = np.arange(T)[:, None], np.arange(T)[None, :]
    logits = np.zeros((T, T))
    allowed = np.zeros((T, T), dtype=bool)
    for level in instance.levels:
        mask = covers(level, instance.T, t, u)
        logits += mask * (x @ reference.feature_matrix(level, factors) @ x.T)
        allowed |= mask
    return np.where(allowed & (u <= t), logits, -np.inf)


def reference_forward(module, instance, x: torch.Tensor) -> torch.Tensor:
    B, T, D = x.shape
    H = module.n_heads
    v = module.v_proj(x).view(B, T, H, -1).transpose(1, 2)
    out = torch.zeros_like(v)
    for h in range(H):
        factors = {n: f[h].detach().numpy() for n, f in module.factors().items()}
        for b in range(B):
            logits = torch.from_numpy(reference_logits(instance, factors, x[b].detach().numpy()))
            probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)
            out[b, h] = probs @ v[b, h]
    return module.o_proj(out.transpose(1, 2).reshape(B, T, D))


def check_reference(module, instance, lengths=LENGTHS) -> None:
    """``scores`` and ``forward`` equal the reference at every input length."""
    for T in lengths:
        x = torch.randn(2, T, instance.D, dtype=torch.float64)
        scores = module.scores(x)
        for h in range(module.n_heads):
            factors = {n: f[h].detach().numpy() for n, f in module.factors().items()}
            for b in range(2):
                expected = reference_logits(instance, factors, x[b].numpy())
                np.testing.assert_allclose(scores[b, h].detach().numpy(), expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(module(x), reference_forward(module, instance, x), rtol=1e-9, atol=1e-12)


def check_decoding(module, x: torch.Tensor, steps=(1, 3)) -> None:
    """Decoding a sequence a few tokens at a time gives the full forward's outputs."""
    full = module(x)
    for step in steps:
        cache = module.new_cache(x.shape[0], x.shape[1])
        pieces = [module(x[:, i : i + step], cache=cache) for i in range(0, x.shape[1], step)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, options", INSTANCES)
def test_scores_and_forward_equal_the_reference(name, options):
    instance, _, module = build(name, options)
    check_reference(module, instance)


@pytest.mark.parametrize("name, options", INSTANCES)
def test_prefix_outputs_do_not_change_and_decoding_equals_forward(name, options):
    instance, _, module = build(name, options)
    x = torch.randn(2, 19, instance.D, dtype=torch.float64)
    torch.testing.assert_close(module(x[:, :11]), module(x)[:, :11], rtol=1e-10, atol=1e-12)
    check_decoding(module, x)


# -- one file, any size ------------------------------------------------------------------------

# Five option sets per catalog entry, none the generated defaults: constructing the class generated
# at the defaults with them must equal generating with them.
OPTION_SETS = {
    "dense": [{"D": 12, "T": 16}, {"D": 8, "T": 8}, {"D": 6, "T": 32}, {"D": 10, "T": 4}, {"D": 16, "T": 12}],
    "lowrank": [{"D": 12, "T": 16, "r": 3}, {"D": 8, "T": 8, "r": 8}, {"D": 6, "T": 4, "r": 1},
                {"D": 16, "T": 32, "r": 5}, {"D": 10, "T": 12, "r": 2}],
    "btt": [{"D": 24, "T": 16, "s": 2}, {"D": 18, "T": 8, "s": 3, "split": "research"}, {"D": 16, "T": 8, "a": 2},
            {"D": 36, "T": 8}, {"D": 12, "T": 16, "s": 1, "split": "research"}],
    "monarch": [{"D": 24, "T": 16}, {"D": 12, "T": 8, "split": "research"}, {"D": 16, "T": 8, "a": 8},
                {"D": 18, "T": 4}, {"D": 20, "T": 16, "split": "research"}],
    "kronecker": [{"D": 12, "T": 16}, {"D": 18, "T": 8, "split": "research"}, {"D": 20, "T": 8, "a": 4},
                  {"D": 16, "T": 4}, {"D": 6, "T": 8, "a": 1}],
    "tt": [{"D": 24, "T": 16, "a": 2, "b": 3, "s": 2}, {"D": 8, "T": 8, "a": 2, "b": 2, "s": 1},
           {"D": 12, "T": 4, "a": 3, "b": 2, "s": 3}, {"D": 16, "T": 8, "a": 4, "b": 2, "s": 1},
           {"D": 18, "T": 8, "a": 3, "b": 3, "s": 2}],
    "bilinear-mlr": [{"D": 16, "T": 8, "levels": 3, "ranks": [3, 2, 1]},
                     {"D": 8, "T": 8, "levels": 2, "ranks": [2, 2]}, {"D": 12, "T": 16, "levels": 1, "ranks": [5]},
                     {"D": 16, "T": 4, "levels": 4, "ranks": [1, 1, 1, 1]},
                     {"D": 24, "T": 8, "levels": 3, "ranks": [4, 4, 2]}],
    "mlr": [{"D": 16, "T": 16, "levels": 3, "ranks": [4, 2, 1]},
            {"D": 8, "T": 32, "levels": 5, "ranks": [2, 2, 1, 1, 1]}, {"D": 12, "T": 8, "levels": 2, "ranks": [3, 3]},
            {"D": 10, "T": 16, "levels": 1, "ranks": [4]}, {"D": 6, "T": 24, "levels": 3, "ranks": [2, 1, 1]}],
    "swa": [{"D": 12, "T": 16, "r": 3, "window": 4}, {"D": 8, "T": 8, "r": 2, "window": 0},
            {"D": 6, "T": 32, "r": 6, "window": 31}, {"D": 10, "T": 8, "r": 1, "window": 2},
            {"D": 16, "T": 12, "r": 4, "window": 100}],
    "global-swa": [{"D": 12, "T": 16, "rg": 2, "rw": 3, "window": 3}, {"D": 8, "T": 8, "rg": 1, "rw": 2, "window": 0},
                   {"D": 6, "T": 32, "rg": 3, "rw": 3, "window": 7}, {"D": 10, "T": 8, "rg": 4, "rw": 1, "window": 1},
                   {"D": 16, "T": 12, "rg": 2, "rw": 5, "window": 20}],
}  # fmt: skip
USER_OPTION_SETS = {
    "kronecker_sum": [{"T": 16, "D": 12, "a": 3}, {"T": 8, "D": 20, "a": 5}],
    "local_kron": [{"T": 16, "D": 12, "a": 2, "p": 2}, {"T": 24, "D": 8, "a": 4, "r": 2, "p": 3}],
}


def option_params() -> list:
    params = [pytest.param(name, options, id=f"{name}-{n}") for name, sets in OPTION_SETS.items()
              for n, options in enumerate(sets)]  # fmt: skip
    params += [pytest.param(str(HERE / "structures" / f"{name}.ein"), options, id=f"{name}-{n}")
               for name, sets in USER_OPTION_SETS.items() for n, options in enumerate(sets)]  # fmt: skip
    return params


def test_option_sets_cover_the_catalog():
    assert sorted(OPTION_SETS) == einsearch.catalog_names()


def keywords(options: dict) -> dict:
    """Structure options as constructor keywords: T and D become block_size and d_model."""
    named = {"T": "block_size", "D": "d_model"}
    return {named.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in options.items()}


@pytest.mark.parametrize("name, options", option_params())
def test_constructing_with_options_equals_generating_with_them(name, options):
    """One file serves every size: the class generated at the structure's defaults, built with other
    options, has the factors (names, shapes) and outputs of the class generated with them."""
    instance, _, regenerated = build(name, options)
    default = einsearch.load(name).resolve()
    cls = attention_class(generated(name, (), 1, ()))
    built = cls(n_heads=2, **keywords(options)).double()
    assert {n: f.shape for n, f in built.factors().items()} == {n: f.shape for n, f in regenerated.factors().items()}
    assert default.values != instance.values
    built.load_state_dict(regenerated.state_dict())
    x = torch.randn(2, 13, instance.D, dtype=torch.float64)
    torch.testing.assert_close(built(x), regenerated(x), rtol=1e-12, atol=1e-12)
    check_reference(built, instance, lengths=(9,))


@pytest.mark.parametrize("name, options, message", [
    ("mlr", {"levels": 3}, "ranks needs 3 values"),
    ("mlr", {"block_size": 1000}, "block_size in x[(g t), i]: 1000 is not a multiple of 16"),
    ("mlr", {"ranks": (1, 2, 3, 4, 5, 6, 7, "x")}, "each value of ranks must be a whole number"),
    ("btt", {"split": "even"}, "split must be one of 'balanced', 'research', got 'even'"),
    ("btt", {"d_model": 64, "a": 5}, "b = D / a must be a whole number, got 12.8"),
    ("btt", {"s": 0}, "s must be a positive whole number, got 0"),
    ("swa", {"window": -1}, "requirement window >= 0 does not hold (window = -1)"),
    ("tt", {"d_model": 60}, "requirement D % (a * b) == 0 does not hold (D = 60, a = 8, b = 8): a * b must divide D"),
    ("lowrank", {"n_heads": 3}, "n_heads=3 must divide d_model=256"),
    ("lowrank", {"d_model": 0}, "d_model must be a positive whole number, got 0"),
])  # fmt: skip
def test_bad_options_name_the_option_and_the_reason(name, options, message):
    cls = attention_class(generated(name, (), 1, ()))
    with pytest.raises(ValueError) as err:
        cls(**options)
    assert message in str(err.value)


def test_bad_inputs_and_caches_are_value_errors():
    instance, _, module = build("mlr", CASES["mlr"][0])
    for x in (torch.zeros(2, 0, 12), torch.zeros(2, 5, 11), torch.zeros(5, 12)):
        with pytest.raises(ValueError, match=r"x must be \(B, T >= 1, 12\)"):
            module(x.double())
    cache = module.new_cache(2, 4)
    with pytest.raises(ValueError, match="batch"):
        module(torch.zeros(3, 1, 12, dtype=torch.float64), cache=cache)
    module(torch.zeros(2, 4, 12, dtype=torch.float64), cache=cache)
    with pytest.raises(ValueError, match="4"):
        module(torch.zeros(2, 1, 12, dtype=torch.float64), cache=cache)


@pytest.mark.parametrize("name, options", INSTANCES)
def test_factors_are_the_parameters_describe_counts(name, options):
    D = einsearch.load(name).resolve(options).D
    instance, _, module = build(name, options, heads=3 if D % 3 == 0 else 2)
    factors = module.factors()
    assert set(factors) == set(instance.factor_shapes)
    parameters = {id(p) for p in module.parameters()}
    for factor_name, tensor in factors.items():
        assert tuple(tensor.shape) == (module.n_heads, *instance.factor_shapes[factor_name])
        assert id(tensor) in parameters
    assert sum(f.numel() for f in factors.values()) == einsearch.describe(instance).params * module.n_heads


@pytest.mark.parametrize("width", [8, 16, 32])
def test_mup_at_every_width(width):
    """init="mup" zeroes the read-out, and param_groups gives each factor lr * base / fan_in at any
    width the one file is built at (fan_in: the features a factor contracts with one token)."""
    cls = attention_class(generated("btt", (), 1, ()))
    module = cls(d_model=width, n_heads=2, block_size=8, init="mup")
    assert not module.o_proj.weight.any()
    a = einsearch.expr.sqrt_divisor(width)
    groups = {id(p): g["lr"] for g in module.param_groups(1e-3, base_fan_in=64) for p in g["params"]}
    assert groups[id(module.L)] == pytest.approx(1e-3 * 64 / a)  # L[i2, i1, j1, k] reads (i1 i2) and j1 = a
    assert groups[id(module.R)] == pytest.approx(1e-3 * 64 / (width // a))  # R[j1, j2, i2, k]: min(b, D) = b
    assert groups[id(module.v_proj.weight)] == pytest.approx(1e-3 * 64 / width)
    for name, factor in module.factors().items():
        assert factor.std().item() == pytest.approx(module.fan_in[name] ** -0.5, rel=0.5)


# -- the research code's parameterisations (docs/design.md §7) -------------------------------------


def masked_logits(module, q: torch.Tensor, k: torch.Tensor, T: int) -> torch.Tensor:
    """Logits of (B, H, T, C) queries and keys: each level's channels where it covers the pair."""
    t, u = np.arange(T)[:, None], np.arange(T)[None, :]
    logits, scored = 0, np.zeros((T, T), dtype=bool)
    for level, q_l, k_l in zip(module.levels, q.split(module.widths, -1), k.split(module.widths, -1)):
        covered = module_covers(level.pattern, t, u)
        logits = logits + (q_l @ k_l.transpose(-1, -2)) * torch.from_numpy(covered)
        scored |= covered
    return logits.masked_fill(torch.from_numpy(~scored | (u > t)), float("-inf"))


def module_covers(pattern, t, u) -> np.ndarray:
    """The pair rule on absolute positions, written out here (blocks of `length`, then a band)."""
    covered = np.ones(np.broadcast(t, u).shape, dtype=bool)
    if pattern.length is not None:
        covered &= t // pattern.length == u // pattern.length
    if pattern.lo is not None:
        covered &= (t - u >= pattern.lo) & (t - u <= pattern.hi)
    return covered


def layer_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weight-only LayerNorm over the last axis, written out."""
    centred = x - x.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * weight


@pytest.mark.parametrize("qk_norm", ["pooled", "level", "key"])
@pytest.mark.parametrize("name", ["mlr", "bilinear-mlr", "btt"])
def test_qk_norm(name, qk_norm):
    """Weight-only LayerNorms on the maps (all levels' channels together, per level, or the key map
    only), then each level's scale on its query channels."""
    instance, _, module = build(name, CASES[name][0], qk_norm=qk_norm)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, torch.nn.LayerNorm):
                assert norm.bias is None
                norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 9, instance.D, dtype=torch.float64)
    q, k = module.maps(x)
    if qk_norm == "pooled":
        q, k = layer_norm(q, module.q_norm.weight), layer_norm(k, module.k_norm.weight)
    elif qk_norm == "level":
        split = module.widths
        q = torch.cat([layer_norm(q_l, n.weight) for q_l, n in zip(q.split(split, -1), module.q_norms)], -1)
        k = torch.cat([layer_norm(k_l, n.weight) for k_l, n in zip(k.split(split, -1), module.k_norms)], -1)
    else:
        k = layer_norm(k, module.k_norm.weight)
    scales = torch.tensor([lv.scale for lv in module.levels for _ in range(lv.width)], dtype=torch.float64)
    torch.testing.assert_close(module.scores(x), masked_logits(module, q * scales, k, 9), rtol=1e-9, atol=1e-12)
    check_decoding(module, x, steps=(1,))


@pytest.mark.parametrize("logit_scale, rule", [("sqrt", lambda w: 1 / math.sqrt(w)), ("inverse", lambda w: 1 / w)])
@pytest.mark.parametrize("name", ["lowrank", "mlr", "btt"])
def test_logit_scale(name, logit_scale, rule):
    """Each level's scale replaced by 1 / sqrt(its channels) or 1 / its channels, at any size."""
    instance, source, module = build(name, CASES[name][0], logit_scale=logit_scale)
    assert [level.scale for level in module.levels] == [rule(level.width) for level in module.levels]
    built = attention_class(source)(**keywords(CASES[name][1]))
    assert [level.scale for level in built.levels] == [rule(level.width) for level in built.levels]
    x = torch.randn(1, 9, instance.D, dtype=torch.float64)
    q, k = module.maps(x)
    scales = torch.tensor([rule(lv.width) for lv in module.levels for _ in range(lv.width)], dtype=torch.float64)
    torch.testing.assert_close(module.scores(x), masked_logits(module, q * scales, k, 9), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["btt", "bilinear-mlr"])
def test_rms_cap(name):
    """A factor whose RMS is above that of its initialisation (fan_in^-1/2) scores as if scaled down to
    it; one below is left alone."""
    instance, _, capped = build(name, CASES[name][0], rms_cap=True)
    _, _, plain = build(name, CASES[name][0])
    with torch.no_grad():
        for n, factor in enumerate(capped.factors().values()):
            factor.mul_(3.0 if n % 2 == 0 else 0.5)
    plain.load_state_dict(capped.state_dict())
    with torch.no_grad():
        for name_, factor in plain.factors().items():
            rms = factor.pow(2).mean().sqrt()
            factor.div_(max(1.0, (rms * capped.fan_in[name_] ** 0.5).item()))
    x = torch.randn(2, 9, instance.D, dtype=torch.float64)
    torch.testing.assert_close(capped(x), plain(x), rtol=1e-10, atol=1e-12)


def test_normalize_levels():
    """The summed logit divided by the number of levels (the research MLR's option)."""
    instance, _, module = build("mlr", CASES["mlr"][0], normalize="levels")
    _, _, plain = build("mlr", CASES["mlr"][0])
    plain.load_state_dict(module.state_dict())
    x = torch.randn(1, 19, instance.D, dtype=torch.float64)
    expected = plain.scores(x) / len(instance.levels)
    torch.testing.assert_close(module.scores(x), expected, rtol=1e-10, atol=1e-12)
    check_decoding(module, x, steps=(1,))


def level_logits(module, x: torch.Tensor, levels) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed logits of some of a module's levels (its own scales and QK maps) and, per pair,
    how many of them cover it (u <= t only)."""
    T = x.shape[1]
    t, u = np.arange(T)[:, None], np.arange(T)[None, :]
    q, k = module.qk(x)
    qs, ks = q.split(module.widths, -1), k.split(module.widths, -1)
    logits, count = 0, np.zeros((T, T), dtype=int)
    for n in levels:
        covered = module_covers(module.levels[n].pattern, t, u) & (u <= t)
        logits = logits + (qs[n] @ ks[n].transpose(-1, -2)) * torch.from_numpy(covered)
        count += covered
    return logits, torch.from_numpy(count)


def attend(module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The heads' outputs for given (B, H, T, T) logits, before the output projection: softmax
    (rows with no key give zeros), then the values."""
    B, T, D = x.shape
    v = module.v_proj(x).view(B, T, module.n_heads, -1).transpose(1, 2)
    out = torch.softmax(logits, dim=-1).nan_to_num(0.0) @ v
    return out.transpose(1, 2).reshape(B, T, D)


@pytest.mark.parametrize("name", ["global-swa", "mlr"])
def test_normalize_coverage(name):
    """Each pair's logit divided by the number of levels that cover it (1 or 2 for global + window,
    every level for the pairs of MLR's smallest blocks), through the fused kernels, the plain path
    and decoding."""
    instance, _, module = build(name, CASES[name][0], normalize="coverage")
    x = torch.randn(2, 19, instance.D, dtype=torch.float64)
    logits, count = level_logits(module, x, range(len(module.levels)))
    expected = (logits / count.clamp(min=1)).masked_fill(count == 0, float("-inf"))
    torch.testing.assert_close(module.scores(x), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(module(x), module.o_proj(attend(module, x, expected)), rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        fused = module.float()(x.float())  # float32: the fused kernels
        expected = module.o_proj(attend(module, x.float(), expected.float()))
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)
    check_decoding(module.double(), x)


def test_separate_softmax():
    """Global + window with a softmax per sequence pattern, outputs added (the research form), and
    its decoding; the scores are the two groups' logits."""
    name = "global-swa"
    instance, _, module = build(name, CASES[name][0], separate_softmax=True)
    assert module.groups == [[0], [1]]
    x = torch.randn(2, 19, instance.D, dtype=torch.float64)
    groups = []
    for group in module.groups:
        logits, count = level_logits(module, x, group)
        groups.append(logits.masked_fill(count == 0, float("-inf")))
    torch.testing.assert_close(module.scores(x), torch.stack(groups), rtol=1e-10, atol=1e-12)
    expected = module.o_proj(sum(attend(module, x, logits) for logits in groups))
    torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-12)
    check_decoding(module, x)


RESEARCH = ({}, {"normalize": "levels", "qk_norm": "level", "logit_scale": "sqrt", "rms_cap": True},
            {"qk_norm": "pooled", "logit_scale": "inverse"}, {"qk_norm": "key"},
            {"normalize": "coverage", "separate_softmax": True})  # fmt: skip


@pytest.mark.parametrize("name, options", INSTANCES)
def test_generated_source_is_deterministic_and_ruff_clean(name, options, tmp_path):
    """Byte-identical on every run, and clean under ruff's defaults (format and lint), with every
    research option too."""
    for n, research in enumerate(RESEARCH):
        source = generated(name, frozen(options), 2, frozen(research))
        assert source == einsearch.generate(einsearch.load(name).resolve(options), heads=2, **research)
        (tmp_path / f"generated{n}.py").write_text(source)
    for command in (["format", "--isolated", "--check", "--diff"], ["check", "--isolated"]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command, str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["class", "torch", "nn", "F", "Level", "9lives", "my class"])
def test_class_names_that_cannot_be_defined_are_refused(name):
    with pytest.raises(einsearch.OptionError, match="cannot name the class"):
        einsearch.generate(einsearch.load("lowrank").resolve(), class_name=name)


FLOP_SIZES = {name: [cases[0], cases[1]] for name, cases in CASES.items()}


@pytest.mark.parametrize(
    "name, options",
    [
        pytest.param(name, options, id=f"{name}-{n}")
        for name, sets in FLOP_SIZES.items()
        for n, options in enumerate(sets)
    ],
)
def test_flop_counter_equals_the_plan(name, options):
    """FlopCounterMode on a module's forward through the fused kernels (float32, CPU flash ops
    counted with the formula PyTorch uses for its other fused attention kernels), and on the plain
    path (float64), equals what the plan predicts: its maps, its partition's calls and the two
    projections (codegen.module_flops)."""
    from einsearch.benchmark import count_cpu_flash
    from einsearch.codegen import module_flops

    instance, source, _ = build(name, options)
    module = attention_class(source)(n_heads=2)
    count_cpu_flash()
    for length, dtype in ((instance.T, torch.float32), (instance.T + 5, torch.float32), (instance.T, torch.float64)):
        x = torch.randn(3, length, instance.D, dtype=dtype)
        with FlopCounterMode(display=False) as counter:
            module.to(dtype)(x)
        fused = dtype != torch.float64
        predicted = module_flops(einsearch.plan(instance), heads=2, batch=3, length=length, fused=fused)
        assert counter.get_total_flops() == predicted


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's note on the graph break
def test_torch_compile_runs_the_module():
    """torch.compile runs a generated module (the fused kernels' autograd function is a graph
    break) and gives eager's outputs."""
    instance, _, module = build("mlr", CASES["mlr"][0])
    module = module.float()
    x = torch.randn(2, 19, instance.D)
    compiled = torch.compile(module, backend="eager")
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-6)
