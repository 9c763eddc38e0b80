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
@click.option("--normalize", type=click.Choice(["none", "levels", "coverage"]), default="none", show_default=True,
              help="Divide the summed logit by the number of levels, or each pair's by the levels that cover it.")
@click.option("--qk-norm", is_flag=True, help="Per-head LayerNorm on the query and key channels.")
@click.option("--separate-softmax", is_flag=True,
              help="One softmax per sequence pattern, outputs added (the research form of global + window).")
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


def check_plot_target(path: Path, force: bool) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail("--plot needs matplotlib: pip install 'einsearch[plot]'")
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        fail(f"{path.parent} is not a directory")


if __name__ == "__main__":
    main()
