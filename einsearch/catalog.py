"""Finds structures: a catalog name (``btt``) or a path to a user's ``.ein`` file."""

from __future__ import annotations

from pathlib import Path

from .errors import DSLError
from .structure import Structure, load

SUFFIX = ".ein"


def catalog_dir() -> Path:
    """The catalog shipped inside the wheel, or the repository's top-level one in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "catalog", here.parent / "catalog"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the einsearch catalog is missing from this installation")


def names() -> list[str]:
    return sorted(p.stem for p in catalog_dir().glob(f"*{SUFFIX}"))


def find(name_or_path: str) -> Structure:
    """Loads a catalog structure by name, or any ``.ein`` file by path."""
    path = Path(name_or_path)
    if path.suffix == SUFFIX or path.exists():
        if not path.is_file():
            raise DSLError("no such file", source=name_or_path)
        return load(path)
    candidate = catalog_dir() / f"{name_or_path}{SUFFIX}"
    if not candidate.is_file():
        raise DSLError(f"no catalog structure of this name (catalog: {', '.join(names())}; or give a path "
                       f"to a {SUFFIX} file)", source=name_or_path)  # fmt: skip
    return load(candidate)
