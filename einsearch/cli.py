"""The ``einsearch`` command: click parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from . import catalog, outputs
from .errors import DSLError, EinsearchError
from .experiments.settings import IcrConfig, LmConfig
from .options import parse_structure_options, value_text
from .structure import Instance

STRUCTURE_OPTIONS = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}
HEADS_HELP = "Attention heads (every command's default is 1: the structure as written is one head)."
TOTALS_HELP = HEADS_HELP + " Totals count all."


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
    outputs.echo(json.dumps(payload, indent=2) if as_json else text())


class Commands(click.Group):
    """The command group. Its ``main`` is the one place an EinsearchError raised anywhere in a
    command (a refused output, a failed write to a file or to standard output) becomes one line
    and exit status 2."""

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except EinsearchError as err:
            fail(str(err))


class StructureCommand(click.Command):
    """A command on a STRUCTURE that takes the structure's own options: its ``--help`` lists them,
    with their defaults and docs, for the structure named before ``--help``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:  # a quiet first pass finds the structure before --help answers
            probe = self.make_context(self.name, list(args), parent=ctx.parent, resilient_parsing=True)
            ctx.meta[STRUCTURE_KEY] = (probe.params.get("structure"), probe.args)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        title, rows = structure_option_rows(*ctx.meta.get(STRUCTURE_KEY, (None, [])))
        with formatter.section(title):
            formatter.write_dl(rows)


STRUCTURE_KEY = "einsearch.structure"


def structure_option_rows(name: str | None, args: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """The help section of a structure's options: each with its kind of value, doc and default (as
    resolved with the options given before --help, else the file's defaults)."""
    if name is None:
        every = "every option STRUCTURE declares (`einsearch describe btt --help` lists btt's)"
        return "Options of the structure", [("--NAME VALUE", every)]
    try:
        structure = catalog.find(name)
    except EinsearchError as err:
        return f"Options of {name}", [("(none)", str(err))]
    try:
        values = structure.resolve(parse_structure_options(args)).values
    except EinsearchError:
        try:
            values = structure.resolve().values
        except EinsearchError:  # the file's own defaults fail: show the declarations only
            values = {}
    rows = []
    for decl in structure.options:
        kind = f"[{'|'.join(decl.choices)}]" if decl.kind == "choice" else "N,N,..." if decl.length else "N"
        default = f"  [default: {value_text(values[decl.name])}]" if decl.name in values else ""
        rows.append((f"--{decl.name} {kind}", f"{decl.doc}{default}".strip()))
    return f"Options of {structure.name}", rows


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="einsearch", prog_name="einsearch")
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
    """List the catalog's structures with their doc lines.

    \b
    Examples:
      einsearch list
      einsearch list --json
    """
    entries = []
    for name in catalog.names():
        try:
            entries.append({"name": name, "doc": catalog.find(name).doc})
        except DSLError as err:
            fail(str(err))
    width = max(len(e["name"]) for e in entries)
    emit(entries, as_json, lambda: "\n".join(f"{e['name']:<{width}}  {e['doc']}" for e in entries))


@main.command(cls=StructureCommand, context_settings=STRUCTURE_OPTIONS)
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


