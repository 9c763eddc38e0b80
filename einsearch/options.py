"""Structure options as typed after the structure's name: ``--D 256 --ranks 32,8`` -> values.

Only the form is checked here (``--NAME VALUE``, each name once); whether a structure has the
option and whether the value fits it is for ``Structure.resolve``, which knows the file.
"""

from __future__ import annotations

import re

from .errors import OptionError
from .expr import Value

INTEGER = re.compile(r"-?[0-9]+")
MAX_DIGITS = 1000  # as in the language: a longer number is a mistake (and int() refuses past 4300)
FORM = "structure options are written --NAME VALUE or --NAME=VALUE"


def parse_value(text: str, option: str | None = None) -> Value:
    """``8`` -> 8, ``32,8,6`` -> [32, 8, 6]; anything else stays a string (a choice word, or a
    mistake that the structure reports with what it expected)."""
    parts = [p.strip() for p in text.split(",")]
    if not all(INTEGER.fullmatch(p) for p in parts):
        return text
    if any(len(p.lstrip("-")) > MAX_DIGITS for p in parts):
        raise OptionError(option, f"a number with more than {MAX_DIGITS} digits is surely a mistake")
    values = [int(p) for p in parts]
    return values if len(values) > 1 else values[0]


def value_text(value: Value) -> str:
    """A value as it is typed: [32, 8, 6] -> ``32,8,6`` (``parse_value`` reads it back)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def parse_structure_options(args: list[str]) -> dict[str, Value]:
    """``--D 256 --ranks 32,8`` (or ``--D=256``) into {'D': 256, 'ranks': [32, 8]}.

    OptionError for a stray argument, an option without a value, or one given twice.
    """
    options: dict[str, Value] = {}
    given: dict[str, str] = {}  # the text of each value, for a repeated option's message
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, equals, value = arg[2:].partition("=")
        if not arg.startswith("--") or not name:
            raise OptionError(None, f"unexpected argument {arg!r}: {FORM}")
        if not equals:
            if i == len(args) or (args[i].startswith("--") and not INTEGER.fullmatch(args[i])):
                raise OptionError(name, f"needs a value ({FORM})")
            value = args[i]
            i += 1
        elif not value:
            raise OptionError(name, f"needs a value after '=' ({FORM})")
        if name in given:
            raise OptionError(name, f"--{name} is given twice ({given[name]}, then {value}); give it once")
        given[name] = value
        options[name] = parse_value(value, name)
    return options
