"""The structure language: the catalog, exact error positions, and robustness to arbitrary input."""

from __future__ import annotations

import inspect
import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einsearch import catalog, errors, structure
from einsearch.dsl import parse
from einsearch.errors import DSLError, EinsearchError, NotFoundError, OptionError, Pos
from einsearch.expr import sqrt_divisor
from einsearch.options import parse_structure_options, parse_value
from einsearch.structure import Instance, _written, decode_source, from_text, load

CATALOG = catalog.catalog_dir()
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = ["bilinear-mlr", "btt", "dense", "global-swa", "kronecker", "lowrank", "mlr", "monarch", "swa", "tt"]
HEAD = "size T = 8\nsize D = 16\n"
SCORE = "score = x[t, i] W[i, j] x[u, j]\n"


def error(text: str, overrides: dict | None = None, source: str = "f.ein") -> DSLError:
    """The DSLError that parsing and resolving ``text`` raises (fails the test if there is none)."""
    with pytest.raises(DSLError) as info:
        from_text(text, source=source).resolve(overrides or {})
    return info.value


def option_error(text: str, overrides: dict, source: str = "f.ein") -> OptionError:
    """The OptionError that resolving ``text`` with ``overrides`` raises."""
    with pytest.raises(OptionError) as info:
        from_text(text, source=source).resolve(overrides)
    return info.value


def catalog_option_error(name: str, overrides: dict) -> OptionError:
    with pytest.raises(OptionError) as info:
        catalog.find(name).resolve(overrides)
    return info.value


def assert_error(err: DSLError, line: int, col: int, message: str, source: str = "f.ein") -> None:
    """``err`` reads exactly ``source:line:col: message``."""
    assert (err.pos.line, err.pos.col) == (line, col), str(err)
    assert str(err) == f"{source}:{line}:{col}: {message}"


def catalog_text(name: str) -> str:
    return (CATALOG / f"{name}.ein").read_text()


# ---------------------------------------------------------------------------------------------
# The catalog


def test_catalog_names():
    assert catalog.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_catalog_resolves_with_defaults(name):
    structure = catalog.find(name)
    assert structure.name == name
    assert structure.doc
    assert Path(structure.source) == CATALOG / f"{name}.ein"
    instance = structure.resolve()
    assert isinstance(instance, Instance)
    assert instance.levels
    for level in instance.levels:
        assert all(isinstance(v, int) and v >= 1 for v in level.sizes.values())
        assert math_prod(level.sizes[i] for i in level.query.axes[1]) == instance.D
        assert math_prod(level.sizes[i] for i in level.key.axes[1]) == instance.D
        assert math_prod(level.sizes[i] for i in level.query.axes[0]) == instance.T


def math_prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def test_catalog_default_values():
    assert catalog.find("btt").resolve().values == {"T": 1024, "D": 256, "s": 1, "split": "balanced", "a": 16, "b": 16}
    mlr = catalog.find("mlr").resolve()
    assert mlr.values["ranks"] == [32, 8, 6, 4, 4, 4, 4, 2]
    assert [level.blocks for level in mlr.levels] == [2 ** (level - 1) for level in range(1, 9)]
    assert [level.sizes["r"] for level in mlr.levels] == [32, 8, 6, 4, 4, 4, 4, 2]
    assert [level.scale for level in mlr.levels] == [1 / r for r in [32, 8, 6, 4, 4, 4, 4, 2]]
    assert [op.name for op in mlr.levels[2].factors] == ["Q_3", "K_3"]
    swa = catalog.find("swa").resolve()
    assert swa.levels[0].band == (0, 128)
    gswa = catalog.find("global-swa").resolve()
    assert [level.band for level in gswa.levels] == [None, (0, 128)]
    tt = catalog.find("tt").resolve()
    assert tt.factor_shapes == {"G1": (8, 8, 2), "G2": (2, 8, 8, 2), "G3": (2, 8, 8)}
    assert catalog.find("kronecker").resolve().factor_shapes == {"A": (16, 16), "B": (16, 16)}


def test_find_by_path_and_missing(tmp_path):
    path = tmp_path / "mine.ein"
    path.write_text(HEAD + SCORE)
    structure = catalog.find(str(path))
    assert structure.name == "mine" and structure.source == str(path)
    with pytest.raises(NotFoundError, match="no such file"):
        catalog.find(str(tmp_path / "absent.ein"))
    with pytest.raises(NotFoundError, match="no catalog structure of this name"):
        catalog.find("nosuch")


# ---------------------------------------------------------------------------------------------
# Splits of D


