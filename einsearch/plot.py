"""The figures einsearch draws, as PNG bytes for ``outputs.FileTarget.write`` (matplotlib, an
optional extra): ``describe --plot`` (the compute pattern), ``search --plot`` (the Pareto front),
and the experiments' results."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .structure import Instance

if TYPE_CHECKING:
    import numpy as np

    from .analyze.pattern import Profile
    from .search import SearchResult


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (laid out, then closed)."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    pyplot().close(fig)
    return buffer.getvalue()


def pattern_png(instance: Instance, profile: Profile, grid: np.ndarray) -> bytes:
    """Two panels: c(t, u) over the T x T plane, and its mean by distance |t - u|."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4.2))
    T = instance.T
    image = left.imshow(grid, extent=(0, T, T, 0), cmap="viridis")
    left.set(title="FLOPs on pair (t, u)", xlabel="key u", ylabel="query t")
    fig.colorbar(image, ax=left)
    right.plot(profile.distance, profile.flops)
    right.set(title="mean FLOPs by distance", xlabel="|t - u|", ylabel="FLOPs per pair", xscale="symlog")
    fig.suptitle(f"{instance.name}: compute pattern (2 FLOPs per multiply-add)")
    return figure_png(fig)


def front_png(result: SearchResult, catalog: list[tuple[str, int, float]]) -> bytes:
    """FLOPs against the objective: every candidate ranked in grey, the Pareto front in red, and
    ``catalog`` (name, FLOPs, value: the catalog at its default options) as labelled stars."""
    q = result.query
    fig, ax = pyplot().subplots(figsize=(8, 5.2))
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
    return figure_png(fig)


# --- experiments: figures of `einsearch experiment icr` and `lm` results (their to_dict payloads) ---


def icr_errors_png(panels: dict[str, list[tuple[str, dict]]]) -> bytes:
    """Normalised test error against k: one panel per title, a line per (label, run), with least
    squares and zero (the test set is the same for every run)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.4, 3.6), squeeze=False)
    for ax, (title, runs) in zip(axes[0], panels.items()):
        first = runs[0][1]
        ks = list(range(len(first["errors"]["model"])))
        for label, run in runs:
            ax.plot(ks, run["errors"]["model"], label=label, linewidth=1.5)
        ax.plot(ks, first["errors"]["least_squares"], "k--", label="least squares", linewidth=1.2)
        ax.plot(ks, first["errors"]["zero"], "k:", label="zero", linewidth=1.2)
        ax.axvline(first["config"]["d"], color="grey", linewidth=0.6)
        ax.set(xlabel="in-context examples k", ylabel="test MSE / zero predictor's", ylim=(0, 1.2), xlim=(0, ks[-1]))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    return figure_png(fig)


def icr_compute_png(panels: dict[str, list[tuple[str, dict]]]) -> bytes:
    """Normalised test error after the last example against training FLOPs (the paper's Fig. 3b
    axis): one panel per title, a colour per label, one marker per run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.4, 3.6), squeeze=False)
    for ax, (title, runs) in zip(axes[0], panels.items()):
        colours: dict[str, str] = {}
        for label, run in runs:
            colour = colours.setdefault(label, f"C{len(colours)}")
            first = label not in [lb for lb, _ in runs[: runs.index((label, run))]]
            ax.plot(run["train_flops"], run["errors"]["model"][-1], "o", color=colour, label=label if first else None)
        ax.set_xscale("log")
        ax.set(xlabel="training FLOPs", ylabel="test MSE / zero predictor's, last example", ylim=(0, 1.2))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    return figure_png(fig)


def lm_losses_png(runs: list[tuple[str, dict]]) -> bytes:
    """Training loss against characters trained on, a line per (label, run), each run's validation
    loss a marker at its end."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, run in runs:
        per_step = run["config"]["batch"] * run["config"]["context"]
        steps, losses = zip(*run["losses"])
        (line,) = ax.plot([s * per_step for s in steps], losses, label=label, linewidth=1.3)
        ax.plot([steps[-1] * per_step], [run["validation_loss"]], "o", color=line.get_color())
    ax.set(xlabel="characters trained on", ylabel="loss (nats per character)", title="training loss; o validation")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def lm_scaling_png(series: dict[str, list[dict]]) -> bytes:
    """Validation loss against training FLOPs (log scale): a line per structure through its runs
    (several seeds at one size: every point shown, the line through their mean)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, runs in series.items():
        by_size: dict[float, list[float]] = {}
        for run in runs:
            by_size.setdefault(run["train_flops"], []).append(run["validation_loss"])
        sizes = sorted(by_size)
        (line,) = ax.plot(sizes, [sum(by_size[s]) / len(by_size[s]) for s in sizes], "-", label=label, linewidth=1.4)
        for size in sizes:
            ax.plot([size] * len(by_size[size]), by_size[size], "o", color=line.get_color(), markersize=4)
    ax.set(xscale="log", xlabel="training FLOPs (analyzer, 3 x forward, non-embedding)",
           ylabel="validation loss (nats per character)")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return figure_png(fig)
