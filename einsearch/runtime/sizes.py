"""A structure's sizes at construction: the DSL's functions, and checks of options.

The structure language evaluates sizes with these functions (``einsearch.expr``
imports them), and a generated module's ``__init__`` calls them with the options it
is given, so a module built with options O has the factors and patterns that
``einsearch generate`` with O would write. Every failed check is a ValueError that
names the option and gives the structure's reason. Standard library only: generated
modules carry this file.
"""

import math

MAX_FACTORED = 10**12  # sqrt_divisor searches up to sqrt(n) candidates


def sqrt_divisor(n: int, mode: str = "balanced") -> int:
    """The smaller factor ``a`` of a two-way split ``n = a * b`` near the square root.

    ``balanced``: the largest divisor of n not above sqrt(n) (256 -> 16, 96 -> 8).
    ``research``: n / b with b the smallest divisor strictly above sqrt(n) (256 -> 8,
    144 -> 9), the rule of the paper's code: the largest divisor a with a * a < n.
    Both search down from sqrt(n), so n is limited to what that search does quickly.
    """
    if mode not in ("balanced", "research"):
        raise ValueError(f"unknown split mode {mode!r} (balanced or research)")
    if n > MAX_FACTORED:
        raise ValueError(f"{n} is too large to split (at most {MAX_FACTORED})")
    if n < 1:
        raise ValueError(f"{n} has no split")
    root = math.isqrt(n)
    if mode == "research" and root * root == n and n > 1:
        root -= 1  # b must be strictly above sqrt(n)
    return next(d for d in range(root, 0, -1) if n % d == 0)


def log2(n: int) -> int:
    """The exact base-2 logarithm of a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"log2({n}) is not a whole number")
    return n.bit_length() - 1


def whole(value, what: str) -> int:
    """``value`` as an int if it is a whole number (a size, a count), else an error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != int(value)
    ):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def divide(total: int, part: int, what: str) -> int:
    """``total / part`` when ``part`` divides ``total``: the one size left in a group
    such as ``(g t)`` of a T-token axis; else a ValueError stating the rule."""
    if part < 1 or total % part:
        raise ValueError(f"{what}: {total} is not a multiple of {part}")
    return total // part


def block_length(total: int, blocks: int, what: str) -> int | None:
    """The length of each of ``blocks`` equal blocks of a ``total``-token sequence, or
    None for one block: a level of one block is global, and stays so past ``total``
    tokens."""
    return None if blocks == 1 else divide(total, blocks, what)


def check_size(value, name: str) -> int:
    """A ``size`` option: a positive whole number."""
    if whole(value, name) < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def check_list(value, name: str, length: int) -> list:
    """A list option of ``length`` whole numbers (one number stands for every entry)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * length
    if len(values) != length:
        raise ValueError(f"{name} needs {length} values, got {len(values)}: {value!r}")
    return [whole(v, f"each value of {name}") for v in values]


def check_choice(value: str, name: str, choices: tuple) -> str:
    """A ``choice`` option: one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def require(holds: bool, message: str) -> None:
    """A ``require`` of the structure: a ValueError with its reason if it fails."""
    if not holds:
        raise ValueError(message)
