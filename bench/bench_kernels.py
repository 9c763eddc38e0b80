"""Time the attention kernels that generated modules paste in, against causal SDPA.

    python bench/bench_kernels.py [--repeats 9] [--threads 2]

Float32 on CPU, B = 1, H = 4, head dim 64. Every contender of one case runs in the same
process, in turns (round robin), so a slow spell of the machine hits them all alike; the
times are medians over the repeats after one warm-up round.

* MLR attention (`nested_attention`): ranks 32,8,6,4,4,4,4,2 (prefix 32..64), level l
  with blocks of block_size / 2^(l-1) tokens, level 1 global; forward without grad, and
  forward + backward, against `F.scaled_dot_product_attention(is_causal=True)` with
  the same B, H, T and head dim 64.
* Sliding window (`band_attention`), 0 <= t - u <= 128: forward against full causal SDPA.
"""

import argparse
import importlib.util
import itertools
import statistics
import time
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


def round_robin(contenders: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, run in turns after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(repeats + 1):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_backward(fn, inputs):
    def run():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
        for x in inputs:
            x.grad = None

    return run


def mlr_case(nested, T: int, block_size: int, repeats: int) -> None:
    prefix = tuple(itertools.accumulate(RANKS))
    lengths = (None,) + tuple(block_size >> level for level in range(1, len(RANKS)))
    q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))
    ours = lambda q, k, v: nested.nested_attention(q, k, v, prefix, lengths)  # noqa: E731
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    with torch.no_grad():
        fwd = round_robin({"mlr": lambda: ours(q, k, v), "sdpa": lambda: sdpa(q, k, v)}, repeats)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    both = round_robin(
        {"mlr": forward_backward(ours, leaves), "sdpa": forward_backward(sdpa, leaves)}, repeats
    )
    print(
        f"MLR   T={T:5d} block_size={block_size:5d} lengths={lengths}\n"
        f"      forward      {fwd['mlr'] * 1e3:8.2f} ms  sdpa {fwd['sdpa'] * 1e3:8.2f} ms"
        f"  ratio {fwd['mlr'] / fwd['sdpa']:.2f}\n"
        f"      fwd + bwd    {both['mlr'] * 1e3:8.2f} ms  sdpa {both['sdpa'] * 1e3:8.2f} ms"
        f"  ratio {both['mlr'] / both['sdpa']:.2f}"
    )


def band_case(band, T: int, window: int, repeats: int) -> None:
    q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))
    with torch.no_grad():
        fwd = round_robin(
            {
                "band": lambda: band.band_attention(q, k, v, 0, window),
                "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
            },
            repeats,
        )
    print(
        f"band  T={T:5d} 0 <= t-u <= {window}\n"
        f"      forward      {fwd['band'] * 1e3:8.2f} ms  sdpa {fwd['sdpa'] * 1e3:8.2f} ms"
        f"  ratio {fwd['band'] / fwd['sdpa']:.2f}"
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
    # band_case(load("band_attention"), 4096, 128, args.repeats)


if __name__ == "__main__":
    main()
