"""Where results go: output paths checked before the work, files written whole, standard output.

A command checks every output it will write before it starts (``file_target``,
``directory_target``), so a bad path costs nothing, and writes through the returned target once
the work has succeeded: into a temporary file beside the target, then renamed over it, so a write
that fails (a full device, a folder that vanished) leaves nothing behind. A new file gets the mode
a plain ``open`` gives under the current umask; a file replaced with ``--force`` keeps its own.
``echo`` is the one writer of results to standard output. Every failure is an ``OutputError``.
Used so:

    target = file_target(args.output, force=args.force, option="-o")   # before the work
    ...
    target.write(source)                                                 # after it
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError, reason

STDOUT = "standard output"


@dataclass(frozen=True)
class FileTarget:
    """A checked output file: ``write`` puts the whole of it in place, or nothing."""

    path: Path
    force: bool
    option: str | None = None

    def write(self, data: str | bytes) -> None:
        """Writes ``data`` (text as UTF-8) through a temporary file renamed over the target."""
        payload = data.encode() if isinstance(data, str) else data
        real = Path(os.path.realpath(self.path))  # through a symbolic link, as open() would write
        if not self.force and os.path.lexists(real):
            raise self.error("exists; pass --force to overwrite it")  # it appeared while we worked
        mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else 0o666 & ~current_umask()
        import tempfile  # here, not at the top: most commands write no file

        try:
            handle, temporary = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        except OSError as err:
            raise self.error(f"cannot write: {reason(err)}") from None
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(payload)
            os.chmod(temporary, mode)
            os.replace(temporary, real)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise self.error(f"cannot write: {reason(err)}") from None

    def error(self, message: str) -> OutputError:
        return OutputError(str(self.path), message, self.option)


@dataclass(frozen=True)
class DirectoryTarget:
    """A checked output folder (it may not exist yet): ``file`` names a target inside it."""

    path: Path
    option: str | None = None

    def file(self, name: str, force: bool) -> FileTarget:
        """The target ``name`` inside the folder, which is made (with its parents) if missing."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(str(self.path), f"cannot make the folder: {reason(err)}", self.option) from None
        return file_target(self.path / name, force=force, option=self.option)


def file_target(path: str | Path, *, force: bool, option: str | None = None) -> FileTarget:
    """``path`` as an output file, checked now: a name, not a folder or a device, in a folder we
    can write in, and not an existing file unless ``force``. OutputError says what is wrong."""
    shown = str(path)
    if not shown:
        raise OutputError("''", "an empty path names no file", option)
    path = Path(path)
    if path.is_dir():
        raise OutputError(shown, "is a directory", option)
    if os.path.lexists(path):
        if path.exists() and not path.is_file():
            raise OutputError(shown, "is not a regular file (a device, FIFO or socket)", option)
        if not force:
            raise OutputError(shown, "exists; pass --force to overwrite it", option)
    folder = Path(os.path.realpath(path)).parent
    if not folder.exists():
        raise OutputError(shown, f"the folder {folder} does not exist", option)
    if not folder.is_dir():
        raise OutputError(shown, f"{folder} is not a directory", option)
    _check_writable(folder, shown, option)
    return FileTarget(path, force, option)


def directory_target(path: str | Path, *, option: str | None = None) -> DirectoryTarget:
    """``path`` as an output folder, checked now: a folder we can write in, or one we can make
    (its nearest existing parent a folder we can write in)."""
    shown = str(path)
    if not shown:
        raise OutputError("''", "an empty path names no folder", option)
    path = Path(path)
    existing = next(p for p in (path, *path.absolute().parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise OutputError(shown, "is not a directory" if existing == path else f"{existing} is not a directory", option)
    _check_writable(existing, shown, option)
    return DirectoryTarget(path, option)


def _check_writable(folder: Path, shown: str, option: str | None) -> None:
    """Makes and removes a file in ``folder``: the one test that also holds for root, read-only
    mounts and pseudo file systems."""
    import tempfile

    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".einsearch-", suffix=".tmp")
    except OSError as err:
        raise OutputError(shown, f"cannot write in {folder}: {reason(err)}", option) from None
    os.close(handle)
    os.unlink(probe)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def echo(text: str, nl: bool = True) -> None:
    """Prints a result on standard output. A write that fails (a full device) is an OutputError; a
    reader that went away (a closed pipe) is left to click, which exits quietly."""
    import click

    try:
        click.echo(text, nl=nl)
    except OSError as err:
        if err.errno == errno.EPIPE:
            raise
        raise OutputError(STDOUT, f"cannot write: {reason(err)}") from None
