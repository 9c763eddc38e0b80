"""The search loop: every member of the chosen families, scored (``sources``), kept within the
budgets, deduplicated and ranked by the objective, each with the commands that describe and
generate it.

Members that define the same matrix family at the same costs are listed once: the same sequence
patterns and feature networks up to relabelling (``costs.feature_form``), the first found kept.
"""

from __future__ import annotations

import heapq
import math
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..analyze import taxonomy_of
from ..catalog import find
from ..errors import EinsearchError, OptionError
from .costs import Costs, planned
from .families import FAMILIES, Space, option_text
from .objectives import find_objective
from .sources import Shared, Source, chosen_sources, grid_points

MAX_WIDTH = 1 << 20  # the widest D searched (its divisors are listed, its splits planned)
MAX_LENGTH = 1 << 40  # the longest T searched (every count stays exact)
MAX_MEMBERS = 250_000  # the most members a search enumerates without --limit (some 10 s)
PROGRESS_EVERY = 512
FLOPS = Costs._fields.index("flops")  # where a kept row's costs (a plain tuple) hold its FLOPs


@dataclass(frozen=True)
class Candidate:
    """One member of the space with its numbers (params, FLOPs and decode FLOPs for all heads)."""

    structure: str  # the file's name
    family: str
    options: dict  # what describe and generate take: T, D, then the family's options
    summary: str
    value: float  # the objective's
    params: int
    flops: int
    rank_bound: int  # describe's rank bound of one head: of M (D x D) or of the T x T scores
    rank_near: int  # of the D x D form scoring a pair at distance 0
    rank_far: int  # of the D x D form scoring every pair at distance >= T/8
    covered: float  # share of the causal pairs some level scores
    near_share: float
    decode_flops: int
    cache_bytes: int
    taxonomy: dict[str, float] | None
    describe: str
    generate: str
    source: str  # the .ein file the family is searched over
    file: str | None = None  # the .ein file the commands name (None: a catalog name)

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class SearchResult:
    """The ranked candidates, and what was asked (``query``) and done."""

    query: dict
    candidates: tuple[Candidate, ...]
    scored: int
    within_budget: int
    duplicates: int
    unranked: int  # within budget, unique, but given no value by the objective
    seconds: float
    truncated: bool
    front: tuple[tuple[int, float], ...] = ()  # (FLOPs, objective) of the Pareto front over everything ranked
    cloud: tuple[tuple[int, float], ...] = field(default=(), repr=False)  # (FLOPs, objective) of everything ranked
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        from ..report import search_json

        return search_json(self)

    def csv(self) -> str:
        from ..report import search_csv

        return search_csv(self)

    def text(self) -> str:
        from ..report import search_text

        return search_text(self)

    def __str__(self) -> str:
        return self.text()


class Row(NamedTuple):
    """A scored member before it becomes a Candidate. The search keeps each as a plain tuple of
    numbers (``Row.kept``): most never become one, and the many kept cost the garbage collector
    nothing (it lets go of a plain tuple of numbers, never of a named one). Its options are found
    again from its place in the grid."""

    place: tuple  # where the objective lists it (``Objective.place``): plain tuples sort by it
    source: int  # which of the search's sources
    point: int  # which point of its grid
    costs: Costs
    value: float

    @staticmethod
    def kept(place: tuple, source: int, point: int, costs: Costs, value: float) -> tuple:
        return place, source, point, tuple(costs), value

    @classmethod
    def of(cls, kept: tuple) -> Row:
        place, source, point, costs, value = kept
        return cls(place, source, point, Costs._make(costs), value)


