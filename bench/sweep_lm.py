"""Language-modelling sweep: validation loss against training compute, MLR against standard attention.

    python bench/sweep_lm.py runs/lm            # the sweep: 16 runs, about 32 minutes on 2 quiet CPU cores
    python bench/sweep_lm.py runs/lm-quick --quick   # every run for a few steps: a check that it all works
    python bench/sweep_lm.py runs/lm --only mlr --widths 64   # runs whose label contains a word

Trains a character-level GPT (``einsearch.experiments.lm``: Python standard-library source,
pre-LN blocks, muP, the same settings for every run, ``SETTINGS`` below) with each structure's
generated attention module, at three widths (``WIDTHS``) and the same number of characters for
every run, seed 0, plus seed 1 at the smallest width to show the noise. Into the folder given:

* ``table.md``: per run its width, heads, non-embedding parameters, forward FLOPs per token (the
  analyzer's, and FlopCounterMode's beside it), training FLOPs (3 x forward x characters), speed,
  final training loss and validation loss (nats per character);
* ``lm.png``: validation loss against training FLOPs, a line per structure;
* ``sweep.json``: every run's full result.

The structures (``runs``): every one has the same head layout at a width, heads of ``HEAD_DIM``
query/key channels (D / 32 heads: 2, 4 and 6), as the research code keeps its head dim fixed (64)
and adds heads with the width:

* standard attention: ``lowrank`` with r = 32, logits scaled by 8/r (muP's 8/d_head);
* sliding window: ``swa`` with r = 32, ``window`` = T/8 = 32 (keys 0 <= t - u <= 32: the research
  code's window 128 at its T = 1024, scaled to T = 256), logits 8/r;
* global + sliding window: ``global-swa`` with r = 16 + 16 (the research code splits its head
  dim in halves), the window above, logits 8/r on each term, both in one softmax;
* MLR attention: ``mlr`` with levels down to blocks of 8 tokens (6 levels at T = 256: blocks of
  256, 128, 64, 32, 16 and 8) and the research code's language-model ranks ``32,8,6,4,4,4,4,2``
  (head dim 64, T = 1024: blocks of 1024 down to 8) mapped by block length and halved for head dim
  32: the levels whose blocks are T or longer are global here and add up (16 + 4 + 3 = 23), the
  others keep theirs: ranks ``23,2,2,2,2,1``; level l's logits scaled by 1/r_l (the catalog's).

Runs go ``--workers`` at a time (2), one thread each; each is seeded and deterministic. The token
budget (500 steps of 16 x 256 characters) is set from measured step times so that the 16 runs
take about 32 minutes on 2 quiet cores (docs/lm.md, "Budget"); the learning rate (1e-2 at base
width 64) from pilot runs at D = 64 and 128 (docs/lm.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from einsearch.errors import EinsearchError
from einsearch.experiments import corpus, lm
from einsearch.experiments.outputs import check_folder, write
from einsearch.experiments.pool import run_all
from einsearch.experiments.settings import LmConfig, scaled_structure
from einsearch.report import lm_sweep_table

SETTINGS = {"context": 256, "layers": 2, "batch": 16, "steps": 500, "lr": 1e-2, "base_width": 64, "warmup": 0.05,
            "schedule": "cosine", "eval_tokens": 65536, "log_every": 20}  # fmt: skip
QUICK = {"steps": 6, "eval_tokens": 512, "log_every": 2}
WIDTHS = (64, 128, 192)
HEAD_DIM = 32
RESEARCH_RANKS = (32, 8, 6, 4, 4, 4, 4, 2)  # the research code's MLR language models: head dim 64, T = 1024
FINEST = 8  # tokens in the finest MLR blocks
OUTPUTS = ("table.md", "lm.png", "sweep.json")


def mlr_ranks(T: int, head_dim: int) -> tuple[int, ...]:
    """The research ranks at context T and ``head_dim``: level l of the research code has blocks of
    1024 / 2^(l-1) tokens; those of T tokens or more are one global level here, the others keep
    their ranks; all scaled by head_dim / 64 (whole numbers required)."""
    lengths = [1024 >> level for level in range(len(RESEARCH_RANKS))]
    ranks = [sum(r for r, n in zip(RESEARCH_RANKS, lengths) if n >= T)]
    ranks += [r for r, n in zip(RESEARCH_RANKS, lengths) if FINEST <= n < T]
    scaled = [r * head_dim / 64 for r in ranks]
    if any(r != int(r) or r < 1 for r in scaled):
        raise ValueError(f"the ranks {ranks} do not scale to head dim {head_dim} in whole numbers")
    return tuple(int(r) for r in scaled)


def runs(T: int, folder: Path) -> list[tuple[str, str, dict]]:
    """(label, structure, options) of every structure (the same at every width)."""
    window = T // 8
    half = HEAD_DIM // 2
    ranks = mlr_ranks(T, HEAD_DIM)
    return [
        ("standard", scaled_structure("lowrank", ("8/r",), folder), {"r": HEAD_DIM}),
        ("sliding window", scaled_structure("swa", ("8/r",), folder), {"r": HEAD_DIM, "window": window}),
        ("global + sliding window", scaled_structure("global-swa", ("8/rg", "8/rw"), folder),
         {"rg": half, "rw": half, "window": window}),
        ("MLR", "mlr", {"levels": len(ranks), "ranks": list(ranks)}),
    ]  # fmt: skip


def jobs(args: argparse.Namespace, settings: dict) -> list[tuple[str, LmConfig]]:
    """Every run: each structure at each width with seed 0, and with seed 1 at the smallest width."""
    widths = [int(w) for w in args.widths.split(",")]
    found = []
    for width in widths:
        for seed in (0, 1) if width == min(widths) else (0,):
            for label, structure, options in runs(settings["context"], args.folder):
                if args.only.lower() in label.lower():
                    config = LmConfig(structure=structure, options=options, width=width, heads=width // HEAD_DIM,
                                      seed=seed, threads=args.threads, **settings)  # fmt: skip
                    found.append((label, config))
    return found


def run_one(job: tuple[str, LmConfig]) -> tuple[str, dict]:
    """Train one configuration in a worker process."""
    label, config = job
    return label, lm.train(config).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where table.md, lm.png and sweep.json go")
    parser.add_argument("--quick", action="store_true", help="a few steps per run: a check that everything works")
    parser.add_argument("--steps", type=int, help=f"training steps of every run (default {SETTINGS['steps']})")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="model widths D, multiples of 32")
    parser.add_argument("--only", default="", help="only runs whose label contains this word")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--force", action="store_true", help="overwrite the folder's results")
    args = parser.parse_args()

    settings = {**SETTINGS, **(QUICK if args.quick else {})}
    settings["steps"] = args.steps or settings["steps"]
    try:
        check_folder(args.folder, args.force, "folder", OUTPUTS)
        args.folder.mkdir(parents=True, exist_ok=True)
        todo = jobs(args, settings)
        text = corpus.load()
        for _, config in todo:
            config.prepare(text)
    except (EinsearchError, ValueError) as err:
        sys.exit(f"sweep_lm: {err}")
    if not todo:
        sys.exit(f"sweep_lm: no run's label contains {args.only!r}")

    def progress(n: int, result: tuple[str, dict]) -> None:
        label, payload = result
        c = payload["config"]
        print(f"[{n}/{len(todo)}] D = {c['width']:3d}  seed {c['seed']}  {label:<24} {payload['seconds']:6.0f} s  "
              f"validation loss {payload['validation_loss']:.4f}", file=sys.stderr, flush=True)  # fmt: skip

    start = time.perf_counter()
    results = run_all(todo, run_one, args.workers, lambda job: job[1].width, progress)  # the widest the slowest
    total = time.perf_counter() - start
    first = results[0][1]
    summary = (
        f"{len(results)} runs of {settings['steps']} steps of {settings['batch']} x {settings['context']} characters "
        f"({first['tokens']:,} each), {args.workers} at a time on {args.threads} thread(s) each: "
        f"{total / 60:.1f} minutes in all; corpus sha256 {first['corpus']['sha256'][:12]} "
        f"(Python {first['corpus']['python']})"
    )
    text = lm_sweep_table(results) + "\n\n" + summary + "\n"
    payloads = {"settings": settings, "seconds": round(total, 1), "runs": [{"label": lb, **p} for lb, p in results]}
    write(args.folder / "table.md", text)
    write(args.folder / "sweep.json", json.dumps(payloads, indent=1) + "\n")
    try:
        from einsearch.plot import lm_scaling_png

        series: dict[str, list[dict]] = {}
        for label, payload in results:
            series.setdefault(label, []).append(payload)
        write(args.folder / "lm.png", lm_scaling_png(series))
    except ImportError:
        print("sweep_lm: no plot (pip install matplotlib)", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
