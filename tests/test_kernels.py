"""The attention kernels that generated modules paste in (templates/partials/), against a
naive T x T reference built straight from their definitions.

`nested_attention` runs on two paths: the CPU flash kernels with a hand-written backward,
and a plain autograd fallback. float64 goes to the fallback; the flash path is called
directly here to check it exactly in float64 as well (the CPU flash ops accept float64).
"""

import importlib.util
import itertools
import math
from pathlib import Path

import pytest
import torch

PARTIALS = Path(__file__).resolve().parent.parent / "templates" / "partials"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"partials_{name}", PARTIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nested = _load("nested_attention")
band = _load("band_attention")

needs_flash = pytest.mark.skipif(not nested._CPU_FLASH, reason="no CPU flash-attention ops in this torch")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread avoids waiting on a busy machine's other cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_nested(q, k, v, prefix, lengths):
    """Softmax over u <= t of q_t[:R_m] . k_u[:R_m], m the deepest level holding both."""
    T = q.shape[-2]
    t = torch.arange(T)
    logits = torch.full((*q.shape[:-2], T, T), -math.inf, dtype=q.dtype)
    for R, n in zip(prefix, lengths):  # coarse to fine: a deeper level overwrites
        same = torch.ones(T, T, dtype=torch.bool) if n is None else t[:, None] // n == t[None, :] // n
        logits = torch.where(same, q[..., :R] @ k[..., :R].mT, logits)
    logits = logits.masked_fill(t[None, :] > t[:, None], -math.inf)
    return torch.softmax(logits, -1) @ v


def naive_band(q, k, v, lo, hi):
    """Softmax over the keys with max(lo, 0) <= t - u <= hi; rows with none give zeros."""
    T = q.shape[-2]
    t = torch.arange(T)
    d = t[:, None] - t[None, :]
    logits = (q @ k.mT).masked_fill((d < max(lo, 0)) | (d > hi), -math.inf)
    return torch.softmax(logits, -1).nan_to_num(0.0) @ v


def inputs(B, H, T, C, Dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, d, generator=g, dtype=dtype) for d in (C, C, Dv)]


# (block lengths coarse to fine, ranks per level): 1 to 4 levels, ratios 2 and 3, global or not
CONFIGS = [
    ((None,), (4,)),
    ((8,), (4,)),
    ((None, 4), (3, 2)),
    ((12, 4), (3, 2)),
    ((None, 8, 4, 2), (4, 2, 2, 1)),
    ((16, 8, 4, 2), (1, 2, 2, 3)),
    ((18, 6, 2), (2, 3, 1)),
    ((None, 6, 3, 1), (2, 2, 2, 2)),
    ((None, 64, 32, 16, 8), (8, 2, 2, 1, 1)),  # 5 levels, T = 70 just past the 64-token blocks
]
TS = [1, 5, 13, 24, 40, 70]


def _case(lengths, ranks):
    return tuple(itertools.accumulate(ranks)), lengths


@pytest.mark.parametrize("lengths,ranks", CONFIGS)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("Dv", [3, None])
def test_nested_matches_naive_float64(lengths, ranks, T, Dv):
    prefix, lengths = _case(lengths, ranks)
    C = prefix[-1]
    q, k, v = inputs(2, 3, T, C, Dv or C, seed=T)
    expected = naive_nested(q, k, v, prefix, lengths)
    out = nested.nested_attention(q, k, v, prefix, lengths)  # float64: the fallback
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    if nested._CPU_FLASH:
        flash = nested._nested_flash(q, k, v, prefix, lengths)
        torch.testing.assert_close(flash, expected, rtol=0, atol=1e-12)


@needs_flash
@pytest.mark.parametrize("lengths,ranks", CONFIGS)
def test_flash_float32_matches_fallback(lengths, ranks):
    prefix, lengths = _case(lengths, ranks)
    q, k, v = inputs(2, 2, 70, prefix[-1], 5, dtype=torch.float32)
    groups = nested._nested_groups(70, prefix, lengths)
    expected = nested._nested_plain(*(x.flatten(0, 1) for x in (q, k, v)), groups, 0.0, False)
    out = nested.nested_attention(q, k, v, prefix, lengths)
    torch.testing.assert_close(out.flatten(0, 1), expected, rtol=1e-5, atol=1e-5)


@needs_flash
def test_flash_bfloat16_is_close():
    prefix, lengths = _case(*CONFIGS[-1])
    q, k, v = inputs(1, 2, 70, prefix[-1], 8)
    expected = naive_nested(q, k, v, prefix, lengths)
    out = nested.nested_attention(*(x.bfloat16() for x in (q, k, v)), prefix, lengths)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=0.05)


def test_non_contiguous_inputs():
    prefix, lengths = _case((None, 8, 4, 2), (4, 2, 2, 1))
    q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in inputs(2, 3, 21, 9, 4))
    assert not q.is_contiguous()
    expected = naive_nested(q, k, v, prefix, lengths)
    torch.testing.assert_close(nested.nested_attention(q, k, v, prefix, lengths), expected)
    out = nested.nested_attention(q.float(), k.float(), v.float(), prefix, lengths)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_gradcheck_fallback():
    prefix, lengths = _case((None, 4, 2), (2, 1, 1))
    q, k, v = (x.requires_grad_() for x in inputs(1, 2, 7, 4, 3))
    assert torch.autograd.gradcheck(lambda q, k, v: nested.nested_attention(q, k, v, prefix, lengths), (q, k, v))


