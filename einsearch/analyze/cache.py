"""A cache of what ``describe`` derives slowly but deterministically: the printed formulas (so most
runs never import sympy) and the exact rank of the random instance (so most never import flint
nor materialise a matrix).

A formula depends on the structure's text and on how the plan computes each level (its shape,
not its sizes), so that pair is the key; the exact rank depends on the levels with their sizes and
on the bound (the sketch's width), which with the method (prime, draws, seed) make its key.
Entries are looked up in the cache shipped with the package (the catalog and the search's
families at their defaults, rebuilt by ``write_shipped()``; a test says when it is due), then in
the user's cache directory (``$EINSEARCH_CACHE``, else ``$XDG_CACHE_HOME/einsearch``, else
``~/.cache/einsearch``), where new entries are written; an unwritable directory is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from ..planner import Plan
from ..structure import Instance
from .exact import METHOD
from .formulas import Formulas, shape_key, split_lines

SHIPPED = Path(__file__).with_name("formulas.json")
DERIVATION = 3  # raised whenever formulas.py derives a formula differently: older entries are not read


def cache_dir() -> Path:
    if "EINSEARCH_CACHE" in os.environ:
        return Path(os.environ["EINSEARCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "einsearch"


def cache_key(plan: Plan) -> str:
    """A digest of the structure's text and of the plan's shape (what the formulas depend on)."""
    instance = plan.instance
    owner = {n: s for s in plan.schedules for n in s.levels}
    shapes = []
    for level in instance.levels:
        schedule = owner[level.number]
        band = None
        if level.band is not None:  # which diagonals the band formula sums over
            lo, hi, T = *level.band, instance.T
            band = (lo > T - 1, hi < 1 - T, hi > T - 1, lo < 1 - T, hi >= 0, lo < 0)
        shapes.append((level.term, level.loop_value, shape_key(level, schedule), band))
    shapes = _unroll_values(shapes)
    return _digest(DERIVATION, instance.structure.text, repr(shapes))


def _unroll_values(shapes: list) -> list:
    """Drop loop values where a loop's levels all share one shape (their formula is one Sum)."""
    by_term: dict[int, set] = {}
    for term, _, shape, band in shapes:
        by_term.setdefault(term, set()).add((shape, band))
    return [(term, value if len(by_term[term]) > 1 else None, shape, band) for term, value, shape, band in shapes]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write(path: Path, entry: dict) -> None:
    import tempfile  # here: most runs write nothing

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump(entry, handle)
        os.replace(handle.name, path)
    except OSError:
        pass  # a cache we cannot write is only slower


def _entry(formulas: Formulas) -> dict:
    return {"params": formulas.params, "per_token": formulas.per_token, "factors": formulas.factors,
            "scored_pairs": formulas.scored_pairs, "folds": list(formulas.folds)}  # fmt: skip


def _formulas(entry: dict, instance: Instance) -> Formulas:
    folds = tuple((whole, product, tuple(names)) for whole, product, names in entry["folds"])
    return Formulas(entry["params"], entry["per_token"], entry["factors"], entry["scored_pairs"],
                    split_lines(folds, instance), folds)  # fmt: skip


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def rank_key(instance: Instance, bound: int) -> str:
    """A digest of what the exact rank depends on: the levels with every size, the bound, the method."""
    return _digest(METHOD, repr(instance.levels), instance.T, instance.D, bound)


def _lookup(key: str) -> dict:
    return _shipped(SHIPPED).get(key) or _read(cache_dir() / f"{key}.json")


@functools.lru_cache(maxsize=2)
def _shipped(path: Path) -> dict:
    """The shipped cache, read once per process."""
    return _read(path)


def cached_exact_rank(instance: Instance, bound: int) -> int:
    """``exact.exact_rank(instance, bound)``: from a cache when this instance was checked before."""
    key = rank_key(instance, bound)
    entry = _lookup(key)
    if "exact_rank" in entry:
        return entry["exact_rank"]
    from .exact import exact_rank

    rank = exact_rank(instance, bound)
    _write(cache_dir() / f"{key}.json", {"exact_rank": rank})
    return rank


def cached_formulas(plan: Plan) -> Formulas:
    """The formulas of ``plan``: from a cache when this structure text and plan shape were seen."""
    instance = plan.instance
    if instance.structure is None:  # built from plain data: no symbols to write formulas in
        return numeric_formulas(plan)
    key = cache_key(plan)
    entry = _lookup(key)
    if entry:
        return _formulas(entry, instance)
    from .formulas import formulas

    found = formulas(plan)
    _write(cache_dir() / f"{key}.json", _entry(found))
    return found


def numeric_formulas(plan: Plan) -> Formulas:
    """The counts themselves, for an instance with no symbols."""
    from .counts import params, plan_flops

    flops = plan_flops(plan)
    counts = (params(plan.instance), flops.per_token, flops.factors, flops.scored_pairs)
    return Formulas(*map(str, counts), ())


def rebuild_shipped(names: list[str]) -> dict:
    """The shipped cache: the formulas of each catalog structure at its defaults, and the exact
    rank of each feature structure (a D x D matrix, quick to check again when the cache is
    rebuilt or tested; a T x T one is cached in the user's directory on first use)."""
    from .. import catalog
    from ..planner import plan
    from .exact import RANK_LIMIT, affordable, exact_rank
    from .formulas import formulas
    from .rank import rank_bound

    entries = {}
    for name in names:
        instance = catalog.find(name).resolve()
        chosen = plan(instance)
        entries[cache_key(chosen)] = _entry(formulas(chosen))
        if instance.is_feature_structure and affordable(instance, RANK_LIMIT):
            bound = rank_bound(instance)
            entries[rank_key(instance, bound)] = {"exact_rank": exact_rank(instance, bound)}
    return dict(sorted(entries.items()))


def shipped_names() -> list[str]:
    """What the shipped cache covers: the catalog, and the search's families (whose describe
    commands search prints)."""
    from .. import catalog

    return catalog.names() + catalog.search_names()


def write_shipped() -> None:
    """Rewrites the shipped cache from the catalog (run after changing a catalog file or the plan)."""
    SHIPPED.write_text(json.dumps(rebuild_shipped(shipped_names()), indent=1, sort_keys=True) + "\n")
