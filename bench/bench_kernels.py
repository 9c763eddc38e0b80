"""Time the attention kernels that generated modules paste in, against causal SDPA.

    python bench/bench_kernels.py [--repeats 9] [--threads 2]

Float32 on CPU, B = 1, H = 4, head dim 64. A kernel and `F.scaled_dot_product_attention`
(is_causal=True, same B, H, T and head dim) run in the same process, in turns, after one
warm-up round; each line gives the median time of both, the ratio of the medians, and
the median of the per-round ratios (the two runs of a round are back to back, so this
one is the least sensitive to other work on the machine).

* MLR attention (`nested_attention`): ranks 32,8,6,4,4,4,4,2 (prefix 32..64), level l
  with blocks of block_size / 2^(l-1) tokens, level 1 global; forward without grad, and
  forward + backward.
* Sliding window (`band_attention`), 0 <= t - u <= 128: forward without grad.
"""

import argparse
import importlib.util
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

PARTIALS = Path(__file__).resolve().parent.parent / "templates" / "partials"
RANKS = (32, 8, 6, 4, 4, 4, 4, 2)


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, PARTIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(label: str, ours: Callable, theirs: Callable, repeats: int) -> None:
    """Print the medians of ours and theirs, run in turns, and their ratios."""
    ours(), theirs()  # warm-up
    pairs = [(seconds(ours), seconds(theirs)) for _ in range(repeats)]
    mine, sdpa_ = (statistics.median(ts) for ts in zip(*pairs))
    paired = statistics.median(a / b for a, b in pairs)
    print(
        f"      {label:12s} {mine * 1e3:8.2f} ms  sdpa {sdpa_ * 1e3:8.2f} ms"
        f"  ratio {mine / sdpa_:.2f}  (per round {paired:.2f})"
    )


def with_backward(fn: Callable, inputs: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
        for x in inputs:
            x.grad = None

    return run


def mlr_case(nested, T: int, block_size: int, repeats: int) -> None:
    prefix = tuple(itertools.accumulate(RANKS))
    lengths = (None,) + tuple(block_size >> level for level in range(1, len(RANKS)))
    q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))

    def ours(q, k, v):
        return nested.nested_attention(q, k, v, prefix, lengths)

    print(f"MLR   T={T} block_size={block_size} lengths={lengths}")
    with torch.no_grad():
        compare("forward", lambda: ours(q, k, v), lambda: sdpa(q, k, v), repeats)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    compare(
        "fwd + bwd",
        with_backward(ours, leaves),
        with_backward(sdpa, leaves),
        repeats,
    )


def band_case(band, T: int, window: int, repeats: int) -> None:
    q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))
    print(f"band  T={T} 0 <= t-u <= {window}")
    with torch.no_grad():
        compare(
            "forward",
            lambda: band.band_attention(q, k, v, 0, window),
            lambda: sdpa(q, k, v),
            repeats,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, B=1 H=4 head dim 64")
    nested = load("nested_attention")
    for T, block_size in ((2048, 2048), (4096, 4096), (4096, 2048)):
        mlr_case(nested, T, block_size, args.repeats)
    band_case(load("band_attention"), 4096, 128, args.repeats)


if __name__ == "__main__":
    main()