def search(
    D: int,
    T: int,
    heads: int = 1,
    *,
    budget: float | str | None = None,
    cache_budget: float | str | None = None,
    objective: str = "rank",
    families: Iterable[str] | None = None,
    include: Sequence[str | Path] = (),
    top: int | None = 20,
    pareto: bool = False,
    limit: int | None = None,
    max_levels: int = 8,
    multi_levels: int = 2,
    rank_unit: int | None = None,
    einsum_grid: int = 2,
    ein_dir: str | Path | None = None,
    catalog: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Every member of the families that fits the budgets, best ``objective`` first (module doc).

    ``catalog``: a folder holding the families' files in place of the shipped catalog (its
    ``search/`` subfolder for multi, multi-band and einsum); ``ein_dir``: the folder the caller
    copies each listed member's file into (the printed commands then name those copies).
    """
    started = time.perf_counter()
    validate(D, T, heads, top, limit, max_levels, multi_levels, rank_unit, einsum_grid)
    goal = find_objective(objective)
    flop_budget = None if budget is None else parse_amount(budget, "budget")
    byte_budget = None if cache_budget is None else parse_amount(cache_budget, "cache-budget")
    space = Space(D, T, heads, max_levels, multi_levels, rank_unit, einsum_grid)
    if space.head_dim % space.unit:
        raise OptionError("rank-unit", f"must divide the head dimension D / heads = {space.head_dim}, got {rank_unit}")
    sources = chosen_sources(families, include, space, catalog, Shared(T))
    sizes = [source.family.size(space) for source in sources]
    total = sum(sizes) if not limit else min(sum(sizes), limit)
    if total > MAX_MEMBERS:
        counts = ", ".join(f"{s.family.name} {n:,}" for s, n in zip(sources, sizes) if n)
        raise OptionError(None, f"the space holds {sum(sizes):,} members ({counts}), more than {MAX_MEMBERS:,}: "
                          "lower --multi-levels or --max-levels, narrow --family, or pass --limit N to score the "
                          "first N")  # fmt: skip
    kept: dict[tuple, tuple | None] = {}  # one row per family of matrices at the same costs: the first found
    scored = within = unranked = 0
    truncated = False
    for number, source in enumerate(sources):
        for point, values in enumerate(source.family.grid(space)):
            if limit and scored >= limit:
                truncated = True
                break
            scored += 1
            if progress is not None and scored % PROGRESS_EVERY == 0:
                progress(scored, total)
            found = source.score(values)
            if found is None:
                continue
            costs, forms = found
            if flop_budget is not None and costs.flops * heads > flop_budget:
                continue
            if byte_budget is not None and costs.cache_bytes(T, heads, D) > byte_budget:
                continue
            within += 1
            key = (forms, costs.flops, costs.params)
            if key in kept:
                continue
            value = goal.value(costs, heads)
            if value is None:
                unranked += 1
                kept[key] = None
                continue
            kept[key] = Row.kept(goal.place(costs, value, len(kept)), number, point, costs, value)
    if progress is not None:
        progress(scored, total)
    rows = [row for row in kept.values() if row is not None]
    cloud = [(costs[FLOPS] * heads, value) for _, _, _, costs, value in rows]
    front_ids = pareto_front([(flops, goal.score(value)) for flops, value in cloud])
    listed = [rows[i] for i in front_ids] if pareto else rows
    shown = [Row.of(row) for row in (heapq.nsmallest(top, listed) if top else sorted(listed))]
    points = grid_points(sources, [(row.source, row.point) for row in shown])
    folder = None if ein_dir is None else Path(ein_dir)
    query = {"D": D, "T": T, "heads": heads, "budget": flop_budget, "cache_budget": byte_budget,
             "objective": objective, "objective_label": goal.label, "maximize": goal.maximize, "column": goal.column,
             "families": [s.family.name for s in sources], "top": top, "pareto": pareto, "limit": limit,
             "max_levels": max_levels, "multi_levels": multi_levels, "rank_unit": space.unit,
             "einsum_grid": einsum_grid}  # fmt: skip
    notes = [source.note for source in sources if source.note]
    if unranked:
        notes.append(f"{unranked:,} within budget not ranked: {objective} ranks the candidates that {goal.requires}")
    return SearchResult(
        query,
        tuple(candidate(row, sources[row.source], points[row.source, row.point], space, folder) for row in shown),
        scored,
        within,
        within - len(kept),
        unranked,
        time.perf_counter() - started,
        truncated,
        tuple(sorted(cloud[i] for i in front_ids)),
        tuple(cloud),
        tuple(notes),
    )


def candidate(row: Row, source: Source, values: dict, space: Space, folder: Path | None) -> Candidate:
    costs, H = row.costs, space.heads
    options = source.options(values)
    if folder is not None:
        file = str(folder / source.path.name)
    else:
        file = None if source.shipped else str(source.path)
    target = shlex.quote(file or source.path.stem)
    flags = " ".join(f"--{k} {option_text(v)}" for k, v in options.items())
    module = re.sub(r"\W", "_", source.path.stem) + "_attn.py"
    taxonomy = None
    rank = source.rank_bound(values)
    if costs.feature and space.D > 1 and costs.params and costs.per_token // 2 and rank:
        taxonomy = vars(taxonomy_of(space.D, costs.params, costs.per_token // 2, rank))
    return Candidate(
        structure=source.path.stem,
        family=source.family.name,
        options=options,
        summary=source.family.summarize(options),
        value=row.value,
        params=costs.params * H,
        flops=costs.flops * H,
        rank_bound=rank,
        rank_near=costs.near_rank,
        rank_far=costs.far_rank,
        covered=costs.covered,
        near_share=costs.near_share,
        decode_flops=costs.decode * H,
        cache_bytes=costs.cache_bytes(space.T, H, space.D),
        taxonomy=taxonomy,
        describe=f"einsearch describe {target} {flags} --heads {H}",
        generate=f"einsearch generate {target} {flags} --heads {H} -o {module}",
        source=str(source.path),
        file=file,
    )


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (FLOPs, score to maximise) that no other beats: none has no more
    FLOPs and no lower score with one of the two strictly better. Ties are all kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    i = 0
    while i < len(order):
        flops = points[order[i]][0]
        group = []
        while i < len(order) and points[order[i]][0] == flops:
            group.append(order[i])
            i += 1
        top = points[group[0]][1]
        if top > best:
            front += [j for j in group if points[j][1] == top]
            best = top
    return sorted(front)


def parse_amount(text: str | float | int, option: str) -> float:
    """``2e9``, ``2G``, ``1.5T``, ``64k``, ``64Ki`` -> a positive number (decimal prefixes, or binary with i)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGTP]i?)?\s*", str(text))
        if not match:
            raise OptionError(option, f"expected a number such as 2e9, 2G or 64k, got {text!r}")
        value = float(match.group(1))
        prefix = match.group(2) or ""
        if prefix:
            power = "kMGTP".index(prefix[0].replace("K", "k")) + 1
            value *= (1024 if prefix.endswith("i") else 1000) ** power
    if not math.isfinite(value) or value <= 0:
        raise OptionError(option, f"must be a positive number, got {text!r}")
    return value