@pytest.mark.parametrize(
    ("name", "overrides", "a", "b"),
    [
        ("btt", {"D": 256}, 16, 16),
        ("btt", {"D": 256, "split": "research"}, 8, 32),
        ("btt", {"D": 144, "split": "research"}, 9, 16),
        ("btt", {"D": 96}, 8, 12),
        ("btt", {"D": 97}, 1, 97),
        ("btt", {"D": 256, "a": 4}, 4, 64),
        ("monarch", {"D": 256, "split": "research"}, 8, 32),
        ("kronecker", {"D": 96}, 8, 12),
        ("kronecker", {"D": 101}, 1, 101),
    ],
)
def test_split(name, overrides, a, b):
    instance = catalog.find(name).resolve(overrides)
    assert (instance.values["a"], instance.values["b"]) == (a, b)
    level = instance.levels[0]
    assert (level.sizes["i1"], level.sizes["i2"], level.sizes["j1"], level.sizes["j2"]) == (a, b, a, b)


def test_sqrt_divisor_rules():
    for n in range(1, 3000):
        a = sqrt_divisor(n, "balanced")
        assert n % a == 0 and a * a <= n
        assert not any(n % d == 0 for d in range(a + 1, n + 1) if d * d <= n)
        r = sqrt_divisor(n, "research")
        b = n // r
        assert n % r == 0 and (n == 1 or b * b > n)
        assert not any(n % d == 0 for d in range(1, b) if d * d > n)  # b is the smallest divisor above sqrt n
    assert [sqrt_divisor(n) for n in (256, 96, 97, 1)] == [16, 8, 1, 1]
    assert [sqrt_divisor(n, "research") for n in (256, 144, 97, 1)] == [8, 9, 1, 1]


# ---------------------------------------------------------------------------------------------
# Errors, with exact positions


def test_unknown_index():
    err = error(HEAD + "score = x[t, i] W[i, q] x[u, j]\n")
    assert_error(err, 3, 22, "index q has no size: declare it with `index q: ...`")


def test_factor_shape_mismatch():
    text = (
        HEAD + "index r: 4, q: 2\nscore = x[t, i] A[i, r] B[j, r] x[u, j]\nscore += x[t, i] A[i, q] B[j, q] x[u, j]\n"
    )
    assert_error(error(text), 5, 18, "size mismatch: A is 16 x 2 here but 16 x 4 at line 4")


def test_size_does_not_divide():
    text = "size T = 8\nsize D = 10\nindex a: 3\nscore = x[t, (a b)] W[a, b, j] x[u, j]\n"
    assert_error(error(text), 4, 15, "D = 10 does not divide into (a b): D must be a multiple of 3 (a = 3)")
    text = "size T = 8\nsize D = 10\nsize n = 3\nindex a: n, b: 2\nscore = x[t, (a b c)] W[a, b, c, j] x[u, j]\n"
    message = "D = 10 does not divide into (a b c): D must be a multiple of 6 = a * b (a = n = 3, b = 2)"
    assert_error(error(text), 5, 15, message)
    err = option_error(text, {"D": 14})
    assert str(err) == "--D: " + message.replace("10", "14")
    err = option_error(text.replace("10", "12"), {"n": 5})  # the group's declared part comes from --n
    assert str(err) == "--n: D = 12 does not divide into (a b c): D must be a multiple of 10 = a * b (a = n = 5, b = 2)"


def test_declared_group_does_not_match_D():
    text = "size T = 8\nsize D = 10\nindex a: 3, b: 4\nscore = x[t, (a b)] W[a, b, j] x[u, j]\n"
    assert_error(error(text), 4, 15, "size mismatch: (a b) is 3 * 4 = 12 but x's axis is D = 10")


@pytest.mark.parametrize(
    ("value", "shown"), [(0, "0"), (-4, "-4"), ("abc", "'abc'"), ([4, 8], "'4,8'"), (2.5, "2.5"), (None, "None")]
)
def test_bad_size_option(value, shown):
    err = option_error(HEAD + SCORE, {"D": value})
    assert (err.option, err.message) == ("D", f"expected a positive whole number, got {shown}")
    assert str(err) == f"--D: expected a positive whole number, got {shown}"


def test_non_positive_size_default():
    assert_error(error("size T = 8\nsize D = 0\n" + SCORE), 2, 6, "size D = 0 must be positive")
    text = HEAD + "index k: 4 - 4\nsum k\nscore = x[t, i] W[i, j, k] x[u, j]\n"
    assert_error(error(text), 3, 7, "index k has size 0: sizes must be positive")


def test_catalog_option_errors_name_the_option():
    """Not a position in a catalog file the user never opened: the option, as they typed it."""
    assert str(catalog_option_error("btt", {"D": 0})) == "--D: expected a positive whole number, got 0"
    err = catalog_option_error("tt", {"a": 3})  # let c = D / (a * b)
    assert str(err) == "--a: c = D / (a * b) = 64/3 is not a whole number (D = 512, a = 3, b = 8)"
    err = catalog_option_error("kronecker", {"a": 5, "D": 96})  # both read: the first one named
    assert str(err) == "--D: b = D / a = 96/5 is not a whole number (D = 96, a = 5)"


def test_derived_value_errors_without_options_point_into_the_file():
    assert_error(error(HEAD + "size a = D - 20\n" + SCORE), 3, 6, "size a = -4 must be positive")
    err = option_error(HEAD + "size a = D - 20\n" + SCORE, {"D": 12})
    assert str(err) == "--D: a = D - 20 = -8 must be positive (D = 12)"


