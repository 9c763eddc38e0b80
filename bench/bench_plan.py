"""Times every candidate schedule of the optimizer on the CPU and checks the choice against the clock.

    python bench/bench_plan.py                 # the default cases, markdown table on stdout
    python bench/bench_plan.py --threads 2 --repeat 9

Each schedule runs through the plan interpreter (torch.einsum per step) in float32 and is timed
as the median of ``--repeat`` runs after one warm-up, the candidates taking turns. A level's
choice passes when its time is within 15% of the fastest candidate measured; a miss where the
fastest has the same estimate as the choice (same FLOPs and bytes) is told apart as a tie.
Candidates whose largest intermediate exceeds ``--max-elements`` are not run (they are never
chosen, and would only exhaust memory).
"""

from __future__ import annotations

import argparse

import torch

from einsearch import catalog
from einsearch.benchmark import round_robin
from einsearch.interpret import run
from einsearch.planner import plan

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


def bench_case(name: str, options: dict, batch: int, repeat: int, max_elements: int) -> list[dict]:
    """One row per level: the chosen schedule's time against the fastest candidate's."""
    instance = catalog.find(name).resolve(options)
    generator = torch.Generator().manual_seed(0)
    factors = {k: torch.randn(shape, generator=generator) for k, shape in instance.factor_shapes.items()}
    x = torch.randn(batch, instance.T, instance.D, generator=generator)
    rows = []
    for lp in plan(instance, batch).levels:
        runnable = [s for s in lp.candidates if s.largest <= max_elements]
        times = round_robin({s.name: lambda s=s: run(s, x, factors) for s in runnable}, repeat)
        fastest = min(times, key=times.get)
        chosen = times[lp.chosen.name]
        estimates = {s.name: s.estimate for s in runnable}
        rows.append({
            "case": f"{name} {' '.join(f'{k}={v}' for k, v in options.items())} B={batch}",
            "level": lp.level.number,
            "candidates": len(lp.candidates),
            "chosen": lp.chosen.name,
            "chosen_ms": 1e3 * chosen,
            "fastest": fastest,
            "fastest_ms": 1e3 * times[fastest],
            "ok": chosen <= TOLERANCE * times[fastest],
            "tie": estimates[fastest] == lp.chosen.estimate,  # the model cannot tell the two apart
        })  # fmt: skip
    return rows


def cell(text: str) -> str:
    """Text for a markdown table cell (schedule names hold ``|``)."""
    return text.replace("|", "\\|")


def verdict(row: dict) -> str:
    if row["ok"]:
        return "yes"
    return "no, a tie in the model" if row["tie"] else "NO"


def table(rows: list[dict]) -> str:
    lines = ["| case | level | candidates | chosen | ms | fastest measured | ms | within 15% |", "|---" * 8 + "|"]
    for r in rows:
        chosen, fastest = cell(r["chosen"]), "same" if r["fastest"] == r["chosen"] else cell(r["fastest"])
        lines.append(f"| {r['case']} | {r['level']} | {r['candidates']} | {chosen} | {r['chosen_ms']:.2f} | "
                     f"{fastest} | {r['fastest_ms']:.2f} | {verdict(r)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
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
    ties = sum(r["tie"] and not r["ok"] for r in rows)
    print(f"\nchosen within 15% of the fastest: {sum(r['ok'] for r in rows)} of {len(rows)} levels; "
          f"{ties} more where the fastest costs the same in the model (same FLOPs and bytes)")  # fmt: skip


if __name__ == "__main__":
    main()
