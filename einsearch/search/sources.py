"""How a search scores the members of one family: its file resolved once (``Template``), each
level's counts kept in a table by key, a member's numbers added up from its levels' (``combine``).

``Source`` is a family and the file it is searched over; ``Shared`` holds what the families of one
search share (ids of level forms and patterns, the share of causal pairs a set of patterns scores).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..analyze.rank import rank_bound as analyze_rank_bound
from ..catalog import catalog_dir, find
from ..errors import DSLError, OptionError
from ..planner import memo
from ..sequence import SequencePattern, causal_pairs
from ..structure import Structure, load
from .costs import Costs, LevelCost, combine, level_cost, planned, rank_bound
from .families import FAMILIES, Family, Space, find_family
from .template import Invalid, Template

USER_GRID_LIMIT = 2048  # the most option combinations tried for one --include file
INVALID = ("no level",)  # the table's entry for a key whose level does not resolve


class Shared:
    """What the families of one search share: ids of level forms (duplicates are told by them) and
    of sequence patterns, and the share of causal pairs each set of patterns scores."""

    def __init__(self, T: int) -> None:
        self.T = T
        self.forms: dict[tuple, int] = {}
        self.patterns: dict[SequencePattern, int] = {}
        self.shares: dict[tuple, float] = {}

    def form(self, form: tuple) -> int:
        return self.forms.setdefault(form, len(self.forms))

    def pattern(self, pattern: SequencePattern) -> int:
        return self.patterns.setdefault(pattern, len(self.patterns))

    def covered(self, patterns: Sequence[SequencePattern]) -> float:
        """The share of the causal pairs that some of ``patterns`` scores (NaN: too many cells to count)."""
        ids = tuple(sorted({self.pattern(p) for p in patterns}))
        share = self.shares.get(ids)
        if share is None:
            count = causal_pairs(patterns, self.T)
            share = self.shares[ids] = math.nan if count is None else count / (self.T * (self.T + 1) // 2)
        return share

    def covered_ids(self, ids: tuple[int, ...], costs: Sequence[LevelCost]) -> float:
        """``covered`` of the levels' patterns, already given ids (``ids``: sorted, each once)."""
        share = self.shares.get(ids)
        if share is None:
            share = self.covered([c.rank.pattern for c in costs])
        return share


class Source:
    """A family and the file it is searched over, at one search's sizes (``shipped``: the file is
    the installed catalog's, which describe finds by name; ``note``: what the report should say)."""

    def __init__(self, family: Family, path: Path, shipped: bool, space: Space, shared: Shared,
                 note: str | None = None) -> None:  # fmt: skip
        self.family, self.path, self.shipped, self.note = family, path, shipped, note
        self.space, self.shared = space, shared
        self.structure: Structure = load(path) if not shipped else find(path.stem)
        self.template: Template | None = None  # resolved at the first point that resolves
        self.levels: dict[tuple, tuple] = {}  # a level's key -> (counts, form id, pattern id), or INVALID

    def resolved(self, values: dict) -> bool:
        """Whether the file is resolved: at these values, when it was not yet and they resolve."""
        if self.template is None:
            try:
                self.template = Template(self.structure, self.options(values), self.family.options)
            except DSLError:
                return False
            except OptionError as err:
                if err.option in ("T", "D") or err.option in self.family.options:
                    return False  # these values do not fit; another point may
                raise
        return True

    def score(self, values: dict) -> tuple[Costs, tuple[int, ...]] | None:
        """A member's numbers and its levels' forms; None when the options give no structure."""
        if self.template is None and not self.resolved(values):
            return None
        found = self.template.keys(values)
        if found is None:
            return None
        env, keys = found
        get = self.levels.get
        levels = [get(key) for key in keys]
        if None in levels:
            levels = self._levels(env, keys, levels)
        if INVALID in levels:
            return None
        costs, forms, patterns = zip(*levels)
        covered = self.shared.covered_ids(tuple(sorted(set(patterns))), costs)
        if not self.template.shares_factors:
            return combine(costs, self.space.T, self.space.D, covered), tuple(sorted(forms))
        return planned(self.template.instance(values), covered), tuple(sorted(forms))

    def rank_bound(self, values: dict) -> int:
        """describe's rank bound of a member (``costs.rank_bound``; from the whole instance when
        its levels share a factor)."""
        if not self.resolved(values):
            raise ValueError(f"{self.path} does not resolve at {values}")
        if self.template.shares_factors:
            return analyze_rank_bound(self.template.instance(values))
        env, keys = self.template.keys(values)
        levels = self._levels(env, keys, [self.levels.get(key) for key in keys])
        return rank_bound([cost for cost, _, _ in levels], self.space.T, self.space.D)

    def _levels(self, env: dict, keys: list[tuple], found: list) -> list[tuple]:
        """``found`` (the table's entries for ``keys``) with those missing built."""
        for n, entry in enumerate(found):
            if entry is None:
                found[n] = self.levels[keys[n]] = self._level(env, keys[n])
        return found

    def _level(self, env: dict, key: tuple) -> tuple:
        """(the level's counts, its form's id, its pattern's id), INVALID when it does not resolve
        (kept in the planner's cache: the key names the level within this file and option set)."""
        T = self.space.T

        def counts() -> LevelCost | None:
            try:
                return level_cost(self.template.build(env, key), T)
            except Invalid:
                return None

        cost = memo(("search level", self.structure.text, self.family.options, T, self.space.D, key), counts)
        return INVALID if cost is None else (cost, self.shared.form(cost.form), self.shared.pattern(cost.rank.pattern))

    def options(self, values: dict) -> dict:
        return {"T": self.space.T, "D": self.space.D, **values}


