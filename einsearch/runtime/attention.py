"""Causal attention over levels of channels, each scoring its own pairs: the partition
of ``tiling`` run as batched attention calls merged by their log-sum-exp (forward,
backward, decoding).

Query t and key u <= t are scored by the levels that cover the pair (its class); the
logit is one dot product over those levels' channels, so a call of one class passes q
with the other levels' channels zeroed. Each call returns its partial output and
log-sum-exp, and partial softmaxes over disjoint key sets merge exactly:

    lse = log(exp(lse_a) + exp(lse_b))
    out = out_a + sigmoid(lse_b - lse_a) * (out_b - out_a)

Backward (the split-KV rule): with the *merged* output and log-sum-exp of its queries,
each call's own attention backward yields exactly its share of the gradients
(P = exp(S - lse) is its part of the softmax, and rowsum(dO * O) is the merged one); the
shares add up. Nothing T x T is built.

Paths: the fused kernels (CPU flash attention; on CUDA the flash and memory-efficient
kernels), all private ops, looked up with ``hasattr``; and the plain path (float64,
dropout, any device): the same calls as matrix products in tiles, a first pass for each
query's log-sum-exp, a second for the output, autograd through it.
"""

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from .tiling import (
    Blocks,
    Call,
    Pattern,
    cache_slots,
    covers,
    first_touch,
    level_keys,
    partition,
)  # one file in a generated module

# Plain-path tiles are at most this many queries x keys per member of a call.
_CHUNK = 256


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    patterns: tuple[Pattern, ...],
    widths: tuple[int, ...],
    *,
    dropout_p: float = 0.0,
    coverage: bool = False,
) -> torch.Tensor:
    """Causal attention whose pair (t, u) is scored by the levels whose pattern covers
    it.

    q, k: (B, H, T, C), the channels of the levels concatenated in level order,
    ``widths[l]`` of level l (summing to C), each level's logit scale folded into q. v:
    (B, H, T, Dv). The logit of u <= t is the sum over covering levels of their
    channels' dot product; a key no level covers is masked, and a query with no key gets
    a zero output. Returns (B, H, T, Dv); dropout applies to the attention probabilities
    (pass 0 outside training, as with SDPA). ``coverage``: each pair's logit divided by
    the number of levels that cover it.
    """
    patterns, widths = tuple(Pattern(*p) for p in patterns), tuple(widths)
    _check(q, k, v, patterns, widths)
    kernel = _kernel_for(q, dropout_p)
    if kernel is None:
        return _plain(q, k, v, patterns, widths, dropout_p, coverage)
    return _Fused.apply(q, k, v, patterns, widths, kernel, coverage)


def _check(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, patterns: tuple, widths: tuple
) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "need q, k (B, H, T, C) and v (B, H, T, Dv), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if (
        len(widths) != len(patterns)
        or min(widths, default=0) < 0
        or sum(widths) != q.shape[-1]
    ):
        raise ValueError(
            f"need one width per level ({len(patterns)}) summing to "
            f"C={q.shape[-1]}, got {widths}"
        )


# -- views, channels, masks
# ----------------------------------------------------------------------


