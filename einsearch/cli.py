"""The ``einsearch`` command: click parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import click

from . import catalog
from .errors import DSLError, EinsearchError
from .options import parse_structure_options
from .structure import Instance

STRUCTURE_OPTIONS = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


def fail(message: str) -> None:
    """Print an error the way compilers do and exit with status 2; nothing has been written."""
    click.echo(f"einsearch: error: {message}", err=True)
    sys.exit(2)


def resolve(name: str, args: list[str]) -> Instance:
    """Loads a structure by catalog name or path and fixes its options; errors exit with 2."""
    try:
        return catalog.find(name).resolve(parse_structure_options(args))
    except EinsearchError as err:
        fail(str(err))


def emit(payload: dict | list, as_json: bool, text: Callable[[], str]) -> None:
    click.echo(json.dumps(payload, indent=2) if as_json else text())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="einsearch")
def main() -> None:
    """Describe, cost and compare structured attention scoring functions written as einsums.

    \b
    Examples:
      einsearch list
      einsearch describe btt --D 256
      einsearch describe mlr --levels 8 --T 1024 --D 512 --heads 8
      einsearch describe my_structure.ein --json
      einsearch plan mlr --T 1024 --D 512 --B 8
      einsearch check my_structure.ein
      einsearch search --D 512 --T 1024 --heads 8 --budget 2e9
    """


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """List the catalog's structures with their doc lines."""
    entries = []
    for name in catalog.names():
        try:
            entries.append({"name": name, "doc": catalog.find(name).doc})
        except DSLError as err:
            fail(str(err))
    width = max(len(e["name"]) for e in entries)
    emit(entries, as_json, lambda: "\n".join(f"{e['name']:<{width}}  {e['doc']}" for e in entries))


