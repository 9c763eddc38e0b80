"""Statements laid out as ruff's formatter lays them out, so generated files need no formatter.

Generated code follows ruff's defaults (88 columns). The statements the generator writes from
a structure are assignments and calls whose length depends on the structure's names and
expressions; ``lines`` splits one that is too long the way the formatter does: the arguments of
its last bracket pair on one indented line, else one argument per line with a trailing comma.
"""

from __future__ import annotations

LINE = 88
INDENT = "    "
OPENING = {")": "(", "]": "[", "}": "{"}


def lines(indent: str, code: str, comment: str = "") -> list[str]:
    """``code`` at ``indent``, with ``comment`` after it when all fits, above it otherwise."""
    if comment and len(indent + code + "  # " + comment) <= LINE:
        return [f"{indent}{code}  # {comment}"]
    above = [f"{indent}# {comment}"] if comment else []
    return above + _split(indent, code)


def _split(indent: str, code: str) -> list[str]:
    if code.endswith(":") and len(indent + code) > LINE:  # a compound statement's header
        *lines, last = _split(indent, code[:-1])
        return [*lines, last + ":"]
    if len(indent + code) <= LINE or code[-1:] not in OPENING:
        return [indent + code]
    start = _opening(code)
    head, body, tail = code[: start + 1], code[start + 1 : -1], code[-1]
    inner = indent + INDENT
    items = _top_level(body, ",")
    if len(inner + body) <= LINE:
        return [indent + head, inner + body, indent + tail]
    if len(items) == 1:
        return [indent + head, *_split(inner, body), indent + tail]
    split = [line for item in items for line in _split(inner, item + ",")]
    return [indent + head, *split, indent + tail]


def _opening(code: str) -> int:
    """The position of the bracket that the last character of ``code`` closes."""
    depth = 0
    quote = ""
    for i in range(len(code) - 1, -1, -1):
        char = code[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in OPENING:
            depth += 1
        elif char in OPENING.values():
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced brackets in {code!r}")


def _top_level(text: str, separator: str) -> list[str]:
    """``text`` split at the ``separator``s outside brackets and strings."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]
