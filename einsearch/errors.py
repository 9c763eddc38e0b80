"""The errors users see. Each one is a single line that says what is wrong and where.

``EinsearchError`` is the root: the command line prints any of them as ``einsearch: error: ...``
and exits with status 2, and a library caller can catch them all with one ``except``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in a source file."""

    line: int
    col: int


class EinsearchError(Exception):
    """Anything wrong with what the user gave (a file, a name, an option); never a bug of ours."""


class DSLError(EinsearchError):
    """A problem in a structure file: its text, or a value it derives from its defaults.

    Rendered as ``file:line:col: message``, the form compilers use, so editors can jump to it
    (or ``file: message`` when no position applies, e.g. a file that cannot be read).
    """

    def __init__(self, message: str, pos: Pos | None = None, source: str = "<input>"):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.source = source

    def located(self, source: str) -> DSLError:
        """The same error, naming ``source`` as its file."""
        return DSLError(self.message, self.pos, source)

    def __str__(self) -> str:
        where = f"{self.source}:{self.pos.line}:{self.pos.col}" if self.pos else self.source
        return f"{where}: {self.message}"


class OptionError(EinsearchError):
    """A bad option value (``--ranks a,b``), named as the user wrote it rather than by a position in
    a file they may never have opened (a catalog file).

    Rendered ``--NAME: message``; a message that already names ``--NAME`` is shown as it is, and
    ``option`` is None for a stray argument that is no option at all.
    """

    def __init__(self, option: str | None, message: str):
        super().__init__(message)
        self.option = None if option is None else str(option)
        self.message = message

    def __str__(self) -> str:
        if self.option is None or re.search(rf"--{re.escape(self.option)}(?![\w-])", self.message):
            return self.message
        return f"--{self.option}: {self.message}"


class NotFoundError(EinsearchError):
    """A catalog name or path that leads to no structure file (missing, a directory, a FIFO, ...).

    Rendered ``name: message``, naming what the user typed.
    """

    def __init__(self, source: str, message: str):
        super().__init__(message)
        self.source = source
        self.message = message

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


class OutputError(EinsearchError):
    """An output that cannot be written: a path refused before the work starts, or a write that
    failed (a full device, a folder that vanished). Rendered ``OPTION PATH: message`` (``PATH:
    message`` without an option), naming the path as the user typed it.
    """

    def __init__(self, path: str, message: str, option: str | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.option = option

    def __str__(self) -> str:
        return f"{self.option + ' ' if self.option else ''}{self.path}: {self.message}"


def reason(err: OSError) -> str:
    """``permission denied``: an OSError's reason, in the lower case of the rest of a message."""
    if isinstance(err, PermissionError):
        return "permission denied"
    return (err.strerror or type(err).__name__).lower()
