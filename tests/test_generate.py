"""Generated modules: exact against the structure's own einsums, causal, prefix-stable, decodable,
ruff-clean and byte-identical (docs/design.md §3 conventions; the reference is independent of the
generated code: each level's D x D matrix from ``reference.feature_matrix`` and the pair rule
written out here on absolute positions)."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import einsearch
from einsearch import reference
from einsearch.codegen import Form, form_of, map_schedule
from einsearch.planner import Part, plan

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
USER_FILES = {"kronecker_sum": {"T": 16, "D": 12, "a": 3}, "local_kron": {"T": 16, "D": 12, "a": 2}}
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


def load_module(source: str, path: Path):
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, options: dict, tmp_path: Path, heads: int = 2):
    instance = einsearch.load(name).resolve(options)
    source = einsearch.generate(instance, heads=heads)
    module = load_module(source, tmp_path / "generated.py")
    cls = next(v for k, v in vars(module).items() if k.endswith("Attention"))
    torch.manual_seed(0)
    return instance, source, cls().double()


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


@pytest.mark.parametrize("name, options", INSTANCES)
def test_scores_and_forward_equal_the_reference(name, options, tmp_path):
    instance, _, module = build(name, options, tmp_path)
    for T in LENGTHS:
        x = torch.randn(2, T, instance.D, dtype=torch.float64)
        scores = module.scores(x)
        for h in range(module.n_heads):
            factors = {n: f[h].detach().numpy() for n, f in module.factors().items()}
            for b in range(2):
                expected = reference_logits(instance, factors, x[b].numpy())
                np.testing.assert_allclose(scores[b, h].detach().numpy(), expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(module(x), reference_forward(module, instance, x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, options", INSTANCES)
def test_prefix_outputs_do_not_change_and_decoding_equals_forward(name, options, tmp_path):
    instance, _, module = build(name, options, tmp_path)
    x = torch.randn(2, 19, instance.D, dtype=torch.float64)
    full = module(x)
    torch.testing.assert_close(module(x[:, :11]), full[:, :11], rtol=1e-10, atol=1e-12)
    for step in (1, 3):
        cache = module.new_cache(2, 19)
        pieces = [module(x[:, i : i + step], cache=cache) for i in range(0, 19, step)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, options", INSTANCES)
def test_factors_are_the_parameters_describe_counts(name, options, tmp_path):
    instance, _, module = build(name, options, tmp_path, heads=3 if options["D"] % 3 == 0 else 2)
    factors = module.factors()
    assert set(factors) == set(instance.factor_shapes)
    for factor_name, tensor in factors.items():
        assert tuple(tensor.shape) == (module.n_heads, *instance.factor_shapes[factor_name])
        assert tensor is getattr(module, factor_name)
    assert sum(f.numel() for f in factors.values()) == einsearch.describe(instance).params * module.n_heads


RESEARCH = ({}, {"normalize": "levels"}, {"normalize": "coverage", "qk_norm": True, "separate_softmax": True})


@pytest.mark.parametrize("name, options", INSTANCES)
def test_generated_source_is_deterministic_and_ruff_clean(name, options, tmp_path):
    for n, research in enumerate(RESEARCH):
        instance = einsearch.load(name).resolve(options)
        source = einsearch.generate(instance, heads=2, **research)
        assert source == einsearch.generate(einsearch.load(name).resolve(options), heads=2, **research)
        (tmp_path / f"generated{n}.py").write_text(source)
    for command in (["format", "--isolated", "--check"], ["check", "--isolated"]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command, str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["lowrank", "mlr", "swa"])
def test_gradcheck(name, tmp_path):
    options = {"lowrank": {"D": 4, "T": 4, "r": 2}, "mlr": {"D": 4, "T": 4, "levels": 2, "ranks": [1, 1]},
               "swa": {"D": 4, "T": 4, "r": 2, "window": 1}}[name]  # fmt: skip
    _, _, module = build(name, options, tmp_path, heads=2)
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.parametrize("name", ["lowrank", "mlr", "global-swa"])
def test_compiles_in_one_graph(name, tmp_path):
    instance, _, module = build(name, CASES[name][0], tmp_path)
    x = torch.randn(2, 9, instance.D, dtype=torch.float64)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, options", INSTANCES)
def test_flop_counter_against_the_plan(name, options, tmp_path):
    """FlopCounterMode on the forward = the plan's maps (per head, B sequences) + the pairs the form
    computes x (query/key channels + value channels) + the two projections. The pairs differ from
    the plan's (every covered pair, once) by what each form computes besides: the fused and masked
    forms multiply all T x T pairs; the nested form the pairs below the diagonal at each depth
    and every finest block whole (its causal half masked); the band form whole chunk x window
    rectangles (chunks of the smallest multiple of the band width holding 64 queries)."""
    instance, _, module = build(name, options, tmp_path)
    B, T, D, H = 2, instance.T, instance.D, module.n_heads
    x = torch.randn(B, T, D, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        module(x)
    maps, channels = 0, []
    for lp in plan(instance).levels:  # the maps the module renders: the plan's, for one sequence
        schedule = map_schedule(lp)
        for step in schedule.steps:
            if step.part in (Part.QUERY, Part.KEY) and is_counted(step, schedule.sizes):
                maps += B * step.flops  # per token: once per sequence
            elif step.part is Part.FACTORS and is_counted(step, schedule.sizes):
                maps += step.flops  # factors alone: once per head
        channels.append(math.prod(schedule.sizes[i] for i in schedule.interfaces[0][1]))
    pairs = 2 * B * pair_products(instance, T, channels, D // H)
    projections = 2 * (2 * B * T * D * D)
    assert counter.get_total_flops() == H * (maps + pairs) + projections
    if form_of(instance) is Form.FEATURE_MAPS:  # there the query/key part is exactly the plan's
        assert 2 * B * T * T * sum(channels) == plan(instance, batch=B).part_flops(Part.PAIRS)


def pair_products(instance, T: int, channels: list[int], values: int) -> int:
    """Multiply-adds of the pair products (logits and probabilities x values) the form computes."""
    form = form_of(instance)
    if form is Form.NESTED:
        levels = sorted(range(len(channels)), key=lambda n: instance.levels[n].blocks)
        prefix = np.cumsum([channels[n] for n in levels])
        t, u = np.arange(T)[:, None], np.arange(T)[None, :]
        depth = sum(covers(instance.levels[n], instance.T, t, u).astype(int) for n in levels)  # levels holding both
        below = (u < t) & (depth < len(levels))
        total = sum(int((below & (depth == m)).sum()) * (prefix[m - 1] + values) for m in range(1, len(levels)))
        finest = instance.T // instance.levels[levels[-1]].blocks
        sizes = [min(finest, T - start) for start in range(0, T, finest)]
        return total + sum(s * s for s in sizes) * (prefix[-1] + values)
    if form is Form.BAND:
        lo, hi = max(instance.levels[0].band[0], 0), min(instance.levels[0].band[1], T - 1)
        width = hi - lo + 1
        chunk = min(width * -(-64 // width), T)
        return -(-T // chunk) * chunk * (chunk + hi - lo) * (sum(channels) + values)
    return T * T * (sum(channels) + values)


def is_counted(step, sizes) -> bool:
    """FlopCounterMode counts a contraction that sums an index of size > 1 (torch runs the others
    as elementwise products, which it does not count)."""
    summed = set().union(*(t.indices for t in step.inputs)) - set(step.output.indices)
    return len(step.inputs) > 1 and math.prod(sizes[i] for i in summed) > 1


def build_with(name: str, options: dict, tmp_path: Path, **research):
    instance = einsearch.load(name).resolve(options)
    module = load_module(einsearch.generate(instance, heads=2, **research), tmp_path / "research.py")
    cls = next(v for k, v in vars(module).items() if k.endswith("Attention"))
    torch.manual_seed(0)
    return instance, cls().double()


@pytest.mark.parametrize("normalize", ["levels", "coverage"])
@pytest.mark.parametrize("name", ["mlr", "global-swa", "bilinear-mlr"])
def test_normalized_logits(name, normalize, tmp_path):
    """The research code's normalisations: the summed logit over the number of levels, or each
    pair's over the number of levels that cover it."""
    instance, module = build_with(name, CASES[name][0], tmp_path, normalize=normalize)
    x = torch.randn(1, 19, instance.D, dtype=torch.float64)
    t, u = np.arange(19)[:, None], np.arange(19)[None, :]
    count = sum(covers(level, instance.T, t, u).astype(float) for level in instance.levels)
    divisor = len(instance.levels) if normalize == "levels" else np.maximum(count, 1)
    for h in range(2):
        factors = {n: f[h].detach().numpy() for n, f in module.factors().items()}
        expected = reference_logits(instance, factors, x[0].numpy()) / divisor
        np.testing.assert_allclose(module.scores(x)[0, h].detach().numpy(), expected, rtol=1e-9, atol=1e-12)
    check_decoding(module, x)


