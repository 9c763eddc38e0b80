"""Causal attention over a band of distances (sliding window), computed chunk by chunk.

A query t scores only the keys u with lo <= t - u <= hi (and u <= t). The queries are
cut into chunks, and each chunk meets only the window of keys that its band can reach:
about T * (chunk + hi - lo) scores instead of T x T.
"""

import math

import torch
import torch.nn.functional as F

# Chunks hold a multiple of the band's width and at least this many queries: smaller
# matrix products cost more in overhead than in arithmetic.
_MIN_CHUNK = 64


def band_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lo: int,
    hi: int,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Causal attention of each query t to the keys u with lo <= t - u <= hi.

    q, k: (B, H, T, C), logit scale folded into q; v: (B, H, T, Dv). A negative lo
    counts as 0 (keys after the query are never scored). A query with no key in its
    band (t < lo) gets a zero output, not the average of nothing. Returns
    (B, H, T, Dv); dropout applies to the attention probabilities when ``training``.
    """
    B, H, T = q.shape[:3]
    Dv = v.shape[-1]
    lo, hi = max(lo, 0), min(hi, T - 1)  # distances beyond T - 1 never occur
    if hi < lo:
        return v.new_zeros(B, H, T, Dv)
    width = hi - lo + 1  # keys in a full band
    chunk = min(width * math.ceil(_MIN_CHUNK / width), T)
    n = math.ceil(T / chunk)
    # Query t = c*chunk + j of chunk c reaches keys from t - hi to t - lo, so the
    # chunk's window is the window_len keys from c*chunk - hi. With hi zeros in front
    # of the keys, window c starts at c*chunk: overlapping windows are strided views.
    window_len = chunk + hi - lo
    end = (n - 1) * chunk + window_len  # padded length the last window needs

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, hi, max(end - hi - T, 0)))
        return x.unfold(2, window_len, chunk)[:, :, :n]  # (B, H, n, channels, window)

    k_win, v_win = windows(k), windows(v)
    q = F.pad(q, (0, 0, 0, n * chunk - T)).unflatten(2, (n, chunk))
    s = q @ k_win  # (B, H, n, chunk, window_len); unfold puts the window last

    # Key i of window c is u = c*chunk - hi + i, so t - u = j + hi - i: the band is
    # j <= i <= j + hi - lo; and u >= 0 drops the zeros padded in front.
    j = torch.arange(chunk, device=q.device)[:, None]
    i = torch.arange(window_len, device=q.device)
    u = torch.arange(n, device=q.device)[:, None, None] * chunk - hi + i
    scored = (i >= j) & (i <= j + hi - lo) & (u >= 0)
    s.masked_fill_(~scored, -math.inf)
    # Rows with no key (t < lo, only if lo > 0) get finite logits, then a zero output,
    # so neither the softmax nor its gradient meets a row of -inf.
    if lo > 0:
        empty = ~scored.any(-1, keepdim=True)
        s.masked_fill_(empty, 0.0)
    p = F.dropout(torch.softmax(s, dim=-1), dropout_p, training)
    out = p @ v_win.transpose(-1, -2)  # (B, H, n, chunk, Dv)
    if lo > 0:
        out = out.masked_fill(empty, 0.0)
    return out.flatten(2, 3)[:, :, :T]
