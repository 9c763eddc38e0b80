"""In-context linear regression with generated attention modules (``einsearch experiment icr``).

The task of the research code (docs/icr.md): a prompt is ``x_1, w.x_1, ..., x_N, w.x_N`` with
``x_i ~ N(0, I/d)``, a fresh ``w ~ N(0, I_d)`` per prompt and ``N = 2d``, so every prompt has
``2N = 4d`` tokens. A small GPT-style model reads the prompt and, at the position of each ``x_i``,
predicts ``w.x_i`` from the ``i - 1`` examples before it; the loss is the mean squared error of
those predictions.

Token encoding (``encode``): an x token is x. A y token is, with ``encoding="research"`` (the
research code's), ``[y, 0, ..., 0]`` in the same d slots: tokens of d numbers, and the model must
learn to pair each y with the x before it; with ``encoding="paired"`` (the default) tokens have
d + 1 numbers, an x token is ``[x, 0]`` and a y token ``[x, y]``: it repeats the x it answers, so
a query can score the examples directly (the same predictions from the same information). A
read-in ``Linear(token size, D)`` maps each token to the model width and a learned position table
(``2N x D``) is added. Then ``layers`` pre-LN blocks (``training.Block``: the generated attention
module, an MLP of 4D), a final LayerNorm and a read-out ``Linear(D, 1)``. The attention of every
block is the module ``einsearch.generate`` writes for the structure resolved with ``T = 2N`` and
``D`` = the width.

Training (``training.fit``): AdamW (betas 0.9, 0.95), linear warm-up then cosine decay or a
constant rate, gradient norm clipped (or not), muP through ``training.mup_param_groups``. The
read-in starts N(0, read_in_std^2) (1 by default: tokens have norm about 1, so its outputs have
unit-scale coordinates whatever the width) and the position table N(0, position_std^2) (0.1 by
default, so the tokens' content dominates at first; the research code uses 0.02 for both).

The curriculum of the research code (``curriculum_every`` > 0): training starts with
``min(4, d)`` active input dimensions and ``min(8, N)`` examples per prompt, and every
``curriculum_every`` steps adds ``inc`` dimensions and ``2 inc`` examples, up to d and N; ``inc``
is the least whole number that completes the dimensions within the first ``curriculum_share``
of the steps (the research code's adaptive increment). The inactive coordinates of x are zero and
the active ones ~ N(0, 1/active), so y keeps unit variance; fewer examples make shorter prompts.

Evaluation on a fixed test set (its own seed, the same for every run, all d dimensions and N
examples): the mean squared error of the prediction that has seen k examples, k = 0 .. N - 1,
divided by the zero predictor's (``mean y^2`` at that k), so 1.0 is predicting 0; against the
min-norm least-squares fit of the k examples (the Bayes-optimal predictor for this noiseless task
with an isotropic prior on w).

Deterministic on the CPU for a seed: ``torch.manual_seed`` for the weights, a ``torch.Generator``
for the data, and ``torch.use_deterministic_algorithms`` while training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..structure import Instance
from .settings import IcrConfig
from .training import OnStep, attention_class, blocks_of, describe_structure, deterministic, fit, mup_param_groups

TEST_SEED = 20_250_717  # the fixed test set: the same prompts for every run and seed
RESEARCH = {
    "encoding": "research",
    "curriculum_every": 2000,
    "curriculum_share": 0.06,
    "schedule": "constant",
    "warmup": 1000 / 500_000,
    "read_in_std": 0.02,
    "position_std": 0.02,
    "bias": False,
    "clip": 0.0,
    "adam_eps": 1e-20,
    "layers": 6,
    "heads": 8,
    "steps": 500_000,
    "batch": 64,
}  # the research code's training settings (docs/icr.md); its learning rate was tuned per model


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


def token_size(encoding: str, d: int) -> int:
    """Numbers per token: d (research) or d + 1 (paired)."""
    return d if encoding == "research" else d + 1


def encode(x: torch.Tensor, y: torch.Tensor, encoding: str = "paired") -> torch.Tensor:
    """Interleaved tokens (B, 2N, size): x tokens at even positions, y tokens at odd ones; x tokens
    ``[x, 0]`` and y tokens ``[x, y]`` (``paired``), or x tokens ``x`` and y tokens ``[y, 0, ..., 0]``
    (``research``)."""
    B, N, d = x.shape
    tokens = x.new_zeros(B, N, 2, token_size(encoding, d))
    tokens[:, :, 0, :d] = x
    if encoding == "research":
        tokens[:, :, 1, 0] = y
    else:
        tokens[:, :, 1, :d] = x
        tokens[:, :, 1, d] = y
    return tokens.view(B, 2 * N, -1)


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


def curriculum(step: int, config: IcrConfig) -> tuple[int, int]:
    """(active input dimensions, examples per prompt) at ``step`` (see the module docstring)."""
    d, N = config.d, config.examples
    if not config.curriculum_every:
        return d, N
    stages = max(1, math.floor(config.curriculum_share * config.steps / config.curriculum_every))
    dims, points = min(4, d), min(8, N)
    inc = max(1, math.ceil((d - dims) / stages))
    done = step // config.curriculum_every
    return min(d, dims + done * inc), min(N, points + 2 * done * inc)


# --- the model -----------------------------------------------------------------------------------


class RegressionModel(nn.Module):
    """Read-in, position table, pre-LN blocks with the generated attention, read-out."""

    def __init__(self, config: IcrConfig, attention: type) -> None:
        super().__init__()
        D, T = config.width, config.prompt_length
        self.config = config
        self.read_in = nn.Linear(token_size(config.encoding, config.d), D, bias=config.bias)
        self.position = nn.Parameter(torch.empty(T, D))
        self.blocks = blocks_of(attention, config, T, config.bias)
        self.ln_f = nn.LayerNorm(D, bias=config.bias)
        self.read_out = nn.Linear(D, 1, bias=config.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The read-in and the position table at their configured scales, the read-out at zero
        (muP's output layer); the blocks initialise themselves."""
        nn.init.normal_(self.read_in.weight, std=self.config.read_in_std)
        nn.init.normal_(self.position, std=self.config.position_std)
        nn.init.zeros_(self.read_out.weight)
        for linear in (self.read_in, self.read_out):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, size) tokens -> (B, T) outputs at every position."""
        h = self.read_in(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.ln_f(h)).squeeze(-1)

    def predict(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, N) predictions of y at the x positions."""
        return self(encode(x, y, self.config.encoding))[:, 0::2]

    def param_groups(self) -> list[dict]:
        """AdamW groups with muP learning rates (``training.mup_param_groups``)."""
        return mup_param_groups(self, self.blocks, self.read_out, self.config)