def validate(D, T, heads, top, limit, max_levels, multi_levels, rank_unit, einsum_grid) -> None:
    """Options a search cannot run with, each an OptionError naming the option and its limit."""
    for name, value, low in (("D", D, 1), ("T", T, 1), ("heads", heads, 1), ("max-levels", max_levels, 1),
                             ("multi-levels", multi_levels, 1), ("einsum-grid", einsum_grid, 1)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise OptionError(name, f"must be a whole number >= {low}, got {value!r}")
    for name, value, low in (("top", top, 0), ("limit", limit, 1), ("rank-unit", rank_unit, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise OptionError(name, f"must be a whole number >= {low}, got {value!r}")
    if D > MAX_WIDTH:
        raise OptionError("D", f"search takes widths up to 2^20 = {MAX_WIDTH:,}, got {D:,}")
    if T > MAX_LENGTH:
        raise OptionError("T", f"search takes sequences up to 2^40 = {MAX_LENGTH:,} tokens, got {T:,}")
    if D % heads:
        raise OptionError("heads", f"must divide D (the head dimension is D / heads), got D = {D}, heads = {heads}")
    if einsum_grid > 8:
        raise OptionError("einsum-grid", f"at most 8 (steps of 1/8 give thousands of members), got {einsum_grid}")


def catalog_points(result: SearchResult) -> list[tuple[str, int, float]]:
    """Each shipped family's file at its default options, at the result's T and D: name, FLOPs (all
    heads) and objective value (for the figure); files whose defaults do not fit these sizes or that
    the objective gives no value are left out."""
    q = result.query
    space, goal = Space(q["D"], q["T"], q["heads"]), find_objective(q["objective"])
    shared = Shared(space.T)
    found = []
    for family in FAMILIES.values():
        try:
            instance = find(Path(family.file).stem).resolve({"T": space.T, "D": space.D})
        except EinsearchError:
            continue
        costs = planned(instance, shared.covered([level.pattern for level in instance.levels]))
        value = goal.value(costs, space.heads)
        if value is not None:
            found.append((instance.name, costs.flops * space.heads, value))
    return found