@main.command(cls=StructureCommand, context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help=TOTALS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--macs", is_flag=True, help="Count multiply-adds instead of FLOPs (FLOPs = 2 per multiply-add).")
@click.option("--rank-limit", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Largest matrix side for the exact rank check (above it, a bound).")  # fmt: skip
@click.option("--full-pattern", is_flag=True, help="With --json: the compute pattern at every distance.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the compute pattern as a PNG.")
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
    figure = None if plot is None else check_plot_target(plot, force)
    desc = analyze(instance, rank_limit=rank_limit)
    if figure is not None:
        from .analyze.pattern import pair_flops_grid
        from .plot import pattern_png

        figure.write(pattern_png(instance, desc.profile, pair_flops_grid(instance, cells=min(instance.T, 256))))
    emit(desc.to_dict(heads, macs, full_pattern), as_json, lambda: desc.text(heads, macs))


@main.command("plan", cls=StructureCommand, context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--B", "batch", default=1, show_default=True, type=click.IntRange(min=1), help="Sequences per batch.")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help=TOTALS_HELP)
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


def scoring_options(command: Callable) -> Callable:
    """The research code's scoring options of a generated module (``codegen.Research``): on
    ``generate`` and on every experiment, whose modules are generated."""
    options = [
        click.option(
            "--normalize",
            type=click.Choice(["none", "levels", "coverage"]),
            default="none",
            show_default=True,
            help="Divide the summed logit by the number of levels, or each pair's by the levels that cover it.",
        ),
        click.option(
            "--qk-norm",
            type=click.Choice(["none", "pooled", "level", "key"]),
            default="none",
            show_default=True,
            help="Weight-only LayerNorm over each head's query and key channels: all levels together, one per "
            "level, or the key map only (the research BTT).",
        ),
        click.option(
            "--logit-scale",
            type=click.Choice(["structure", "sqrt", "inverse"]),
            default="structure",
            show_default=True,
            help="Each level's logit scale: the structure's, 1 / sqrt(channels), or 1 / channels (muP).",
        ),
        click.option("--rms-cap", is_flag=True, help="Scale each factor down to its initial RMS on every forward."),
        click.option(
            "--separate-softmax",
            is_flag=True,
            help="One softmax per sequence pattern, outputs added (the research form of global + window).",
        ),
    ]
    return stacked(options)(command)


def stacked(options: list[Callable]) -> Callable:
    """One decorator applying ``options`` in order (the first is the first in ``--help``)."""

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def research_settings(settings: dict) -> dict:
    """The scoring options taken out of a command's ``settings``, those not at their default
    (``einsearch.generate``'s keywords)."""
    from .codegen import Research

    default = Research()
    chosen = {field.name: settings.pop(field.name) for field in dataclasses.fields(Research)}
    return {name: value for name, value in chosen.items() if value != getattr(default, name)}


@main.command(cls=StructureCommand, context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help=HEADS_HELP)
@click.option("-o", "--output", default=None, help="File to write; - for stdout. [default: NAME_attention.py]")
@click.option("--class-name", default=None, help="Name of the module class. [default: from the structure]")
@scoring_options
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.pass_context
def generate(ctx: click.Context, structure: str, heads: int, output: str | None, class_name: str | None,
             force: bool, **research) -> None:  # fmt: skip
    """Write a standalone PyTorch attention module for STRUCTURE (it imports only torch).

    The module computes the structure's scores exactly, per head, causally, for any input length,
    and takes every option of the structure at construction (the values given here are its
    defaults), so one file serves every size; see its docstring for the plan and costs.

    \b
    Examples:
      einsearch generate mlr --levels 8 -o mlr_attn.py
      einsearch generate btt --D 256 --heads 4 --class-name BttAttention
      einsearch generate my_structure.ein -o -          # to stdout
      einsearch generate mlr --qk-norm pooled --normalize levels   # the research MLR's options
      einsearch generate btt --qk-norm key --logit-scale sqrt --rms-cap   # the research BTT
      einsearch generate global-swa --separate-softmax
    """
    from . import generate as render
    from .codegen import Research
    from .codegen import class_name as default_class

    instance = resolve(structure, ctx.args)
    target = re.sub(r"\W", "_", instance.name) + "_attention.py" if output is None else output
    destination = None if target == "-" else outputs.file_target(target, force=force, option="-o")
    try:
        flags = Research(**research).flags()
        command = " ".join(["einsearch generate", structure, *ctx.args, f"--heads {heads}", *flags, f"-o {target}"])
        source = render(instance, heads, class_name, command, **research)
    except EinsearchError as err:
        fail(str(err))
    if destination is None:
        outputs.echo(source, nl=False)
        return
    destination.write(source)
    name = class_name or default_class(instance.name)
    levels = len(instance.levels)
    outputs.echo(f"wrote {target}: {name}, {plural(heads, 'head')}, d_model {instance.D}, block_size {instance.T}, "
               f"{plural(levels, 'level')}")  # fmt: skip


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


@main.command("bench", cls=StructureCommand, context_settings=STRUCTURE_OPTIONS)
@click.argument("structure")
@click.option("--heads", default=1, show_default=True, type=click.IntRange(min=1), help=HEADS_HELP)
@click.option("--B", "batch", default=1, show_default=True, type=click.IntRange(min=1), help="Sequences per batch.")
@click.option("--length", type=click.IntRange(min=1), help="Input length. [default: the structure's T]")
@click.option("--decode-context", type=click.IntRange(min=2), help="Context of the timed decoding step. [default: T]")
@click.option("--repeat", default=7, show_default=True, type=click.IntRange(min=1), help="Timed runs per contender.")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads. [default: torch's]")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
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
    FLOPs beside FlopCounterMode's and the achieved FLOP/s beside a measured matmul rate. Every
    argument, and the memory the run needs, is checked before torch is imported.

    \b
    Examples:
      einsearch bench mlr --T 2048 --D 256 --heads 4
      einsearch bench btt --D 256 --T 1024 --heads 4 --no-naive --json
      einsearch bench swa --T 4096 --window 128 --heads 4 --decode-context 4096
    """
    from .bench_setup import available_memory, bench_setup

    instance = resolve(structure, ctx.args)
    setup = bench_setup(instance, heads, batch, length, decode_context, repeat, device, dtype, not no_backward,
                        not no_naive, available_memory() if device == "cpu" else None)  # fmt: skip
    try:
        import torch
    except ImportError:
        fail("bench needs PyTorch: pip install torch (a CPU build is enough)")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (torch.device(device).index or 0) >= count:
            fail(f"--device {device}: no such CUDA device (this machine has {plural(count, 'CUDA device')})")
        setup.check_memory(torch.cuda.mem_get_info(device)[0], f"is free on {device}")
    if threads is not None:
        torch.set_num_threads(threads)
    from .benchmark import bench

    report = bench(setup)
    emit(report.to_dict(), as_json, report.text)


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
    bound; pairs: share of the causal pairs scored; local: share of causal pair FLOPs within T/8; cache:
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
    figure = None if plot is None else check_plot_target(plot, force)
    folder = None if ein_dir is None else outputs.directory_target(ein_dir, option="--ein-dir")
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
    if folder is not None:
        copy_files({Path(c.file).name: Path(c.source) for c in result.candidates}, folder, force)
    if figure is not None:
        from .plot import front_png
        from .search.run import catalog_points

        figure.write(front_png(result, catalog_points(result)))
    if not result.candidates and (as_json or as_csv):
        click.echo("einsearch: no candidate fits the budget (raise --budget or --cache-budget)", err=True)
    if as_csv:
        outputs.echo(result.csv(), nl=False)
    else:
        emit(result.to_dict(), as_json, result.text)


def copy_files(files: dict[str, Path], folder: outputs.DirectoryTarget, force: bool) -> None:
    """Copy each source file into ``folder`` under its name; a target that exists with other
    content is refused unless ``force``, before any is written."""
    texts = {name: source.read_text() for name, source in files.items()}
    for name, text in texts.items():
        target = folder.path / name
        if target.exists() and not force and target.read_text() != text:
            fail(f"{target} exists with other content; pass --force to overwrite it")
    for name, text in texts.items():
        folder.file(name, force=True).write(text)


@main.group(context_settings={"help_option_names": ["-h", "--help"]})
def experiment() -> None:
    """Small training experiments with generated attention modules (they need PyTorch).

    Every option is checked, the run's memory estimated and the output paths tried before PyTorch
    is loaded; --heads is 1 unless given, as for every command.

    \b
    Examples:
      einsearch experiment icr --structure lowrank --r 8 --heads 8 --steps 300
      einsearch experiment lm --structure mlr --levels 4 --ranks 16,8,4,4 --heads 2 --steps 200
      einsearch experiment icr --help
    """


def training_options(config: type) -> Callable:
    """The options every experiment has, with the defaults of its settings class ``config``."""
    d = config()
    positive, fraction = click.IntRange(min=1), click.FloatRange(0, 1)
    options = [
        click.option("--structure", required=True, help="Catalog name or .ein file; its options follow (--r 8)."),
        click.option("--D", "width", default=d.width, show_default=True, type=positive, help="Model width."),
        click.option("--layers", default=d.layers, show_default=True, type=positive, help="Pre-LN blocks."),
        click.option("--heads", default=d.heads, show_default=True, type=positive, help="Attention heads."),
        click.option("--steps", default=d.steps, show_default=True, type=positive, help="Training steps."),
        click.option("--batch", default=d.batch, show_default=True, type=positive, help="Sequences per step."),
        click.option(
            "--lr",
            default=d.lr,
            show_default=True,
            type=click.FloatRange(min=0, min_open=True),
            help="AdamW learning rate at the base width (muP scales it per matrix).",
        ),
        click.option(
            "--base-width",
            default=d.base_width,
            show_default=True,
            type=positive,
            help="Width at which --lr applies as is (muP's base_fan_in).",
        ),
        click.option(
            "--warmup",
            default=d.warmup,
            show_default=True,
            type=fraction,
            help="Fraction of the steps of linear warm-up.",
        ),
        click.option(
            "--schedule",
            type=click.Choice(["cosine", "constant"]),
            default=d.schedule,
            show_default=True,
            help="After the warm-up: cosine decay to a tenth, or a constant rate.",
        ),
        click.option(
            "--seed", default=d.seed, show_default=True, type=click.IntRange(min=0), help="Seed of weights and data."
        ),
        click.option(
            "--threads",
            default=d.threads,
            show_default=True,
            type=positive,
            help="Torch threads (the models are small: more rarely pay).",
        ),
        click.option("--out", type=click.Path(path_type=Path), help="Write DIR/results.json."),
        click.option("--plot", type=click.Path(path_type=Path), help="Write a PNG of the result."),
        click.option("--force", is_flag=True, help="Overwrite results.json and the plot if they exist."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object."),
        click.pass_context,
    ]
    return stacked(options)


def experiment_outputs(out: Path | None, plot: Path | None, force: bool) -> None:
    """Every output path of a run tried before the work starts; errors exit with 2."""
    from .experiments.outputs import check_file, check_folder

    try:
        if out is not None:
            check_folder(out, force, "--out", ("results.json",))
        if plot is not None:
            check_file(plot, force, "--plot")
            check_plot_target(plot, force)
    except EinsearchError as err:
        fail(str(err))


def run_experiment(label: str, steps: int, train: Callable) -> object:
    """``train(on_step)`` with the training loss on a progress bar (stderr); errors exit with 2."""
    show = lambda loss: None if loss is None else f"loss {loss:.4f}"  # noqa: E731
    with click.progressbar(length=steps, label=label, file=sys.stderr, item_show_func=show) as bar:
        try:
            return train(lambda step, loss: bar.update(1, loss))
        except FloatingPointError as err:
            fail(f"{err}; try a smaller --lr")
        except EinsearchError as err:
            fail(str(err))


def save_experiment(payload: dict, out: Path | None, plot: Path | None, figure: Callable[[], bytes]) -> None:
    """results.json into ``out`` and ``figure()``'s PNG to ``plot`` (both checked before the run)."""
    from .experiments.outputs import write

    try:
        if out is not None:
            write(out / "results.json", json.dumps(payload, indent=2) + "\n")
        if plot is not None:
            write(plot, figure())
    except EinsearchError as err:
        fail(str(err))


def experiment_settings(config: type, structure: str, args: list[str], settings: dict) -> object:
    """The settings object of a run, its structure's options parsed from ``args``, its scoring
    options those of the generated modules; errors exit with 2."""
    try:
        generate_options = research_settings(settings)
        return config(structure=structure, options=parse_structure_options(args),
                      generate_options=generate_options, **settings)  # fmt: skip
    except EinsearchError as err:
        fail(str(err))


def import_experiment(name: str):
    """``einsearch.experiments.NAME`` (it needs torch)."""
    import importlib

    try:
        return importlib.import_module(f".experiments.{name}", __package__)
    except ImportError as err:
        fail(f"experiment {name} needs PyTorch ({err}): pip install torch")


@experiment.command("icr", context_settings=STRUCTURE_OPTIONS)
@training_options(IcrConfig)
@scoring_options
@click.option("--d-input", "d", default=16, show_default=True, type=click.IntRange(min=1),
              help="Input dimension d: N = 2d examples, prompts of 4d tokens (the structure's T).")  # fmt: skip
@click.option("--encoding", type=click.Choice(["paired", "research"]), default="paired", show_default=True,
              help="y tokens [x, y] in d + 1 slots (paired) or [y, 0, ..., 0] in x's d slots (research).")  # fmt: skip
@click.option("--curriculum-every", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Curriculum: input dims 4 -> d and examples 8 -> 2d, a stage every N steps (0: off; "
              "research: 2000).")  # fmt: skip
@click.option("--curriculum-share", default=0.06, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="The curriculum's stages end within this share of the steps (research: 0.06).")  # fmt: skip
@click.option("--read-in-std", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Initial standard deviation of the read-in (research: 0.02).")  # fmt: skip
@click.option("--position-std", default=0.1, show_default=True, type=click.FloatRange(min=0),
              help="Initial standard deviation of the position table (research: 0.02).")  # fmt: skip
@click.option("--no-bias", "bias", flag_value=False, default=True,
              help="No biases in the read-in, MLPs, read-out and LayerNorms (research: none).")  # fmt: skip
@click.option("--clip", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Clip the gradient norm at this (0: no clipping; research: none).")  # fmt: skip
@click.option("--adam-eps", default=1e-8, show_default=True, type=click.FloatRange(min=0),
              help="AdamW's epsilon (research: 1e-20).")  # fmt: skip
@click.option("--test-prompts", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Prompts in the fixed test set.")  # fmt: skip
def experiment_icr(ctx: click.Context, structure: str, out: Path | None, plot: Path | None, force: bool,
                   as_json: bool, **settings) -> None:  # fmt: skip
    """Train a small GPT-style model whose attention is STRUCTURE's generated module on in-context
    linear regression, and report its test error against least squares and the zero predictor.

    Prompts x_1, w.x_1, ..., x_N, w.x_N with x ~ N(0, I/d), a fresh w per prompt, N = 2d; the
    structure is resolved with T = 4d and D = --D, so its blocks must fit T (mlr: T a multiple of
    2^(levels - 1)). Seeded and deterministic on the CPU. The research code's settings (docs/icr.md):
    --encoding research --curriculum-every 2000 --schedule constant --read-in-std 0.02
    --position-std 0.02 --no-bias --clip 0 --adam-eps 1e-20 --layers 6 --heads 8, 500,000 steps of
    64 prompts, its lr tuned per model.

    \b
    Examples:
      einsearch experiment icr --structure lowrank --r 8 --heads 8 --steps 300
      einsearch experiment icr --structure btt --heads 1 --D 32 --out runs/btt --plot btt.png
      einsearch experiment icr --structure mlr --levels 4 --ranks 4,2,1,1 --heads 1 --json
      einsearch experiment icr --structure lowrank --r 8 --heads 8 --encoding research --no-bias
    """
    from .report import icr_text

    if any(arg == "--T" or arg.startswith("--T=") for arg in ctx.args):
        fail(f"--T: the experiment sets it to the prompt length 4d = {4 * settings['d']}; leave it out")
    config = experiment_settings(IcrConfig, structure, ctx.args, settings)
    try:
        instance = config.prepare()
    except EinsearchError as err:
        fail(str(err))
    experiment_outputs(out, plot, force)
    icr = import_experiment("icr")
    result = run_experiment(f"training {instance.name}", config.steps,
                            lambda on_step: icr.train(config, on_step, instance=instance))  # fmt: skip
    payload = result.to_dict()

    def figure() -> bytes:
        from .plot import icr_errors_png

        title = f"in-context regression, d = {config.d}, D = {config.width}"
        return icr_errors_png({title: [(f"{instance.name}, {plural(config.heads, 'head')}", payload)]})

    save_experiment(payload, out, plot, figure)
    emit(payload, as_json, lambda: icr_text(payload))


@experiment.command("lm", context_settings=STRUCTURE_OPTIONS)
@training_options(LmConfig)
@scoring_options
@click.option("--T", "context", default=256, show_default=True, type=click.IntRange(min=2),
              help="Context length: characters per sequence (the structure's T).")  # fmt: skip
@click.option("--eval-tokens", default=65536, show_default=True, type=click.IntRange(min=1),
              help="Validation characters scored at the end (whole windows of T).")  # fmt: skip
def experiment_lm(ctx: click.Context, structure: str, out: Path | None, plot: Path | None, force: bool,
                  as_json: bool, **settings) -> None:  # fmt: skip
    """Train a character-level GPT whose attention is STRUCTURE's generated module on Python
    standard-library source, and report its validation loss, FLOPs per token and speed.

    The corpus is the source of a fixed list of standard-library modules of the running Python
    (no download), split into train and validation by file; its hash is recorded, with a warning
    when it is not a documented one. The structure is resolved with T = --T and D = --D. Pre-LN
    blocks (MLP 4D), learned positions, untied read-out, no biases, muP; seeded and
    deterministic on the CPU. See docs/lm.md.

    \b
    Examples:
      einsearch experiment lm --structure lowrank --r 32 --heads 2 --D 64 --steps 300
      einsearch experiment lm --structure mlr --levels 6 --ranks 23,2,2,2,2,1 --heads 2 --out runs/mlr
      einsearch experiment lm --structure swa --r 32 --window 32 --heads 2 --plot loss.png --json
    """
    from .experiments.corpus import CorpusWarning, load
    from .report import lm_text

    config = experiment_settings(LmConfig, structure, ctx.args, settings)
    try:
        text = load()
        instance = config.prepare(text)
    except EinsearchError as err:
        fail(str(err))
    experiment_outputs(out, plot, force)
    if text.warning() is not None:
        click.echo(f"einsearch: warning: {text.warning()}", err=True)
    lm = import_experiment("lm")

    def train(on_step: Callable) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CorpusWarning)  # said above
            return lm.train(config, on_step, text=text, instance=instance)

    payload = run_experiment(f"training {instance.name}", config.steps, train).to_dict()

    def figure() -> bytes:
        from .plot import lm_losses_png

        return lm_losses_png([(f"{instance.name}, {plural(config.heads, 'head')}, D = {config.width}", payload)])

    save_experiment(payload, out, plot, figure)
    emit(payload, as_json, lambda: lm_text(payload))


def check_plot_target(path: Path, force: bool) -> outputs.FileTarget:
    """The --plot file, checked before the work: matplotlib is there, and the path can be written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail("--plot needs matplotlib: pip install 'einsearch[plot]'")
    return outputs.file_target(path, force=force, option="--plot")


if __name__ == "__main__":
    main()
