"""Many runs at once: a sweep's jobs in spawned worker processes, the costliest first."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any


def run_all(jobs: Sequence[Any], worker: Callable[[Any], Any], workers: int, cost: Callable[[Any], float],
            done: Callable[[int, Any], None] = lambda n, result: None) -> list[Any]:  # fmt: skip
    """``worker(job)`` for every job, ``workers`` at a time in fresh processes (a module-level
    ``worker``: it is pickled), the costliest first so that the workers finish together; the
    results in the jobs' order. ``done(n, result)`` after the n-th to finish (a progress line)."""
    order = sorted(range(len(jobs)), key=lambda i: -cost(jobs[i]))
    results: dict[int, Any] = {}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for n, (i, result) in enumerate(zip(order, pool.imap(worker, [jobs[i] for i in order])), 1):
            results[i] = result
            done(n, result)
    return [results[i] for i in range(len(jobs))]