def test_cyclic_definition():
    err = error(HEAD + "size a = b\nsize b = a\n" + SCORE)
    assert_error(err, 3, 6, "cyclic definition: a -> b -> a")


def test_unknown_name_in_default_names_the_file():
    err = error(HEAD + "size a = zz + 1\n" + SCORE)
    assert_error(err, 3, 10, "unknown name 'zz'")


def test_index_used_once():
    text = HEAD + "index k: 2\nscore = x[t, i] W[i, j, k] x[u, j]\n"
    message = "index k is used only once: a typo? (write `sum k` if it is summed on purpose)"
    assert_error(error(text), 4, 25, message)


def test_sum_makes_index_used_once_legal():
    text = HEAD + "index k: 2\nsum k\nscore = x[t, i] W[i, j, k] x[u, j]\n"
    instance = from_text(text, source="f.ein").resolve()
    assert instance.factor_shapes == {"W": (16, 16, 2)}
    assert instance.levels[0].sizes["k"] == 2


def test_param_list_wrong_length():
    text = catalog_text("mlr")
    err = option_error(text, {"ranks": [32, 8, 6]}, source="mlr.ein")
    assert err.option == "ranks"
    assert str(err) == "--ranks: has 3 entries but levels = 8 needs 8 (pass 8 comma-separated values)"
    err = option_error(text, {"levels": 3}, source="mlr.ein")
    assert str(err) == "--levels: levels = 3 needs 3 entries of ranks but its default has 8 (pass --ranks with 3 " \
        "comma-separated values)"  # fmt: skip
    err = option_error(text, {"levels": 3, "ranks": [1, 2]}, source="mlr.ein")
    assert str(err) == "--ranks: has 2 entries but levels = 3 needs 3 (pass 3 comma-separated values)"
    err = option_error(text, {"levels": 2, "ranks": [1, 2, 3]}, source="mlr.ein")
    assert str(err) == "--ranks: has 3 entries but levels = 2 needs 2 (pass 2 comma-separated values)"
    err = option_error(HEAD + "param ranks[1] = [4]\n" + SCORE, {"ranks": [1, 2]})
    assert str(err) == "--ranks: has 2 entries but it needs 1 (pass 1 value)"
    file = HEAD + "param n = 3\nparam ranks[n] = [4, 2]\n" + SCORE  # the file contradicts itself
    assert_error(error(file), 4, 7, "ranks has 2 entries but n = 3 needs 3; pass --ranks with 3 comma-separated values")
    instance = from_text(text, source="mlr.ein").resolve({"levels": 3, "ranks": [4, 2, 1]})
    assert [level.sizes["r"] for level in instance.levels] == [4, 2, 1]
    instance = from_text(text, source="mlr.ein").resolve({"levels": 2, "ranks": 5})  # one number for each entry
    assert instance.values["ranks"] == [5, 5]


@pytest.mark.parametrize(("levels", "shown"), [(0, "0"), (-1, "-1"), (4097, "4097"), (2**70, str(2**70))])
def test_list_length_option_out_of_range(levels, shown):
    """--levels 0 would need an empty --ranks, which no command line can write: say what is allowed."""
    err = catalog_option_error("mlr", {"levels": levels})
    assert str(err) == f"--levels: must be a whole number from 1 to 4096 (the number of entries of ranks), got {shown}"
    err = option_error(HEAD + "param n = 2\nparam ranks[n - 1] = 3\n" + SCORE, {"n": 1})
    assert str(err) == "--n: makes the length of ranks n - 1 = 0; it must be a whole number from 1 to 4096"


@pytest.mark.parametrize("value", ["a,b", "", "1,,2", [1, "a"], [1, 2.5], [True] * 8])
def test_list_option_of_non_numbers(value):
    err = catalog_option_error("mlr", {"ranks": value})
    shown = repr(value) if isinstance(value, str) else repr(",".join(map(str, value)))
    assert str(err) == f"--ranks: expected whole numbers separated by commas, got {shown}"


def test_divisibility_states_the_rule():
    err = catalog_option_error("mlr", {"T": 3})
    assert err.option == "T"
    assert str(err) == "--T: T = 3 does not divide into (g t) at l = 2: T must be a multiple of 2 " \
        "(g = 2^(l - 1) = 2); for every l in 1..8 it must be a multiple of 128"  # fmt: skip
    err = catalog_option_error("mlr", {"T": 192})  # only the last level fails: what it asks is all they ask
    assert str(err) == "--T: T = 192 does not divide into (g t) at l = 8: T must be a multiple of 128 " \
        "(g = 2^(l - 1) = 128)"  # fmt: skip
    err = catalog_option_error("mlr", {"levels": 12, "ranks": 1})  # T is the default: --levels made it fail
    assert str(err) == "--levels: T = 1024 does not divide into (g t) at l = 12: T must be a multiple of 2048 " \
        "(g = 2^(l - 1) = 2048)"  # fmt: skip
    text = HEAD + "for l in 1..2:\n    index a: 3 * l\n    score += x[t, (a i)] W[a, i, j] x[u, j]\n"
    assert_error(error(text), 5, 20, "D = 16 does not divide into (a i) at l = 1: D must be a multiple of 3 "
                 "(a = 3 * l = 3); for every l in 1..2 it must be a multiple of 6")  # fmt: skip
    text = HEAD + "index a: 4, b: 2\nscore = x[t, (a b)] W[a, b, j] x[u, j]\n"
    assert str(option_error(text, {"D": 12})) == "--D: size mismatch: (a b) is 4 * 2 = 8 but x's axis is D = 12"


