"""One generated file, many sizes: a short muP sweep over widths, learning rates and MLR rank allocations.

    python bench/sweep_mup.py runs/mup            # about 10 minutes on 2 CPU cores
    python bench/sweep_mup.py /tmp/mup --steps 5  # a quick look

Writes ``mlr_attention.py`` once (``einsearch generate mlr`` at its defaults for T = 128), loads
its class, and trains the character-level GPT of ``einsearch.experiments.lm`` with that one class
built at every point: widths D = 64, 128 and 256 (heads of 32 channels) at three learning rates,
then three rank allocations at D = 128. muP (``init="mup"`` and the module's ``param_groups``)
should keep the best learning rate where it is as the width grows. Into the folder: the module,
``table.md`` (validation loss per point) and ``sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import einsearch
from einsearch.codegen import attention_class
from einsearch.experiments import corpus, lm
from einsearch.experiments.pool import run_all
from einsearch.experiments.settings import LmConfig
from einsearch.report import markdown_table

SETTINGS = {"context": 128, "layers": 2, "batch": 16, "steps": 150, "base_width": 64, "warmup": 0.05,
            "eval_tokens": 16384, "log_every": 10}  # fmt: skip
WIDTHS = (64, 128, 256)
RATES = (3e-3, 1e-2, 3e-2)
GENERATED = {"T": 128, "D": 64, "levels": 5, "ranks": [16, 4, 4, 4, 4]}  # blocks of 128 down to 8 tokens
ALLOCATIONS = ([16, 4, 4, 4, 4], [28, 1, 1, 1, 1], [4, 4, 8, 8, 8])  # 32 channels per head, 5 levels


def points(steps: int) -> list[tuple[str, LmConfig]]:
    """(table, settings) of every run: widths x rates with the generated ranks, then allocations."""
    found = []
    for width in WIDTHS:
        for lr in RATES:
            options = {"levels": 5, "ranks": GENERATED["ranks"]}
            found.append(("width", config(width, lr, options, steps)))
    for ranks in ALLOCATIONS:
        found.append(("ranks", config(128, 1e-2, {"levels": len(ranks), "ranks": ranks}, steps)))
    return found


def config(width: int, lr: float, options: dict, steps: int) -> LmConfig:
    return LmConfig(structure="mlr", options=options, width=width, heads=width // 32, lr=lr,
                    **{**SETTINGS, "steps": steps})  # fmt: skip


def run_one(job: tuple[str, str, LmConfig]) -> dict:
    """Train one point with the class of the generated file (in a worker process)."""
    source, table, settings = job
    cls = attention_class(source)
    return {"table": table, **lm.train(settings, attention=cls, text=corpus.load()).to_dict()}


def tables(results: list[dict]) -> str:
    """Validation loss by width and learning rate, then by rank allocation."""
    width_rows = []
    for width in WIDTHS:
        losses = {r["config"]["lr"]: r["validation_loss"] for r in results
                  if r["table"] == "width" and r["config"]["width"] == width}  # fmt: skip
        best = min(losses, key=losses.get)
        width_rows.append([str(width), str(width // 32), *(f"{losses[lr]:.3f}" for lr in RATES), f"{best:g}"])
    head = ["D", "heads", *(f"lr {lr:g}" for lr in RATES), "best lr"]
    rank_rows = [[",".join(map(str, r["config"]["options"]["ranks"])), f"{r['validation_loss']:.3f}"]
                 for r in results if r["table"] == "ranks"]  # fmt: skip
    return (markdown_table(head, width_rows) + "\n\n"
            + markdown_table(["ranks at D = 128, lr 0.01", "validation loss"], rank_rows))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where mlr_attention.py, table.md and sweep.json go")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"], help="training steps of every run")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once (one thread each)")
    parser.add_argument("--force", action="store_true", help="overwrite the folder's files")
    args = parser.parse_args()

    args.folder.mkdir(parents=True, exist_ok=True)
    if not args.force and any((args.folder / n).exists() for n in ("mlr_attention.py", "table.md", "sweep.json")):
        sys.exit(f"sweep_mup: {args.folder} already holds results; pass --force to overwrite them")
    options = " ".join(f"--{k} {','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in GENERATED.items())
    command = f"einsearch generate mlr {options} --heads 2 -o mlr_attention.py"
    source = einsearch.generate(einsearch.load("mlr").resolve(GENERATED), heads=2, command=command)
    (args.folder / "mlr_attention.py").write_text(source)
    todo = [(source, table, settings) for table, settings in points(args.steps)]

    def progress(n: int, result: dict) -> None:
        c = result["config"]
        print(f"[{n}/{len(todo)}] D = {c['width']:3d}  lr {c['lr']:<6g} ranks {c['options']['ranks']}  "
              f"validation loss {result['validation_loss']:.4f}", file=sys.stderr, flush=True)  # fmt: skip

    start = time.perf_counter()
    results = run_all(todo, run_one, args.workers, lambda job: job[2].width, progress)  # the widest the slowest
    minutes = (time.perf_counter() - start) / 60
    summary = (f"{len(todo)} runs of {args.steps} steps of {SETTINGS['batch']} x {SETTINGS['context']} characters, "
               f"one generated file, {args.workers} at a time: {minutes:.1f} minutes")  # fmt: skip
    text = tables(results) + "\n\n" + summary + "\n"
    (args.folder / "table.md").write_text(text)
    (args.folder / "sweep.json").write_text(json.dumps({"settings": SETTINGS, "runs": results}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
