"""The runtime that generated modules carry (einsearch/runtime): the partition of the causal pairs
into batched calls, checked pair by pair against the pair rule, and the attention that runs it,
checked against an independent masked T x T softmax built straight from the rule.

`attention` has two paths: the fused kernels with a hand-written backward (float32, bfloat16 on
the CPU), and the plain tiled path (float64, dropout). The fused path is also called directly in
float64 here (the CPU flash ops accept it) to check it, and its backward, exactly.
"""

import math
import random

import pytest
import torch

from einsearch.runtime import attention as rt
from einsearch.runtime.tiling import (
    Pattern,
    cache_elements,
    call_pairs,
    covers,
    first_touch,
    level_keys,
    partition,
)

needs_flash = pytest.mark.skipif(not rt._CpuFlash.available, reason="no CPU flash-attention ops in this torch")
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and rt._Cuda.available), reason="no CUDA device")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread avoids waiting on a busy machine's other cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlr(block_size: int, levels: int) -> tuple:
    """MLR attention's patterns: level l has 2^(l-1) blocks of the block_size-token structure."""
    return (Pattern(),) + tuple(Pattern(block_size >> level) for level in range(1, levels))


# (name, patterns, widths): the catalog's sequence structures and the shapes that used to fall back
# to the masked form.
STRUCTURES = [
    ("global", (Pattern(),), (4,)),
    ("mlr", mlr(32, 4), (3, 2, 2, 1)),
    ("band", (Pattern(None, 0, 8),), (4,)),
    ("global-band", (Pattern(), Pattern(None, 0, 8)), (2, 3)),
    ("nested blocks", (Pattern(24), Pattern(12), Pattern(4)), (2, 1, 2)),
    ("halves and thirds", (Pattern(30), Pattern(20)), (2, 3)),
    ("same block count", (Pattern(16), Pattern(16)), (2, 2)),
    ("band beside global", (Pattern(None, 0, 5), Pattern()), (3, 2)),
    ("lagged band", (Pattern(None, 3, 11),), (3,)),
    ("lagged band and global", (Pattern(), Pattern(None, 2, 6)), (2, 2)),
    ("band inside blocks", (Pattern(16, 0, 5), Pattern(None, 1, 2), Pattern(3)), (2, 2, 1)),
    ("long odd blocks", (Pattern(), Pattern(70), Pattern(None, 0, 80)), (2, 2, 2)),
]
LENGTHS = [1, 5, 64, 71, 150]  # T = 1, not a multiple of any block, past the blocks' structure


def classes(T: int, patterns: tuple) -> torch.Tensor:
    """Each causal pair's class as a bit set of the levels covering it (0: none, or u > t)."""
    t, u = torch.arange(T)[:, None], torch.arange(T)[None, :]
    bits = torch.zeros(T, T, dtype=torch.int64)
    for level, pattern in enumerate(patterns):
        bits |= (covers(pattern, t, u) & (u <= t)).long() << level
    return bits


def reference(q, k, v, patterns: tuple, widths: tuple) -> torch.Tensor:
    """Softmax over u <= t of the summed dot products of the levels covering (t, u); zero rows
    where no key is covered."""
    T = q.shape[-2]
    t, u = torch.arange(T)[:, None], torch.arange(T)[None, :]
    logits = torch.zeros(*q.shape[:-2], T, T, dtype=q.dtype)
    scored = torch.zeros(T, T, dtype=torch.bool)
    lo = 0
    for pattern, width in zip(patterns, widths):
        covered = covers(pattern, t, u) & (u <= t)
        logits = logits + torch.where(covered, q[..., lo : lo + width] @ k[..., lo : lo + width].mT, 0.0)
        scored |= covered
        lo += width
    return torch.softmax(logits.masked_fill(~scored, -math.inf), -1).nan_to_num(0.0) @ v


def inputs(T: int, widths: tuple, Dv: int = 5, dtype=torch.float64, seed: int = 0, B: int = 2, H: int = 3):
    g = torch.Generator().manual_seed(seed)
    C = sum(widths)
    return [torch.randn(B, H, T, d, generator=g, dtype=torch.float64).to(dtype) for d in (C, C, Dv)]


