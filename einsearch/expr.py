"""Integer expressions of the DSL: evaluated exactly, and turned into sympy for formulas.

Values are ints (or Fractions, for scales), lists of ints, and the names of choices. ``/`` is
exact: a result that is not whole stays a Fraction, and the caller that needs a size says so.
Lists are indexed from 1, like the levels they describe.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .errors import DSLError, Pos
from .runtime.sizes import log2, sqrt_divisor

Value = int | Fraction | float | list | str


@dataclass(frozen=True)
class Num:
    value: int
    pos: Pos


@dataclass(frozen=True)
class Name:
    name: str
    pos: Pos


@dataclass(frozen=True)
class Item:
    """``name[index]``: one entry of a list parameter (1-based)."""

    name: str
    index: Expr
    pos: Pos


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Expr
    pos: Pos


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class ListLit:
    items: tuple
    pos: Pos


Expr = Num | Name | Item | Unary | Binary | Call | ListLit


def children(expr: Expr) -> tuple[Expr, ...]:
    """The expressions directly inside ``expr``, left to right."""
    if isinstance(expr, Item):
        return (expr.index,)
    if isinstance(expr, Unary):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, ListLit):
        return expr.items
    return ()


def walk(expr: Expr) -> Iterator[tuple[Expr, int]]:
    """Every node of ``expr`` with its depth (1 at the root), left to right, without recursion:
    an expression may be deeper than Python's stack allows."""
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in reversed(children(node)))


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": lambda a, b: Fraction(a) / Fraction(b),
    "//": operator.floordiv,
    "%": operator.mod,
    "^": operator.pow,
}
COMPARISON: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
LOGIC = {"and", "or"}
MAX_BITS = 8192  # a number larger than this many bits is an error (no size or count is that large)
MAX_POWER_BITS = 1 << 16  # a power that would grow past this many bits is refused before it is tried


FUNCTIONS: dict[str, Callable[..., Value]] = {
    "isqrt": math.isqrt,
    "log2": log2,
    "min": min,
    "max": max,
    "len": len,
    "sum": sum,
    "sqrt_divisor": sqrt_divisor,
    "sqrt": math.sqrt,  # for scales; a size must stay a whole number
}


def names_in(expr: Expr) -> set[str]:
    """Every symbol name an expression reads (list names included)."""
    return {node.name for node, _ in walk(expr) if isinstance(node, (Name, Item))}


def evaluate(expr: Expr, env: dict[str, Value]) -> Value:
    """The exact value of ``expr`` with symbols from ``env``; DSLError on any failure."""
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Name):
        if expr.name not in env:
            raise DSLError(f"unknown name {expr.name!r}", expr.pos)
        return env[expr.name]
    if isinstance(expr, Item):
        seq = evaluate(Name(expr.name, expr.pos), env)
        i = evaluate(expr.index, env)
        if not isinstance(seq, list):
            raise DSLError(f"{expr.name} is not a list, it cannot be indexed", expr.pos)
        if not isinstance(i, int) or not 1 <= i <= len(seq):
            raise DSLError(f"{expr.name}[{i}] is out of range: lists count from 1 to {len(seq)}", expr.pos)
        return seq[i - 1]
    if isinstance(expr, ListLit):
        return [_number(evaluate(item, env), item.pos) for item in expr.items]
    if isinstance(expr, Unary):
        value = evaluate(expr.operand, env)
        return not value if expr.op == "not" else -_number(value, expr.pos)
    if isinstance(expr, Binary):
        return _binary(expr, env)
    if isinstance(expr, Call):
        args = [evaluate(a, env) for a in expr.args]
        try:
            return _whole(FUNCTIONS[expr.func](*args))
        except (ValueError, TypeError, StopIteration, ArithmeticError) as err:
            raise DSLError(f"{expr.func}(...) failed: {err}", expr.pos) from None
    raise TypeError(f"not an expression: {expr!r}")


def _binary(expr: Binary, env: dict[str, Value]) -> Value:
    left = evaluate(expr.left, env)
    if expr.op in LOGIC:  # short-circuit, like Python
        if (expr.op == "and") != bool(left):
            return bool(left)
        return bool(evaluate(expr.right, env))
    right = evaluate(expr.right, env)
    if expr.op in COMPARISON:
        try:
            return COMPARISON[expr.op](left, right)
        except TypeError:
            raise DSLError(f"cannot compare {left!r} {expr.op} {right!r}", expr.pos) from None
    a, b = _number(left, expr.left.pos), _number(right, expr.right.pos)
    if expr.op in ("/", "//", "%") and b == 0:
        raise DSLError("division by zero", expr.pos)
    if expr.op == "^" and (b < 0 or not isinstance(b, int)):
        raise DSLError(f"exponent must be a whole number >= 0, got {b}", expr.pos)
    if expr.op == "^" and (b > 4096 or _bits(a) * b > MAX_POWER_BITS):
        raise DSLError(f"exponent {b} is too large here", expr.pos)
    try:
        result = _whole(ARITHMETIC[expr.op](a, b))
    except ArithmeticError as err:  # a float out of range, as in sqrt(2) ^ 4000
        raise DSLError(f"{expr.op} failed: {err}", expr.pos) from None
    if _bits(result) > MAX_BITS:
        raise DSLError(f"this number has more than {MAX_BITS} bits", expr.pos)
    return result


def _bits(value: int | Fraction | float) -> int:
    """How many bits ``value`` takes (the larger part of a fraction; 0 for a float): what a power
    of it grows by per unit of exponent, and what a result may hold at most."""
    if isinstance(value, Fraction):
        return max(value.numerator.bit_length(), value.denominator.bit_length())
    return value.bit_length() if isinstance(value, int) else 0


def _number(value: Value, pos: Pos) -> int | Fraction | float:
    if isinstance(value, bool) or not isinstance(value, (int, Fraction, float)):
        raise DSLError(f"expected a number, got {value!r}", pos)
    return value


def _whole(value: Any) -> Any:
    """Fractions that are whole become ints, so sizes stay ints."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return int(value)
    return value


def to_sympy(expr: Expr, env: dict[str, Any]) -> Any:
    """The sympy form of ``expr``; ``env`` maps names to sympy objects (IndexedBase for lists)."""
    import sympy

    if isinstance(expr, Num):
        return sympy.Integer(expr.value)
    if isinstance(expr, Name):
        return env[expr.name]
    if isinstance(expr, Item):
        return env[expr.name][to_sympy(expr.index, env)]
    if isinstance(expr, Unary):
        return -to_sympy(expr.operand, env)
    if isinstance(expr, Binary):
        a, b = to_sympy(expr.left, env), to_sympy(expr.right, env)
        return {
            "+": lambda: a + b,
            "-": lambda: a - b,
            "*": lambda: a * b,
            "/": lambda: a / b,
            "//": lambda: sympy.floor(a / b),
            "%": lambda: sympy.Mod(a, b),
            "^": lambda: a**b,
        }[expr.op]()
    if isinstance(expr, Call):
        args = [to_sympy(a, env) for a in expr.args]
        known = {"min": sympy.Min, "max": sympy.Max, "sqrt": sympy.sqrt, "log2": lambda n: sympy.log(n, 2)}
        func = known.get(expr.func) or sympy.Function(expr.func)
        return func(*args)
    raise TypeError(f"no sympy form for {expr!r}")