def test_unknown_option():
    err = option_error(HEAD + SCORE, {"foo": 3})
    assert err.option == "foo"
    assert str(err) == "structure has no option --foo (its options: --T, --D)"
    err = catalog_option_error("mlr", {"level": 3})
    assert str(err) == "mlr has no option --level; did you mean --levels? (its options: --T, --D, --levels, --ranks)"
    err = catalog_option_error("mlr", {"d": 3})
    assert str(err) == "mlr has no option --d; did you mean --D? (its options: --T, --D, --levels, --ranks)"


def test_let_is_not_an_option():
    structure = from_text(HEAD + "let b = D / 4\nindex k: b\nscore = x[t, i] W[i, k] V[k, j] x[u, j]\n", source="f.ein")
    assert [o.name for o in structure.options] == ["T", "D"]
    assert structure.resolve().values == {"T": 8, "D": 16, "b": 4}
    assert structure.resolve({"D": 32}).values["b"] == 8
    with pytest.raises(OptionError, match=r"^structure has no option --b \(its options: --T, --D\)$"):
        structure.resolve({"b": 2})


def test_let_must_be_whole():
    text = HEAD + "let b = D / 3\nindex k: b\nscore = x[t, i] W[i, k] V[k, j] x[u, j]\n"
    assert_error(error(text), 3, 5, "b = 16/3 is not a whole number")


def test_bad_choice():
    text = HEAD + "choice m = p | q\n" + SCORE
    assert str(option_error(text, {"m": "z"})) == "--m: must be one of p, q, got 'z'"
    assert from_text(text, source="f.ein").resolve({"m": "q"}).values["m"] == "q"
    assert from_text(text, source="f.ein").resolve().values["m"] == "p"
    err = catalog_option_error("btt", {"split": "even"})
    assert str(err) == "--split: must be one of balanced, research, got 'even'"
    err = catalog_option_error("btt", {"split": "reseach"})
    assert str(err) == "--split: must be one of balanced, research, got 'reseach'; did you mean research?"


def test_failing_require():
    text = HEAD + 'require D % 3 == 0 "three must divide D"\n' + SCORE
    assert_error(error(text), 3, 1, "requirement D % 3 == 0 does not hold (D = 16): three must divide D")
    assert from_text(text, source="f.ein").resolve({"D": 12}).D == 12
    err = error(catalog_text("swa"), {"window": -1}, source="swa.ein")
    assert_error(err, 7, 1, "requirement window >= 0 does not hold (window = -1)", source="swa.ein")


def test_unterminated_string():
    assert_error(error(HEAD + 'doc "abc\n' + SCORE), 3, 5, "unterminated string")


def test_bad_token():
    assert_error(error(HEAD + "score = x[t, i] W[i, j] $ x[u, j]\n"), 3, 25, "unexpected character '$'")


def test_unexpected_indent():
    assert_error(error(HEAD + "  " + SCORE), 3, 1, "unexpected indent")


def test_indent_matching_no_block():
    text = HEAD + "for l in 1..2:\n    index g: 2\n  score += x[t, i] W[i, j] x[u, j]\n"
    assert_error(error(text), 5, 1, "this line's indent matches no enclosing block")


def test_tab_indent():
    text = HEAD + "for l in 1..2:\n\tscore += x[t, i] W[i, j] x[u, j]\n"
    assert_error(error(text), 4, 1, "indent with spaces, not tabs")


def test_missing_score():
    message = "no score: add a line like `score = x[t, i] W[i, j] x[u, j]`"
    assert_error(error(HEAD), 3, 1, message)
    assert_error(error(HEAD + "\n# a comment\n"), 5, 1, message)


def test_other_syntax_errors():
    assert_error(error("size = 3\n"), 1, 6, "expected a symbol name, found '='")
    assert_error(error(HEAD + "score x[t, i]\n"), 3, 7, "expected '=' or '+=' after score, found 'x'")
    assert_error(
        error(HEAD + "score = x[t, i W[i, j] x[u, j]\n"), 3, 16, "expected ',' or ']' in the axes of x, found 'W'"
    )
    assert_error(error(HEAD + "size T = 9\n" + SCORE), 3, 6, "'T' is already defined at line 1")
    assert_error(error("size T = 8\n" + SCORE), 1, 1, "declare `size D = ...`: x is T x D (sequence x features)")
    assert_error(error(HEAD + "size a = foo(2)\n" + SCORE), 3, 10, "unknown function foo(); known: "
                 "isqrt, len, log2, max, min, sqrt, sqrt_divisor, sum")  # fmt: skip


