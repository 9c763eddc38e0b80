"""Output paths of the experiments: checked before any work, written whole at the end.

A stand-in until the package has one outputs module for every command: the same rules (a target is
checked before the work starts, nothing is overwritten without ``--force``, a write goes through a
temporary file in the same folder and gets the mode a plain ``open`` would give).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import EinsearchError


class OutputError(EinsearchError):
    """An output path that cannot be written, or that would overwrite a file without --force."""


def check_file(path: Path, force: bool, option: str) -> None:
    """A file the run will write: not a directory, not there already unless ``force``, in an
    existing folder where a file can be created (tried, not guessed from permission bits)."""
    if str(path) == "":
        raise OutputError(f"{option}: an empty path")
    if path.is_dir():
        raise OutputError(f"{option}: {path} is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise OutputError(f"{option}: {path.parent} is not a directory")
    probe(path.parent, option)


def check_folder(path: Path, force: bool, option: str, files: tuple[str, ...]) -> None:
    """A folder the run will create if needed and write ``files`` into: not a file, under a
    writable folder, holding none of ``files`` unless ``force``."""
    if str(path) == "":
        raise OutputError(f"{option}: an empty path")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option}: {path} is not a directory")
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if not nearest.is_dir():
        raise OutputError(f"{option}: {nearest} is not a directory")
    probe(nearest, option)
    for name in files:
        if (path / name).exists() and not force:
            raise OutputError(f"{path / name} exists; pass --force to overwrite it")


def probe(folder: Path, option: str) -> None:
    """Create and remove a temporary file in ``folder``: the one sure test that it takes files."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{option}: cannot write in {folder}: {err.strerror or err}") from None


def write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` (its folders created) through a temporary file renamed into
    place, so a failed write leaves nothing behind; the mode is what ``open`` gives under the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
        os.chmod(temporary, 0o666 & ~umask())
        os.replace(temporary, path)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {err.strerror or err}") from None


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
