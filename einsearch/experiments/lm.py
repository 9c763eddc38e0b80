"""Character-level language modelling with generated attention modules (``einsearch experiment lm``).

The model is a small GPT: a token embedding (one token per character of ``corpus.Corpus``'s
vocabulary) plus a learned position table (T x D), ``layers`` pre-LN blocks (``training.Block``:
the generated attention module, an MLP of 4D with GELU), a final LayerNorm and an untied read-out
``Linear(D, vocabulary)``. No biases anywhere. The attention of every block is the module
``einsearch.generate`` writes for the structure resolved with T = the context length and D = the
width: causal, its scores exactly the structure's.

Untied read-out: under muP the embedding is an input layer (its entries of unit scale, its
learning rate independent of the width) and the read-out an output layer (zero at the start, its
learning rate ``lr * base_width / D``); one shared matrix cannot follow both rules.

muP (``training``): the generated modules' ``param_groups`` for the attention, the same rule
(N(0, 1/fan_in), ``lr * base_width / fan_in``, the MLP's output matrix at zero) for the MLP, the
read-out as above; the embedding and position table start N(0, 1) and take ``lr`` unscaled, as do
the LayerNorms' weights.

Data: training batches are ``batch`` windows of T + 1 characters at random offsets of the training
text (a generator seeded by ``seed``); each predicts its last T characters from the ones before.
The validation loss is the mean cross-entropy (nats per character) of the model on a fixed set of
validation windows: ``eval_tokens / T`` windows of T + 1 characters at evenly spaced offsets of
the validation text (the same for every run at the same T), every position of each scored.

Costs per token of the forward pass, non-embedding (the blocks; the read-out is given apart):
``analyzer_flops`` from ``einsearch.describe`` (per head: the query and key maps of one token, the
products of the causal pairs each level scores with that level's channels, the probabilities times
the values over the pairs any level scores; per block: the value and output projections 2 x 2D^2,
the MLP 2 x 8D^2), averaged over the T positions; and FlopCounterMode's count of the blocks on one
sequence over T, beside it (it counts what the kernels run: a causal kernel whole, channels
padded). Training FLOPs = 3 x forward (the backward twice the forward) x tokens trained.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..structure import Instance
from . import corpus as corpora
from .settings import LmConfig
from .training import (
    OnStep,
    attention_class,
    blocks_flops,
    blocks_of,
    counted_flops,
    describe_structure,
    deterministic,
    fit,
    mup_param_groups,
)

ROWS = 1024  # rows of the T x T pair grid counted at once (bounds the memory of ``causal_pairs``)


class LanguageModel(nn.Module):
    """Token embedding and position table, pre-LN blocks with the generated attention, read-out."""

    def __init__(self, config: LmConfig, vocabulary: int, attention: type) -> None:
        super().__init__()
        D, T = config.width, config.context
        self.config = config
        self.embed = nn.Embedding(vocabulary, D)
        self.position = nn.Parameter(torch.empty(T, D))
        self.blocks = blocks_of(attention, config, T, bias=False)
        self.ln_f = nn.LayerNorm(D, bias=False)
        self.read_out = nn.Linear(D, vocabulary, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embedding and position table N(0, 1), the read-out at zero; the blocks initialise themselves."""
        nn.init.normal_(self.embed.weight)
        nn.init.normal_(self.position)
        nn.init.zeros_(self.read_out.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocabulary) logits of the next token."""
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.ln_f(h))

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of predicting each window's characters 1..T from those before."""
        logits = self(windows[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())

    def param_groups(self) -> list[dict]:
        """AdamW groups with muP learning rates (``training.mup_param_groups``)."""
        return mup_param_groups(self, self.blocks, self.read_out, self.config)


# --- data ----------------------------------------------------------------------------------------


def encode(text: str, vocabulary: str) -> torch.Tensor:
    """The text as token ids (int64), a character each: its place in the sorted ``vocabulary``
    (every character of ``text`` must be in it)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocabulary.encode("utf-32-le"), dtype=np.uint32)
    return torch.from_numpy(np.searchsorted(table, codes).astype(np.int64))


def validation_windows(ids: torch.Tensor, T: int, tokens: int) -> torch.Tensor:
    """``tokens / T`` windows (at least one) of T + 1 ids at evenly spaced offsets of ``ids``."""
    count = max(1, tokens // T)
    starts = torch.linspace(0, len(ids) - T - 1, count).round().long()
    return torch.stack([ids[s : s + T + 1] for s in starts.tolist()])


def random_windows(ids: torch.Tensor, T: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` windows of T + 1 ids at random offsets."""
    starts = torch.randint(0, len(ids) - T, (batch,), generator=generator)
    return torch.stack([ids[s : s + T + 1] for s in starts.tolist()])


# --- costs ---------------------------------------------------------------------------------------


def causal_pairs(instance: Instance) -> tuple[list[int], int]:
    """Pairs u <= t of a T-token sequence each level scores, and the pairs any level scores
    (counted on the pair rule, ``ROWS`` rows at a time)."""
    T = instance.T
    per_level, union = [0] * len(instance.levels), 0
    u = np.arange(T)[None, :]
    for start in range(0, T, ROWS):
        t = np.arange(start, min(T, start + ROWS))[:, None]
        causal = u <= t
        covered = [level.pattern.covers(T, t, u) & causal for level in instance.levels]
        per_level = [n + int(mask.sum()) for n, mask in zip(per_level, covered)]
        union += int(np.logical_or.reduce(covered).sum())
    return per_level, union


def analyzer_flops(instance: Instance, heads: int, layers: int) -> dict:
    """Forward FLOPs per token of the blocks from the analyzer, by part (see the module docstring)."""
    from .. import describe
    from ..analyze.counts import pair_costs

    desc = describe(instance)
    T, D = instance.T, instance.D
    per_level, union = causal_pairs(instance)
    scores = sum(n * cost for n, cost in zip(per_level, pair_costs(desc.plan))) / T
    values = 2 * union * (D // heads) / T
    parts = {
        "query_key_maps": heads * desc.flops.per_token,
        "scores": heads * scores,
        "values": heads * values,
        "value_output_projections": 2 * 2 * D * D,
        "mlp": 2 * 2 * D * 4 * D,
    }
    per_layer = sum(parts.values())
    return {"per_layer": parts, "per_token": layers * per_layer}


# --- training ------------------------------------------------------------------------------------


@dataclass
class Result:
    """A finished run: its settings, corpus, costs, loss log and validation loss."""

    config: LmConfig
    structure: dict  # per head: name, options, params, rank, FLOPs (einsearch describe)
    corpus: dict
    model_params: int
    non_embedding_params: int  # the blocks'
    flops: dict  # per token: the analyzer's parts and total, FlopCounterMode's, the read-out's
    seconds: float
    losses: list[tuple[int, float]]  # (step, mean training loss) every log_every steps
    validation_loss: float

    @property
    def tokens_per_second(self) -> float:
        return self.config.tokens / self.seconds

    def to_dict(self) -> dict:
        """The JSON form (``einsearch.report.lm_text`` renders it)."""
        forward = self.flops["analyzer"]["per_token"]
        return {
            "task": "character-level language modelling",
            "config": self.config.to_dict(),
            "structure": self.structure,
            "corpus": self.corpus,
            "units": {
                "losses": "cross-entropy in nats per character",
                "flops": "FLOPs = 2 per multiply-add; per token of the forward pass unless named train",
                "seconds": "wall clock of training",
                "tokens_per_second": "characters trained on per second of training",
            },
            "model_params": self.model_params,
            "non_embedding_params": self.non_embedding_params,
            "flops_per_token": self.flops,
            "train_flops": 3 * forward * self.config.tokens,
            "tokens": self.config.tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "losses": [[step, loss] for step, loss in self.losses],
            "validation_loss": self.validation_loss,
        }


def evaluate(model: LanguageModel, windows: torch.Tensor, batch: int) -> float:
    """Mean cross-entropy over every position of every window (nats per character)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            chunk = windows[i : i + batch]
            total += model.loss(chunk).item() * len(chunk)
    model.train()
    return total / len(windows)


def train(
    config: LmConfig,
    on_step: OnStep | None = None,
    *,
    text: corpora.Corpus | None = None,
    instance: Instance | None = None,
    attention: type | None = None,
) -> Result:
    """Train one model and score it on the validation windows; ``on_step(step, loss)`` after every
    step (for a progress bar); ``text``, ``instance`` and ``attention`` (its generated class) when
    the caller has them already. Warns (``corpus.CorpusWarning``) when the corpus is not a
    documented one."""
    text = text or corpora.load()
    instance = instance or config.prepare(text)
    if text.warning() is not None:
        warnings.warn(text.warning(), corpora.CorpusWarning, stacklevel=2)
    attention = attention or attention_class(instance, config.heads, config.generate_options)
    vocabulary = text.vocabulary
    train_ids, validation_ids = encode(text.train, vocabulary), encode(text.validation, vocabulary)
    torch.manual_seed(config.seed)
    model = LanguageModel(config, len(vocabulary), attention)
    with deterministic(config.threads):
        flops = costs(model, instance, config)
        start = time.perf_counter()
        losses = fit(model, model.param_groups(), config, batches(model, train_ids, config), on_step)
        seconds = time.perf_counter() - start
        windows = validation_windows(validation_ids, config.context, config.eval_tokens)
        validation = evaluate(model, windows, config.batch)
    blocks = sum(p.numel() for p in model.blocks.parameters())
    params = sum(p.numel() for p in model.parameters())
    return Result(config, describe_structure(instance, config.heads), text.to_dict(), params, blocks, flops, seconds,
                  losses, validation)  # fmt: skip


def batches(model: LanguageModel, ids: torch.Tensor, config: LmConfig) -> Callable[[int], torch.Tensor]:
    """The loss of a fresh batch at each step: windows at random offsets of ``ids`` (a generator
    seeded by ``config.seed``)."""
    generator = torch.Generator().manual_seed(config.seed)
    return lambda step: model.loss(random_windows(ids, config.context, config.batch, generator))


def costs(model: LanguageModel, instance: Instance, config: LmConfig) -> dict:
    """FLOPs per token of the forward pass: the analyzer's, FlopCounterMode's (blocks, read-out)."""
    T = config.context
    counts = counted_flops(lambda: model(torch.zeros(1, T, dtype=torch.int64)))
    readout = counts.get(f"{type(model).__name__}.read_out", 0)
    return {
        "analyzer": analyzer_flops(instance, config.heads, config.layers),
        "flop_counter": blocks_flops(counts, model, config.layers) / T,
        "read_out": readout / T,
    }
