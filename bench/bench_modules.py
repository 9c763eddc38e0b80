"""Generated modules against standard attention and the naive form, swept over the catalog.

    python bench/bench_modules.py --out bench/modules            # CPU, float32, the default sweep
    python bench/bench_modules.py --T 256 1024 --D 256 --only mlr btt
    python bench/bench_modules.py --device cuda --dtype bfloat16 --T 4096 16384 --out bench/gpu

Each case is one `einsearch bench` run (see einsearch/benchmark.py): the generated module, the
naive form (every level's T x T logits) and standard attention take turns, medians of
--repeat runs, as ratios to standard attention in the same process. The naive form and the
backward are skipped above --max-naive and --max-backward tokens (the naive form builds a
T x T buffer per level: tens of seconds and gigabytes at T = 4096). Writes results.json,
results.md and ratios.png to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import einsearch
from einsearch.bench_setup import bench_setup
from einsearch.benchmark import bench

HEADS = 4


def options(name: str, T: int, D: int) -> dict:
    """The catalog structure at these sizes: MLR with as many levels as T allows, up to 8; low-rank
    heads with a standard head's D / HEADS channels (global + window: half each)."""
    found = {"T": T, "D": D}
    if name == "mlr":
        levels = min(8, T.bit_length() - 4)  # finest blocks of at least 16 tokens
        found.update(levels=levels, ranks=[32, 8, 6, 4, 4, 4, 4, 2][:levels])
    if name in ("lowrank", "swa"):
        found["r"] = D // HEADS  # a standard head's channels
    if name == "global-swa":
        found.update(rg=D // HEADS // 2, rw=D // HEADS // 2)
    if name in ("swa", "global-swa"):
        found["window"] = 128
    if name == "tt":
        found.update(a=8, b=8)
    return found


def standard_flops(T: int, D: int) -> int:
    """FlopCounterMode's FLOPs of standard attention's forward (the CPU flash op counted as SDPA)."""
    from einsearch.benchmark import StandardAttention
    from einsearch.experiments.training import counted_flops

    module = StandardAttention(D, HEADS)
    return counted_flops(lambda: module(torch.zeros(1, T, D)))["Global"]


def table(rows: list[dict]) -> str:
    def x(value):
        return "-" if value is None else f"{value:.2f}x"

    lines = [
        "| structure | T | D | forward ms (sdpa ms) | forward | fwd+bwd | decode | naive fwd | FLOPs / SDPA's "
        "| time per FLOP / SDPA's | FLOPs pred. / counted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gen = next(c for c in r["rows"] if c["name"] == "generated")
        sdpa = next(c for c in r["rows"] if c["name"] == "sdpa")
        naive = next((c for c in r["rows"] if c["name"] == "naive"), None)
        check = r["predicted_flops"] / r["counted_flops"] if r["counted_flops"] else float("nan")
        flops = r["predicted_flops"] / r["standard_flops"]
        lines.append(
            f"| {r['structure']} | {r['length']} | {r['sizes']['D']} | {1e3 * gen['forward']:.1f} "
            f"({1e3 * sdpa['forward']:.1f}) | {x(gen['forward_ratio'])} | {x(gen['backward_ratio'])} | "
            f"{x(gen['decode_ratio'])} | {x(naive['forward_ratio'] if naive else None)} | {flops:.2f} | "
            f"{x(gen['forward_ratio'] / flops)} | {check:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({r["sizes"]["D"] for r in rows})
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * len(widths), 4.2), sharey=True, squeeze=False)
    for ax, D in zip(axes[0], widths):
        for name in sorted({r["structure"] for r in rows}):
            points = [(r["length"], next(c for c in r["rows"] if c["name"] == "generated")["forward_ratio"])
                      for r in rows if r["structure"] == name and r["sizes"]["D"] == D]  # fmt: skip
            ax.plot(*zip(*points), marker="o", label=name)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="T", title=f"D = {D}, {HEADS} heads")
    axes[0][0].set_ylabel("forward time / standard attention")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, nargs="+", default=[256, 1024, 2048, 4096])
    parser.add_argument("--D", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--only", nargs="+", default=einsearch.catalog_names())
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-naive", type=int, default=2048)
    parser.add_argument("--max-backward", type=int, default=4096)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for D in args.D:
        for T in args.T:
            for name in args.only:
                start = time.perf_counter()
                instance = einsearch.load(name).resolve(options(name, T, D))
                setup = bench_setup(instance, HEADS, repeat=args.repeat, device=args.device, dtype=args.dtype,
                                    backward=T <= args.max_backward, naive=T <= args.max_naive)  # fmt: skip
                report = bench(setup)
                rows.append({**report.to_dict(), "standard_flops": standard_flops(T, D)})
                print(f"{name} T={T} D={D}: {time.perf_counter() - start:.0f} s", flush=True)
                (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    header = f"torch {torch.__version__}, {args.device}, {args.dtype}, {args.threads} threads, B=1, {HEADS} heads;\n"
    header += f"medians of {args.repeat}, round-robin; ratios to standard attention (SDPA) in one process\n\n"
    (args.out / "results.md").write_text(header + table(rows) + "\n")
    print(header + table(rows))
    plot(rows, args.out / "ratios.png")


if __name__ == "__main__":
    main()
