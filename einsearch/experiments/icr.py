"""In-context linear regression with generated attention modules (``einsearch experiment icr``).

The task of the research code (docs/design.md §4): a prompt is ``x_1, w.x_1, ..., x_N, w.x_N``
with ``x_i ~ N(0, I/d)``, a fresh ``w ~ N(0, I_d)`` per prompt and ``N = 2d``, so every prompt
has ``2N = 4d`` tokens. A small GPT-style model reads the prompt and, at the position of each
``x_i``, predicts ``w.x_i`` from the ``i - 1`` examples before it; the loss is the mean squared
error of those N predictions.

Token encoding (``encode``): each token is a vector of ``d + 1`` numbers. An x token is
``[x_1 .. x_d, 0]``. A y token is ``[x_1 .. x_d, y]`` with the default ``encoding="paired"``: it
repeats the x it answers, so the prompt is still ``x_1, y_1, ..., x_N, y_N`` (2N tokens, the
same predictions from the same information) but a query can score the examples directly; with
``encoding="interleaved"`` it is ``[0 .. 0, y]`` as in the research code, and the model must
first learn to pair each y with the x before it (a previous-token head), which at laptop scale
(a few thousand steps) it does not: the loss stays at the zero predictor's. A read-in
``Linear(d + 1, D)`` maps each token to the model width and a learned position embedding
(``2N x D``) is added. Then ``layers`` pre-LN blocks (attention, MLP of 4D), a final LayerNorm
and a read-out ``Linear(D, 1)``; the attention of every block is the module
``einsearch.generate`` writes for the structure, loaded from its source in-process, with
``block_size`` = the prompt length (the structure is resolved with ``T = 2N`` and ``D`` = the
width).

Training: AdamW (betas 0.9, 0.95), linear warm-up then cosine decay to ``min_lr`` x lr, gradient
norm clipped at 1. muP (``init="mup"``): the attention's factors and projections take the
learning rates of its ``param_groups(lr, base_fan_in)``, every other hidden matrix (the MLP's)
the same rule ``lr * base_fan_in / fan_in`` and ``N(0, 1/fan_in)`` initialisation, the MLP's
output matrix starts at zero; the read-out is muP's output layer (zero initialisation, learning
rate ``lr * base_fan_in / D``); the read-in, the position embedding, biases and LayerNorms are
input-like and take ``lr`` unscaled (``base_fan_in`` is the width the learning rate is tuned at).
The read-in starts N(0, 1): tokens have norm about 1, so its outputs have unit-scale coordinates
whatever the width (muP's input layer); the position embedding starts small, N(0, 0.1^2), so the
tokens' content dominates at first (with both at unit scale the loss does not leave the zero
predictor's in a few thousand steps).
An optional curriculum on d starts with few active input dimensions and grows them to d over
the first part of training (x's other coordinates are zero; the active ones ~ N(0, 1/d_active),
so y keeps unit variance).

Evaluation on a fixed test set (its own seed, the same for every run): the mean squared error of
the prediction that has seen k examples, k = 0 .. N - 1, divided by the zero predictor's
(``mean y^2`` at that k), so 1.0 is predicting 0; against the min-norm least-squares fit of the k
examples (the Bayes-optimal predictor for this noiseless task with an isotropic prior on w).

Deterministic on the CPU for a seed: ``torch.manual_seed`` for the weights, a ``torch.Generator``
for the data, and ``torch.use_deterministic_algorithms`` while training.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..structure import Instance

TEST_SEED = 20_250_717  # the fixed test set: the same prompts for every run and seed
ENCODINGS = ("paired", "interleaved")


@dataclass(frozen=True)
class Config:
    """One in-context regression run. ``options``: the structure's own options (not T or D)."""

    structure: str = "lowrank"
    options: dict[str, Any] = field(default_factory=dict)
    d: int = 16  # input dimension; N = 2d examples, prompts of 4d tokens
    width: int = 64  # D, the model width
    layers: int = 4
    heads: int = 8
    steps: int = 1000
    batch: int = 64
    lr: float = 3e-3
    base_width: int = 32  # base_fan_in of the muP rule: the width lr is tuned at
    warmup: float = 0.05  # fraction of the steps
    min_lr: float = 0.1  # the cosine ends at min_lr * lr
    weight_decay: float = 0.0
    curriculum: float = 0.0  # fraction of the steps over which the active dims grow to d (0: off)
    curriculum_start: int = 4  # active dims at the start of the curriculum
    encoding: str = "paired"  # y tokens [x, y] ("paired") or [0, y] ("interleaved"); see the module doc
    seed: int = 0
    threads: int | None = 1  # torch threads while training (None: as set); see ``deterministic``
    test_prompts: int = 1000
    log_every: int = 10

    @property
    def examples(self) -> int:
        """N = 2d, the (x, y) pairs in a prompt."""
        return 2 * self.d

    @property
    def prompt_length(self) -> int:
        """2N = 4d tokens: the structure's T and the module's block_size."""
        return 2 * self.examples

    def check(self) -> None:
        """ValueError for a setting that cannot run."""
        positive = ("d", "width", "layers", "heads", "steps", "batch", "base_width", "test_prompts", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.width % self.heads:
            raise ValueError(f"heads = {self.heads} must divide the width D = {self.width}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("warmup", "curriculum", "min_lr"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if not 1 <= self.curriculum_start <= self.d:
            raise ValueError(f"curriculum_start must be between 1 and d = {self.d}, got {self.curriculum_start}")

    def to_dict(self) -> dict:
        return {**asdict(self), "examples": self.examples, "prompt_length": self.prompt_length}


# --- the task ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompts:
    """A batch of prompts: x (B, N, d), y = w.x (B, N), w (B, d)."""

    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor


def sample_prompts(batch: int, d: int, examples: int, generator: torch.Generator, active: int | None = None) -> Prompts:
    """Fresh prompts: w ~ N(0, I_d) per prompt, x ~ N(0, I/d) (with ``active`` < d, only the
    first ``active`` coordinates are drawn, ~ N(0, 1/active), the others are 0), y = w.x exactly."""
    active = d if active is None else active
    w = torch.randn(batch, d, generator=generator)
    x = torch.randn(batch, examples, d, generator=generator) / math.sqrt(active)
    if active < d:
        x[..., active:] = 0.0
    y = (x @ w.unsqueeze(-1)).squeeze(-1)
    return Prompts(x, y, w)


def encode(x: torch.Tensor, y: torch.Tensor, encoding: str = "paired") -> torch.Tensor:
    """Interleaved tokens (B, 2N, d + 1): x tokens [x, 0] at even positions, y tokens at odd ones,
    [x, y] (``paired``: the example it answers) or [0, y] (``interleaved``)."""
    B, N, d = x.shape
    tokens = x.new_zeros(B, N, 2, d + 1)
    tokens[:, :, 0, :d] = x
    if encoding == "paired":
        tokens[:, :, 1, :d] = x
    tokens[:, :, 1, d] = y
    return tokens.view(B, 2 * N, d + 1)


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Predictions (B, N) of y_k from the min-norm least-squares fit of the k examples before it
    (k = 0: nothing seen, predict 0), in float64."""
    x, y = x.double(), y.double()
    B, N, d = x.shape
    predictions = torch.zeros(B, N, dtype=torch.float64)
    for k in range(1, N):
        w = torch.linalg.pinv(x[:, :k]) @ y[:, :k, None]  # (B, d, 1): the min-norm solution
        predictions[:, k] = (x[:, k, None] @ w)[:, 0, 0]
    return predictions


def normalised_errors(predictions: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per k: the mean squared error over the prompts / the zero predictor's (mean y^2)."""
    mse = (predictions.double() - y.double()).pow(2).mean(0)
    return (mse / y.double().pow(2).mean(0)).tolist()


# --- the model -----------------------------------------------------------------------------------


def resolve(structure: str, options: dict[str, Any], config: Config) -> Instance:
    """The structure with T = the prompt length and D = the width (EinsearchError if it does not fit)."""
    from .. import load
    from ..errors import OptionError

    for fixed in ("T", "D"):
        if fixed in options:
            what = "the prompt length 4d" if fixed == "T" else "the model width"
            raise OptionError(fixed, f"set by the experiment ({what}); do not give it")
    return load(structure).resolve({**options, "T": config.prompt_length, "D": config.width})


def attention_class(instance: Instance, heads: int) -> type[nn.Module]:
    """The class of the module ``einsearch.generate`` writes for ``instance``."""
    from .. import generate
    from ..codegen import attention_class as loaded

    return loaded(generate(instance, heads=heads))


class Block(nn.Module):
    """Pre-LN: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, attention: nn.Module, width: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = attention
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class RegressionModel(nn.Module):
    """Read-in, position embedding, pre-LN blocks with the generated attention, read-out."""

    def __init__(self, config: Config, attention: type[nn.Module]) -> None:
        super().__init__()
        D, T = config.width, config.prompt_length
        self.config = config
        self.read_in = nn.Linear(config.d + 1, D)
        self.position = nn.Parameter(torch.empty(T, D))
        self.blocks = nn.ModuleList(
            Block(attention(D, config.heads, block_size=T, init="mup"), D) for _ in range(config.layers)
        )
        self.ln_f = nn.LayerNorm(D)
        self.read_out = nn.Linear(D, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """muP: hidden matrices N(0, 1/fan_in), the MLP's output matrix and the read-out at zero;
        the read-in N(0, 1) (unit-scale coordinates from tokens of norm about 1), the position
        embedding N(0, 0.1^2)."""
        nn.init.normal_(self.read_in.weight, std=1.0)
        nn.init.zeros_(self.read_in.bias)
        nn.init.normal_(self.position, std=0.1)
        for block in self.blocks:
            nn.init.normal_(block.fc1.weight, std=block.fc1.in_features**-0.5)
            nn.init.zeros_(block.fc1.bias)
            nn.init.zeros_(block.fc2.weight)
            nn.init.zeros_(block.fc2.bias)
        nn.init.zeros_(self.read_out.weight)
        nn.init.zeros_(self.read_out.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, d + 1) tokens -> (B, T) outputs at every position."""
        h = self.read_in(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.ln_f(h)).squeeze(-1)

    def predict(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, N) predictions of y at the x positions."""
        return self(encode(x, y, self.config.encoding))[:, 0::2]

    def param_groups(self) -> list[dict]:
        """AdamW groups with muP learning rates (see the module docstring); every parameter once."""
        lr, base = self.config.lr, self.config.base_width
        groups: list[dict] = []
        for block in self.blocks:
            groups += block.attn.param_groups(lr, base_fan_in=base)
            for linear in (block.fc1, block.fc2):
                groups.append({"params": [linear.weight], "lr": lr * base / linear.in_features})
        groups.append({"params": [self.read_out.weight], "lr": lr * base / self.read_out.in_features})
        grouped = {id(p) for g in groups for p in g["params"]}
        vectors = [p for p in self.parameters() if id(p) not in grouped]  # read-in, positions, biases, norms
        groups.append({"params": vectors, "lr": lr})
        counted = [id(p) for g in groups for p in g["params"]]
        if len(counted) != len(set(counted)) or set(counted) != {id(p) for p in self.parameters()}:
            raise RuntimeError("the parameter groups do not hold every parameter exactly once")
        return [g for g in groups if g["params"]]


# --- training ------------------------------------------------------------------------------------


def lr_factor(step: int, config: Config) -> float:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to ``min_lr``."""
    warmup = round(config.warmup * config.steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.min_lr + (1 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def active_dims(step: int, config: Config) -> int:
    """Input dimensions in use at ``step``: from curriculum_start to d in equal stages over the
    first ``curriculum`` of the steps (all d without a curriculum)."""
    span = round(config.curriculum * config.steps)
    if span == 0 or step >= span:
        return config.d
    return config.curriculum_start + (config.d - config.curriculum_start) * step // span


@contextlib.contextmanager
def deterministic(threads: int | None = None) -> Iterator[None]:
    """torch.use_deterministic_algorithms(True), and ``threads`` intra-op threads, for the block;
    both restored afterwards. The same seed and thread count give the same run. One thread is
    the default: these models are too small for intra-op threads to pay, and on a machine busy
    with other work two threads waiting on each other can be a hundred times slower."""
    before, count = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(count)


@dataclass
class Result:
    """A finished run: its settings, costs, loss log and test errors (normalised, per k)."""

    config: Config
    structure: dict  # instance name, options, per-head params/rank/FLOPs from einsearch.describe
    model_params: int
    forward_flops: int  # per prompt, counted by torch.utils.flop_counter (2 per multiply-add)
    seconds: float
    losses: list[tuple[int, float]]  # (step, training loss) every log_every steps
    errors: list[float]  # the model's, k = 0 .. N - 1
    least_squares: list[float]

    @property
    def zero(self) -> list[float]:
        return [1.0] * len(self.errors)

    def columns(self) -> list[int]:
        """The k shown in the table: 1, d/2, d, 3d/2 and N - 1 = 2d - 1 (the last query)."""
        d = self.config.d
        return sorted({k for k in (1, d // 2, d, 3 * d // 2, 2 * d - 1) if 0 <= k < len(self.errors)})

    def table(self) -> str:
        """Markdown table of the normalised test error at several k, for the model and baselines."""
        ks = self.columns()
        head = "| predictor | " + " | ".join(f"k={k}" for k in ks) + " | mean over k |"
        rule = "|---|" + "---|" * (len(ks) + 1)
        rows = []
        for name, errors in (("model", self.errors), ("least squares", self.least_squares), ("zero", self.zero)):
            mean = sum(errors) / len(errors)
            rows.append(f"| {name} | " + " | ".join(f"{errors[k]:.4f}" for k in ks) + f" | {mean:.4f} |")
        return "\n".join([head, rule, *rows])

    def to_dict(self) -> dict:
        return {
            "task": "in-context linear regression",
            "config": self.config.to_dict(),
            "structure": self.structure,
            "units": {
                "errors": "test MSE / zero predictor's MSE, per k = examples seen (0 .. N-1)",
                "flops": "2 per multiply-add",
                "seconds": "wall clock of training",
            },
            "model_params": self.model_params,
            "forward_flops_per_prompt": self.forward_flops,
            "train_flops": 3 * self.forward_flops * self.config.batch * self.config.steps,
            "seconds": round(self.seconds, 3),
            "losses": [[step, loss] for step, loss in self.losses],
            "errors": {"model": self.errors, "least_squares": self.least_squares, "zero": self.zero},
        }

    def text(self) -> str:
        c = self.config
        s = self.structure
        lines = [
            f"in-context regression: {s['name']} ({s['heads']} head{'s' if s['heads'] != 1 else ''}), d = {c.d}, "
            f"N = {c.examples}, encoding {c.encoding}, "
            f"D = {c.width}, {c.layers} layers, {c.steps} steps of {c.batch} prompts, lr {c.lr:g}, seed {c.seed}",
            f"attention per layer: {s['params'] * s['heads']:,} scoring params, rank {s['rank']} per head; "
            f"model {self.model_params:,} params; {self.seconds:.1f} s",
            f"final training loss {self.losses[-1][1]:.4f}",
            f"test error (MSE / zero predictor's; {c.test_prompts} prompts) after k examples:",
            self.table(),
        ]
        return "\n".join(lines)


def describe_structure(instance: Instance, heads: int) -> dict:
    """What ``einsearch describe`` says of one head of the attention (per layer)."""
    from .. import describe

    desc = describe(instance)
    names = [d.name for d in instance.structure.options] if instance.structure is not None else ["T", "D"]
    options = {name: instance.values[name] for name in names}
    return {
        "name": instance.name,
        "options": {k: list(v) if isinstance(v, tuple | list) else v for k, v in options.items()},
        "heads": heads,
        "params": desc.params,
        "rank": desc.rank,
        "flops_per_token": desc.flops.per_token,
        "score_flops": desc.flops.score,
        "units": "per head and layer (einsearch describe); FLOPs = 2 per multiply-add, score_flops for one prompt",
    }


def count_forward_flops(model: nn.Module, config: Config) -> int:
    """FLOPs of one prompt's forward pass, as torch.utils.flop_counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, config.examples, config.d)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.predict(x, x[..., 0])
    return counter.get_total_flops()


def evaluate(model: RegressionModel, test: Prompts, batch: int = 250) -> list[float]:
    """The model's normalised test error per k."""
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model.predict(test.x[i : i + batch], test.y[i : i + batch])
                                 for i in range(0, len(test.x), batch)])  # fmt: skip
    model.train()
    return normalised_errors(predictions, test.y)


def held_out_prompts(config: Config) -> Prompts:
    """The fixed test prompts (seeded by TEST_SEED, not by the run's seed)."""
    return sample_prompts(config.test_prompts, config.d, config.examples, torch.Generator().manual_seed(TEST_SEED))


def build(
    config: Config, instance: Instance | None = None, attention: type[nn.Module] | None = None
) -> tuple[Instance, RegressionModel]:
    """The resolved structure and a freshly initialised model (seeded by ``config.seed``);
    ``instance`` and ``attention`` (its generated class) when the caller has them already."""
    config.check()
    instance = instance or resolve(config.structure, config.options, config)
    attention = attention or attention_class(instance, config.heads)
    torch.manual_seed(config.seed)
    return instance, RegressionModel(config, attention)


def train(
    config: Config,
    on_step: Callable[[int, float], None] | None = None,
    *,
    instance: Instance | None = None,
    attention: type[nn.Module] | None = None,
) -> Result:
    """Train and evaluate one model; ``on_step(step, loss)`` after every step (for a progress bar)."""
    instance, model = build(config, instance, attention)
    structure = describe_structure(instance, config.heads)
    with deterministic(config.threads):
        forward_flops = count_forward_flops(model, config)
        test = held_out_prompts(config)
        baseline = normalised_errors(least_squares(test.x, test.y), test.y)
        start = time.perf_counter()
        losses = fit(model, config, on_step)
        seconds = time.perf_counter() - start
        errors = evaluate(model, test)
    model_params = sum(p.numel() for p in model.parameters())
    return Result(config, structure, model_params, forward_flops, seconds, losses, errors, baseline)


def fit(
    model: RegressionModel, config: Config, on_step: Callable[[int, float], None] | None = None
) -> list[tuple[int, float]]:
    """The training loop: fresh prompts every step (a generator seeded by ``config.seed``); returns
    the mean training loss over every ``log_every`` steps."""
    optimizer = torch.optim.AdamW(model.param_groups(), betas=(0.9, 0.95), weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[tuple[int, float]] = []
    running, count = 0.0, 0
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, config)
        batch = sample_prompts(config.batch, config.d, config.examples, generator, active_dims(step, config))
        loss = F.mse_loss(model.predict(batch.x, batch.y), batch.y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the training loss is {value} at step {step}")
        running, count = running + value, count + 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            losses.append((step + 1, running / count))
            running, count = 0.0, 0
        if on_step is not None:
            on_step(step, value)
    return losses


# --- output --------------------------------------------------------------------------------------


def results_json(result: Result) -> str:
    return json.dumps(result.to_dict(), indent=2) + "\n"


def plot(panels: dict[str, list[tuple[str, Result]]], path: Path) -> None:
    """Normalised test error against k: one panel per title, a line per (label, result), with
    least squares and zero (from the panel's first run: the test set is the same for all).
    Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.4, 3.6), dpi=100, squeeze=False)
    for ax, (title, runs) in zip(axes[0], panels.items()):
        first = runs[0][1]
        ks = list(range(len(first.errors)))
        for label, result in runs:
            ax.plot(ks, result.errors, label=label, linewidth=1.5)
        ax.plot(ks, first.least_squares, "k--", label="least squares", linewidth=1.2)
        ax.plot(ks, first.zero, "k:", label="zero", linewidth=1.2)
        ax.axvline(first.config.d, color="grey", linewidth=0.6)
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("test MSE / zero predictor's")
        ax.set_ylim(0, 1.2)
        ax.set_xlim(0, ks[-1])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
