"""Peak memory of a generated module's forward + backward at a long input: no T x T buffer.

    python bench/bench_memory.py global-swa mlr --T 16384

Each structure runs in its own process (peak RSS is per process): the module generated at
D = 256 with 4 heads (low-rank terms of 64 channels, a window of 128), one forward and backward in
float32 on the CPU, and the rise of the peak resident memory beside what one T x T float32 matrix
per head would take.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

D, HEADS = 256, 4
OPTIONS = {"global-swa": {"rg": 32, "rw": 32, "window": 128}, "mlr": {}, "swa": {"r": 64, "window": 128},
           "lowrank": {"r": 64}}  # fmt: skip


def measure(name: str, T: int) -> None:
    """One forward and backward of ``name``'s module at length T; prints the peak RSS rise."""
    import torch

    import einsearch
    from einsearch.codegen import attention_class

    instance = einsearch.load(name).resolve(T=T, D=D, **OPTIONS[name])
    module = attention_class(einsearch.generate(instance, HEADS))()
    x = torch.randn(1, T, D, requires_grad=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    module(x).sum().backward()
    rise = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20  # KiB to GiB
    square = HEADS * T * T * 4 / 2**30
    print(f"| {name} | {T} | {rise:.2f} | {square:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structures", nargs="+", choices=sorted(OPTIONS))
    parser.add_argument("--T", type=int, default=16384)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        measure(args.structures[0], args.T)
        return
    print(f"| structure | T | peak RSS rise, GiB (D = {D}, {HEADS} heads, forward + backward) "
          f"| T x T float32 per head, all heads, GiB |")  # fmt: skip
    print("|---|---|---|---|", flush=True)
    for name in args.structures:
        subprocess.run([sys.executable, __file__, name, "--T", str(args.T), "--one"], check=True)


if __name__ == "__main__":
    main()