# --- training ------------------------------------------------------------------------------------


@dataclass
class Result:
    """A finished run: its settings, costs, loss log and test errors (normalised, per k)."""

    config: IcrConfig
    structure: dict  # instance name, options, per-head params/rank/FLOPs from einsearch.describe
    model_params: int
    forward_flops: int  # per prompt, counted by torch.utils.flop_counter (2 per multiply-add)
    seconds: float
    losses: list[tuple[int, float]]  # (step, training loss) every log_every steps
    errors: list[float]  # the model's, k = 0 .. N - 1
    least_squares: list[float]

    def to_dict(self) -> dict:
        """The JSON form (``einsearch.report.icr_text`` renders it)."""
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
            "errors": {"model": self.errors, "least_squares": self.least_squares, "zero": [1.0] * len(self.errors)},
        }


def count_forward_flops(model: RegressionModel, config: IcrConfig) -> int:
    """FLOPs of one whole prompt's forward pass, as torch.utils.flop_counter counts them."""
    from .training import counted_flops

    x = torch.zeros(1, config.examples, config.d)
    return counted_flops(lambda: model.predict(x, x[..., 0]))["Global"]


def evaluate(model: RegressionModel, test: Prompts, batch: int = 250) -> list[float]:
    """The model's normalised test error per k."""
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model.predict(test.x[i : i + batch], test.y[i : i + batch])
                                 for i in range(0, len(test.x), batch)])  # fmt: skip
    model.train()
    return normalised_errors(predictions, test.y)


def held_out_prompts(config: IcrConfig) -> Prompts:
    """The fixed test prompts (seeded by TEST_SEED, not by the run's seed)."""
    return sample_prompts(config.test_prompts, config.d, config.examples, torch.Generator().manual_seed(TEST_SEED))


def build(
    config: IcrConfig, instance: Instance | None = None, attention: type | None = None
) -> tuple[Instance, RegressionModel]:
    """The resolved structure and a freshly initialised model (seeded by ``config.seed``);
    ``instance`` and ``attention`` (its generated class) when the caller has them already."""
    instance = instance or config.prepare()
    attention = attention or attention_class(instance, config.heads, config.generate_options)
    torch.manual_seed(config.seed)
    return instance, RegressionModel(config, attention)


def train(
    config: IcrConfig,
    on_step: OnStep | None = None,
    *,
    instance: Instance | None = None,
    attention: type | None = None,
) -> Result:
    """Train and evaluate one model; ``on_step(step, loss)`` after every step (for a progress bar)."""
    instance, model = build(config, instance, attention)
    structure = describe_structure(instance, config.heads)
    with deterministic(config.threads):
        forward_flops = count_forward_flops(model, config)
        test = held_out_prompts(config)
        baseline = normalised_errors(least_squares(test.x, test.y), test.y)
        start = time.perf_counter()
        losses = fit(model, model.param_groups(), config, batches(model, config), on_step)
        seconds = time.perf_counter() - start
        errors = evaluate(model, test)
    model_params = sum(p.numel() for p in model.parameters())
    return Result(config, structure, model_params, forward_flops, seconds, losses, errors, baseline)


def batches(model: RegressionModel, config: IcrConfig) -> Callable[[int], torch.Tensor]:
    """The loss of a fresh batch at each step (prompts from a generator seeded by ``config.seed``,
    at the curriculum's stage)."""
    generator = torch.Generator().manual_seed(config.seed)

    def loss_at(step: int) -> torch.Tensor:
        active, examples = curriculum(step, config)
        batch = sample_prompts(config.batch, config.d, examples, generator, active)
        return F.mse_loss(model.predict(batch.x, batch.y), batch.y)

    return loss_at