def members(blocks):
    return [(blocks.start + g * blocks.stride, blocks.length) for g in range(blocks.count)]


# -- the partition -----------------------------------------------------------------------------------


def check_partition(T: int, patterns: tuple) -> None:
    """Every covered causal pair in exactly one call, with exactly its levels; dense and causal
    calls hold only pairs of their class; nothing outside the sequence; no overlapping members."""
    bits = classes(T, patterns)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    seen = torch.zeros(T, T, dtype=torch.int64)
    for call in partition(T, patterns):
        cls = sum(1 << level for level in call.levels)
        queries, keys = call.queries, call.keys
        assert queries.count == keys.count and queries.stride == keys.stride
        assert queries.count == 1 or queries.stride >= max(queries.length, keys.length)
        for (t0, rows), (u0, cols) in zip(members(queries), members(keys)):
            assert 0 <= t0 and t0 + rows <= T and 0 <= u0 and u0 + cols <= T
            tile, inside = bits[t0 : t0 + rows, u0 : u0 + cols], causal[t0 : t0 + rows, u0 : u0 + cols]
            if call.mode == "dense":
                assert inside.all() and (tile == cls).all(), call
                mine = inside
            elif call.mode == "causal":
                lower = torch.ones(rows, cols, dtype=torch.bool).tril()
                assert rows == cols and inside[lower].all() and (tile[lower] == cls).all(), call
                mine = lower
            else:
                mine = inside & (tile == cls)
            seen[t0 : t0 + rows, u0 : u0 + cols] += mine.long()
    covered = bits != 0
    assert (seen[covered] == 1).all(), "a covered pair missed or scored twice"
    assert (seen[~covered] == 0).all(), "a pair no level covers was scored"


@pytest.mark.parametrize("name,patterns,widths", STRUCTURES, ids=[s[0] for s in STRUCTURES])
@pytest.mark.parametrize("T", LENGTHS + [200])
def test_partition_covers_each_pair_once_with_its_levels(name, patterns, widths, T):
    check_partition(T, patterns)


def test_partition_of_random_structures():
    rng = random.Random(5)
    for _ in range(60):
        patterns = tuple(
            Pattern(
                rng.choice([None, None, 1, 3, 8, 16, 17, 40, 64, 100]),
                rng.choice([None, None, -2, 0, 1, 6]),
                rng.choice([None, None, 0, 4, 20, 63, 130]),
            )
            for _ in range(rng.randint(1, 4))
        )
        check_partition(rng.choice([1, 2, 33, 64, 65, 128, 190, 257]), patterns)


@pytest.mark.parametrize("hi", [64, 100, 128, 300])
@pytest.mark.parametrize("lo", [0, 5])
@pytest.mark.parametrize("with_global", [False, True])
def test_partition_of_wide_bands(hi, lo, with_global):
    """Chunks of a band's strip: a causal square, dense pieces, masked edges; chunks cut by the ends."""
    check_partition(700, (Pattern(None, lo, hi),) + (Pattern(),) * with_global)


def test_all_global_is_one_causal_call():
    for patterns in [(Pattern(),), (Pattern(), Pattern(None, None, None), Pattern(5000))]:
        (call,) = partition(4096, patterns)
        assert call.mode == "causal" and call.queries == call.keys == (0, 1, 4096, 4096)


