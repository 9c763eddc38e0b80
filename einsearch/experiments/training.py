"""What the experiments share: the pre-LN block, muP groups, the schedule, the loop, FLOP counts.

muP (``init="mup"`` in the generated modules): every hidden matrix starts N(0, 1/fan_in) and takes
the Adam learning rate ``lr * base_fan_in / fan_in`` (``base_fan_in``: the width the learning rate
is tuned at). The attention's factors and projections get theirs from the module's own
``param_groups``; the MLP's two matrices and the model's read-out follow the same rule here. The
matrices that write into the residual stream start at zero (the attention's ``o_proj``, the MLP's
second matrix) and so does the read-out (muP's output layer). Everything else (embeddings, the
position table, biases, LayerNorms) is input-like and takes ``lr`` unscaled.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .settings import Training

if TYPE_CHECKING:
    from ..structure import Instance

OnStep = Callable[[int, float], None]  # called after every training step with its loss


class Block(nn.Module):
    """Pre-LN transformer block: x + attention(LN(x)), then x + MLP(LN(x)), the MLP 4 x the width
    with GELU; ``bias``: biases in the MLP and the LayerNorms."""

    def __init__(self, attention: nn.Module, width: int, bias: bool = True) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width, bias=bias), nn.LayerNorm(width, bias=bias)
        self.attn = attention
        self.fc1 = nn.Linear(width, 4 * width, bias=bias)
        self.fc2 = nn.Linear(4 * width, width, bias=bias)
        self.reset_mlp()

    def reset_mlp(self) -> None:
        """muP: the MLP's input matrix N(0, 1/fan_in), its output matrix and biases zero."""
        nn.init.normal_(self.fc1.weight, std=self.fc1.in_features**-0.5)
        nn.init.zeros_(self.fc2.weight)
        for linear in (self.fc1, self.fc2):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def attention_class(instance: Instance, heads: int, generate_options: dict[str, Any] | None = None) -> type:
    """The class of the module ``einsearch.generate`` writes for ``instance`` (``generate_options``:
    its keyword options, the research code's scoring settings)."""
    from .. import generate
    from ..codegen import attention_class as loaded

    return loaded(generate(instance, heads, **(generate_options or {})))


def blocks_of(attention: type, config: Training, block_size: int, bias: bool) -> nn.ModuleList:
    """``config.layers`` blocks, each with its own generated attention module (muP init), built
    at the run's width and with the structure's options: one generated class serves every run."""
    width, options = config.width, config.options
    return nn.ModuleList(
        Block(attention(width, config.heads, block_size=block_size, init="mup", **options), width, bias)
        for _ in range(config.layers)
    )


def mup_param_groups(model: nn.Module, blocks: nn.ModuleList, read_out: nn.Linear, config: Training) -> list[dict]:
    """AdamW groups with muP learning rates (see the module docstring); every parameter once."""
    lr, base = config.lr, config.base_width
    groups: list[dict] = []
    for block in blocks:
        groups += block.attn.param_groups(lr, base_fan_in=base)
        groups += [{"params": [m.weight], "lr": lr * base / m.in_features} for m in (block.fc1, block.fc2)]
    groups.append({"params": [read_out.weight], "lr": lr * base / read_out.in_features})
    grouped = {id(p) for g in groups for p in g["params"]}
    groups.append({"params": [p for p in model.parameters() if id(p) not in grouped], "lr": lr})
    counted = [id(p) for g in groups for p in g["params"]]
    if len(counted) != len(set(counted)) or set(counted) != {id(p) for p in model.parameters()}:
        raise RuntimeError("the parameter groups do not hold every parameter exactly once")
    return [g for g in groups if g["params"]]


def lr_factor(step: int, config: Training) -> float:
    """The learning rate at ``step`` over its peak: linear warm-up over ``warmup`` of the steps,
    then constant or a cosine decay to ``min_lr``."""
    warmup = round(config.warmup * config.steps)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.min_lr + (1 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(
    model: nn.Module, groups: list[dict], config: Training, loss_at: Callable[[int], torch.Tensor],
    on_step: OnStep | None = None,
) -> list[tuple[int, float]]:  # fmt: skip
    """The training loop: AdamW (betas 0.9, 0.95) over ``groups``, the learning rates of
    ``lr_factor``, the loss of ``loss_at(step)`` (its own batch), the gradient norm clipped at
    ``config.clip`` (0: not clipped); returns the mean training loss over every ``log_every`` steps."""
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=config.adam_eps, weight_decay=config.weight_decay)
    peaks = [group["lr"] for group in optimizer.param_groups]
    losses: list[tuple[int, float]] = []
    running, count = 0.0, 0
    for step in range(config.steps):
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * lr_factor(step, config)
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
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


def counted_flops(run: Callable[[], object]) -> dict[str, int]:
    """FlopCounterMode's FLOPs (2 per multiply-add) of ``run()`` without gradients, per module
    (``"Global"``: all; ``"Model.blocks.0"``: a block), the CPU flash kernel counted as torch
    counts its other fused attention kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..benchmark import count_cpu_flash

    count_cpu_flash()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def blocks_flops(counts: dict[str, int], model: nn.Module, blocks: int) -> int:
    """The FLOPs ``counted_flops`` gives the model's ``blocks`` (attention and MLP, no embedding
    or read-out)."""
    name = type(model).__name__
    return sum(counts.get(f"{name}.blocks.{i}", 0) for i in range(blocks))


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
        "units": "per head and layer (einsearch describe); FLOPs = 2 per multiply-add, score_flops for one sequence",
    }
