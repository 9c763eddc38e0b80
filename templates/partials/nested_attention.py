"""Causal attention over nested sequence blocks (MLR attention), computed per depth.

Level l cuts the positions 0, 1, 2, ... into blocks of ``lengths[l]`` tokens (or one
global block), each level's blocks inside the previous level's. The *depth* of a pair
(t, u) is the deepest level whose block holds both tokens; a pair of depth m is scored
with the first ``R_m = prefix[m]`` channels of q and k (every level's scale is already
folded into q). Pairs that no level covers are masked.

Grouped by depth, the scored pairs are ordinary dense attentions over token blocks:

* depth m < L: the queries of a level-(m+1) block against the keys of the same level-m
  block that lie before it (non-causal), with R_m channels;
* depth L: each finest block against itself, causally, with all channels.

Every depth yields a partial output and its log-sum-exp; partial softmaxes over disjoint
key sets merge exactly. Nothing T x T is built: memory is O(T * channels) per head.
"""

import math

import torch
import torch.nn.functional as F

# A set of equal token ranges read out of a (BH, T, ...) tensor as one
# (BH, count, length, ...) view: range g is [start + g*stride + offset, ... + length).
_Blocks = tuple[int, int, int, int, int]  # start, count, stride, offset, length
# One batched attention: query blocks, key blocks, channels scored, causal.
_Group = tuple[_Blocks, _Blocks, int, bool]


def _has_cpu_flash() -> bool:
    """Whether this torch build has the CPU flash-attention ops (private, so checked)."""
    aten = torch.ops.aten
    return hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu") and hasattr(
        aten, "_scaled_dot_product_flash_attention_for_cpu_backward"
    )


_CPU_FLASH = _has_cpu_flash()


def _take(x: torch.Tensor, blocks: _Blocks) -> torch.Tensor:
    """The (BH, count, length, ...) view of ``blocks`` in x of shape (BH, T, ...)."""
    start, count, stride, offset, length = blocks
    x = x[:, start : start + count * stride].unflatten(1, (count, stride))
    return x[:, :, offset : offset + length]


def _place(x: torch.Tensor, blocks: _Blocks, T: int, fill: float) -> torch.Tensor:
    """Inverse of `_take`, out of place: x laid at its positions in a (BH, T, ...) tensor."""
    start, count, stride, offset, length = blocks
    inner = [0, 0] * (x.dim() - 3)  # F.pad lists the last dimension first
    x = F.pad(x, inner + [offset, stride - offset - length], value=fill).flatten(1, 2)
    return F.pad(x, inner + [start, T - start - count * stride], value=fill)