def grid_points(sources: Sequence[Source], places: Iterable[tuple[int, int]]) -> dict[tuple[int, int], dict]:
    """The options at each (source, point) of ``places``, found again in its family's grid."""
    wanted: dict[int, set[int]] = {}
    for source, point in places:
        wanted.setdefault(source, set()).add(point)
    found = {}
    for number, points in wanted.items():
        source = sources[number]
        for point, values in enumerate(itertools.islice(source.family.grid(source.space), max(points) + 1)):
            if point in points:
                found[number, point] = values
    return found


def chosen_sources(names: Iterable[str] | None, include: Sequence[str | Path], space: Space,
                   folder: str | Path | None, shared: Shared) -> list[Source]:  # fmt: skip
    """The families asked for (all by default), in the order duplicates are resolved, then one per
    included file (always searched: naming it in ``names`` too is allowed)."""
    wanted = list(FAMILIES) if names is None else [n.strip() for n in names if n.strip()]
    files = {key for path in include for key in (str(path), Path(path).stem)}
    for name in wanted:
        if name not in files:
            find_family(name)
    root = catalog_dir() if folder is None else Path(folder)
    if not root.is_dir():
        raise OptionError("catalog", f"{root} is not a directory")
    chosen = [Source(f, root / f.file, folder is None, space, shared) for f in FAMILIES.values() if f.name in wanted]
    for path in map(Path, include):
        family, size = user_family(path, space)
        note = f"{path}: only the first {USER_GRID_LIMIT} option combinations were tried" if size > family.size(
            space) else None  # fmt: skip
        chosen.append(Source(family, path, False, space, shared, note))
    return chosen


def user_family(path: Path, space: Space) -> tuple[Family, int]:
    """A user's .ein file over a small grid around each declared option: every choice; whole numbers
    at their default x 1/4, 1/2, 1, 2, 4; lists at their default (its first ``USER_GRID_LIMIT``
    points), and the grid's full size."""
    structure = load(path)
    base = structure.resolve({"T": space.T, "D": space.D})
    axes = []
    for decl in structure.options:
        if decl.name in ("T", "D"):
            continue
        value = base.values[decl.name]
        if decl.kind == "choice":
            axes.append([(decl.name, c) for c in decl.choices])
        elif isinstance(value, list):
            axes.append([(decl.name, value)])
        else:
            low = 1 if decl.kind == "size" else 0
            grid = sorted({v for v in (value // 4, value // 2, value, value * 2, value * 4) if v >= low} | {value})
            axes.append([(decl.name, v) for v in grid])
    names = tuple(name for name, _ in (axis[0] for axis in axes))
    size = math.prod(len(axis) for axis in axes)
    points = lambda space: (dict(p) for p in itertools.islice(itertools.product(*axes), USER_GRID_LIMIT))  # noqa: E731
    return Family(path.stem, str(path), names, points, count=lambda space: min(size, USER_GRID_LIMIT)), size
