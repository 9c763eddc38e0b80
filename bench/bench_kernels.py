"""Time the runtime's attention kernel alone against causal SDPA, in one process.

    python bench/bench_kernels.py [--repeats 9] [--threads 2]

Float32 on CPU, B = 1, H = 4, head dim 64 for q, k and v. Each line runs the kernel
(`einsearch.runtime.attention`) and `F.scaled_dot_product_attention(is_causal=True)` in turns
(`einsearch.benchmark.round_robin`, medians after a warm-up) and gives the ratio of the medians,
beside the target of issue 22 (the kernel alone should beat it with margin: a module adds its
projections to both sides).

* MLR attention: 8 levels, ranks 32,8,6,4,4,4,4,2, block_size = T (level l in 2^(l-1) blocks);
* sliding window: 0 <= t - u <= 128, all 64 channels;
* global + sliding window: 32 channels global, 32 in the window;

each forward (no grad) and forward + backward, at T = 2048 and 4096; then one token decoded at
context 4096 with the runtime's cache (MLR) against SDPA over a preallocated KV cache.
"""

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from einsearch.benchmark import round_robin
from einsearch.runtime.attention import attention, decode, new_cache
from einsearch.runtime.tiling import Pattern

HEADS, DIM, WINDOW, CONTEXT = 4, 64, 128, 4096
RANKS = (32, 8, 6, 4, 4, 4, 4, 2)
TARGETS = {"mlr": (1.15, 1.2), "global-swa": (1.3, 1.3)}  # forward, forward + backward


def structures(T: int) -> dict[str, tuple[tuple[Pattern, ...], tuple[int, ...]]]:
    """Each structure's patterns and widths at block_size = T."""
    return {
        "mlr": ((Pattern(),) + tuple(Pattern(T >> level) for level in range(1, len(RANKS))), RANKS),
        "swa": ((Pattern(None, 0, WINDOW),), (DIM,)),
        "global-swa": ((Pattern(), Pattern(None, 0, WINDOW)), (DIM // 2, DIM // 2)),
    }


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def with_backward(fn: Callable, inputs: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
        for x in inputs:
            x.grad = None

    return run


def report(label: str, ours: float, theirs: float, target: "float | None") -> None:
    goal = f"  target <= {target:.2f}x" if target else ""
    print(f"  {label:22s} {ours * 1e3:9.2f} ms  sdpa {theirs * 1e3:9.2f} ms  ratio {ours / theirs:5.2f}x{goal}")


def compare(label: str, ours: Callable, theirs: Callable, repeats: int, target: "float | None") -> None:
    times = round_robin({"ours": ours, "sdpa": theirs}, repeats)
    report(label, times["ours"], times["sdpa"], target)


def sequence_case(name: str, T: int, repeats: int) -> None:
    patterns, widths = structures(T)[name]
    forward_target, backward_target = TARGETS.get(name, (None, None))
    q, k, v = (torch.randn(1, HEADS, T, DIM) for _ in range(3))

    def ours(q, k, v):
        return attention(q, k, v, patterns, widths)

    print(f"{name} T={T}")
    with torch.no_grad():
        compare("forward", lambda: ours(q, k, v), lambda: sdpa(q, k, v), repeats, forward_target)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    compare("forward + backward", with_backward(ours, leaves), with_backward(sdpa, leaves), repeats, backward_target)


def decoding_case(repeats: int) -> None:
    """One token at context 4096 (each call one token further), MLR against SDPA over a KV cache."""
    patterns, widths = structures(CONTEXT)["mlr"]
    steps = repeats + 2  # the warm-up and every repeat decode one more token
    max_len = CONTEXT + steps
    q, k, v = (torch.randn(1, HEADS, CONTEXT + steps, DIM) for _ in range(3))
    cache = new_cache(1, HEADS, max_len, patterns, widths, DIM, dtype=torch.float32, device="cpu")
    keys, values = torch.zeros(1, HEADS, max_len, DIM), torch.zeros(1, HEADS, max_len, DIM)
    keys[:, :, :CONTEXT], values[:, :, :CONTEXT] = k[:, :, :CONTEXT], v[:, :, :CONTEXT]
    seen = [CONTEXT]
    with torch.no_grad():
        decode(cache, q[:, :, :CONTEXT], k[:, :, :CONTEXT], v[:, :, :CONTEXT])

        def ours() -> None:
            t = cache.length
            decode(cache, q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1])

        def theirs() -> None:
            t = seen[0]
            keys[:, :, t : t + 1], values[:, :, t : t + 1] = k[:, :, t : t + 1], v[:, :, t : t + 1]
            F.scaled_dot_product_attention(q[:, :, t : t + 1], keys[:, :, : t + 1], values[:, :, : t + 1])
            seen[0] = t + 1

        print(f"mlr decoding, context {CONTEXT}")
        compare("one token", ours, theirs, repeats, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, B=1 H={HEADS} head dim {DIM}")
    for T in (2048, 4096):
        for name in structures(T):
            sequence_case(name, T, args.repeats)
    decoding_case(args.repeats)


if __name__ == "__main__":
    main()