def _take(x: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """The (BH, count, length, ...) view of the token ranges ``blocks`` of x (BH, T,
    ...)."""
    start, count, stride, length = blocks
    step = x.stride(1)
    return x.as_strided(
        (x.shape[0], count, length, *x.shape[2:]),
        (x.stride(0), stride * step, step, *x.stride()[2:]),
        x.storage_offset() + start * step,
    )


def _level_channels(widths: tuple) -> list[tuple[int, int]]:
    """Each level's channel range [lo, hi)."""
    ends = [sum(widths[: level + 1]) for level in range(len(widths))]
    return [(end - width, end) for end, width in zip(ends, widths)]


@lru_cache(maxsize=1024)
def _keep(
    widths: tuple,
    levels: tuple,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
    coverage: bool,
) -> torch.Tensor | None:
    """1 on the ``width`` channels of the class's levels (1 / their number with
    ``coverage``), 0 elsewhere; None when that is 1 on every channel of q (the rest is
    zero padding). A class's calls take q times this."""
    share = 1 / len(levels) if coverage else 1
    if len(levels) == len(widths) and share == 1:
        return None
    keep = torch.zeros(width, dtype=dtype, device=device)
    for level in levels:
        lo, hi = _level_channels(widths)[level]
        keep[lo:hi] = share
    return keep


def _class_queries(
    q: torch.Tensor, call: Call, keep: torch.Tensor | None
) -> torch.Tensor:
    """The call's queries (BH, count, rows, width) with the channels outside its class
    zeroed."""
    queries = _take(q, call.queries)
    return queries if keep is None else queries * keep


def _positions(blocks: Blocks, device: torch.device) -> torch.Tensor:
    """The token positions of ``blocks``, (count, length)."""
    start, count, stride, length = blocks
    return (
        start
        + stride * torch.arange(count, device=device)[:, None]
        + torch.arange(length, device=device)
    )


@lru_cache(maxsize=1024)
def _class_mask(call: Call, patterns: tuple, device: torch.device) -> torch.Tensor:
    """Which pairs of a masked call's tiles it scores: u <= t, covered by exactly its
    levels. (count, rows, cols), or (1, rows, cols) when every tile has the same."""
    t = _positions(call.queries, device)[:, :, None]
    u = _positions(call.keys, device)[:, None, :]
    mask = u <= t
    for level, pattern in enumerate(patterns):
        covered = covers(pattern, t, u)
        mask &= covered if level in call.levels else ~covered
    return mask[:1] if bool((mask == mask[:1]).all()) else mask


@lru_cache(maxsize=1024)
def _bias(call: Call, patterns: tuple, dtype: torch.dtype, device: torch.device):
    """A masked call as the fused kernels take it: an additive mask (1, count or 1,
    rows, cols) of 0 and -inf, and the rows with no key at all (count or 1, rows), None
    if there are none."""
    mask = _class_mask(call, patterns, device)
    bias = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(
        ~mask, -math.inf
    )
    empty = ~mask.any(-1)
    return bias[None], empty if bool(empty.any()) else None


# -- the fused kernels
# ---------------------------------------------------------------------------


def _has(*names: str) -> bool:
    return all(hasattr(torch.ops.aten, name) for name in names)


class _CpuFlash:
    """The CPU flash-attention ops: one head size for q, k and v; is_causal keeps u <= t
    of a square."""

    available = _has(
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention_for_cpu_backward",
    )

    @staticmethod
    def width(channels: int) -> int:
        return channels

    @staticmethod
    def forward(q, k, v, causal: bool, bias):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=bias, scale=1.0
        )
        return out, lse, bias

    @staticmethod
    def backward(grad_out, q, k, v, out, lse, causal: bool, bias):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, lse, 0.0, causal, attn_mask=bias, scale=1.0
        )


class _Cuda:
    """CUDA: the flash kernel (half precision, at most 256 channels, no mask), else the
    memory-efficient one (float32 too, additive masks, no size limit). Both want aligned
    rows: channels padded to 8, and each call's operands copied contiguous."""

    available = _has(
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_efficient_attention_backward",
    )

    @staticmethod
    def width(channels: int) -> int:
        return -(-channels // 8) * 8

    @staticmethod
    def forward(q, k, v, causal: bool, bias):
        aten = torch.ops.aten
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        if (
            bias is None
            and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] <= 256
        ):
            out, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = (
                aten._scaled_dot_product_flash_attention(
                    q, k, v, 0.0, causal, False, scale=1.0
                )
            )
            return out, lse, (cum_q, cum_k, max_q, max_k, seed, offset)
        if (
            bias is not None
        ):  # rows of the mask aligned as the kernel reads them, then broadcast
            cols = bias.shape[-1]
            bias = F.pad(bias, (0, -cols % 8))[..., :cols].expand(*q.shape[:3], cols)
        out, lse, seed, offset = aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, True, 0.0, causal, scale=1.0
        )
        return out, lse[..., : q.shape[2]], (bias, seed, offset)

    @staticmethod
    def backward(grad_out, q, k, v, out, lse, causal: bool, state):
        aten = torch.ops.aten
        grad_out, q, k, v, out, lse = (
            x.contiguous() for x in (grad_out, q, k, v, out, lse)
        )
        if len(state) == 6:
            cum_q, cum_k, max_q, max_k, seed, offset = state
            return aten._scaled_dot_product_flash_attention_backward(
                grad_out,
                q,
                k,
                v,
                out,
                lse,
                cum_q,
                cum_k,
                max_q,
                max_k,
                0.0,
                causal,
                seed,
                offset,
                scale=1.0,
            )
        bias, seed, offset = state
        lse = F.pad(
            lse, (0, -lse.shape[-1] % 32)
        )  # the kernel's layout: query rows padded to 32
        grads = aten._scaled_dot_product_efficient_attention_backward(
            grad_out,
            q,
            k,
            v,
            bias,
            out,
            lse,
            seed,
            offset,
            0.0,
            [True, True, True, False],
            causal,
            scale=1.0,
        )
        return grads[:3]