def _nested_groups(T: int, prefix: tuple[int, ...], lengths: tuple) -> list[_Group]:
    """Every pair u <= t of a T-token sequence, as batched attentions, one set per depth.

    Within a depth, the queries of all child blocks with the same index inside their
    parent see key ranges of the same length, so each child index is one batched call.
    A partial last parent (T not a multiple of its length, or a global level) adds one
    call per child that it holds.
    """
    groups: list[_Group] = []
    n = lengths[-1] or T
    full = T // n
    if full:
        finest = (0, full, n, 0, n)
        groups.append((finest, finest, prefix[-1], True))
    if T > full * n:
        tail = (full * n, 1, T - full * n, 0, T - full * n)
        groups.append((tail, tail, prefix[-1], True))
    for m in range(len(lengths) - 1):
        parent, n, channels = lengths[m], lengths[m + 1], prefix[m]
        full = 0 if parent is None else T // parent
        if full:
            for i in range(1, parent // n):
                queries = (0, full, parent, i * n, n)
                keys = (0, full, parent, 0, i * n)
                groups.append((queries, keys, channels, False))
        start = full * parent if full else 0
        for i in range(1, math.ceil((T - start) / n)):
            length = min(n, T - start - i * n)
            queries = (start + i * n, 1, length, 0, length)
            keys = (start, 1, i * n, 0, i * n)
            groups.append((queries, keys, channels, False))
    return groups


def _with_width(x: torch.Tensor, width: int) -> torch.Tensor:
    """x zero-padded to ``width`` channels (not copied if it has them)."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


def _with_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """x with its channels past ``channels`` set to zero (copied only if any are)."""
    if channels == x.shape[-1]:
        return x
    return F.pad(x[..., :channels], (0, x.shape[-1] - channels))


class _NestedFlash(torch.autograd.Function):
    """Forward and backward of every depth through the CPU flash-attention kernels.

    q, k, v: (BH, T, D), one head size as the kernels require (the caller zero-pads);
    a depth scoring fewer channels gets its queries zeroed past them.
    """

    @staticmethod
    def forward(ctx, q, k, v, groups):
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        # Accumulate in at least float32 (the kernels' log-sum-exp is float32 too).
        acc = torch.promote_types(v.dtype, torch.float32)
        out = torch.empty(v.shape, dtype=acc, device=v.device)
        lse = torch.empty(v.shape[:2], dtype=acc, device=v.device)
        for q_blocks, k_blocks, channels, causal in groups:
            out_g, lse_g = flash(
                _with_channels(_take(q, q_blocks), channels),
                _take(k, k_blocks),
                _take(v, k_blocks),
                0.0,
                causal,
                scale=1.0,
            )
            out_view, lse_view = _take(out, q_blocks), _take(lse, q_blocks)
            if causal:
                # The finest groups come first and hold every query once: they
                # start the running output and log-sum-exp.
                out_view.copy_(out_g)
                lse_view.copy_(lse_g)
                continue
            # Merge two softmaxes over disjoint key sets, in place: with weights
            # w = exp(lse_g - lse_new) = sigmoid(lse_g - lse_old) and 1 - w,
            # out = (1 - w) out_old + w out_g, lse_new = log(exp(lse_old) + exp(lse_g)).
            weight = torch.sigmoid(lse_g - lse_view).unsqueeze(-1)
            out_view.lerp_(out_g.to(acc), weight)
            lse_view.copy_(torch.logaddexp(lse_view, lse_g))
        out = out.to(v.dtype)
        ctx.groups = groups
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Split-KV rule: P = exp(S - lse) with the *merged* lse is each depth's exact
        # share of the softmax, and the softmax correction rowsum(dO * O) needs the
        # merged output; so the flash backward of each depth, given the merged output
        # and lse of its queries, yields that depth's exact gradient terms.
        flash_backward = (
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        )
        q, k, v, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        acc = torch.promote_types(q.dtype, torch.float32)
        grads = [torch.zeros(x.shape, dtype=acc, device=x.device) for x in (q, k, v)]
        grad_q, grad_k, grad_v = grads
        for q_blocks, k_blocks, channels, causal in ctx.groups:
            dq, dk, dv = flash_backward(
                _take(grad_out, q_blocks),
                _with_channels(_take(q, q_blocks), channels),
                _take(k, k_blocks),
                _take(v, k_blocks),
                _take(out, q_blocks),
                _take(lse, q_blocks),
                0.0,
                causal,
                scale=1.0,
            )
            # dq past `channels` is not a gradient (those query channels are zeros,
            # not inputs); dk past them is already zero, since dk = dS^T q_g.
            _take(grad_q, q_blocks)[..., :channels].add_(dq[..., :channels])
            _take(grad_k, k_blocks).add_(dk)
            _take(grad_v, k_blocks).add_(dv)
        return *(g.to(q.dtype) for g in grads), None


def _nested_plain(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    groups: list[_Group],
    dropout_p: float,
    training: bool,
) -> torch.Tensor:
    """The same groups with matmuls and autograd: any device and dtype, and dropout.

    q, k: (BH, T, C); v: (BH, T, Dv). The log-sum-exp of every query comes first,
    then each group's probabilities exp(s - lse). Autograd keeps every scored pair
    (the causal half of T x T, per head): this path is for exactness, dropout and
    devices without the flash kernels, not for long sequences.
    """
    T = q.shape[1]

    def scores(group: _Group) -> torch.Tensor:
        q_blocks, k_blocks, channels, causal = group
        s = _take(q, q_blocks)[..., :channels] @ _take(k, k_blocks)[..., :channels].mT
        if causal:
            future = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1)
            s = s.masked_fill(future, -math.inf)
        return s

    # Each query's log-sum-exp over all its keys, from every group's row log-sum-exp.
    logits = [scores(g) for g in groups]
    partial = [
        _place(s.logsumexp(-1), g[0], T, -math.inf) for s, g in zip(logits, groups)
    ]
    lse = torch.stack(partial).logsumexp(0)
    out = 0
    for s, group in zip(logits, groups):
        q_blocks, k_blocks = group[:2]
        p = torch.exp(s - _take(lse, q_blocks).unsqueeze(-1))
        p = F.dropout(p, dropout_p, training)
        out = out + _place(p @ _take(v, k_blocks), q_blocks, T, 0.0)
    return out


def _nested_flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix: tuple, lengths: tuple
) -> torch.Tensor:
    """`nested_attention` through the CPU flash kernels (no dropout)."""
    B, H, T, C = q.shape
    Dv = v.shape[-1]
    # The flash kernels need one head size for q, k and v: zero channels change no
    # logit and zero value channels are sliced off the output.
    D = max(C, Dv)
    q, k, v = (_with_width(x, D).reshape(B * H, T, D).contiguous() for x in (q, k, v))
    out = _NestedFlash.apply(q, k, v, _nested_groups(T, prefix, lengths))
    return out[..., :Dv].view(B, H, T, Dv)


def nested_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix: tuple[int, ...],
    lengths: tuple,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Causal attention whose pairs are scored with more channels the closer they are.

    q, k: (B, H, T, C), the channels of L levels concatenated coarse to fine, each
    level's logit scale folded into q. v: (B, H, T, Dv). ``prefix``: R_1 < ... <= R_L
    = C, the channels of levels 1..m together. ``lengths``: block length of each level
    in tokens, coarse to fine, each dividing the previous; ``lengths[0]`` may be None
    for a global first level. Blocks lie on absolute positions 0..T-1 for any T, so
    the outputs for a prefix of the sequence never change when tokens are appended.

    The logit of u <= t is q_t[:R_m] . k_u[:R_m], m the deepest level with one block
    holding t and u; pairs in no common block are masked (every query keeps itself).
    Returns (B, H, T, Dv). Dropout applies to the attention probabilities when
    ``training``.
    """
    B, H, T, C = q.shape
    Dv = v.shape[-1]
    if len(prefix) != len(lengths) or prefix[-1] != C or list(prefix) != sorted(prefix):
        raise ValueError(f"need one prefix per level, rising to C={C}, got {prefix}")
    for m, n in enumerate(lengths):
        parent = lengths[m - 1] if m else None
        if (n is None and m) or (n is not None and (n < 1 or (parent and parent % n))):
            raise ValueError(
                f"need block lengths each dividing the one before, got {lengths}"
            )
    prefix, lengths = tuple(prefix), tuple(lengths)
    use_flash = (
        _CPU_FLASH
        and q.device.type == "cpu"
        and q.dtype != torch.float64
        and not (training and dropout_p > 0)
    )
    if not use_flash:
        groups = _nested_groups(T, prefix, lengths)
        out = _nested_plain(
            *(x.reshape(B * H, T, x.shape[-1]) for x in (q, k, v)),
            groups,
            dropout_p,
            training,
        )
        return out.view(B, H, T, Dv)
    return _nested_flash(q, k, v, prefix, lengths)
