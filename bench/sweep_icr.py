"""In-context regression sweep: 8-head standard attention against full-rank scoring functions.

    python bench/sweep_icr.py docs/icr-sweep            # the sweep, about 20 minutes on 2 CPU cores
    python bench/sweep_icr.py /tmp/icr --steps 50       # a quick look
    python bench/sweep_icr.py /tmp/icr --only lowrank   # runs whose label contains a word
    python bench/sweep_icr.py /tmp/icr-scaled --scaled  # the same with logits of unit scale at init

Trains one model per (structure, width) with ``einsearch.experiments.icr`` (d = 16, N = 32 examples, prompts
of 64 tokens, 4 pre-LN layers, muP, AdamW with warm-up and cosine decay; the settings are
``SETTINGS`` below) and writes, into the folder given:

* ``table.md``: per run the normalised test error (1 = the zero predictor) after k = 8, 16 and 31
  examples and its mean over k, the scoring parameters, rank and score FLOPs of one head (from
  ``einsearch.describe``), the model's parameters, the training FLOPs (torch's flop counter on
  one forward pass, times 3 for the backward, times the prompts seen) and the wall time;
* ``icr.png``: error against k, one panel per width;
* ``sweep.json``: every run's full result (config, loss log, errors per k).

The runs (RUNS below): ``lowrank`` with 8 heads of r = D/8 (standard attention: a head's score
has rank D/8, below d = 16 at D = 32 and at d at D = 64), ``lowrank`` with one head of r = D (one
full-rank head), ``btt`` with one head (Bilinear Block Tensor-Train, full rank, s = 1, balanced
split), and ``mlr`` with one head (MLR attention: 4 levels, so T = 64 splits into blocks of 64,
32, 16 and 8 tokens, since T must be a multiple of 2^(levels - 1); ranks D/2, D/4, D/8, D/8
summing to D: pairs in the same 8-token block are scored with full rank, the global level with
rank D/2 >= d). Runs go ``--workers`` at a time, each on ``--threads`` threads, every run
seeded and deterministic.

The catalog's ``lowrank`` and ``btt`` have no logit scale, so with the generated modules' N(0,
1/fan_in) factors their logits start with a standard deviation of about sqrt(r) and sqrt(D)
(5.7 for one head at D = 32, 8 at D = 64: a nearly one-hot softmax), while ``mlr`` scales level
l by 1/r_l. ``--scaled`` runs ``lowrank`` and ``btt`` instead from structure files written into
the folder with ``scale 1/sqrt(r)`` and ``scale 1/sqrt(D)`` added to their score (unit-scale
logits at init, as 1/sqrt(head dim) does for standard attention); ``mlr`` is left out, unchanged.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

from einsearch.experiments import icr
from einsearch.experiments.settings import IcrConfig, scaled_structure
from einsearch.report import icr_sweep_table

SETTINGS = {"d": 16, "layers": 4, "steps": 1500, "batch": 64, "lr": 3e-3, "base_width": 32, "warmup": 0.05,
            "test_prompts": 1000, "seed": 0, "log_every": 50}  # fmt: skip
WIDTHS = (32, 64)


def scaled_runs(width: int, folder: Path) -> list[tuple[str, str, int, dict]]:
    """The ``--scaled`` runs: lowrank and btt with unit-scale logits at init."""
    lowrank = scaled_structure("lowrank", ("1/sqrt(r)",), folder)
    btt = scaled_structure("btt", ("1/sqrt(D)",), folder)
    return [
        ("lowrank, 8 heads, r = D/8, scale 1/sqrt(r)", lowrank, 8, {"r": width // 8}),
        ("lowrank, 1 head, r = D, scale 1/sqrt(D)", lowrank, 1, {"r": width}),
        ("btt, 1 head, scale 1/sqrt(D)", btt, 1, {}),
    ]


def runs(width: int) -> list[tuple[str, str, int, dict]]:
    """(label, structure, heads, options) of the sweep at one width."""
    return [
        ("lowrank, 8 heads, r = D/8", "lowrank", 8, {"r": width // 8}),
        ("lowrank, 1 head, r = D", "lowrank", 1, {"r": width}),
        ("btt, 1 head", "btt", 1, {}),
        ("mlr, 1 head, 4 levels", "mlr", 1, {"levels": 4, "ranks": [width // 2, width // 4, width // 8, width // 8]}),
    ]


def run_one(job: tuple[str, IcrConfig]) -> tuple[str, dict]:
    """Train one configuration in a worker process."""
    label, config = job
    result = icr.train(config)
    return label, result.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where table.md, icr.png and sweep.json go")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"], help="training steps of every run")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of every run")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="model widths D, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--only", default="", help="only runs whose label or structure contains this word")
    parser.add_argument("--scaled", action="store_true", help="lowrank and btt with unit-scale logits at init")
    parser.add_argument("--force", action="store_true", help="overwrite the folder's files")
    args = parser.parse_args()

    args.folder.mkdir(parents=True, exist_ok=True)
    outputs = [args.folder / name for name in ("table.md", "icr.png", "sweep.json")]
    if not args.force and any(p.exists() for p in outputs):
        sys.exit(f"sweep_icr: {args.folder} already holds results; pass --force to overwrite them")
    settings = {**SETTINGS, "steps": args.steps, "seed": args.seed}
    widths = [int(w) for w in args.widths.split(",")]
    jobs = []
    for width in widths:
        for label, structure, heads, options in scaled_runs(width, args.folder) if args.scaled else runs(width):
            if args.only in label or args.only in structure:
                config = IcrConfig(
                    structure=structure, options=options, width=width, heads=heads, threads=args.threads, **settings
                )
                jobs.append((label, config))
    # The slowest first, so the workers finish together.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].width)
    start = time.perf_counter()
    done: dict[int, tuple[str, dict]] = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool:
        for i, (label, payload) in zip(order, pool.imap(run_one, [jobs[i] for i in order])):
            done[i] = (label, payload)
            errors = payload["errors"]["model"]
            print(f"D = {payload['config']['width']:3d}  {label:<36} {payload['seconds']:6.0f} s  "
                  f"error after {len(errors) - 1} examples {errors[-1]:.3f}", file=sys.stderr, flush=True)  # fmt: skip
    total = time.perf_counter() - start
    results = [done[i] for i in range(len(jobs))]
    text = icr_sweep_table(results)
    summary = (
        f"{len(jobs)} runs, {settings['steps']} steps of {settings['batch']} prompts each, {args.workers} at a "
        f"time on {args.threads} thread(s) each: {total / 60:.1f} minutes in all"
    )
    (args.folder / "table.md").write_text(text + "\n\n" + summary + "\n")
    payloads = [{"label": label, **payload} for label, payload in results]
    everything = {"settings": settings, "seconds": round(total, 1), "runs": payloads}
    (args.folder / "sweep.json").write_text(json.dumps(everything, indent=1) + "\n")
    try:
        from einsearch.plot import icr_errors_png

        panels = {
            f"D = {w} (d = {settings['d']})": [(lb, r) for lb, r in results if r["config"]["width"] == w]
            for w in widths
        }
        (args.folder / "icr.png").write_bytes(icr_errors_png({title: runs for title, runs in panels.items() if runs}))
    except ImportError:
        print("sweep_icr: no plot (pip install matplotlib)", file=sys.stderr)
    print(text)
    print()
    print(summary)


if __name__ == "__main__":
    main()
