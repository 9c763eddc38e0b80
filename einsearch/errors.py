"""The one error type users see: a message tied to a place in a structure file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in a source file."""

    line: int
    col: int


class DSLError(Exception):
    """A problem in a structure file (or in the options given for it).

    Rendered as ``file:line:col: message``, the form compilers use, so editors can jump to it.
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