def check_decoding(module, x: torch.Tensor) -> None:
    cache = module.new_cache(x.shape[0], x.shape[1])
    steps = torch.cat([module(x[:, i : i + 1], cache=cache) for i in range(x.shape[1])], dim=1)
    torch.testing.assert_close(steps, module(x), rtol=1e-10, atol=1e-12)


def test_qk_norm(tmp_path):
    """A LayerNorm over each head's query channels and one over its key channels, then the scale."""
    instance, module = build_with("lowrank", {"D": 12, "T": 16, "r": 4}, tmp_path, qk_norm=True)
    with torch.no_grad():
        module.q_norm.weight.uniform_(0.5, 1.5)
        module.k_norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 9, 12, dtype=torch.float64)
    for h in range(2):
        q = module.q_norm(x[0] @ module.WQ[h])
        k = module.k_norm(x[0] @ module.WK[h])
        expected = (q @ k.T).masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(module.scores(x)[0, h], expected, rtol=1e-9, atol=1e-12)
    check_decoding(module, x)


def test_separate_softmaxes_add(tmp_path):
    """Global + window in the research form: a softmax over each pattern's logits, outputs added."""
    instance, module = build_with("global-swa", CASES["global-swa"][0], tmp_path, separate_softmax=True)
    x = torch.randn(1, 19, instance.D, dtype=torch.float64)
    t, u = np.arange(19)[:, None], np.arange(19)[None, :]
    v = module.v_proj(x).view(1, 19, 2, -1).transpose(1, 2)
    out = torch.zeros_like(v)
    for h in range(2):
        factors = {n: f[h].detach().numpy() for n, f in module.factors().items()}
        for level in instance.levels:
            mask = covers(level, instance.T, t, u) & (u <= t)
            logits = np.where(mask, x[0].numpy() @ reference.feature_matrix(level, factors) @ x[0].numpy().T, -np.inf)
            out[0, h] += torch.softmax(torch.from_numpy(logits), dim=-1) @ v[0, h]
    expected = module.o_proj(out.transpose(1, 2).reshape(1, 19, -1))
    torch.testing.assert_close(module(x), expected, rtol=1e-9, atol=1e-12)
    check_decoding(module, x)


