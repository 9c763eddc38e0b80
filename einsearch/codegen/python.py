"""The structure language's expressions as Python source, with the names a generated module uses.

A generated module computes a structure's sizes in ``__init__`` from the options it is given, so
every size, ``let``, ``require``, band bound and scale of the ``.ein`` file is written out as a
Python expression over the module's own variables. ``/`` is the language's exact division: where
its result must be a size (an index size, a list length, a loop bound, a band bound) the
expression is wrapped in ``whole(...)``, which refuses a result that is not a whole number, as
the language does.
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass, field

from ..expr import Binary, Call, Expr, Item, ListLit, Name, Num, Unary, walk

# Names the generated module defines or uses at its top level, and the constructor's own
# arguments and locals: a structure name equal to one of them is renamed (a trailing ``_``).
MODULE_NAMES = frozenset(
    {"self", "x", "torch", "nn", "F", "math", "NamedTuple", "Pattern", "Level", "T", "D", "H",
     "d_model", "n_heads", "block_size", "dropout", "bias", "init", "pattern",
     "attention", "decode", "new_cache", "covers", "reach", "span", "partition",
     "sqrt_divisor", "log2", "whole", "divide", "block_length", "check_size", "check_list", "check_choice", "require"}
)  # fmt: skip
RESERVED = MODULE_NAMES | set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))

# Python's precedence, loosest first; ``**`` binds tighter than a sign on its left.
PRECEDENCE = {"or": 1, "and": 2, "not": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
              "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "neg": 7, "**": 8, "atom": 9}  # fmt: skip
FUNCTIONS = {"isqrt": "math.isqrt", "sqrt": "math.sqrt", "log2": "log2", "sqrt_divisor": "sqrt_divisor",
             "min": "min", "max": "max", "len": "len", "sum": "sum"}  # fmt: skip


@dataclass
class Names:
    """DSL names to Python identifiers: a name stays itself unless Python or the module already
    uses it, then it gains a trailing ``_`` (the rename is stated where the name is an option)."""

    fixed: dict[str, str] = field(default_factory=lambda: {"T": "T", "D": "D"})
    taken: set[str] = field(default_factory=lambda: set(RESERVED))

    def __getitem__(self, name: str) -> str:
        if name not in self.fixed:
            safe = name
            while safe in self.taken:
                safe += "_"
            self.taken.add(safe)
            self.fixed[name] = safe
        return self.fixed[name]

    def renamed(self) -> dict[str, str]:
        """The DSL names that gained a ``_`` (not an index read as its size's symbol)."""
        return {k: v for k, v in self.fixed.items() if k != v and v.rstrip("_") == k}


def python(expr: Expr, names: Names) -> str:
    """``expr`` as Python source (the language's ``^`` is ``**``, lists count from 1)."""
    return _source(expr, names)[0]


def size_source(expr: Expr, names: Names, what: str) -> str:
    """``expr`` as Python source that must be a whole number: wrapped in ``whole`` when it divides
    or takes a square root, which may leave a fraction."""
    text = python(expr, names)
    if any(isinstance(node, Binary) and node.op == "/" or isinstance(node, Call) and node.func == "sqrt"
           for node, _ in walk(expr)):  # fmt: skip
        return f'whole({text}, "{what}")'
    return text


def _source(expr: Expr, names: Names) -> tuple[str, int]:
    """The source and its precedence level (to bracket it where its context binds tighter)."""
    if isinstance(expr, Num):
        return str(expr.value), PRECEDENCE["atom"]
    if isinstance(expr, Name):
        return names[expr.name], PRECEDENCE["atom"]
    if isinstance(expr, Item):
        index = expr.index
        position = str(index.value - 1) if isinstance(index, Num) else f"{_at(index, names, 5)} - 1"
        return f"{names[expr.name]}[{position}]", PRECEDENCE["atom"]
    if isinstance(expr, ListLit):
        return "[" + ", ".join(python(item, names) for item in expr.items) + "]", PRECEDENCE["atom"]
    if isinstance(expr, Call):
        return f"{FUNCTIONS[expr.func]}({', '.join(python(a, names) for a in expr.args)})", PRECEDENCE["atom"]
    if isinstance(expr, Unary):
        if expr.op == "not":
            return f"not {_at(expr.operand, names, PRECEDENCE['not'])}", PRECEDENCE["not"]
        return f"-{_at(expr.operand, names, PRECEDENCE['neg'])}", PRECEDENCE["neg"]
    op = "**" if expr.op == "^" else expr.op
    level = PRECEDENCE[op]
    if op == "**":  # right-associative
        return f"{_at(expr.left, names, level + 1)} ** {_at(expr.right, names, PRECEDENCE['neg'])}", level
    if level == PRECEDENCE["=="]:  # the language does not chain comparisons: bracket a nested one
        return f"{_at(expr.left, names, level + 1)} {op} {_at(expr.right, names, level + 1)}", level
    return f"{_at(expr.left, names, level)} {op} {_at(expr.right, names, level + 1)}", level


def _at(expr: Expr, names: Names, context: int) -> str:
    """``expr`` bracketed when it binds more loosely than ``context`` requires."""
    text, level = _source(expr, names)
    return f"({text})" if level < context else text
