"""Finds structures: a catalog name (``btt``) or a path to a user's ``.ein`` file."""

from __future__ import annotations

import os
from difflib import get_close_matches
from pathlib import Path

from .errors import NotFoundError
from .structure import Structure, load

SUFFIX = ".ein"


def shipped_dir(name: str) -> Path:
    """A data folder (``catalog``, ``templates``) shipped inside the wheel, or the repository's
    top-level one in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the einsearch {name} folder is missing from this installation")


def catalog_dir() -> Path:
    return shipped_dir("catalog")


def names() -> list[str]:
    return sorted(p.stem for p in catalog_dir().glob(f"*{SUFFIX}"))


def search_dir() -> Path:
    """``catalog/search``: the general families ``einsearch search`` enumerates (``multi``,
    ``einsum``, ...), found by name like the catalog's own structures."""
    return catalog_dir() / "search"


def search_names() -> list[str]:
    return sorted(p.stem for p in search_dir().glob(f"*{SUFFIX}"))


def find(name_or_path: str) -> Structure:
    """Loads a catalog structure (or search family) by name, or any ``.ein`` file by path.

    A name with the ``.ein`` suffix or a path separator, or that exists, is a path; anything
    else a catalog name. NotFoundError when it leads to no structure file (naming the catalog
    structures closest to a mistyped name); DSLError when the file cannot be read or parsed.
    """
    if not name_or_path:
        raise NotFoundError("''", f"give a catalog name (see `einsearch list`) or a path to a {SUFFIX} file")
    path = Path(name_or_path)
    separators = {"/", os.sep, os.altsep} - {None}
    if path.suffix == SUFFIX or any(s in name_or_path for s in separators) or os.path.lexists(name_or_path):
        try:
            return load(path)
        except NotFoundError as err:
            if err.message == "no such file" and str(path) == path.name and path.stem in names():
                raise NotFoundError(name_or_path, f"no such file (for the catalog structure, write just "
                                    f"{path.stem})") from None  # fmt: skip
            raise
    candidate = catalog_dir() / f"{name_or_path}{SUFFIX}"
    if not candidate.is_file():
        candidate = search_dir() / f"{name_or_path}{SUFFIX}"
    if not candidate.is_file():
        lowered = name_or_path.lower()
        close = [n for n in names() if n == lowered] or get_close_matches(lowered, names(), 3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise NotFoundError(name_or_path, f"no catalog structure of this name{hint} (catalog: {', '.join(names())}; "
                            f"or give a path to a {SUFFIX} file)")  # fmt: skip
    return load(candidate)