@pytest.mark.parametrize("name", ["mlr", "swa"])
def test_fast_kernels_in_float32(name, tmp_path):
    """float32 takes the fast path (the CPU flash op per depth for nested blocks): it matches the
    float64 module, forward and gradients, and compiles in one graph."""
    instance, _, exact = build(name, CASES[name][0], tmp_path)
    fast = type(exact)().float()
    fast.load_state_dict({k: v.float() for k, v in exact.state_dict().items()})
    x = torch.randn(2, 37, instance.D, dtype=torch.float64)
    x32 = x.float().requires_grad_()
    torch.testing.assert_close(fast(x32).double(), exact(x), rtol=1e-4, atol=1e-5)
    fast(x32).sum().backward()
    x64 = x.clone().requires_grad_()
    exact(x64).sum().backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-4)
    compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x.float()), fast(x.float()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mlr", "swa", "global-swa", "lowrank"])
def test_cache_size_in_the_docstring(name, tmp_path):
    """The docstring's bytes per token bound what the decoding cache really holds at every context up
    to block_size, and miss it by at most one key per level and one value (the bound counts whole
    blocks and windows; at most len - 1 keys of a block are ever kept)."""
    instance, source, module = build(name, CASES[name][0], tmp_path)
    T, D, H = instance.T, instance.D, module.n_heads
    printed = int(re.search(r"at most ([\d,]+) bytes per token", source).group(1).replace(",", ""))
    x = torch.randn(1, T, D, dtype=torch.float64)
    channels = sum(q.shape[-1] for q, _ in module.level_maps(x[:, :1]))
    cache, most = module.new_cache(1, T), 0
    for t in range(T):
        module(x[:, t : t + 1], cache=cache)
        held = sum(k.numel() for k in cache["keys"]) + cache["v"].numel()
        most = max(most, held)
    assert 4 * most <= printed * T < 4 * (most + H * channels + D) + T  # T: the bound is rounded up per token
