"""What an ``einsearch bench`` run is, settled before torch is imported (torch alone takes seconds
and hundreds of MB to start): the device, the input length, the contenders' generated sources,
and the memory the run needs, refused up front with the limit named when it cannot fit.

The memory estimate counts what ``benchmark.py`` holds at its peak, per contender, in the chosen
dtype: the naive form's T x T buffers (every level's logits, their sum and softmax, kept for the
backward pass), the generated module's tiles of logits where it runs the plain path (float64:
autograd keeps every tile of the partition), the decoding caches (one per timed decoding step)
and the B x T x D activations of the three contenders. It is an upper estimate of the order of
magnitude: what it refuses cannot run, what it lets through may still be slow.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .errors import OptionError
from .structure import Instance

DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float64": 8}
ACTIVATIONS = 24  # B x T x D tensors alive at once: x, q, k, v and output of three contenders, and gradients


@dataclass(frozen=True)
class BenchSetup:
    """One checked bench run: sizes, device, and the sources of the generated and naive modules."""

    instance: Instance
    heads: int
    batch: int
    length: int
    decode_context: int
    repeat: int
    device: str
    dtype: str
    backward: bool
    naive: bool  # time the naive form too (every level's T x T logits)
    generated: str = ""  # the source of the generated module

    def memory(self) -> dict[str, int]:
        """Bytes the run needs at its peak, by what needs them (see the module docstring)."""
        from .runtime.tiling import call_pairs, partition

        B, T, H, D = self.batch, self.length, self.heads, self.instance.D
        levels = len(self.instance.levels)
        kept = 2 if self.backward else 1  # autograd keeps the probabilities beside the logits
        naive = (2 * levels + 2) * B * H * T * T * kept
        tiles = 0  # the fused kernels merge in place and keep no logits
        if self.dtype == "float64":
            patterns = tuple(level.pattern.at(self.instance.T) for level in self.instance.levels)
            tiles = B * H * sum(call_pairs(call) for call in partition(T, patterns)) * kept
        needs = {
            "the naive form's logits": naive if self.naive else 0,
            "the generated module's tiles of logits": tiles,
            "the decoding caches": (self.repeat + 1) * B * self.decode_context * D * (levels + 1),
            "the activations": ACTIVATIONS * B * T * D,
        }
        return {what: count * ITEMSIZE[self.dtype] for what, count in needs.items()}

    def check_memory(self, available: int | None, where: str) -> None:
        """OptionError naming the largest need when the estimate exceeds ``available`` bytes."""
        needs = self.memory()
        total = sum(needs.values())
        if available is None or total <= available:
            return
        largest = max(needs, key=needs.get)
        hint = ", or pass --no-naive" if largest == "the naive form's logits" else ""
        raise OptionError(None, f"bench needs about {size_text(total)} of memory ({size_text(needs[largest])} for "
                          f"{largest}; B = {self.batch}, T = {self.length}, heads = {self.heads}, {self.dtype}), but "
                          f"{size_text(available)} {where}: lower --length, --decode-context, --B or --heads"
                          f"{hint}")  # fmt: skip


def bench_setup(instance: Instance, heads: int = 1, batch: int = 1, length: int | None = None,
                decode_context: int | None = None, repeat: int = 7, device: str = "cpu", dtype: str = "float32",
                backward: bool = True, naive: bool = True, available: int | None = None,
                where: str = "is available") -> BenchSetup:  # fmt: skip
    """Checks every argument of a run and, given the ``available`` bytes, its memory (``where``
    says where they are), then renders its modules; all without torch. OptionError for a device
    that is not cpu or cuda[:N], a dtype not offered, a value below 1 or a run that cannot fit; the
    generator's errors (``--heads`` must divide D) as they are."""
    from .codegen import generate

    if not DEVICE.fullmatch(device):
        raise OptionError("device", f"expected cpu, cuda or cuda:N, got {device!r}")
    if dtype not in ITEMSIZE:
        raise OptionError("dtype", f"must be one of {', '.join(ITEMSIZE)}, got {dtype!r}")
    length = instance.T if length is None else length
    context = length if decode_context is None else decode_context
    for name, value, least in (("heads", heads, 1), ("B", batch, 1), ("length", length, 1),
                               ("decode-context", context, 2), ("repeat", repeat, 1)):  # fmt: skip
        if value < least:
            raise OptionError(name, f"must be at least {least}, got {value}")
    setup = BenchSetup(instance, heads, batch, length, context, repeat, device, dtype, backward, naive)
    setup.check_memory(available, where)
    return dataclasses.replace(setup, generated=generate(instance, heads))


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable of /proc/meminfo), or None where
    that is not known."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def size_text(count: int) -> str:
    """``4.4 TB``: bytes with a decimal prefix."""
    if count < 1000:
        return f"{count} bytes"
    exponent = min(int(math.log10(count)) // 3, 5)
    return f"{count / 1000**exponent:.1f} {' kMGTP'[exponent]}B"
