"""In-context regression in the paper's scoring setup, with its LayerNorm ablation.

    python bench/sweep_icr.py runs/icr                  # the sweep: about 30 minutes on 2 CPU cores
    python bench/sweep_icr.py /tmp/icr --steps 50       # a quick look
    python bench/sweep_icr.py /tmp/icr --only btt       # runs whose label contains a word

Every run trains a 2-layer model with ``einsearch.experiments.icr`` (d = 8, N = 16 examples,
prompts of 32 tokens, paired encoding, muP at base width 32, AdamW with warm-up and cosine decay;
``SETTINGS`` below) at widths D = 16 and 32, for two seeds, with four attention structures, each in
two scoring setups (``MODELS``):

=====================  ====================================  =================================
model                  with QK LayerNorm (the research code)  without
=====================  ====================================  =================================
8 heads, r = D/8       ``--qk-norm pooled --logit-scale sqrt`` ``--logit-scale sqrt``
1 head, r = D          ``--qk-norm pooled --logit-scale sqrt`` ``--logit-scale sqrt``
BTT, 8 heads           ``--qk-norm key --rms-cap`` (1/sqrt(D)) the catalog's 1/sqrt(D)
bilinear MLR, 8 heads  ``--qk-norm level`` (1/sqrt(r_l p_l))    the catalog's 1/sqrt(r_l p_l)
=====================  ====================================  =================================

(``pooled`` is one weight-only LayerNorm over a head's r channels: a low-rank head has one level.)
Bilinear MLR has 4 levels of D/16 channels per feature block (1, 2, 4, 8 blocks).

The paper's claim: 8 heads of rank D/8 cannot do in-context regression that a full-rank scoring
function (one head of rank D, BTT, bilinear MLR) can. Decision rule, fixed before running: per
setting (width x scoring setup), let e(m, s) be model m's test error after k = 2d - 1 examples
(relative to the zero predictor) with seed s, gap(s) = e(8 heads, s) - min over the full-rank
models of e(m, s), and noise = the largest |e(m, 0) - e(m, 1)| over the four models. The claim
holds where gap(s) > 2 x noise for both seeds, is reversed where gap(s) < -2 x noise for both,
and is unresolved otherwise.

Writes into the folder: ``table.md`` (every run: errors, costs; then the verdict per setting),
``icr.png`` (error against k, a panel per setting), ``compute.png`` (error after 2d - 1 examples
against training FLOPs, the paper's Fig. 3b axis) and ``sweep.json`` (every run's result).
Runs go ``--workers`` at a time on one thread each, seeded and deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from einsearch.experiments import icr
from einsearch.experiments.pool import run_all
from einsearch.experiments.settings import IcrConfig
from einsearch.report import icr_sweep_table, markdown_table

SETTINGS = {"d": 8, "layers": 2, "steps": 1200, "batch": 64, "lr": 3e-3, "base_width": 32, "warmup": 0.05,
            "test_prompts": 1000, "log_every": 50}  # fmt: skip
WIDTHS = (16, 32)
SEEDS = (0, 1)
SETUPS = ("with QK LayerNorm", "without")
EIGHT_HEADS = "8 heads, r = D/8"


def models(width: int) -> list[tuple[str, str, int, dict, dict]]:
    """(label, structure, heads, structure options, scoring options with and without LayerNorm)."""
    low, bmlr = {"logit_scale": "sqrt"}, {"levels": 4, "ranks": [max(1, width // 16)] * 4}
    return [
        (EIGHT_HEADS, "lowrank", 8, {"r": width // 8}, ({"qk_norm": "pooled", **low}, low)),
        ("1 head, r = D", "lowrank", 1, {"r": width}, ({"qk_norm": "pooled", **low}, low)),
        ("BTT, 8 heads", "btt", 8, {}, ({"qk_norm": "key", "rms_cap": True}, {})),
        ("bilinear MLR, 8 heads", "bilinear-mlr", 8, bmlr, ({"qk_norm": "level"}, {})),
    ]


def jobs(steps: int, only: str) -> list[tuple[dict, IcrConfig]]:
    """Every run of the sweep: its key (width, setup, model, seed) and its settings."""
    found = []
    for width in WIDTHS:
        for label, structure, heads, options, scoring in models(width):
            for setup, generate_options in zip(SETUPS, scoring):
                for seed in SEEDS:
                    key = {"width": width, "setup": setup, "model": label, "seed": seed}
                    if only and only not in label and only not in structure:
                        continue
                    config = IcrConfig(structure=structure, options=options, generate_options=generate_options,
                                       width=width, heads=heads, seed=seed, **{**SETTINGS, "steps": steps})  # fmt: skip
                    found.append((key, config))
    return found


def run_one(job: tuple[dict, IcrConfig]) -> tuple[dict, dict]:
    """Train one configuration in a worker process."""
    key, config = job
    return key, icr.train(config).to_dict()


def final_error(run: dict) -> float:
    """The error after 2d - 1 examples, relative to the zero predictor."""
    return run["errors"]["model"][-1]


def verdicts(results: list[tuple[dict, dict]]) -> list[list[str]]:
    """The decision rule of the module docstring, one row per setting it can be applied to."""
    rows = []
    for width in WIDTHS:
        for setup in SETUPS:
            errors: dict[str, dict[int, float]] = {}
            for key, run in results:
                if key["width"] == width and key["setup"] == setup:
                    errors.setdefault(key["model"], {})[key["seed"]] = final_error(run)
            complete = {m: e for m, e in errors.items() if set(e) == set(SEEDS)}
            if EIGHT_HEADS not in complete or len(complete) < 2:
                continue
            noise = max(abs(e[SEEDS[0]] - e[SEEDS[1]]) for e in complete.values())
            full = [m for m in complete if m != EIGHT_HEADS]
            gaps = [complete[EIGHT_HEADS][s] - min(complete[m][s] for m in full) for s in SEEDS]
            best = min(full, key=lambda m: sum(complete[m].values()))
            if min(gaps) > 2 * noise:
                verdict = "holds"
            elif max(gaps) < -2 * noise:
                verdict = "reversed"
            else:
                verdict = "unresolved"
            rows.append([str(width), setup, " / ".join(f"{complete[EIGHT_HEADS][s]:.3f}" for s in SEEDS), best,
                         " / ".join(f"{complete[best][s]:.3f}" for s in SEEDS),
                         " / ".join(f"{g:+.3f}" for g in gaps), f"{noise:.3f}", verdict])  # fmt: skip
    head = ["D", "scoring setup", "8 heads, seeds 0 / 1", "best full-rank model", "its error, seeds 0 / 1",
            "gap, seeds 0 / 1", "noise", "claim"]  # fmt: skip
    return [head, *rows]


def label_of(key: dict) -> str:
    return f"{key['model']}, {key['setup']}, seed {key['seed']}"


def plots(folder: Path, results: list[tuple[dict, dict]]) -> None:
    """icr.png (error against k, seed 0) and compute.png (final error against training FLOPs)."""
    from einsearch.plot import icr_compute_png, icr_errors_png

    panels = {}
    for width in WIDTHS:
        for setup in SETUPS:
            runs = [(k["model"], r) for k, r in results if (k["width"], k["setup"], k["seed"]) == (width, setup, 0)]
            if runs:
                panels[f"D = {width}, {setup} (d = {SETTINGS['d']}, seed 0)"] = runs
    (folder / "icr.png").write_bytes(icr_errors_png(panels))
    by_setup = {setup: [(k["model"], r) for k, r in results if k["setup"] == setup] for setup in SETUPS}
    (folder / "compute.png").write_bytes(icr_compute_png({s: runs for s, runs in by_setup.items() if runs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where table.md, icr.png, compute.png and sweep.json go")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"], help="training steps of every run")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once (one thread each)")
    parser.add_argument("--only", default="", help="only runs whose label or structure contains this word")
    parser.add_argument("--force", action="store_true", help="overwrite the folder's files")
    args = parser.parse_args()

    args.folder.mkdir(parents=True, exist_ok=True)
    outputs = [args.folder / name for name in ("table.md", "icr.png", "compute.png", "sweep.json")]
    if not args.force and any(p.exists() for p in outputs):
        sys.exit(f"sweep_icr: {args.folder} already holds results; pass --force to overwrite them")
    todo = jobs(args.steps, args.only)
    weight = {"bilinear-mlr": 4, "btt": 3, "lowrank": 1}  # relative cost per head and width

    def progress(n: int, result: tuple[dict, dict]) -> None:
        key, run = result
        print(f"[{n}/{len(todo)}] D = {key['width']:2d}  {label_of(key):<55} {run['seconds']:5.0f} s  "
              f"error {final_error(run):.3f}", file=sys.stderr, flush=True)  # fmt: skip

    start = time.perf_counter()
    results = run_all(todo, run_one, args.workers, lambda job: job[1].width * job[1].heads * weight[job[1].structure],
                      progress)  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    table = icr_sweep_table([(label_of(key), run) for key, run in results])
    head, *rows = verdicts(results)
    summary = (f"{len(todo)} runs, {args.steps} steps of {SETTINGS['batch']} prompts each, {args.workers} at a time "
               f"on one thread each: {minutes:.1f} minutes in all")  # fmt: skip
    text = "\n\n".join([table, markdown_table(head, rows) if rows else "(no setting complete)", summary])
    (args.folder / "table.md").write_text(text + "\n")
    payloads = [{**key, **run} for key, run in results]
    everything = {"settings": SETTINGS, "steps": args.steps, "minutes": round(minutes, 1), "runs": payloads}
    (args.folder / "sweep.json").write_text(json.dumps(everything, indent=1) + "\n")
    try:
        plots(args.folder, results)
    except ImportError:
        print("sweep_icr: no plots (pip install matplotlib)", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
