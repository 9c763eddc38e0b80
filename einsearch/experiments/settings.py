"""The experiments' settings, checked, and the memory a run needs; no torch here.

The command line builds these, checks them and estimates the run's memory before it imports
torch, so a bad argument is answered at once and nothing starts that cannot finish.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import OptionError

if TYPE_CHECKING:
    from ..structure import Instance
    from .corpus import Corpus

SCHEDULES = ("cosine", "constant")
ENCODINGS = ("paired", "research")
FLOAT = 4  # bytes of a float32
OPTION_NAMES = {"width": "D", "context": "T", "d": "d-input"}  # settings whose option has another name


@dataclass(frozen=True)
class Training:
    """What every experiment's training has: the attention structure, the model's size, AdamW with
    muP learning rates, the schedule, the seed. ``options``: the structure's own options (not T or
    D, which the experiment sets); ``generate_options``: keyword arguments of ``einsearch.generate``
    (its scoring options, e.g. ``{"qk_norm": True}``)."""

    structure: str = "lowrank"
    options: dict[str, Any] = field(default_factory=dict)
    generate_options: dict[str, Any] = field(default_factory=dict)
    width: int = 64  # D, the model width
    layers: int = 4
    heads: int = 1
    steps: int = 1000
    batch: int = 64
    lr: float = 3e-3
    base_width: int = 32  # base_fan_in of the muP rule: the width lr is tuned at
    warmup: float = 0.05  # fraction of the steps of linear warm-up
    schedule: str = "cosine"  # after the warm-up: cosine decay to min_lr * lr, or constant
    min_lr: float = 0.1
    weight_decay: float = 0.0
    clip: float = 1.0  # gradient norm clipped at this (0: no clipping)
    adam_eps: float = 1e-8
    seed: int = 0
    threads: int | None = 1  # torch threads while training (None: as set)
    log_every: int = 10

    positive: ClassVar[tuple[str, ...]] = ("width", "layers", "heads", "steps", "batch", "base_width", "log_every")

    def check(self) -> None:
        """OptionError for a setting that cannot run."""
        for name in self.positive:
            if getattr(self, name) < 1:
                raise OptionError(dashed(name), f"must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise OptionError("seed", f"must be at least 0, got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise OptionError("threads", f"must be at least 1, got {self.threads}")
        if self.width % self.heads:
            raise OptionError("heads", f"must divide the width --D {self.width}, got {self.heads}")
        if not self.lr > 0:
            raise OptionError("lr", f"must be positive, got {self.lr}")
        for name in ("warmup", "min_lr"):
            if not 0 <= getattr(self, name) <= 1:
                raise OptionError(dashed(name), f"must be between 0 and 1, got {getattr(self, name)}")
        for name in ("weight_decay", "clip", "adam_eps"):
            if not getattr(self, name) >= 0:
                raise OptionError(dashed(name), f"must be at least 0, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise OptionError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def parameter_bytes(self, extra: int) -> int:
        """Parameters, gradients and AdamW's two moments: the blocks (attention at most 4 D^2 and
        the MLP 8 D^2 each) and ``extra`` parameters outside them."""
        return 4 * FLOAT * (12 * self.layers * self.width**2 + extra)

    def activation_bytes(self, sequences: int, length: int) -> int:
        """What a forward and backward over ``sequences`` x ``length`` tokens keeps, at most: per
        layer about 40 numbers a token and width (norms, maps, the MLP's 4D, their gradients); the
        generated modules' kernel layer keeps no T x T buffer."""
        return FLOAT * self.layers * sequences * length * 40 * self.width


@dataclass(frozen=True)
class IcrConfig(Training):
    """One in-context regression run (``experiments.icr``); the research code's values are in
    docs/icr.md beside each setting."""

    d: int = 16  # input dimension; N = 2d examples, prompts of 4d tokens
    encoding: str = "paired"  # y tokens [x, y] (paired) or [y, 0, ..., 0] in x's d slots (research)
    curriculum_every: int = 0  # steps between curriculum stages (0: no curriculum)
    curriculum_share: float = 0.06  # the curriculum's stages fit in this share of the steps
    read_in_std: float = 1.0  # the read-in's initial standard deviation
    position_std: float = 0.1  # the position table's initial standard deviation
    bias: bool = True  # biases in the read-in, MLPs, read-out and LayerNorms
    test_prompts: int = 1000

    positive: ClassVar[tuple[str, ...]] = (*Training.positive, "d", "test_prompts")

    @property
    def examples(self) -> int:
        """N = 2d, the (x, y) pairs in a prompt."""
        return 2 * self.d

    @property
    def prompt_length(self) -> int:
        """2N = 4d tokens: the structure's T and the module's block_size."""
        return 2 * self.examples

    def check(self) -> None:
        super().check()
        if self.encoding not in ENCODINGS:
            raise OptionError("encoding", f"must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.curriculum_every < 0:
            raise OptionError("curriculum-every", f"must be at least 0, got {self.curriculum_every}")
        if not 0 < self.curriculum_share <= 1:
            raise OptionError("curriculum-share", f"must be above 0 and at most 1, got {self.curriculum_share}")
        for name in ("read_in_std", "position_std"):
            if not getattr(self, name) >= 0:
                raise OptionError(dashed(name), f"must be at least 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "examples": self.examples, "prompt_length": self.prompt_length}

    def prepare(self) -> Instance:
        """The structure resolved for the run (T = the prompt length), after the settings and the
        run's memory are checked (EinsearchError for either)."""
        self.check()
        instance = resolve(self, self.prompt_length, "the prompt length 4d")
        check_memory(self.memory_bytes())
        return instance

    def memory_bytes(self) -> int:
        """About the most memory the run holds at once: the model and optimizer, a training step,
        the test set (tokens, float64 copies for least squares) and its evaluation in batches."""
        T, tokens = self.prompt_length, self.d + 1
        test = self.test_prompts * T * tokens * (FLOAT + 2 * 8)
        evaluation = self.activation_bytes(min(self.test_prompts, 250), T) // 2
        step = self.activation_bytes(self.batch, T)
        return self.parameter_bytes(T * self.width + tokens * self.width) + step + test + evaluation


@dataclass(frozen=True)
class LmConfig(Training):
    """One character-level language-modelling run (``experiments.lm``)."""

    context: int = 256  # T, tokens per sequence: the structure's T and the module's block_size
    layers: int = 2
    batch: int = 16
    steps: int = 300
    lr: float = 1e-2
    base_width: int = 64
    eval_tokens: int = 65536  # validation tokens scored at the end (whole windows of T)

    positive: ClassVar[tuple[str, ...]] = (*Training.positive, "context", "eval_tokens")

    @property
    def tokens(self) -> int:
        """Tokens trained on: steps x batch x T."""
        return self.steps * self.batch * self.context

    def check(self) -> None:
        super().check()
        if self.context < 2:
            raise OptionError("T", f"must be at least 2, got {self.context}")

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens": self.tokens}

    def prepare(self, text: Corpus) -> Instance:
        """The structure resolved for the run (T = the context length), after the settings, the
        context against the corpus and the run's memory are checked (EinsearchError for any)."""
        self.check()
        if self.context >= len(text.validation):
            raise OptionError("T", f"must be below the {len(text.validation):,} characters of validation text")
        instance = resolve(self, self.context, "the context length --T")
        check_memory(self.memory_bytes(len(text.vocabulary)))
        return instance

    def memory_bytes(self, vocab: int) -> int:
        """About the most memory the run holds at once: the model and optimizer and a training
        step, its logits over the vocabulary included."""
        T = self.context
        logits = 3 * FLOAT * self.batch * T * vocab
        embeddings = (vocab + T) * self.width + vocab * self.width
        return self.parameter_bytes(embeddings) + self.activation_bytes(self.batch, T) + logits


def dashed(name: str) -> str:
    """A setting's command-line option: ``read_in_std`` -> ``read-in-std``, ``width`` -> ``D``."""
    return OPTION_NAMES.get(name, name.replace("_", "-"))


def resolve(config: Training, T: int, T_is: str) -> Instance:
    """The structure with the experiment's T (``T_is`` says what it is) and D = the width."""
    from .. import load

    for fixed, what in (("T", T_is), ("D", "the model width --D")):
        if fixed in config.options:
            raise OptionError(fixed, f"the experiment sets it to {what}; leave it out")
    return load(config.structure).resolve({**config.options, "T": T, "D": config.width})


def machine_memory() -> int | None:
    """Bytes of physical memory (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(need: int, limit: int | None = None) -> None:
    """OptionError naming both sizes when a run needs more memory than the machine has."""
    limit = machine_memory() if limit is None else limit
    if limit is not None and need > limit:
        raise OptionError(
            None,
            f"the run needs about {gigabytes(need)} of memory (estimated), more than this machine's "
            f"{gigabytes(limit)}: make it smaller (the sequence length, --batch, --D, --layers)",
        )


def gigabytes(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"


def scaled_structure(name: str, scales: tuple[str, ...], folder: Path) -> str:
    """A catalog structure's file with each score line's logit scale set in turn (``scales``: DSL
    expressions such as ``8/r``, replacing the catalog's), written into ``folder``; its path. For
    logit conventions the catalog's file does not carry (muP's 8/r for a standard head)."""
    from ..catalog import find

    lines = Path(find(name).source).read_text().splitlines()
    scores = [n for n, line in enumerate(lines) if line.lstrip().startswith("score")]
    if len(scores) != len(scales):
        raise OptionError(None, f"{name} has {len(scores)} score lines; {len(scales)} scales given")
    for n, scale in zip(scores, scales):
        lines[n] = re.sub(r"\s+scale\s+.*$", "", lines[n]) + f"  scale {scale}"
    path = folder / f"{name}-scaled.ein"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