@needs_flash
@pytest.mark.parametrize("lengths,ranks,T", [((None, 4, 2), (2, 1, 1), 7), ((12, 4, 2), (3, 1, 1), 29)])
def test_gradcheck_flash_float64(lengths, ranks, T):
    """The hand-written backward (split-KV rule, one flash backward per depth), exactly."""
    prefix, lengths = _case(lengths, ranks)
    q, k, v = (x.requires_grad_() for x in inputs(1, 2, T, prefix[-1], 3))
    assert torch.autograd.gradcheck(lambda q, k, v: nested._nested_flash(q, k, v, prefix, lengths), (q, k, v))


@needs_flash
@pytest.mark.parametrize("lengths,ranks", CONFIGS)
def test_flash_gradients_float32_match_fallback(lengths, ranks):
    prefix, lengths = _case(lengths, ranks)
    base = inputs(2, 2, 70, prefix[-1], 5, dtype=torch.float32, seed=1)
    grad_out = torch.randn(2, 2, 70, 5, generator=torch.Generator().manual_seed(2))

    def grads(fn):
        leaves = [x.clone().requires_grad_() for x in base]
        fn(*leaves).reshape(grad_out.shape).backward(grad_out)
        return [x.grad for x in leaves]

    groups = nested._nested_groups(70, prefix, lengths)
    flash = grads(lambda q, k, v: nested.nested_attention(q, k, v, prefix, lengths))
    plain = grads(
        lambda q, k, v: nested._nested_plain(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), groups, 0.0, False)
    )
    for got, want in zip(flash, plain):
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.parametrize("flash", [False, True])
def test_prefix_invariance(flash):
    """Appending tokens never changes the outputs of the earlier ones (absolute blocks)."""
    if flash and not nested._CPU_FLASH:
        pytest.skip("no CPU flash-attention ops in this torch")
    dtype = torch.float32 if flash else torch.float64
    prefix, lengths = _case((None, 8, 4, 2), (4, 2, 2, 1))
    q, k, v = inputs(1, 2, 45, prefix[-1], 4, dtype=dtype)
    full = nested.nested_attention(q, k, v, prefix, lengths)
    for t in (1, 7, 8, 23, 44):
        part = nested.nested_attention(q[:, :, :t], k[:, :, :t], v[:, :, :t], prefix, lengths)
        torch.testing.assert_close(part, full[:, :, :t], rtol=1e-6, atol=1e-6)


def test_dropout():
    prefix, lengths = _case((None, 4, 2), (2, 1, 1))
    q, k, v = inputs(1, 2, 16, 4, 3, dtype=torch.float32)
    clean = nested.nested_attention(q, k, v, prefix, lengths)
    # Off outside training, whatever the rate.
    torch.testing.assert_close(nested.nested_attention(q, k, v, prefix, lengths, 0.5), clean)
    torch.manual_seed(0)
    dropped = nested.nested_attention(q, k, v, prefix, lengths, 0.5, training=True)
    torch.manual_seed(0)
    again = nested.nested_attention(q, k, v, prefix, lengths, 0.5, training=True)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, clean)
    torch.testing.assert_close(dropped, again)


def test_bad_levels_are_rejected():
    q, k, v = inputs(1, 1, 8, 4, 4)
    with pytest.raises(ValueError, match="prefix"):
        nested.nested_attention(q, k, v, (2, 3), (None, 4))
    with pytest.raises(ValueError, match="block lengths"):
        nested.nested_attention(q, k, v, (2, 4), (6, 4))


BANDS = [(0, 0), (0, 1), (0, 4), (2, 7), (-3, 4), (3, 3), (0, 1000), (5, 1000), (30, 40), (100, 120), (4, 2)]


@pytest.mark.parametrize("lo,hi", BANDS)
@pytest.mark.parametrize("T", [1, 5, 33, 70, 130])
def test_band_matches_naive_float64(lo, hi, T):
    q, k, v = inputs(2, 3, T, 5, 4, seed=T)
    out = band.band_attention(q, k, v, lo, hi)
    assert out.shape == (2, 3, T, 4)
    torch.testing.assert_close(out, naive_band(q, k, v, lo, hi), rtol=0, atol=1e-12)


@pytest.mark.parametrize("lo,hi", [(0, 2), (2, 3), (0, 100)])
def test_band_gradcheck(lo, hi):
    q, k, v = (x.requires_grad_() for x in inputs(1, 2, 9, 3, 2))
    assert torch.autograd.gradcheck(lambda q, k, v: band.band_attention(q, k, v, lo, hi), (q, k, v))


def test_band_dropout():
    q, k, v = inputs(1, 2, 40, 4, 3, dtype=torch.float32)
    clean = band.band_attention(q, k, v, 0, 8)
    torch.testing.assert_close(band.band_attention(q, k, v, 0, 8, 0.5), clean)
    dropped = band.band_attention(q, k, v, 0, 8, 0.5, training=True)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, clean)