@main.command(context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def check(ctx: click.Context, structure: str, as_json: bool) -> None:
    """Validate a structure file (or catalog name) and show what it defines.

    \b
    Examples:
      einsearch check my_structure.ein
      einsearch check btt --D 96
    """
    from .report import structure_summary

    instance = resolve(structure, ctx.args)
    summary = structure_summary(instance.structure, instance)
    payload = {
        "structure": instance.name,
        "source": instance.source,
        "doc": instance.doc,
        "options": {d.name: instance.values[d.name] for d in instance.structure.options},
        "sizes": instance.values,
        "levels": [level.written() for level in instance.levels],
        "factors": {n: list(s) for n, s in instance.factor_shapes.items()},
    }
    emit(payload, as_json, lambda: "\n".join(summary) + "\nok")


@main.command(context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help="Heads, for totals.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--macs", is_flag=True, help="Count multiply-adds instead of FLOPs (FLOPs = 2 per multiply-add).")
@click.option("--rank-limit", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Largest matrix side for the exact rank check (above it, a bound).")  # fmt: skip
@click.option("--full-pattern", is_flag=True, help="With --json: the compute pattern at every distance.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the compute pattern as a PNG.")
@click.option("--force", is_flag=True, help="Overwrite the --plot file if it exists.")
@click.pass_context
def describe(ctx: click.Context, structure: str, heads: int, as_json: bool, macs: bool, rank_limit: int,
             full_pattern: bool, plot: Path | None, force: bool) -> None:  # fmt: skip
    """Params, rank, FLOPs, family and compute pattern of one head of STRUCTURE.

    STRUCTURE is a catalog name (see `einsearch list`) or a path to a .ein file. Every option the
    structure declares can be set: --D 256, --T 1024, --s 2, --levels 8, --ranks 32,8,6,4, ...

    \b
    Examples:
      einsearch describe btt --D 256
      einsearch describe btt --D 256 --split research --s 2
      einsearch describe mlr --levels 8 --T 1024 --D 512 --heads 8
      einsearch describe swa --window 128 --json
      einsearch describe mine.ein --plot pattern.png
    """
    from . import describe as analyze

    instance = resolve(structure, ctx.args)
    if plot is not None:
        check_plot_target(plot, force)
    desc = analyze(instance, rank_limit=rank_limit)
    if plot is not None:
        from .analyze.pattern import pair_flops_grid
        from .plot import plot_pattern

        plot_pattern(instance, desc.profile, pair_flops_grid(instance, cells=min(instance.T, 256)), plot)
    emit(desc.to_dict(heads, macs, full_pattern), as_json, lambda: desc.text(heads, macs))


@main.command("plan", context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--B", "batch", default=1, show_default=True, type=click.IntRange(min=1), help="Sequences per batch.")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help="Heads, for totals.")
@click.option("--alternatives", default=5, show_default=True, type=click.IntRange(min=0),
              help="Alternatives shown per level (--json lists all).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--macs", is_flag=True, help="Count multiply-adds instead of FLOPs (FLOPs = 2 per multiply-add).")
@click.option("--cost", type=click.Choice(["balanced", "flops"]), default="balanced", show_default=True,
              help="Cost model: FLOPs + 4 x bytes moved, or FLOPs alone.")  # fmt: skip
@click.pass_context
def plan_command(ctx: click.Context, structure: str, batch: int, heads: int, alternatives: int, as_json: bool,
                 macs: bool, cost: str) -> None:  # fmt: skip
    """How every score of STRUCTURE is computed: the chosen contraction steps per level, the
    alternatives with their costs, and the speed-up over opt_einsum's path and the naive order.

    \b
    Examples:
      einsearch plan mlr --T 1024 --D 512 --B 8
      einsearch plan btt --D 256 --s 4
      einsearch plan swa --T 4096 --window 128 --json
    """
    from . import plan
    from .planner import DEFAULT_COST, FLOPS
    from .report import plan_text

    instance = resolve(structure, ctx.args)
    chosen = plan(instance, batch, FLOPS if cost == "flops" else DEFAULT_COST)
    emit(chosen.to_dict(heads, macs), as_json, lambda: plan_text(chosen, heads, macs, alternatives))


@main.command(context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help="Attention heads.")
@click.option("-o", "--output", default=None, help="File to write; - for stdout. [default: NAME_attention.py]")
@click.option("--class-name", default=None, help="Name of the module class. [default: from the structure]")
@click.option(
    "--normalize",
    type=click.Choice(["none", "levels", "coverage"]),
    default="none",
    show_default=True,
    help="Divide the summed logit by the number of levels, or each pair's by the levels that cover it.",
)
@click.option("--qk-norm", is_flag=True, help="Per-head LayerNorm on the query and key channels.")
@click.option(
    "--separate-softmax",
    is_flag=True,
    help="One softmax per sequence pattern, outputs added (the research form of global + window).",
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.pass_context
def generate(ctx: click.Context, structure: str, heads: int, output: str | None, class_name: str | None,
             normalize: str, qk_norm: bool, separate_softmax: bool, force: bool) -> None:  # fmt: skip
    """Write a standalone PyTorch attention module for STRUCTURE (it imports only torch).

    The module computes the structure's scores exactly, per head, causally, for any input length;
    see the file's docstring for its levels, costs and decoding cache.

    \b
    Examples:
      einsearch generate mlr --levels 8 -o mlr_attn.py
      einsearch generate btt --D 256 --heads 4 --class-name BttAttention
      einsearch generate my_structure.ein -o -          # to stdout
      einsearch generate mlr --normalize coverage --qk-norm   # the research code's options
      einsearch generate global-swa --separate-softmax
    """
    from . import generate as render
    from .codegen import class_name as default_class

    instance = resolve(structure, ctx.args)
    target = output or re.sub(r"\W", "_", instance.name) + "_attention.py"
    research = [f"--normalize {normalize}"] if normalize != "none" else []
    research += ["--qk-norm"] * qk_norm + ["--separate-softmax"] * separate_softmax
    command = " ".join(["einsearch generate", structure, *ctx.args, f"--heads {heads}", *research, f"-o {target}"])
    if class_name is not None and not class_name.isidentifier():
        fail(f"--class-name: {class_name!r} is not a Python identifier")
    try:
        source = render(instance, heads, class_name, command, normalize=normalize, qk_norm=qk_norm,
                        separate_softmax=separate_softmax)  # fmt: skip
    except EinsearchError as err:
        fail(str(err))
    if target == "-":
        click.echo(source, nl=False)
        return
    write_atomically(Path(target), source, force)
    name = class_name or default_class(instance.name)
    levels = len(instance.levels)
    click.echo(f"wrote {target}: {name}, {plural(heads, 'head')}, d_model {instance.D}, block_size {instance.T}, "
               f"{plural(levels, 'level')}")  # fmt: skip


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


@main.command("bench", context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--heads", default=4, show_default=True, type=click.IntRange(min=1), help="Attention heads.")
@click.option("--B", "batch", default=1, show_default=True, type=click.IntRange(min=1), help="Sequences per batch.")
@click.option("--length", type=click.IntRange(min=1), help="Input length. [default: the structure's T]")
@click.option("--decode-context", type=click.IntRange(min=2), help="Context of the timed decoding step. [default: T]")
@click.option("--repeat", default=7, show_default=True, type=click.IntRange(min=1), help="Timed runs per contender.")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads. [default: torch's]")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float64"]), default="float32", show_default=True)
@click.option("--no-backward", is_flag=True, help="Skip forward + backward.")
@click.option("--no-naive", is_flag=True, help="Skip the naive form (a T x T buffer per level).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def bench_command(ctx: click.Context, structure: str, heads: int, batch: int, length: int | None,
                  decode_context: int | None, repeat: int, threads: int | None, device: str, dtype: str,
                  no_backward: bool, no_naive: bool, as_json: bool) -> None:  # fmt: skip
    """Time STRUCTURE's generated module against standard attention and the naive form.

    Forward (no grad), forward + backward, and one decoded token with a cache, each the median of
    --repeat runs taken in turn with the other contenders, as ratios to standard attention
    (q/k/v projections and F.scaled_dot_product_attention) at the same size; with the analyzer's
    FLOPs beside FlopCounterMode's and the achieved FLOP/s beside a measured matmul rate.

    \b
    Examples:
      einsearch bench mlr --T 2048 --D 256 --heads 4
      einsearch bench btt --D 256 --T 1024 --no-naive --json
      einsearch bench swa --T 4096 --window 128 --decode-context 4096
    """
    try:
        import torch
    except ImportError:
        fail("bench needs PyTorch: pip install torch (a CPU build is enough)")
    from .benchmark import bench

    instance = resolve(structure, ctx.args)
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        report = bench(instance, heads, batch, length, repeat, decode_context, device, dtype, not no_backward,
                       not no_naive)  # fmt: skip
    except EinsearchError as err:
        fail(str(err))
    emit(report.to_dict(), as_json, report.text)


def write_atomically(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (no half-written file);
    refuse to replace an existing file unless ``force``."""
    import os
    import tempfile

    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        fail(f"{path.parent} is not a directory")
    try:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(text)
        os.replace(handle.name, path)
    except OSError as err:
        fail(f"{path}: cannot write: {err.strerror}")


def _families_help() -> str:
    from .search import FAMILIES

    return ("Search only these families (default: all): " + ", ".join(FAMILIES) + "; or the stem of a file "
            "given with --include.")  # fmt: skip


def _objectives_help() -> str:
    from .search import OBJECTIVES

    return "; ".join(f"{o.name}: {o.label}" for o in OBJECTIVES.values()) + "."


@main.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--D", "D", metavar="N", help="Model width (features per token).  [required]")
@click.option("--T", "T", metavar="N", help="Sequence length.  [required]")
@click.option("--heads", default="1", show_default=True, metavar="N", help="Heads (must divide D); totals are for all.")
@click.option("--budget", metavar="FLOPS", help="Most FLOPs of all heads' scores of one sequence (describe's score x "
              "heads): 2e9, 2G, 1.5T.")  # fmt: skip
@click.option("--cache-budget", metavar="BYTES", help="Most KV-cache bytes per token (float32, all heads): 64k, 1M.")
@click.option("--objective", default="rank", show_default=True, metavar="NAME", help=_objectives_help())
@click.option("--family", "families", metavar="A,B,...", help=_families_help())
@click.option("--include", multiple=True, metavar="FILE", help="Also search a .ein file over its options (repeatable).")
@click.option("--top", default="20", show_default=True, metavar="N", help="Candidates listed (0: all).")
@click.option("--pareto", is_flag=True, help="Only candidates no other beats on both FLOPs and the objective.")
@click.option("--limit", metavar="N", help="Score at most N candidates (stop early).")
@click.option("--max-levels", default="8", show_default=True, metavar="N", help="Most levels of mlr and bilinear-mlr.")
@click.option("--multi-levels", default="2", show_default=True, metavar="N",
              help="Most levels of the multi and multi-band members.")  # fmt: skip
@click.option("--rank-unit", metavar="N", help="Step of the MLR rank allocations (default: head dim / 16).")
@click.option("--einsum-grid", default="2", show_default=True, metavar="N",
              help="Two-core einsums: exponents in steps of 1/N.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {query, candidates}.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one candidate a row.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Draw the Pareto front as a PNG.")
@click.option("--ein-dir", type=click.Path(path_type=Path),
              help="Copy the .ein file of each listed candidate here; its commands then name the copy.")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite the --plot file and --ein-dir files.")
def search_command(D, T, heads, budget, cache_budget, objective, families, include, top, pareto, limit, max_levels,
                   multi_levels, rank_unit, einsum_grid, as_json, as_csv, plot, ein_dir, force) -> None:  # fmt: skip
    """Enumerate the families' structures for width D, sequence T and H heads, keep those within the
    budget, and rank them by the objective, each with the commands that describe and generate it.

    Every number is describe's, from the same plan: params, FLOPs (2 per multiply-add) and decode
    FLOPs for all heads; far and near: the rank of the D x D form x_t^T (sum of the levels' M) x_u
    that scores every pair at distance >= T/8, and a pair at distance 0; rank: describe's rank
    bound; pairs: share of the causal pairs scored; local: share of pair FLOPs within T/8; cache:
    float32 bytes per cached token.

    \b
    Examples:
      einsearch search --D 512 --T 1024 --heads 8 --budget 12G --top 10
      einsearch search --D 512 --T 1024 --heads 8 --budget 2.2G --objective local-bias --top 10
      einsearch search --D 512 --T 1024 --heads 8 --budget 2.2G --objective params --pareto --plot front.png
      einsearch search --D 512 --T 1024 --heads 8 --family btt,mlr --cache-budget 16k --json
      einsearch search --D 256 --T 1024 --include mine.ein --family mine --csv
    """
    import time

    from . import search

    numbers = {}
    for name, text, required in (("D", D, True), ("T", T, True), ("heads", heads, True), ("top", top, True),
                                 ("limit", limit, False), ("max-levels", max_levels, True),
                                 ("multi-levels", multi_levels, True), ("rank-unit", rank_unit, False),
                                 ("einsum-grid", einsum_grid, True)):  # fmt: skip
        if text is None:
            if required:
                fail(f"--{name} is required (e.g. einsearch search --D 512 --T 1024 --heads 8 --budget 2e9)")
            numbers[name] = None
            continue
        try:
            numbers[name] = int(text)
        except ValueError:
            fail(f"--{name}: expected a whole number, got {text!r}")
    if as_json and as_csv:
        fail("--json and --csv print different formats: give one")
    if plot is not None:
        check_plot_target(plot, force)
    if ein_dir is not None:
        check_output_dir(ein_dir, "--ein-dir")
    bar, start = None, time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty() and time.perf_counter() - start > 0.5:
            bar = click.progressbar(length=total, label="scoring candidates", file=sys.stderr)
            bar.__enter__()
        if bar is not None:
            bar.update(done - bar.pos)

    try:
        result = search(numbers["D"], numbers["T"], numbers["heads"], budget=budget, cache_budget=cache_budget,
                        objective=objective, families=None if families is None else families.split(","),
                        include=include, top=numbers["top"], pareto=pareto, limit=numbers["limit"],
                        max_levels=numbers["max-levels"], multi_levels=numbers["multi-levels"],
                        rank_unit=numbers["rank-unit"], einsum_grid=numbers["einsum-grid"], ein_dir=ein_dir,
                        progress=progress)  # fmt: skip
    except EinsearchError as err:
        fail(str(err))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if ein_dir is not None:
        copy_files({Path(c.file): Path(c.source) for c in result.candidates}, ein_dir, force)
    if plot is not None:
        from .plot import plot_front
        from .search.run import catalog_points

        try:
            plot_front(result, catalog_points(result), plot)
        except OSError as err:
            fail(f"{plot}: cannot write: {err.strerror}")
    if not result.candidates and (as_json or as_csv):
        click.echo("einsearch: no candidate fits the budget (raise --budget or --cache-budget)", err=True)
    if as_csv:
        click.echo(result.csv(), nl=False)
    else:
        emit(result.to_dict(), as_json, result.text)


def check_output_dir(path: Path, option: str) -> None:
    """Before any work: ``path`` is a directory to write into, or one that can be made."""
    import os

    if path.exists() and not path.is_dir():
        fail(f"{option}: {path} is not a directory")
    place = path if path.exists() else path.parent
    if not place.is_dir():
        fail(f"{option}: {place} is not a directory")
    if not os.access(place, os.W_OK | os.X_OK):
        fail(f"{option}: {place} is not writable")


def copy_files(files: dict[Path, Path], folder: Path, force: bool) -> None:
    """Copy each source file to its target in ``folder`` (made if missing); refuse a target that
    exists with other content unless ``force``, before writing any."""
    texts = {target: source.read_text() for target, source in files.items()}
    for target, text in texts.items():
        if target.exists() and not force and target.read_text() != text:
            fail(f"{target} exists with other content; pass --force to overwrite it")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        fail(f"--ein-dir: cannot make {folder}: {err.strerror}")
    for target, text in texts.items():
        write_atomically(target, text, force=True)


@main.group(context_settings={"help_option_names": ["-h", "--help"]})
def experiment() -> None:
    """Small training experiments with generated attention modules (they need PyTorch)."""


@experiment.command("icr", context_settings=STRUCTURE_OPTIONS)
@click.option("--structure", required=True, help="Catalog name or .ein file; its options follow (--r 8, --levels 4).")
@click.option("--d-input", "d", default=16, show_default=True, type=click.IntRange(min=1),
              help="Input dimension d: N = 2d examples, prompts of 4d tokens (the structure's T).")  # fmt: skip
@click.option("--D", "width", default=64, show_default=True, type=click.IntRange(min=1), help="Model width.")
@click.option("--layers", default=4, show_default=True, type=click.IntRange(min=1), help="Pre-LN blocks.")
@click.option("--heads", default=8, show_default=True, type=click.IntRange(min=1), help="Attention heads.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1), help="Training steps.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1), help="Prompts per step.")
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="AdamW learning rate at the base width (muP scales it per matrix).")  # fmt: skip
@click.option("--base-width", default=32, show_default=True, type=click.IntRange(min=1),
              help="Width at which --lr applies as is (muP's base_fan_in).")  # fmt: skip
@click.option("--warmup", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of the steps of linear warm-up (then cosine decay).")  # fmt: skip
@click.option("--curriculum", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of the steps over which the active input dims grow from 4 to d (0: off).")  # fmt: skip
@click.option("--encoding", type=click.Choice(["paired", "interleaved"]), default="paired", show_default=True,
              help="y tokens [x, y] (paired) or [0, y] (interleaved, the research code's; slow to learn).")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of weights and data.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Torch threads (the models are small: more rarely pay).")  # fmt: skip
@click.option("--test-prompts", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Prompts in the fixed test set.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write DIR/results.json.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write error against k as a PNG.")
@click.option("--force", is_flag=True, help="Overwrite the results file and the plot if they exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def experiment_icr(ctx: click.Context, structure: str, d: int, width: int, layers: int, heads: int, steps: int,
                   batch: int, lr: float, base_width: int, warmup: float, curriculum: float, encoding: str,
                   seed: int, threads: int, test_prompts: int, out: Path | None, plot: Path | None, force: bool,
                   as_json: bool) -> None:  # fmt: skip
    """Train a small GPT-style model whose attention is STRUCTURE's generated module on in-context
    linear regression, and report its test error against least squares and the zero predictor.

    Prompts x_1, w.x_1, ..., x_N, w.x_N with x ~ N(0, I/d), a fresh w per prompt, N = 2d; the
    structure is resolved with T = 4d and D = --D, so its blocks must fit T (mlr: T a multiple of
    2^(levels - 1)). Seeded and deterministic on the CPU. See README, "Experiment: in-context
    regression".

    \b
    Examples:
      einsearch experiment icr --structure lowrank --r 8 --heads 8 --steps 300
      einsearch experiment icr --structure btt --heads 1 --D 32 --out runs/btt --plot btt.png
      einsearch experiment icr --structure mlr --levels 4 --ranks 4,2,1,1 --json
    """
    try:
        from . import icr
    except ImportError as err:
        fail(f"experiment icr needs PyTorch ({err}): pip install torch")
    if any(arg == "--T" or arg.startswith("--T=") for arg in ctx.args):
        fail(f"--T: the experiment sets it to the prompt length 4d = {4 * d}; leave it out")
    try:
        options = parse_structure_options(ctx.args)
    except EinsearchError as err:
        fail(str(err))
    config = icr.Config(structure=structure, options=options, d=d, width=width, layers=layers, heads=heads,
                        steps=steps, batch=batch, lr=lr, base_width=base_width, warmup=warmup,
                        curriculum=curriculum, curriculum_start=min(4, d), encoding=encoding, seed=seed,
                        threads=threads, test_prompts=test_prompts)  # fmt: skip
    try:
        config.check()
    except ValueError as err:
        fail(str(err))
    instance = resolve(structure, [*ctx.args, "--T", str(config.prompt_length), "--D", str(width)])
    results = None if out is None else out / "results.json"
    if results is not None:
        if out.exists() and not out.is_dir():
            fail(f"--out: {out} is not a directory")
        if results.exists() and not force:
            fail(f"{results} exists; pass --force to overwrite it")
    if plot is not None:
        check_plot_target(plot, force)
    try:
        attention = icr.attention_class(instance, heads)
    except EinsearchError as err:
        fail(str(err))
    show = lambda loss: None if loss is None else f"loss {loss:.4f}"  # noqa: E731
    label = f"training {instance.name}"
    with click.progressbar(length=steps, label=label, file=sys.stderr, item_show_func=show) as bar:
        try:
            result = icr.train(config, lambda step, loss: bar.update(1, loss), instance=instance, attention=attention)
        except FloatingPointError as err:
            fail(f"{err}; try a smaller --lr")
    if results is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(results, icr.results_json(result), force)
    if plot is not None:
        title = f"in-context regression, d = {d}, D = {width}"
        icr.plot({title: [(f"{instance.name}, {plural(heads, 'head')}", result)]}, plot)
    emit(result.to_dict(), as_json, result.text)


def check_plot_target(path: Path, force: bool) -> None:
    import os

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail("--plot needs matplotlib: pip install 'einsearch[plot]'")
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        fail(f"{path.parent} is not a directory")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        fail(f"--plot: {path.parent} is not writable")


if __name__ == "__main__":
    main()
