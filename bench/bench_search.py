"""Times ``einsearch search``: a full default search from cold caches, and candidates per second.

    python bench/bench_search.py                       # D=1024, T=8192, H=16
    python bench/bench_search.py --D 512 --T 1024 --heads 8 --repeat 5

Three figures, on one core (the search is single-threaded; CPU seconds are the process's, wall
seconds the clock's, which also count whatever else the machine runs):

* cold: the first full default search in this process: every distinct level planned, its
  counts kept (target: under 2 s);
* warm: the same search again, levels already counted: enumeration, scoring, deduplication and
  ranking of every candidate (target: at least 50,000 candidates/s);
* scoring: ``Source.score`` alone over the whole space, warm (the per-candidate arithmetic).

The targets are checked and the script exits 1 when one is missed (by CPU time). On a machine
other jobs share, take the figures as rough.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import einsearch
from einsearch.search import sources as loop
from einsearch.search.families import Space

COLD_TARGET_S = 2.0
RATE_TARGET = 50_000


def timed(fn):
    """(result, CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--D", type=int, default=1024)
    parser.add_argument("--T", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs (the median is reported)")
    args = parser.parse_args()

    def run():
        return einsearch.search(args.D, args.T, args.heads)

    result, cold_cpu, cold_wall = timed(run)
    warm = [timed(run)[1:] for _ in range(args.repeat)]
    warm_cpu = statistics.median(c for c, _ in warm)
    warm_wall = statistics.median(w for _, w in warm)

    space = Space(args.D, args.T, args.heads)
    sources = loop.chosen_sources(None, [], space, None, loop.Shared(args.T))
    points = [(source, values) for source in sources for values in source.family.grid(space)]
    for source, values in points:  # warm these sources' own level tables
        source.score(values)

    def score_all():
        for source, values in points:
            source.score(values)

    scoring = statistics.median(timed(score_all)[1] for _ in range(args.repeat))
    n = result.scored
    print(f"# einsearch search: D={args.D} T={args.T} heads={args.heads}, {n:,} candidates\n")
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPU cores (one used)\n")
    print("| run | CPU s | wall s | candidates/s (CPU) |")
    print("|---|---|---|---|")
    print(f"| cold: full default search | {cold_cpu:.2f} | {cold_wall:.2f} | {n / cold_cpu:,.0f} |")
    print(f"| warm: the same search again | {warm_cpu:.2f} | {warm_wall:.2f} | {n / warm_cpu:,.0f} |")
    print(f"| scoring only, warm | {scoring:.2f} | | {n / scoring:,.0f} |")
    missed = []
    if cold_cpu >= COLD_TARGET_S:
        missed.append(f"cold search {cold_cpu:.2f} s >= {COLD_TARGET_S} s")
    if n / warm_cpu < RATE_TARGET:
        missed.append(f"warm search {n / warm_cpu:,.0f} candidates/s < {RATE_TARGET:,}")
    for line in missed:
        print(f"missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