_KERNELS = {
    "cpu": (_CpuFlash, (torch.float32, torch.bfloat16, torch.float16)),
    "cuda": (_Cuda, (torch.float32, torch.bfloat16, torch.float16)),
}


def _kernel_for(q: torch.Tensor, dropout: float):
    """The fused kernels for q's device and dtype, or None for the plain path."""
    kernel, dtypes = _KERNELS.get(q.device.type, (None, ()))
    if dropout or kernel is None or not kernel.available or q.dtype not in dtypes:
        return None
    return kernel


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """x zero-padded to ``width`` channels (itself if it has them)."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


def _flat(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, c) as (B * H, T, width), zero-padded."""
    return _pad(x, width).flatten(0, 1)


def _merge(
    out: torch.Tensor,
    lse: torch.Tensor,
    blocks: Blocks,
    part: torch.Tensor,
    part_lse: torch.Tensor,
    fresh: bool,
) -> None:
    """Merge a call's output and log-sum-exp into the running ones of its queries, in
    place."""
    out_view, lse_view = _take(out, blocks), _take(lse, blocks)
    part, part_lse = part.to(out.dtype), part_lse.to(lse.dtype)
    if fresh:
        out_view.copy_(part)
        lse_view.copy_(part_lse)
        return
    # Where neither has a key yet (both -inf) the weight is nan: keep the zeros.
    weight = torch.sigmoid(part_lse - lse_view).nan_to_num_(0.0)
    out_view.lerp_(part, weight.unsqueeze(-1))
    lse_view.copy_(torch.logaddexp(lse_view, part_lse))