def test_positions_inside_a_loop():
    text = HEAD + "param ranks[2] = [4, 2]\nfor l in 1..2:\n    index r: ranks[l], g: 2^(l-1)\n" \
        "    score += x[(g t), i] Q[i, r] K[j, r] x[(g u), j]  scale 1/r\n" \
        "    score += x[t, i] V[i, q] x[u, j]\n"  # fmt: skip
    assert_error(error(text), 7, 27, "index q has no size: declare it with `index q: ...`")
    text = HEAD.replace("8", "6") + "for l in 1..3:\n    index g: 2^(l-1)\n" \
        "    score += x[(g t), i] W[i, j] x[(g u), j]\n"  # fmt: skip
    assert_error(error(text), 5, 17, "T = 6 does not divide into (g t) at l = 3: T must be a multiple of 4 "
                 "(g = 2^(l - 1) = 4)")  # fmt: skip
    assert_error(error(text.replace("1..3", "1..4")), 5, 17, "T = 6 does not divide into (g t) at l = 3: T must be "
                 "a multiple of 4 (g = 2^(l - 1) = 4); for every l in 1..4 it must be a multiple of 8")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Robustness fixes: each of these used to escape as a non-DSLError exception or to hang


def run_within(seconds: float, fn):
    """``fn()``'s result or exception, failing the test if it takes longer than ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize(
    ("middle", "line", "col", "message"),
    [
        ("size a = sqrt(8)^4000\n", 3, 17, "^ failed"),
        ("size a = sqrt(2^2000)\n", 3, 10, "sqrt(...) failed"),
        ("size a = 10^400 * sqrt(2)\n", 3, 17, "* failed"),
        ("choice m = p | q\nrequire m > 2\n", 4, 11, "cannot compare 'p' > 2"),
        ("param r2[2] = [1, 2]\nparam ranks[r2] = 3\n", 4, 7, "the length of ranks must be a whole number"),
        ("choice m = p | q\nparam ranks[m] = 3\n", 4, 7, "the length of ranks must be a whole number"),
        ("param ranks[10^12] = 3\n", 3, 7, "the length of ranks must be a whole number"),
        ("size a = " + "(" * 3000 + "1" + ")" * 3000 + "\n", 3, None, "nested too deeply"),
        ("size a = " + "-" * 3000 + "1\n", 3, None, "nested too deeply"),
        ("size a = " + "2^" * 3000 + "1\n", 3, None, "nested too deeply"),
        ("size a = " + "not " * 3000 + "1\n", 3, None, "nested too deeply"),
        ("size a = " + "+".join(["1"] * 3000) + "\n", 3, 10, "too long"),
        ("size a = (2^4096)^4096\n", 3, 18, "exponent 4096 is too large"),
        ("size a = 2^4096^4096\n", 3, 16, "more than 8192 bits"),
        ("size a = 100^4000\n", 3, 13, "more than 8192 bits"),
        ("size a = 10^2000 * 10^2000\n", 3, 18, "more than 8192 bits"),
        ("size a = " + "7" * 5000 + "\n", 3, 10, "more than 1000 digits"),
        ("choice split = balanced | research\nsize a = sqrt_divisor(10^30 + 57, split)\n", 4, 10, "too large to split"),
        ("size a = sqrt_divisor(2^61 - 1, research)\n", 3, 33, "unknown name 'research'"),
        ("size a = sqrt_divisor(2^61 - 1)\n", 3, 10, "too large to split"),
    ],
)
def test_hostile_expressions_give_dsl_errors(middle, line, col, message):
    err = run_within(10, lambda: error(HEAD + middle + SCORE))
    assert err.pos.line == line
    if col is not None:
        assert err.pos.col == col
    assert message in err.message
    assert str(err).startswith(f"f.ein:{err.pos.line}:{err.pos.col}: ")


def test_huge_loop_and_scale():
    err = run_within(10, lambda: error(HEAD + "for l in 1..10^9:\n    score += x[t, i] W[i, j] x[u, j]\n"))
    assert_error(err, 3, 1, "loop range 1..1000000000 has more than 4096 values")
    err = run_within(10, lambda: error(HEAD + "score = x[t, i] W[i, j] x[u, j] scale 10^400\n"))
    assert_error(err, 3, 41, "scale is out of range")


def test_huge_sizes_resolve_quickly():
    """A size of 10^30 is absurd but well defined: resolving it must neither hang nor allocate."""
    text = catalog_text("btt").replace("size D = 256", "size D = 1000000000000000000000000000000")
    err = run_within(10, lambda: error(text, source="btt.ein"))
    assert (err.pos.line, err.pos.col) == (7, 10) and "too large to split" in err.message
    instance = run_within(10, lambda: from_text(text, source="btt.ein").resolve({"a": 10**15}))
    assert instance.values["b"] == 10**15
    instance = run_within(10, lambda: catalog.find("mlr").resolve({"T": 2**100}))
    assert instance.levels[-1].sizes["t"] == 2**93


@pytest.mark.parametrize(
    ("decl", "line", "col", "shown"),
    [
        ("choice T = a | b\nsize D = 16\n", 1, 8, "T must be a positive whole number (x is T x D), got 'a'"),
        ("param T = [1, 2]\nsize D = 16\n", 1, 7, "T must be a positive whole number (x is T x D), got [1, 2]"),
        ("size T = 8\nparam D = -4\n", 2, 7, "D must be a positive whole number (x is T x D), got -4"),
        ("size T = 8\nlet D = 0\n", 2, 5, "D must be a positive whole number (x is T x D), got 0"),
    ],
)
def test_T_and_D_must_be_positive_whatever_declares_them(decl, line, col, shown):
    assert_error(error(decl + SCORE), line, col, shown)


def test_derived_D_is_fine():
    instance = from_text("size T = 8\nsize a = 4\nlet D = a * 2\n" + SCORE, source="f.ein").resolve()
    assert instance.D == 8 and instance.factor_shapes == {"W": (8, 8)}


# ---------------------------------------------------------------------------------------------
# Properties: any text gives an Instance or a positioned DSLError, never another exception


def check_outcome(text: str, source: str = "p.ein") -> None:
    try:
        instance = from_text(text, source=source).resolve()
    except DSLError as err:
        lines = text.splitlines()
        assert err.pos is not None, str(err)
        assert err.source == source
        assert 1 <= err.pos.line <= len(lines) + 1, str(err)
        width = len(lines[err.pos.line - 1]) if err.pos.line <= len(lines) else 0
        assert 1 <= err.pos.col <= width + 1, str(err)
        assert str(err).startswith(f"{source}:{err.pos.line}:{err.pos.col}: "), str(err)
        assert err.message and "\n" not in err.message
        return
    assert isinstance(instance, Instance)
    assert instance.levels
    for level in instance.levels:
        assert all(isinstance(v, int) and v >= 1 for v in level.sizes.values())


TOKENS = [
    "size ", "param ", "let ", "choice ", "index ", "require ", "sum ", "score ", "for ", "doc ", " in ",
    " where ", " scale ", "T", "D", "a", "b", "l", "r", "k", "x", "W", "t", "u", "i", "j", "g", "ranks",
    "0", "1", "2", "8", "16", "256", "-1", "=", "+=", " = ", ":", ",", ", ", "[", "]", "(", ")", "..", "|",
    "^", "*", "/", "//", "%", "-", "+", "<=", "<", "==", "!=", " and ", " not ", '"', '"doc"', "#", "\n",
    "\n    ", "    ", "\t", " ", "x[t, i]", "x[u, j]", "W[i, j]", "x[(g t), i]", "x[t, (a b)]", "t - u",
    "sqrt_divisor(D, split)", "isqrt(", "min(", "len(", "2^(l-1)", "ranks[l]", "$", "\r", "\x0c",
]  # fmt: skip
HEADERS = [
    "",
    HEAD,
    "size T = 16\nsize D = 16\nsize a = 4\nparam ranks[2] = [2, 1]\nchoice split = balanced | research\n",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADERS), st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_text(header, tokens):
    check_outcome(header + "".join(tokens))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='sizeTD=12 \n[](),:x^-+*/"#\tscoreWijtu.', max_size=80))
def test_random_characters(text):
    check_outcome(text)


NUMBER = re.compile(r"\b\d+\b")
NAME = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*\b")
HUGE = ["0", "-1", "1000000000000000000000000000000", "2305843009213693951", "1000003", "2^4096", "(2^61 - 1)"]
NAMES_POOL = ["T", "D", "a", "b", "s", "x", "W", "score", "size", "let", "sum", "index", "levels", "ranks", "split",
              "l", "i", "j", "t", "u", "k", "research", "sqrt_divisor", "window", "zz"]  # fmt: skip


@st.composite
def mutated_catalog(draw) -> str:
    text = catalog_text(draw(st.sampled_from(NAMES)))
    kind = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "name", "two"]))
    for _ in range(2 if kind == "two" else 1):
        kind_now = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "name"])) if kind == "two" else kind
        text = mutate(draw, text, kind_now)
    return text


def mutate(draw, text: str, kind: str) -> str:
    n = len(text)
    if kind in ("delete", "duplicate", "swap"):
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 60)))
        if kind == "delete":
            return text[:i] + text[j:]
        if kind == "duplicate":
            k = draw(st.integers(0, n))
            piece = text[i:j]
            return text[:k] + piece + text[k:]
        k = draw(st.integers(j, n))
        m = draw(st.integers(k, min(n, k + 60)))
        return text[:i] + text[k:m] + text[j:k] + text[i:j] + text[m:]
    pattern = NUMBER if kind == "number" else NAME
    matches = list(pattern.finditer(text))
    if not matches:
        return text
    match = draw(st.sampled_from(matches))
    new = draw(st.sampled_from(HUGE if kind == "number" else NAMES_POOL))
    return text[: match.start()] + new + text[match.end() :]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_catalog())
def test_mutated_catalog(text):
    run_within(20, lambda: check_outcome(text))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(NAMES),
    st.sampled_from(["T", "D", "s", "a", "r", "levels", "ranks", "window", "split", "rg", "b", "zz"]),
    st.one_of(st.integers(-3, 2**70), st.sampled_from(["balanced", "research", "x"]), st.lists(st.integers(-2, 64))),
)
def test_random_overrides(name, option, value):
    structure = catalog.find(name)
    try:
        instance = run_within(20, lambda: structure.resolve({option: value}))
    except OptionError as err:  # it names the one option given
        assert err.option == option and str(err).startswith((f"--{option}: ", f"{name} has no option --{option}"))
        assert "\n" not in str(err)
        return
    except DSLError as err:  # the file's own constraints (a requirement, a size), at their place
        assert str(err).startswith(structure.source) and err.pos is not None
        return
    assert all(v >= 1 for level in instance.levels for v in level.sizes.values())


# ---------------------------------------------------------------------------------------------
# Hostile files, names and options: each a clean EinsearchError saying what is wrong


def test_every_error_class_derives_from_the_root():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, BaseException)]
    assert {c.__name__ for c in classes} >= {"EinsearchError", "DSLError", "OptionError", "NotFoundError"}
    assert all(issubclass(c, EinsearchError) for c in classes)
    assert str(DSLError("bad", Pos(3, 4), "f.ein")) == "f.ein:3:4: bad"
    assert str(DSLError("bad", None, "f.ein")) == "f.ein: bad"
    assert str(DSLError("bad").located("g.ein")) == "g.ein: bad"
    assert str(OptionError("ranks", "bad")) == "--ranks: bad"
    assert str(OptionError("D", "--D is given twice")) == "--D is given twice"  # names it already
    assert str(OptionError("l", "pass --levels")) == "--l: pass --levels"  # --levels is not --l
    assert str(OptionError(None, "unexpected argument 'x'")) == "unexpected argument 'x'"
    assert str(NotFoundError("x.ein", "no such file")) == "x.ein: no such file"


@pytest.mark.parametrize(
    ("fixture", "line", "col", "message"),
    [
        ("latin1_doc.ein", 4, 9, "not UTF-8: byte 0xe9 (save the file as UTF-8)"),
        ("nul_byte.ein", 2, 12, "binary file: a NUL byte (a .ein file is UTF-8 text)"),
        ("binary.ein", 3, 1, "binary file: a NUL byte (a .ein file is UTF-8 text)"),
        ("utf16.ein", 1, 1, "not UTF-8: the file starts with a UTF-16 byte-order mark (save the file as UTF-8)"),
        ("empty.ein", 1, 1, "no score: add a line like `score = x[t, i] W[i, j] x[u, j]`"),
        ("bom_only.ein", 1, 1, "no score: add a line like `score = x[t, i] W[i, j] x[u, j]`"),
    ],
)
def test_hostile_file(fixture, line, col, message):
    path = str(FIXTURES / fixture)
    with pytest.raises(DSLError) as info:
        catalog.find(path)
    assert_error(info.value, line, col, message, source=path)


def test_byte_order_mark_is_dropped():
    structure = load(FIXTURES / "bom.ein")
    assert structure.doc == "saved with a byte-order mark"
    assert structure.resolve().factor_shapes == {"W": (16, 16)}


@pytest.mark.parametrize(
    ("data", "line", "col", "byte"),
    [
        (b'doc "na\xc3\xafve caf\xe9"\n', 1, 15, 0xE9),  # columns count characters: the 2-byte one is one
        (b'size T = 8\r\nsize D = 16\r\ndoc "\xff"', 3, 6, 0xFF),  # CRLF is one line break
        (b"\xef\xbb\xbfsize T = \x80", 1, 10, 0x80),  # after a byte-order mark, which takes no column
        (b"a\n\xc3", 2, 1, 0xC3),  # a sequence cut short by the end of the file
    ],
)
def test_not_utf8_position(data, line, col, byte):
    with pytest.raises(DSLError) as info:
        decode_source(data, "f.ein")
    assert_error(info.value, line, col, f"not UTF-8: byte 0x{byte:02x} (save the file as UTF-8)")


def test_directory_fifo_device_and_missing_file(tmp_path):
    cases = {str(tmp_path): "is a directory, not a .ein file"}
    for absent in ("absent.ein", "absent", "absent.ein/x.ein"):
        cases[str(tmp_path / absent)] = "no such file"
    (tmp_path / "dir.ein").mkdir()
    cases[str(tmp_path / "dir.ein")] = "is a directory, not a .ein file"
    fifo = tmp_path / "fifo.ein"
    os.mkfifo(fifo)
    cases[str(fifo)] = "is not a regular file (a FIFO, socket or device), not a .ein file"
    if os.path.exists("/dev/null"):
        cases["/dev/null"] = "is not a regular file (a FIFO, socket or device), not a .ein file"
    for path, message in cases.items():
        with pytest.raises(NotFoundError) as info:
            run_within(10, lambda path=path: catalog.find(path))  # a FIFO must never be opened and waited on
        assert str(info.value) == f"{path}: {message}"


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.ein"
    path.write_text(HEAD + SCORE)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make the open fail the way it would for a user

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(structure.os, "open", refuse)
    with pytest.raises(DSLError) as info:
        catalog.find(str(path))
    assert info.value.pos is None
    assert str(info.value) == f"{path}: cannot be read: permission denied"


def test_symlink_loop_and_huge_file(tmp_path, monkeypatch):
    (tmp_path / "a.ein").symlink_to(tmp_path / "b.ein")
    (tmp_path / "b.ein").symlink_to(tmp_path / "a.ein")
    with pytest.raises(DSLError, match=r"a\.ein: cannot be read: too many levels of symbolic links$"):
        catalog.find(str(tmp_path / "a.ein"))
    monkeypatch.setattr(structure, "MAX_FILE_BYTES", 10)
    with pytest.raises(DSLError, match=r"bom\.ein: is larger than 10 bytes: not a structure file$"):
        catalog.find(str(FIXTURES / "bom.ein"))


def test_unknown_catalog_name():
    listed = ", ".join(NAMES)
    cases = {
        "mlrr": f"mlrr: no catalog structure of this name; did you mean mlr? (catalog: {listed}; or give a path to a "
        ".ein file)",
        "BTT": f"BTT: no catalog structure of this name; did you mean btt? (catalog: {listed}; or give a path to a "
        ".ein file)",
        "qqq": f"qqq: no catalog structure of this name (catalog: {listed}; or give a path to a .ein file)",
        "mlr.ein": "mlr.ein: no such file (for the catalog structure, write just mlr)",
        "sub/mlr": "sub/mlr: no such file",  # a path, never a name looked up under the catalog
        "": "'': give a catalog name (see `einsearch list`) or a path to a .ein file",
    }
    for name, message in cases.items():
        with pytest.raises(NotFoundError) as info:
            catalog.find(name)
        assert str(info.value) == message


PARSED = [("8", 8), ("-4", -4), ("32,8,6", [32, 8, 6]), (" 32, 8 ", [32, 8]), ("research", "research"),
          ("a,b", "a,b"), ("1e3", "1e3"), ("", ""), ("1,,2", "1,,2"), ("\u0663", "\u0663")]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), PARSED)
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_parse_structure_options():
    assert parse_structure_options(["--D", "256", "--ranks=32,8", "--split", "research", "--window", "-1"]) == {
        "D": 256, "ranks": [32, 8], "split": "research", "window": -1}  # fmt: skip
    form = "structure options are written --NAME VALUE or --NAME=VALUE"
    cases = {
        ("--D", "4", "--D", "8"): ("D", "--D is given twice (4, then 8); give it once"),
        ("--D=4", "--D", "8"): ("D", "--D is given twice (4, then 8); give it once"),
        ("--D",): ("D", f"--D: needs a value ({form})"),
        ("--D", "--T", "4"): ("D", f"--D: needs a value ({form})"),
        ("--D=",): ("D", f"--D: needs a value after '=' ({form})"),
        ("D", "4"): (None, f"unexpected argument 'D': {form}"),
        ("-D", "4"): (None, f"unexpected argument '-D': {form}"),
        ("--", "4"): (None, f"unexpected argument '--': {form}"),
        ("--=4",): (None, f"unexpected argument '--=4': {form}"),
        ("--D", "1" + "0" * 1000): ("D", "--D: a number with more than 1000 digits is surely a mistake"),
    }
    for args, (option, message) in cases.items():
        with pytest.raises(OptionError) as info:
            parse_structure_options(list(args))
        assert (info.value.option, str(info.value)) == (option, message)


WRITTEN = [("2^(l-1)", "2^(l - 1)"), ("D / (a * b)", "D / (a * b)"), ("(a - b) - c", "a - b - c"),
           ("a - (b - c)", "a - (b - c)"), ("-2^2", "-2^2"), ("(-2)^2", "(-2)^2"), ("2^3^2", "2^3^2"),
           ("(2^3)^2", "(2^3)^2"), ("2 * -a", "2 * -a"), ("min(a, b + 1) // 2", "min(a, b + 1) // 2"),
           ("ranks[l + 1]", "ranks[l + 1]"), ("not a == b or c", "not a == b or c"),
           ("(a + b) % 3", "(a + b) % 3")]  # fmt: skip


@pytest.mark.parametrize(("text", "written"), WRITTEN)
def test_expressions_written_back(text, written):
    """Messages quote a size's declaration (``g = 2^(l - 1) = 128``): rebuilt with the brackets it needs."""
    expr = parse(HEAD + f"size z = {text}\n" + SCORE).symbols["z"].value
    assert _written(expr) == written
    assert _written(parse(HEAD + f"size z = {written}\n" + SCORE).symbols["z"].value) == written
