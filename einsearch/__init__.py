"""einsearch: structured attention scoring functions as einsums: describe, plan, search, generate.

The library under the ``einsearch`` command, in the spirit of ``opt_einsum.contract_path``: each
call returns data that also prints as the command's report.

>>> import einsearch
>>> btt = einsearch.load("btt")                 # a catalog name, or a path to a .ein file
>>> instance = btt.resolve({"D": 256}, s=2)     # every option fixed: sizes, levels, factors
>>> d = einsearch.describe(instance)
>>> d.params, d.rank
(16384, 256)
>>> d.to_dict()["flops"]["per_token"] == d.flops.per_token
True
>>> p = einsearch.plan(instance, batch=8)
>>> p.flops == 8 * einsearch.plan(instance).flops
True

Heavy modules load on first use, so ``import einsearch`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DSLError, EinsearchError, NotFoundError, OptionError
from .structure import Instance, Level, Operand, Structure

if TYPE_CHECKING:
    from .analyze import Description
    from .planner import Balanced, Plan
    from .search import SearchResult

__all__ = [
    "FLOPS",
    "Balanced",
    "DSLError",
    "Description",
    "EinsearchError",
    "Instance",
    "Level",
    "NotFoundError",
    "Operand",
    "OptionError",
    "Plan",
    "Structure",
    "__version__",
    "catalog_names",
    "describe",
    "generate",
    "load",
    "plan",
    "search",
]


def load(name_or_path: str) -> Structure:
    """A catalog structure by name (``"btt"``), or a ``.ein`` file by path."""
    from .catalog import find

    return find(str(name_or_path))


def catalog_names() -> list[str]:
    """The names of the catalog's structures."""
    from .catalog import names

    return names()


def describe(instance: Instance, *, rank_limit: int | None = None, cost: Balanced | None = None) -> Description:
    """Params, rank, FLOPs (from the plan), family and compute pattern of one head of ``instance``."""
    from .analyze import describe as analyze
    from .analyze.exact import RANK_LIMIT
    from .planner import DEFAULT_COST

    return analyze(instance, rank_limit=RANK_LIMIT if rank_limit is None else rank_limit, cost=cost or DEFAULT_COST)


def plan(instance: Instance, batch: int = 1, cost: Balanced | None = None) -> Plan:
    """How every score of one head is computed for ``batch`` sequences (``cost``: the cost model)."""
    from .planner import DEFAULT_COST
    from .planner import plan as make_plan

    return make_plan(instance, batch, cost or DEFAULT_COST)


def generate(
    instance: Instance,
    heads: int = 1,
    class_name: str | None = None,
    command: str = "",
    **research: Any,
) -> str:
    """The source of a standalone PyTorch attention module for ``instance`` (``command``: how to
    regenerate it, quoted in its docstring). The keyword options are the research code's
    parameterisations (``einsearch.codegen.Research``: normalize, qk_norm, logit_scale, rms_cap,
    separate_softmax)."""
    from .codegen import Research
    from .codegen import generate as render

    settings = Research(**research)
    return render(
        instance, heads, class_name, command or f"einsearch generate {instance.name} --heads {heads}", settings
    )


def search(D: int, T: int, heads: int = 1, **options: Any) -> SearchResult:
    """The family's structures for width D, sequence T and ``heads`` heads within a budget, best first.

    ``options``: ``budget`` (FLOPs of all heads' scores of one sequence; ``2e9`` or ``"2G"``),
    ``cache_budget`` (KV-cache bytes per token), ``objective`` (``rank``, ``params``,
    ``rank-per-flop``, ``local-bias``, ``decode``), ``families``, ``include`` (.ein paths), ``top``,
    ``pareto``, ``limit``, ``max_levels``, ``multi_levels``, ``rank_unit``, ``einsum_grid``,
    ``ein_dir``, ``catalog`` (a folder of the families' files), ``progress`` (a callable of done
    and total). See ``einsearch.search``.
    """
    from .search import search as run

    return run(D, T, heads, **options)


def __getattr__(name: str) -> Any:
    """``Plan``, ``Description``, ``Balanced``, ``FLOPS`` and ``__version__`` without importing them
    up front (the version is the installed package's, which pyproject.toml sets)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("einsearch")
        except PackageNotFoundError:  # a checkout run without installing it
            return "unknown"
    if name in ("Plan", "Balanced", "FLOPS"):
        from . import planner as module
    elif name == "Description":
        from . import analyze as module
    else:
        raise AttributeError(f"module 'einsearch' has no attribute {name!r}")
    return getattr(module, name)
