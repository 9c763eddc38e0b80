"""``einsearch search``: every structure of a space of families for given (D, T, H), scored from
its plan, filtered by budgets, deduplicated and ranked by an objective.

* ``families``: the families, each a structure file under ``catalog/`` and a grid of its options
  (``FAMILIES``, ``family`` registers one), and the search's sizes and knobs (``Space``);
* ``template``: a file resolved once, its levels at any grid point from their symbolic sizes;
* ``costs``: a level's counts from its plan, a candidate's numbers from its levels';
* ``sources``: a family's members scored, each distinct level counted once;
* ``objectives``: what a search ranks by (``OBJECTIVES``, ``objective`` registers one);
* ``run``: the loop (``search``), its result (``SearchResult``, ``Candidate``) and the front.

The rendering of a result lives in ``report.py``, its figure in ``plot.py``.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from .families import FAMILIES, Family, Space, family
from .objectives import OBJECTIVES, Objective, objective

if TYPE_CHECKING:
    from .run import Candidate, SearchResult

__all__ = ["FAMILIES", "OBJECTIVES", "Candidate", "Family", "Objective", "SearchResult", "Space", "family",
           "objective", "pareto_front", "search"]  # fmt: skip


def search(D: int, T: int, heads: int = 1, **options: Any) -> SearchResult:
    """The search (``run.search``): loaded on first use, so the registries stay cheap to import."""
    from .run import search as run

    return run(D, T, heads, **options)


def __getattr__(name: str) -> Any:
    """``Candidate``, ``SearchResult`` and ``pareto_front`` without loading the analysis up front."""
    if name in ("Candidate", "SearchResult", "pareto_front"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """This package, callable as the function ``search``: importing it rebinds the name ``search``
    in ``einsearch`` to the package, and ``einsearch.search(D, T, ...)`` must still run a search."""

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _Package
