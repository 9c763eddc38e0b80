"""Generated modules on a GPU: exact against the CPU in float64, and timed in bfloat16 against
standard attention (SDPA) in the same process.

    einsearch generate mlr --T 4096 --D 512 --heads 8 -o modules/mlr.py   # ... one file per structure
    python bench/bench_gpu.py modules/*.py --T 4096 16384

Only torch is needed where it runs: the modules are generated beforehand.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from einsearch.benchmark import StandardAttention, round_robin
from einsearch.codegen import attention_class


def heads_of(source: str) -> int:
    return int(re.search(r"n_heads: int = (\d+)", source).group(1))


def exactness(cls, heads: int, D: int) -> float:
    """Largest relative difference of the CUDA float64 forward from the CPU one."""
    torch.manual_seed(0)
    module = cls(D, heads).double()
    x = torch.randn(2, 300, D, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
        got = module.cuda()(x.cuda()).cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", type=Path)
    parser.add_argument("--T", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bfloat16, B=1; medians of {args.repeat}")
    print("| module | float64 CUDA vs CPU | T | forward ms (sdpa) | ratio | fwd+bwd ms (sdpa) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for path in args.modules:
        source = path.read_text()
        cls = attention_class(source)
        heads = heads_of(source)
        D = int(re.search(r"d_model: int = (\d+)", source).group(1))
        error = exactness(cls, heads, D)
        for T in args.T:
            fwd, both = time_against_sdpa(cls, heads, D, T, args.repeat)
            print(f"| {path.stem} | {error:.1e} | {T} | {1e3 * fwd['ours']:.2f} ({1e3 * fwd['sdpa']:.2f}) | "
                  f"{fwd['ours'] / fwd['sdpa']:.2f}x | {1e3 * both['ours']:.2f} ({1e3 * both['sdpa']:.2f}) | "
                  f"{both['ours'] / both['sdpa']:.2f}x |", flush=True)  # fmt: skip
            torch.cuda.empty_cache()


def time_against_sdpa(cls, heads: int, D: int, T: int, repeat: int) -> tuple[dict, dict]:
    """Median seconds of the forward, and of forward + backward, of the module and of SDPA."""
    torch.manual_seed(0)
    ours = cls(D, heads).cuda().bfloat16()
    sdpa = StandardAttention(D, heads).cuda().bfloat16()
    x = torch.randn(1, T, D, device="cuda", dtype=torch.bfloat16)
    sync = torch.cuda.synchronize
    with torch.no_grad():
        forward = round_robin({"ours": lambda: ours(x), "sdpa": lambda: sdpa(x)}, repeat, sync)
    leaf = x.clone().requires_grad_()
    both = round_robin({"ours": lambda: ours(leaf).sum().backward(), "sdpa": lambda: sdpa(leaf).sum().backward()},
                       repeat, sync)  # fmt: skip
    return forward, both


if __name__ == "__main__":
    main()
