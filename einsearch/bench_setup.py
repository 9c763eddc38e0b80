"""What an ``einsearch bench`` run is, settled before torch is imported (torch alone takes seconds
and hundreds of MB to start): the device, the input length, the contenders' generated sources,
and the memory the run needs, refused up front with the limit named when it cannot fit.

The memory estimate counts what ``benchmark.py`` holds at its peak, per contender, in the chosen
dtype: every T x T buffer a form builds (the naive form's logits of every level, their sum and
softmax, kept for the backward pass; the masked form alike; the band form's chunk x window
scores; the nested form's pairs when it runs without the flash kernel), the logits of prefilling
the decoding caches, the caches themselves (one per timed decoding step), and the B x T x D
activations of the three contenders. It is an upper estimate of the order of magnitude: what it
refuses cannot run, what it lets through may still be slow.
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
PREFILL = 256  # tokens per call when filling a decoding cache (bounds the prefill logits)
BAND_CHUNK = 64  # the band kernel's least queries per chunk (templates/partials/band_attention.py)
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
    naive: bool  # time the masked form too (every level's T x T logits)
    generated: str = ""  # the sources of the generated module and of the masked form (when naive)
    masked: str | None = None

    def memory(self) -> dict[str, int]:
        """Bytes the run needs at its peak, by what needs them (see the module docstring)."""
        from .codegen import Form, form_of

        B, T, H, D = self.batch, self.length, self.heads, self.instance.D
        levels = len(self.instance.levels)
        kept = 2 if self.backward else 1  # autograd keeps the probabilities beside the logits
        masked = (levels + 2) * B * H * T * T * kept
        form = form_of(self.instance)
        generated = 0  # the fused form: flash kernels, no score buffer
        if form is Form.MASKED:
            generated = masked
        elif form is Form.BAND:
            generated = B * H * T * band_window(self.instance, T) * kept
        elif form is Form.NESTED and self.dtype == "float64":  # no flash kernel: every causal pair kept
            generated = B * H * T * T // 2 * kept
        needs = {
            "the naive form's logits": masked if self.naive else 0,
            "the generated module's scores": generated,
            "the decoding caches": (self.repeat + 1) * B * self.decode_context * D * (levels + 1),
            "the prefill logits": B * H * PREFILL * self.decode_context * (levels + 2),
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


def band_window(instance: Instance, T: int) -> int:
    """Keys each query of the band form meets: its chunk plus the band's width (chunk x window)."""
    lo, hi = max(instance.levels[0].band[0], 0), min(instance.levels[0].band[1], T - 1)
    width = hi - lo + 1
    chunk = min(width * -(-BAND_CHUNK // width), T)
    return chunk + hi - lo


def bench_setup(instance: Instance, heads: int = 1, batch: int = 1, length: int | None = None,
                decode_context: int | None = None, repeat: int = 7, device: str = "cpu", dtype: str = "float32",
                backward: bool = True, naive: bool = True, available: int | None = None,
                where: str = "is available") -> BenchSetup:  # fmt: skip
    """Checks every argument of a run and, given the ``available`` bytes, its memory (``where``
    says where they are), then renders its modules; all without torch. OptionError for a device
    that is not cpu or cuda[:N], a dtype not offered, a value below 1 or a run that cannot fit; the
    generator's errors (``--heads`` must divide D) as they are."""
    from .codegen import Form, generate

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
    masked = generate(instance, heads, form=Form.MASKED) if naive else None
    return dataclasses.replace(setup, generated=generate(instance, heads), masked=masked)


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
