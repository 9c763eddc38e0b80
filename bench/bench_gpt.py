"""One training step of a small character GPT: generated attention against SDPA, in one process.

    python bench/bench_gpt.py [--threads 2] [--repeat 15]

The model of ``einsearch.experiments.lm`` (2 pre-LN layers, D = 64, 4 heads, T = 128, batches of
16 sequences, a vocabulary of 96): once with the generated module of each structure below, once
with standard attention (q/k/v projections and ``F.scaled_dot_product_attention``). A step is the
forward, the backward and an AdamW update; the two models take turns (round-robin medians after a
warm-up) and the ratio is printed beside the target of issue 22 (<= 1.5x for MLR).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import einsearch
from einsearch.benchmark import StandardAttention, round_robin
from einsearch.codegen import attention_class
from einsearch.experiments.lm import LanguageModel
from einsearch.experiments.settings import LmConfig

SIZES = {"width": 64, "heads": 4, "context": 128, "batch": 16, "layers": 2}
VOCABULARY = 96
STRUCTURES = {  # head dim 16; MLR down to blocks of 16 tokens
    "mlr": {"levels": 4, "ranks": [8, 4, 2, 2]},
    "lowrank": {"r": 16},
    "global-swa": {"rg": 8, "rw": 8, "window": 16},
    "btt": {},
}


class Standard(StandardAttention):
    """Standard attention with the generated modules' constructor (``LanguageModel`` builds both)."""

    def __init__(self, d_model: int, n_heads: int, **_):
        super().__init__(d_model, n_heads)


def step_of(model: nn.Module, batch: torch.Tensor):
    """One AdamW step of ``model`` on ``batch``, as a function."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = torch.randint(VOCABULARY, (SIZES["batch"], SIZES["context"] + 1))
    print(f"torch {torch.__version__}, CPU, float32, {args.threads} threads; one training step, medians of "
          f"{args.repeat}, round-robin; D = 64, 4 heads, T = 128, 2 layers, batch 16")  # fmt: skip
    print("| attention | step ms (SDPA ms) | ratio |")
    print("|---|---|---|")
    for name, options in STRUCTURES.items():
        config = LmConfig(structure=name, options=options, **SIZES)
        instance = einsearch.load(name).resolve({"T": SIZES["context"], "D": SIZES["width"], **options})
        generated = LanguageModel(config, VOCABULARY, attention_class(einsearch.generate(instance, SIZES["heads"])))
        standard = LanguageModel(config, VOCABULARY, Standard)
        times = round_robin({"generated": step_of(generated, batch), "sdpa": step_of(standard, batch)}, args.repeat)
        ratio = times["generated"] / times["sdpa"]
        print(f"| {name} {options} | {1e3 * times['generated']:.1f} ({1e3 * times['sdpa']:.1f}) | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