class _Fused(torch.autograd.Function):
    """Every call through a fused kernel, merged in place; backward by the split-KV
    rule."""

    @staticmethod
    def forward(ctx, q, k, v, patterns, widths, kernel, coverage):
        B, H, T, C = q.shape
        Dv = v.shape[-1]
        # One head size for the kernels: zero channels change no logit, and the zero
        # value channels of the output are sliced off.
        width = kernel.width(max(C, Dv))
        q, k, v = (_flat(x, width) for x in (q, k, v))
        calls = partition(T, patterns)
        out, lse = _running(
            calls, B * H, T, Dv, torch.promote_types(v.dtype, torch.float32), v.device
        )
        states = []
        for call, fresh in zip(calls, first_touch(T, calls)):
            bias, empty = (
                _bias(call, patterns, q.dtype, q.device)
                if call.mode == "masked"
                else (None, None)
            )
            part, part_lse, state = kernel.forward(
                _class_queries(
                    q,
                    call,
                    _keep(widths, call.levels, width, q.dtype, q.device, coverage),
                ),
                _take(k, call.keys),
                _take(v, call.keys),
                call.mode == "causal",
                bias,
            )
            if empty is not None:  # rows of a tile with no key of this class
                part, part_lse = (
                    part.masked_fill(empty[..., None], 0.0),
                    part_lse.masked_fill(empty, -math.inf),
                )
            _merge(out, lse, call.queries, part[..., :Dv], part_lse, fresh)
            states.append(state)
        out = out.to(v.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.setup = (patterns, widths, kernel, states, C, coverage)
        return out.view(B, H, T, Dv)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        patterns, widths, kernel, states, C, coverage = ctx.setup
        B, H, T, Dv = grad_out.shape
        width = v.shape[-1]
        grad_out, out = _flat(grad_out.contiguous(), width), _pad(out, width)
        # A query no key scores has lse = -inf; any finite value gives its (masked)
        # logits weight 0.
        lse = lse.masked_fill(lse == -math.inf, 0.0)
        grad_q, grad_k, grad_v = (
            torch.zeros(x.shape, dtype=lse.dtype, device=x.device) for x in (q, k, v)
        )
        for call, state in zip(partition(T, patterns), states):
            keep = _keep(widths, call.levels, width, q.dtype, q.device, coverage)
            dq, dk, dv = kernel.backward(
                _take(grad_out, call.queries),
                _class_queries(q, call, keep),
                _take(k, call.keys),
                _take(v, call.keys),
                _take(out, call.queries),
                _take(lse, call.queries),
                call.mode == "causal",
                state,
            )
            # dq outside the class's channels is not a gradient (those are zeros, not
            # q); dk there is zero already (dk = dS^T q).
            _take(grad_q, call.queries).add_(dq if keep is None else dq * keep)
            _take(grad_k, call.keys).add_(dk)
            _take(grad_v, call.keys).add_(dv)
        grad_q, grad_k = (
            g[..., :C].reshape(B, H, T, C).to(q.dtype) for g in (grad_q, grad_k)
        )
        return (
            grad_q,
            grad_k,
            grad_v[..., :Dv].reshape(B, H, T, Dv).to(v.dtype),
            None,
            None,
            None,
            None,
        )


def _running(
    calls: tuple, rows: int, T: int, Dv: int, dtype: torch.dtype, device: torch.device
):
    """The running output and log-sum-exp: zeros and -inf, unless the first calls to
    touch each query (which write, not merge) cover them all."""
    written = sum(
        c.queries.count * c.queries.length
        for c, fresh in zip(calls, first_touch(T, calls))
        if fresh
    )
    if written == T:
        return torch.empty(rows, T, Dv, dtype=dtype, device=device), torch.empty(
            rows, T, dtype=dtype, device=device
        )
    return torch.zeros(rows, T, Dv, dtype=dtype, device=device), torch.full(
        (rows, T), -math.inf, dtype=dtype, device=device
    )


# -- the plain path
# ------------------------------------------------------------------------------


def _tiles(call: Call, patterns: tuple, device: torch.device):
    """A call's pairs in tiles of at most _CHUNK x _CHUNK per member: (the tile as a
    call, its mask or None)."""
    queries, keys = call.queries, call.keys
    mask = _class_mask(call, patterns, device) if call.mode == "masked" else None
    for q0 in range(0, queries.length, _CHUNK):
        rows = min(_CHUNK, queries.length - q0)
        for k0 in range(0, keys.length, _CHUNK):
            cols = min(_CHUNK, keys.length - k0)
            if call.mode == "causal" and k0 > q0 + rows - 1:
                continue  # above the diagonal
            if mask is not None:
                tile = mask[:, q0 : q0 + rows, k0 : k0 + cols]
            elif call.mode == "causal" and k0 + cols - 1 > q0:
                tile = torch.ones(rows, cols, dtype=torch.bool, device=device).tril(
                    q0 - k0
                )
            else:
                tile = None
            part = (
                queries._replace(start=queries.start + q0, length=rows),
                keys._replace(start=keys.start + k0, length=cols),
            )
            yield call._replace(queries=part[0], keys=part[1]), tile


def _plain(
    q, k, v, patterns: tuple, widths: tuple, dropout: float, coverage: bool
) -> torch.Tensor:
    """The partition as matrix products in tiles, exact, autograd through it; no T x T
    buffer.

    A first pass (no gradient) finds each query's log-sum-exp m; the second sums exp(s -
    m) v and exp(s - m) over the tiles and divides. m is only a shift: the division
    makes the softmax exact, and its gradient, whatever m is.
    """
    B, H, T, C = q.shape
    Dv = v.shape[-1]
    q, k, v = (x.reshape(B * H, T, x.shape[-1]) for x in (q, k, v))
    tiles = [
        tile
        for call in partition(T, patterns)
        for tile in _tiles(call, patterns, q.device)
    ]

    def logits(tile: Call, mask):
        keep = _keep(widths, tile.levels, C, q.dtype, q.device, coverage)
        s = _class_queries(q, tile, keep) @ _take(k, tile.keys).mT
        return s if mask is None else s.masked_fill(~mask, -math.inf)

    with torch.no_grad():
        shift = torch.full((B * H, T), -math.inf, dtype=q.dtype, device=q.device)
        for tile, mask in tiles:
            view = _take(shift, tile.queries)
            view.copy_(torch.logaddexp(view, logits(tile, mask).logsumexp(-1)))
        shift.masked_fill_(shift == -math.inf, 0.0)
    num = v.new_zeros(B * H, T, Dv)
    den = v.new_zeros(B * H, T)
    for tile, mask in tiles:
        weights = torch.exp(
            logits(tile, mask) - _take(shift, tile.queries).unsqueeze(-1)
        )
        _take(den, tile.queries).add_(weights.sum(-1))
        _take(num, tile.queries).add_(
            F.dropout(weights, dropout, True) @ _take(v, tile.keys)
        )
    den = torch.where(den > 0, den, 1.0)  # queries with no key: zero output
    return (num / den.unsqueeze(-1)).view(B, H, T, Dv)


# -- decoding
# ------------------------------------------------------------------------------------


class Cache:
    """What decoding keeps: per level a ring of ``cache_slots`` keys (key u at slot u
    mod slots), the values in a ring of the most slots, and the tokens seen so far.

    The levels' rings lie one after another in one buffer (batch x heads, elements),
    each stored channels first, so that a token's keys are written with one indexed copy
    and a query meets a ring with one product, no transpose.
    """

    def __init__(
        self,
        batch: int,
        heads: int,
        max_len: int,
        patterns: tuple,
        widths: tuple,
        v_width: int,
        dtype,
        device,
        coverage: bool,
    ):
        self.batch, self.heads, self.max_len = batch, heads, max_len
        self.patterns, self.widths, self.coverage = patterns, widths, coverage
        self.slots = [cache_slots(pattern, max_len) for pattern in patterns]
        sizes = [n * width for n, width in zip(self.slots, widths)]
        self.starts = [sum(sizes[:level]) for level in range(len(sizes))]
        self.rings = torch.zeros(batch * heads, sum(sizes), dtype=dtype, device=device)
        # Each level's ring as a (batch x heads, channels, slots) view.
        self.keys = [
            self.rings[:, start : start + n * width].view(batch * heads, width, n)
            for start, n, width in zip(self.starts, self.slots, widths)
        ]
        self.values = torch.zeros(
            batch * heads, max(self.slots), v_width, dtype=dtype, device=device
        )
        # Where a token's key channels go: channel c of level l at start_l + c * slots_l
        # plus the token's slot, t mod slots_l.
        first, period = [], []
        for start, n, width in zip(self.starts, self.slots, widths):
            first += [start + channel * n for channel in range(width)]
            period += [n] * width
        self.first = torch.tensor(first, dtype=torch.int64, device=device)
        self.period = torch.tensor(period, dtype=torch.int64, device=device)
        self.length = 0


def new_cache(
    batch: int,
    heads: int,
    max_len: int,
    patterns: tuple[Pattern, ...],
    widths: tuple[int, ...],
    v_width: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    coverage: bool = False,
) -> Cache:
    """An empty decoding cache for up to ``max_len`` tokens (``tiling.cache_elements``
    per head); ``coverage`` as in ``attention``."""
    patterns, widths = tuple(Pattern(*p) for p in patterns), tuple(widths)
    if len(widths) != len(patterns) or min(widths, default=0) < 0:
        raise ValueError(f"need one width per level ({len(patterns)}), got {widths}")
    if min(batch, heads, max_len, v_width) < 1:
        raise ValueError(
            "need a positive batch, heads, max_len and v_width, got "
            f"{batch}, {heads}, {max_len}, {v_width}"
        )
    device = torch.device(device)
    return Cache(
        batch, heads, max_len, patterns, widths, v_width, dtype, device, coverage
    )


def decode(
    cache: Cache, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Attention of n new tokens (n >= 1) to themselves and the cached ones, exactly as
    the full forward gives them; their keys and values join the cache.

    q, k: (B, H, n, C), v: (B, H, n, Dv), the cache's batch, heads and widths. Returns
    (B, H, n, Dv). A first step of several tokens runs the full forward; later tokens
    run one at a time.
    """
    n = _check_step(cache, q, k, v)
    if cache.length == 0 and n > 1:
        out = attention(q, k, v, cache.patterns, cache.widths, coverage=cache.coverage)
        _store(cache, k, v)
        return out
    outs = [
        _step(cache, q[:, :, i : i + 1], k[:, :, i : i + 1], v[:, :, i : i + 1])
        for i in range(n)
    ]
    return outs[0] if n == 1 else torch.cat(outs, dim=2)


def _check_step(cache: Cache, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "need q, k (B, H, n, C) and v (B, H, n, Dv), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, H, n, C = q.shape
    if B != cache.batch:
        raise ValueError(f"the cache holds a batch of {cache.batch}, got {B}")
    if H != cache.heads:
        raise ValueError(f"the cache holds {cache.heads} heads, got {H}")
    if C != sum(cache.widths):
        raise ValueError(
            f"the levels' widths {cache.widths} need C={sum(cache.widths)} channels, "
            f"got {C}"
        )
    if v.shape[-1] != cache.values.shape[-1]:
        raise ValueError(
            f"the cache holds values of {cache.values.shape[-1]} channels, "
            f"got {v.shape[-1]}"
        )
    if q.dtype != cache.values.dtype:
        raise ValueError(f"the cache holds {cache.values.dtype}, got {q.dtype}")
    if n < 1 or cache.length + n > cache.max_len:
        raise ValueError(
            f"{n} new tokens after {cache.length} do not fit max_len={cache.max_len}"
        )
    return n


def _ring(first: int, end: int, slots: int) -> list[tuple[int, int, int]]:
    """Positions [first, end) (at most ``slots``) in a ring: (slot, offset in the range,
    length) pieces."""
    start = first % slots
    head = min(end - first, slots - start)
    return [(start, 0, head)] + (
        [(0, head, end - first - head)] if head < end - first else []
    )


def _store(cache: Cache, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write the new tokens' keys and values (the last ones a ring can hold) and
    advance. The cache keeps data, not autograd history: decoding is inference."""
    B, H, n, C = k.shape
    end = cache.length + n
    k, v = k.reshape(B * H, n, C), v.reshape(B * H, n, -1)
    if n == 1:  # every level's slot of the token at once
        t = cache.length
        index = cache.first + t % cache.period
        cache.rings.index_copy_(1, index, k[:, 0].detach())
        cache.values[:, t % cache.values.shape[1]] = v[:, 0].detach()
        cache.length = end
        return
    rings = zip(cache.keys, k.split(cache.widths, dim=-1))
    for buffer, new in [*((keys.mT, new) for keys, new in rings), (cache.values, v)]:
        first = max(cache.length, end - buffer.shape[1])
        for slot, offset, length in _ring(first, end, buffer.shape[1]):
            at = first - cache.length + offset
            buffer[:, slot : slot + length] = new[:, at : at + length].detach()
    cache.length = end


def _step(
    cache: Cache, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """One new token: logits over its keys in position order, one product per level and
    ring piece."""
    _store(cache, k, v)
    t = cache.length - 1
    B, H = q.shape[:2]
    ranges = [level_keys(pattern, t) for pattern in cache.patterns]
    scored = sorted((a, b) for a, b in ranges if b > a)
    if not scored:
        return v.new_zeros(B, H, 1, v.shape[-1])
    first, end = scored[0][0], max(b for _, b in scored)
    parts = []  # (offset in [first, end), the level's queries, its keys there)
    for (a, b), q_level, keys in zip(
        ranges, q.reshape(B * H, 1, -1).split(cache.widths, dim=-1), cache.keys
    ):
        for slot, offset, length in _ring(a, b, keys.shape[2]) if b > a else ():
            ring = keys if length == keys.shape[2] else keys[..., slot : slot + length]
            parts.append((a - first + offset, q_level, ring))
    parts.sort(key=lambda part: -part[2].shape[-1])
    if parts[0][2].shape[-1] == end - first:  # a level scores every key: its logits
        _, q_level, ring = parts.pop(0)
        scores = torch.bmm(q_level, ring)
    else:
        scores = q.new_zeros(B * H, 1, end - first)
    for at, q_level, ring in parts:  # the others added in place, one call each
        scores[..., at : at + ring.shape[-1]].baddbmm_(q_level, ring)
    if cache.coverage:  # each key's logit over the levels that reach it
        count = scores.new_zeros(end - first)
        for a, b in scored:
            count[a - first : b - first] += 1
        scores = scores / count.clamp(min=1)
    reached = first
    for a, b in scored:  # keys no level scores
        if a > reached:
            scores[..., reached - first : a - first] = -math.inf
        reached = max(reached, b)
    weights = torch.softmax(scores, dim=-1)
    (slot, _, length), *wrapped = _ring(first, end, cache.values.shape[1])
    out = torch.bmm(weights[..., :length], cache.values[:, slot : slot + length])
    for slot, offset, length in wrapped:
        out += torch.bmm(
            weights[..., offset : offset + length],
            cache.values[:, slot : slot + length],
        )
    return out.view(B, H, 1, -1)
