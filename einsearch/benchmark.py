"""Timing generated modules against standard attention and the naive form, in one process.

Ratios measured side by side are what a shared, noisy machine can report honestly: every
contender runs in turn (round-robin), after a warm-up, and the median of the repeats is kept.
The contenders, at the same (B, T, d_model, heads):

* ``generated``: the module ``einsearch generate`` writes;
* ``naive``: the same module scoring through its reference ``scores`` (every level's T x T logits
  built, masked and summed, then one softmax), the way research code computes it;
* ``sdpa``: standard attention, q/k/v projections then ``F.scaled_dot_product_attention``, with a
  preallocated KV cache for decoding.

Each is timed on the forward (no grad), forward + backward, and decoding one token at a given
context with a cache. The analyzer's FLOPs are set beside ``FlopCounterMode``'s count of the
generated forward, and the achieved FLOP/s beside the machine's measured matmul rate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from .bench_setup import BenchSetup


class StandardAttention(nn.Module):
    """Causal multi-head attention with a preallocated KV cache: the baseline every ratio is taken
    against."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def new_cache(self, batch_size: int, max_len: int) -> dict:
        weight = self.o_proj.weight
        shape = (batch_size, self.n_heads, max_len, weight.shape[0] // self.n_heads)
        empty = {"dtype": weight.dtype, "device": weight.device}
        return {"k": torch.empty(shape, **empty), "v": torch.empty(shape, **empty), "length": 0}

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # the new tokens see every cached key and, causally, each other
            start, end = cache["length"], cache["length"] + T
            cache["k"][:, :, start:end], cache["v"][:, :, start:end] = k, v
            cache["length"] = end
            k, v = cache["k"][:, :, :end], cache["v"][:, :, :end]
            mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, D))


class NaiveAttention(nn.Module):
    """A generated module run the way research code runs it: its reference ``scores`` (every
    level's T x T logits), one softmax, then the values."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        m = self.module
        probs = torch.softmax(m.scores(x), dim=-1).nan_to_num(0.0)
        v = m.v_proj(x).view(B, T, m.n_heads, -1).transpose(1, 2)
        return m.o_proj((probs @ v).transpose(1, 2).reshape(B, T, D))


def round_robin(fns: dict[str, Callable[[], object]], repeat: int, sync: Callable[[], None] = lambda: None):
    """Median seconds of ``repeat`` calls of each function, after a warm-up, taking turns."""
    for fn in fns.values():
        fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_rate(device: str, dtype: torch.dtype, size: int = 1024, repeat: int = 5) -> float:
    """FLOP/s of a square matrix product on this machine, as measured now."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = round_robin({"mm": lambda: a @ b}, repeat, synchronizer(device))["mm"]
    return 2 * size**3 / seconds


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


@dataclass(frozen=True)
class Row:
    """One contender's medians (seconds) and its ratios to standard attention."""

    name: str
    forward: float
    backward: float | None  # forward + backward
    decode: float | None  # one token at the decode context
    forward_ratio: float
    backward_ratio: float | None
    decode_ratio: float | None


@dataclass(frozen=True)
class Report:
    structure: str
    sizes: dict
    batch: int
    length: int
    heads: int
    dtype: str
    device: str
    threads: int
    decode_context: int
    rows: list[Row]
    predicted_flops: int  # the analyzer: all heads' scores and maps, plus softmax x values and projections
    counted_flops: int  # FlopCounterMode on the generated forward
    achieved: float  # counted FLOPs over the generated forward's median time
    matmul: float  # the machine's measured matmul FLOP/s

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        def ms(seconds):
            return "-" if seconds is None else f"{1e3 * seconds:.2f}"

        def x(ratio):
            return "-" if ratio is None else f"{ratio:.2f}x"

        lines = [
            f"{self.structure}: B={self.batch} T={self.length} heads={self.heads} {self.dtype} on {self.device} "
            f"({self.threads} threads); medians, round-robin; ratios to standard attention (sdpa)",
            "",
            f"{'module':<10} {'forward ms':>11} {'ratio':>7} {'fwd+bwd ms':>11} {'ratio':>7} "
            f"{'decode ms':>10} {'ratio':>7}   (decode: one token at context {self.decode_context})",
        ]
        for r in self.rows:
            lines.append(f"{r.name:<10} {ms(r.forward):>11} {x(r.forward_ratio):>7} {ms(r.backward):>11} "
                         f"{x(r.backward_ratio):>7} {ms(r.decode):>10} {x(r.decode_ratio):>7}")  # fmt: skip
        off = self.counted_flops / self.predicted_flops - 1 if self.predicted_flops else 0.0
        lines += [
            "",
            f"FLOPs of the generated forward: predicted {self.predicted_flops:,}, FlopCounterMode "
            f"{self.counted_flops:,} ({off:+.1%})",
            f"achieved {self.achieved / 1e9:.1f} GFLOP/s against a measured matmul rate of "
            f"{self.matmul / 1e9:.1f} GFLOP/s ({self.achieved / self.matmul:.0%})",
        ]
        return "\n".join(lines)


