"""The compute-pattern figure of ``describe --plot`` (matplotlib, an optional extra), as PNG bytes
for ``outputs.FileTarget.write``."""

from __future__ import annotations

import io

import numpy as np

from .analyze.pattern import Profile
from .structure import Instance


def pattern_png(instance: Instance, profile: Profile, grid: np.ndarray) -> bytes:
    """Two panels: c(t, u) over the T x T plane, and its mean by distance |t - u|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    T = instance.T
    image = left.imshow(grid, extent=(0, T, T, 0), cmap="viridis")
    left.set(title="FLOPs on pair (t, u)", xlabel="key u", ylabel="query t")
    fig.colorbar(image, ax=left)
    right.plot(profile.distance, profile.flops)
    right.set(title="mean FLOPs by distance", xlabel="|t - u|", ylabel="FLOPs per pair", xscale="symlog")
    fig.suptitle(f"{instance.name}: compute pattern (2 FLOPs per multiply-add)")
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (then closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()
