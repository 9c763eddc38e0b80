"""The figures of ``describe --plot`` (the compute pattern) and ``search --plot`` (the Pareto front);
matplotlib, an optional extra."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .structure import Instance

if TYPE_CHECKING:
    import numpy as np

    from .analyze.pattern import Profile
    from .search import SearchResult


def plot_pattern(instance: Instance, profile: Profile, grid: np.ndarray, path: Path) -> None:
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_front(result: SearchResult, catalog: list[tuple[str, int, float]], path: Path) -> None:
    """FLOPs against the objective: every candidate ranked in grey, the Pareto front in red, and
    ``catalog`` (name, FLOPs, value: the catalog at its default options) as labelled stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = result.query
    fig, ax = plt.subplots(figsize=(8, 5.2))
    if result.cloud:
        xs, ys = zip(*result.cloud)
        ax.scatter(xs, ys, s=4, c="0.75", label=f"ranked within budget ({len(xs):,})", rasterized=True)
    if result.front:
        ax.step(*zip(*result.front), where="post", color="tab:red", lw=1.2)
        ax.scatter(*zip(*result.front), s=14, color="tab:red", label=f"Pareto front ({len(result.front)})", zorder=3)
    marks: dict[tuple[int, float], list[str]] = {}
    for name, flops, value in catalog:
        marks.setdefault((flops, value), []).append(name)
    for n, ((flops, value), names) in enumerate(sorted(marks.items())):
        ax.scatter([flops], [value], marker="*", s=90, color="black", zorder=4)
        ax.annotate(", ".join(names), (flops, value), textcoords="offset points", xytext=(4, 4 + 9 * (n % 3)),
                    fontsize=8)  # fmt: skip
    if q["budget"] is not None:
        ax.axvline(q["budget"], color="tab:blue", ls="--", lw=1, label="budget")
    ax.set_xscale("log")
    if q["objective"] != "local-bias" and all(v > 0 for _, v in result.cloud):
        ax.set_yscale("log")
    direction = "higher" if q["maximize"] else "lower"
    ax.set(xlabel="FLOPs of all heads' scores, one sequence (2 per multiply-add)",
           ylabel=f"{q['objective_label']} ({direction} is better)",
           title=f"einsearch search: D={q['D']} T={q['T']} heads={q['heads']} (stars: catalog defaults)")  # fmt: skip
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