def bench(setup: BenchSetup) -> Report:
    """Times the generated module against standard attention (and the naive form) at one size."""
    from .codegen import attention_class, module_flops
    from .planner import plan

    torch.manual_seed(0)
    instance, heads, batch, T, repeat, device = (setup.instance, setup.heads, setup.batch, setup.length, setup.repeat,
                                                 setup.device)  # fmt: skip
    kind = getattr(torch, setup.dtype)
    sync = synchronizer(device)
    generated = attention_class(setup.generated)(instance.D, heads)
    contenders = {"generated": generated}
    if setup.naive:
        contenders["naive"] = NaiveAttention(generated)
    contenders["sdpa"] = StandardAttention(instance.D, heads)
    for module in contenders.values():
        module.to(device=device, dtype=kind)
    x = torch.randn(batch, T, instance.D, device=device, dtype=kind)

    with torch.no_grad():
        forward = round_robin({n: (lambda m=m: m(x)) for n, m in contenders.items()}, repeat, sync)
    both = {}
    if setup.backward:
        leaf = x.clone().requires_grad_()
        both = round_robin({n: (lambda m=m: m(leaf).sum().backward()) for n, m in contenders.items()}, repeat, sync)
    decode = decode_times(contenders, batch, setup.decode_context, instance.D, device, kind, repeat, sync)
    count_cpu_flash()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        contenders["generated"](x)
    counted = counter.get_total_flops()
    base = {"forward": forward["sdpa"], "backward": both.get("sdpa"), "decode": decode.get("sdpa")}
    rows = [
        Row(name, forward[name], both.get(name), decode.get(name), forward[name] / base["forward"],
            ratio(both.get(name), base["backward"]), ratio(decode.get(name), base["decode"]))
        for name in contenders
    ]  # fmt: skip
    fused = kind != torch.float64 and (device != "cpu" or hasattr(torch.ops.aten, CPU_FLASH))
    predicted = module_flops(plan(instance), heads, batch, T, fused=fused)
    achieved = counted / forward["generated"]
    return Report(instance.name, dict(instance.values), batch, T, heads, setup.dtype, device, torch.get_num_threads(),
                  setup.decode_context, rows, predicted, counted, achieved, matmul_rate(device, kind))  # fmt: skip


CPU_FLASH = "_scaled_dot_product_flash_attention_for_cpu"


def count_cpu_flash() -> None:
    """FlopCounterMode has no formula for PyTorch's CPU flash-attention op (it counts 0): give it the
    one it uses for the other fused attention kernels (2 x q.k and p.v multiply-adds, mask ignored)."""
    op = getattr(torch.ops.aten, CPU_FLASH, None)
    if op is None or op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def decode_times(contenders, batch, context, D, device, dtype, repeat, sync) -> dict[str, float]:
    """Seconds to decode one token after ``context`` - 1 cached ones, per contender (no grad)."""
    prompt = torch.randn(batch, context, D, device=device, dtype=dtype)
    times = {}
    with torch.no_grad():
        for name, module in contenders.items():
            if name == "naive":  # the research form has no cache: it recomputes the whole sequence
                continue
            caches = []
            for _ in range(repeat + 1):  # one filled cache per timed call (a call appends to it)
                cache = module.new_cache(batch, context)
                module(prompt[:, :-1], cache=cache)
                caches.append(cache)
            pending = iter(caches)

            def step(module=module, pending=pending):
                return module(prompt[:, -1:], cache=next(pending))

            times[name] = round_robin({name: step}, repeat, sync)[name]
    return times