@pytest.mark.parametrize("T,block_size", [(2048, 2048), (4096, 4096), (16384, 16384), (4096, 2048)])
def test_mlr_is_one_call_per_depth(T, block_size):
    """As the nested kernel: the finest blocks causally, then one batched call per depth (past
    block_size the global level alone also scores the pairs across its blocks: one call more)."""
    calls = partition(T, mlr(block_size, 8))
    assert len(calls) == 8 + (T > block_size)
    finest = calls[0]
    assert finest.mode == "causal" and finest.queries == (0, T // (block_size >> 7), block_size >> 7, block_size >> 7)
    assert sorted(len(call.levels) for call in calls[1:]) == [1] * (T > block_size) + list(range(1, 8))
    # All pairs below the diagonal at each depth, plus the finest blocks whole.
    n = block_size >> 7
    assert sum(map(call_pairs, calls)) == T * (T - n) // 2 + T * n


def scored(call) -> int:
    """Pairs a call scores: a causal square's lower triangle, any other rectangle whole."""
    rows, cols = call.queries.length, call.keys.length
    return call.queries.count * (rows * (rows + 1) // 2 if call.mode == "causal" else rows * cols)


def test_band_and_global_band_take_few_calls_and_no_extra_work():
    T, w = 4096, 128
    band = partition(T, (Pattern(None, 0, w),))
    assert len(band) <= 3 and sum(map(scored, band)) <= 2 * T * (w + 1)
    both = partition(T, (Pattern(), Pattern(None, 0, w)))
    assert len(both) <= 4 and sum(map(scored, both)) <= 1.05 * T * (T + 1) // 2
    assert all(call.queries.length <= w for call in band)


def test_level_keys_follow_the_rule():
    for _, patterns, _ in STRUCTURES:
        for pattern in patterns:
            bits = classes(150, (pattern,))
            for t in range(150):
                first, end = level_keys(pattern, t)
                assert first <= end and int(bits[t].sum()) == end - first
                assert bool(bits[t, first:end].all())


def test_first_touch_marks_calls_no_earlier_call_shares_rows_with():
    for _, patterns, _ in STRUCTURES:
        calls = partition(150, patterns)
        seen = torch.zeros(150, dtype=torch.bool)
        for call, fresh in zip(calls, first_touch(150, calls)):
            rows = torch.zeros(150, dtype=torch.bool)
            for t0, length in members(call.queries):
                rows[t0 : t0 + length] = True
            assert fresh == (not (rows & seen).any())
            seen |= rows


# -- attention -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,patterns,widths", STRUCTURES, ids=[s[0] for s in STRUCTURES])
@pytest.mark.parametrize("T", LENGTHS)
def test_attention_matches_reference_float64(name, patterns, widths, T):
    q, k, v = inputs(T, widths, seed=T)
    expected = reference(q, k, v, patterns, widths)
    out = rt.attention(q, k, v, patterns, widths)  # float64: the plain path
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    if rt._CpuFlash.available:
        fused = rt._Fused.apply(q, k, v, patterns, widths, rt._CpuFlash, False)
        torch.testing.assert_close(fused, expected, rtol=0, atol=1e-12)


def test_wide_band_beside_global_matches_reference():
    """A strip cut into chunks of 128 queries with a dense piece between the causal square and
    the masked edge."""
    patterns, widths = (Pattern(), Pattern(None, 0, 200)), (2, 3)
    q, k, v = inputs(700, widths, B=1, H=2)
    expected = reference(q, k, v, patterns, widths)
    assert {call.mode for call in partition(700, patterns)} == {"causal", "dense", "masked"}
    torch.testing.assert_close(rt.attention(q, k, v, patterns, widths), expected, rtol=0, atol=1e-12)
    if rt._CpuFlash.available:
        fused = rt._Fused.apply(q, k, v, patterns, widths, rt._CpuFlash, False)
        torch.testing.assert_close(fused, expected, rtol=0, atol=1e-12)


@needs_flash
@pytest.mark.parametrize("name,patterns,widths", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_flash_float32_matches_reference(name, patterns, widths):
    q, k, v = inputs(150, widths)
    expected = reference(q, k, v, patterns, widths)
    out = rt.attention(q.float(), k.float(), v.float(), patterns, widths)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@needs_flash
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_half_precision_is_close(dtype):
    _, patterns, widths = STRUCTURES[3]
    q, k, v = inputs(150, widths, Dv=8)
    out = rt.attention(q.to(dtype), k.to(dtype), v.to(dtype), patterns, widths)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), reference(q, k, v, patterns, widths), rtol=0, atol=0.05)


@pytest.mark.parametrize("fused", [False, True])
def test_bilinear_widths(fused):
    """More query/key channels than value channels (C = D, Dv = D / H): values padded, sliced off."""
    if fused and not rt._CpuFlash.available:
        pytest.skip("no CPU flash-attention ops in this torch")
    patterns, widths = (Pattern(), Pattern(), Pattern(), Pattern()), (8, 4, 2, 2)
    q, k, v = inputs(70, widths, Dv=4)
    expected = reference(q, k, v, patterns, widths)
    out = (
        rt._Fused.apply(q, k, v, patterns, widths, rt._CpuFlash, False)
        if fused
        else rt.attention(q, k, v, patterns, widths)
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_expanded_and_non_contiguous_inputs():
    _, patterns, widths = STRUCTURES[1]
    q, k, v = inputs(45, widths, B=1, H=1)
    q, k = q.expand(2, 3, -1, -1), k.expand(2, 3, -1, -1)  # as generated modules share maps
    v = v.expand(2, 3, -1, -1).transpose(2, 3).contiguous().transpose(2, 3)
    expected = reference(q, k, v, patterns, widths)
    torch.testing.assert_close(rt.attention(q, k, v, patterns, widths), expected)
    out = rt.attention(q.float(), k.float(), v.float(), patterns, widths)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


GRAD_CASES = [STRUCTURES[i] for i in (1, 3, 5, 8, 10)]


@pytest.mark.parametrize("name,patterns,widths", GRAD_CASES, ids=[s[0] for s in GRAD_CASES])
def test_gradcheck_plain(name, patterns, widths):
    q, k, v = (x.requires_grad_() for x in inputs(19, widths, Dv=3, B=1, H=2))
    assert torch.autograd.gradcheck(lambda q, k, v: rt.attention(q, k, v, patterns, widths), (q, k, v), fast_mode=True)


@needs_flash
@pytest.mark.parametrize("coverage", [False, True])
@pytest.mark.parametrize("name,patterns,widths", GRAD_CASES, ids=[s[0] for s in GRAD_CASES])
def test_gradcheck_fused_float64(name, patterns, widths, coverage):
    """The hand-written backward (split-KV rule, one flash backward per call), exactly; with each
    pair's logit over its covering levels too."""
    q, k, v = (x.requires_grad_() for x in inputs(19, widths, Dv=3, B=1, H=2))
    fused = rt._Fused.apply
    check = torch.autograd.gradcheck
    assert check(lambda q, k, v: fused(q, k, v, patterns, widths, rt._CpuFlash, coverage), (q, k, v), fast_mode=True)


def gradients(fn, base, grad_out):
    leaves = [x.clone().requires_grad_() for x in base]
    fn(*leaves).backward(grad_out)
    return [x.grad for x in leaves]


@needs_flash
@pytest.mark.parametrize("name,patterns,widths", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_flash_gradients_float32_match_reference(name, patterns, widths):
    base = inputs(150, widths, dtype=torch.float32, seed=1)
    grad_out = torch.randn(2, 3, 150, 5, generator=torch.Generator().manual_seed(2))
    got = gradients(lambda q, k, v: rt.attention(q, k, v, patterns, widths), base, grad_out)
    want = gradients(
        lambda q, k, v: reference(q, k, v, patterns, widths), [x.double() for x in base], grad_out.double()
    )
    for g, w in zip(got, want):
        assert (g.double() - w).abs().max() <= 1e-4 * w.abs().max()


def test_dropout():
    _, patterns, widths = STRUCTURES[3]
    q, k, v = inputs(40, widths, dtype=torch.float32)
    clean = rt.attention(q, k, v, patterns, widths)
    torch.manual_seed(0)
    dropped = rt.attention(q, k, v, patterns, widths, dropout_p=0.5)
    torch.manual_seed(0)
    again = rt.attention(q, k, v, patterns, widths, dropout_p=0.5)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, clean)
    torch.testing.assert_close(dropped, again)


def test_bad_inputs_are_rejected():
    q, k, v = inputs(8, (2, 2))
    with pytest.raises(ValueError, match="one width per level"):
        rt.attention(q, k, v, (Pattern(), Pattern(4)), (2, 3))
    with pytest.raises(ValueError, match="one width per level"):
        rt.attention(q, k, v, (Pattern(),), (2, 2))
    with pytest.raises(ValueError, match=r"\(B, H, T, Dv\)"):
        rt.attention(q, k, v[:, :, :5], (Pattern(), Pattern(4)), (2, 2))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,patterns,widths", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_cuda_matches_reference(name, patterns, widths, dtype):
    base = inputs(150, widths, Dv=8)
    grad_out = torch.randn(2, 3, 150, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = gradients(lambda q, k, v: reference(q, k, v, patterns, widths), base, grad_out)
    expected = reference(*base, patterns, widths)
    leaves = [x.to("cuda", dtype).requires_grad_() for x in base]
    out = rt.attention(*leaves, patterns, widths)
    out.backward(grad_out.to("cuda", dtype))
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(out.double().cpu(), expected, rtol=0, atol=tolerance)
    for leaf, w in zip(leaves, want):
        assert (leaf.grad.double().cpu() - w).abs().max() <= 20 * tolerance * w.abs().max()


# -- decoding --------------------------------------------------------------------------------------


DECODE_CASES = [STRUCTURES[i] for i in (0, 1, 2, 3, 5, 8, 10)]


@pytest.mark.parametrize("name,patterns,widths", DECODE_CASES, ids=[s[0] for s in DECODE_CASES])
@pytest.mark.parametrize("step", [1, 3])
def test_decoding_matches_the_full_forward(name, patterns, widths, step):
    """Steps of one and of several tokens; the rings wrap (bands of 9 and 12 keys, blocks)."""
    T = 40
    q, k, v = inputs(T, widths)
    expected = reference(q, k, v, patterns, widths)
    cache = rt.new_cache(2, 3, T, patterns, widths, 5, dtype=torch.float64, device="cpu")
    outs = [
        rt.decode(cache, q[:, :, i : i + step], k[:, :, i : i + step], v[:, :, i : i + step]) for i in range(0, T, step)
    ]
    torch.testing.assert_close(torch.cat(outs, dim=2), expected, rtol=0, atol=1e-12)
    assert cache.length == T


@pytest.mark.parametrize("name,patterns,widths", STRUCTURES, ids=[s[0] for s in STRUCTURES])
@pytest.mark.parametrize("context", [1, 10, 200])
def test_cache_elements_are_the_buffers(name, patterns, widths, context):
    cache = rt.new_cache(1, 1, context, patterns, widths, 7, dtype=torch.float32, device="cpu")
    allocated = sum(keys.numel() for keys in cache.keys) + cache.values.numel()
    assert cache_elements(patterns, widths, 7, context) == allocated


def test_decoding_errors():
    _, patterns, widths = STRUCTURES[3]
    cache = rt.new_cache(2, 3, 6, patterns, widths, 5, dtype=torch.float64, device="cpu")
    q, k, v = inputs(4, widths)
    with pytest.raises(ValueError, match="batch of 2"):
        rt.decode(cache, q[:1], k[:1], v[:1])
    with pytest.raises(ValueError, match="3 heads"):
        rt.decode(cache, q[:, :2], k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="need C=5"):
        rt.decode(cache, q[..., :4], k[..., :4], v)
    with pytest.raises(ValueError, match="values of 5"):
        rt.decode(cache, q, k, v[..., :4])
    with pytest.raises(ValueError, match="holds torch.float64"):
        rt.decode(cache, q.float(), k.float(), v.float())
    rt.decode(cache, q, k, v)
    with pytest.raises(ValueError, match="max_len=6"):
        rt.decode(cache, q, k, v)
    with pytest.raises(ValueError, match="one width per level"):
        rt.new_cache(1, 1, 8, patterns, (2,), 5, dtype=torch.float32, device="cpu")
