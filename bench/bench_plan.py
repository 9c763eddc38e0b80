"""Times every candidate schedule of the optimizer on the CPU and checks the choice against the clock.

    python bench/bench_plan.py                 # the default cases, markdown table on stdout
    python bench/bench_plan.py --threads 2 --repeat 5

Each schedule runs through the plan interpreter (torch.einsum per step) in float32 and is timed
as the median of ``--repeat`` runs after one warm-up. A level's choice passes when its time is
within 15% of the fastest candidate measured. Candidates whose largest intermediate exceeds
``--max-elements`` are not run (they are never chosen, and would only exhaust memory).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from einsearch import catalog
from einsearch.interpret import run
from einsearch.plan import plan

CASES = [
    ("lowrank", {"T": 2048, "D": 256, "r": 64}, 4),
    ("btt", {"T": 1024, "D": 256, "s": 1}, 4),
    ("btt", {"T": 1024, "D": 256, "s": 4}, 4),
    ("kronecker", {"T": 1024, "D": 1024}, 2),
    ("tt", {"T": 1024, "D": 512, "s": 2}, 2),
    ("bilinear-mlr", {"T": 1024, "D": 256}, 4),
    ("mlr", {"T": 2048, "D": 256, "levels": 8, "ranks": [32, 8, 6, 4, 4, 4, 4, 2]}, 1),
    ("swa", {"T": 4096, "D": 256, "r": 64, "window": 128}, 1),
    ("global-swa", {"T": 2048, "D": 256, "window": 128}, 2),
    ("lowrank", {"T": 8, "D": 1024, "r": 1024}, 1),
]
TOLERANCE = 1.15


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_case(name: str, options: dict, batch: int, repeat: int, max_elements: int) -> list[dict]:
    """One row per level: the chosen schedule's time against the fastest candidate's."""
    instance = catalog.find(name).resolve(options)
    generator = torch.Generator().manual_seed(0)
    factors = {k: torch.randn(shape, generator=generator) for k, shape in instance.factor_shapes.items()}
    x = torch.randn(batch, instance.T, instance.D, generator=generator)
    rows = []
    for lp in plan(instance, batch).levels:
        times = {}
        for schedule in lp.candidates:
            if schedule.largest <= max_elements:
                times[schedule.name] = timed(lambda s=schedule: run(s, x, factors), repeat)
        fastest = min(times, key=times.get)
        chosen = times[lp.chosen.name]
        rows.append({
            "case": f"{name} {' '.join(f'{k}={v}' for k, v in options.items())} B={batch}",
            "level": lp.level.number,
            "candidates": len(lp.candidates),
            "chosen": lp.chosen.name,
            "chosen_ms": 1e3 * chosen,
            "fastest": fastest,
            "fastest_ms": 1e3 * times[fastest],
            "ok": chosen <= TOLERANCE * times[fastest],
        })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | level | candidates | chosen | ms | fastest measured | ms | within 15% |", "|---" * 8 + "|"]
    for r in rows:
        fastest = "same" if r["fastest"] == r["chosen"] else r["fastest"]
        lines.append(f"| {r['case']} | {r['level']} | {r['candidates']} | {r['chosen']} | {r['chosen_ms']:.2f} | "
                     f"{fastest} | {r['fastest_ms']:.2f} | {'yes' if r['ok'] else 'NO'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-elements", type=int, default=1 << 27)
    parser.add_argument("--only", help="run only the cases of this structure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, options, batch in CASES:
        if args.only in (None, name):
            rows += bench_case(name, options, batch, args.repeat, args.max_elements)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, median of {args.repeat}\n")
    print(table(rows))
    print(f"\nchosen within 15% of the fastest: {sum(r['ok'] for r in rows)} of {len(rows)} levels")


if __name__ == "__main__":
    main()
