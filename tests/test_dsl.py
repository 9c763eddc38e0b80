"""The structure language: the catalog, exact error positions, and robustness to arbitrary input."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einsearch import catalog
from einsearch.errors import DSLError
from einsearch.expr import sqrt_divisor
from einsearch.structure import Instance, from_text

CATALOG = catalog.catalog_dir()
NAMES = ["bilinear-mlr", "btt", "dense", "global-swa", "kronecker", "lowrank", "mlr", "monarch", "swa", "tt"]
HEAD = "size T = 8\nsize D = 16\n"
SCORE = "score = x[t, i] W[i, j] x[u, j]\n"


def error(text: str, overrides: dict | None = None, source: str = "f.ein") -> DSLError:
    """The DSLError that parsing and resolving ``text`` raises (fails the test if there is none)."""
    with pytest.raises(DSLError) as info:
        from_text(text, source=source).resolve(overrides or {})
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
    with pytest.raises(DSLError, match="no such file"):
        catalog.find(str(tmp_path / "absent.ein"))
    with pytest.raises(DSLError, match="no catalog structure of this name"):
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
    assert_error(error(text), 4, 15, "D = 10 does not divide into (a b): the declared part is 3")


def test_declared_group_does_not_match_D():
    text = "size T = 8\nsize D = 10\nindex a: 3, b: 4\nscore = x[t, (a b)] W[a, b, j] x[u, j]\n"
    assert_error(error(text), 4, 15, "size mismatch: (a b) is 3 * 4 = 12 but x's axis is D = 10")


@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_size_option(value):
    err = error(HEAD + SCORE, {"D": value})
    assert_error(err, 2, 6, f"size D = {value} must be positive (from --D)")


def test_non_positive_size_default():
    assert_error(error("size T = 8\nsize D = 0\n" + SCORE), 2, 6, "size D = 0 must be positive")
    text = HEAD + "index k: 4 - 4\nsum k\nscore = x[t, i] W[i, j, k] x[u, j]\n"
    assert_error(error(text), 3, 7, "index k has size 0: sizes must be positive")


def test_catalog_option_errors_point_into_catalog_file():
    err = error(catalog_text("btt"), {"D": 0}, source="btt.ein")
    assert_error(err, 4, 6, "size D = 0 must be positive (from --D)", source="btt.ein")
    err = error(catalog_text("tt"), {"a": 3}, source="tt.ein")
    assert (err.pos.line, err.pos.col) == (8, 5)  # let c = D / (a * b)
    assert str(err).startswith("tt.ein:8:5: c = 64/3 is not a whole number")


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
    err = error(text, {"ranks": [32, 8, 6]}, source="mlr.ein")
    assert_error(err, 6, 7, "ranks has 3 entries but levels = 8 (from --ranks)", source="mlr.ein")
    err = error(text, {"levels": 3}, source="mlr.ein")
    assert_error(err, 6, 7, "ranks has 8 entries but levels = 3; pass --ranks with 3 values", source="mlr.ein")
    instance = from_text(text, source="mlr.ein").resolve({"levels": 3, "ranks": [4, 2, 1]})
    assert [level.sizes["r"] for level in instance.levels] == [4, 2, 1]
    instance = from_text(text, source="mlr.ein").resolve({"levels": 2, "ranks": 5})  # one number for each entry
    assert instance.values["ranks"] == [5, 5]


def test_unknown_option():
    err = error(HEAD + SCORE, {"foo": 3})
    assert err.pos is None
    assert str(err) == "f.ein: structure has no option --foo (its options: --T, --D)"


def test_let_is_not_an_option():
    structure = from_text(HEAD + "let b = D / 4\nindex k: b\nscore = x[t, i] W[i, k] V[k, j] x[u, j]\n", source="f.ein")
    assert [o.name for o in structure.options] == ["T", "D"]
    assert structure.resolve().values == {"T": 8, "D": 16, "b": 4}
    assert structure.resolve({"D": 32}).values["b"] == 8
    with pytest.raises(DSLError, match=r"^f\.ein: structure has no option --b \(its options: --T, --D\)$"):
        structure.resolve({"b": 2})


def test_let_must_be_whole():
    text = HEAD + "let b = D / 3\nindex k: b\nscore = x[t, i] W[i, k] V[k, j] x[u, j]\n"
    assert_error(error(text), 3, 5, "b = 16/3 is not a whole number")


def test_bad_choice():
    text = HEAD + "choice m = p | q\n" + SCORE
    assert_error(error(text, {"m": "z"}), 3, 8, "--m must be one of p, q, got 'z'")
    assert from_text(text, source="f.ein").resolve({"m": "q"}).values["m"] == "q"
    assert from_text(text, source="f.ein").resolve().values["m"] == "p"
    err = error(catalog_text("btt"), {"split": "even"}, source="btt.ein")
    assert_error(err, 6, 8, "--split must be one of balanced, research, got 'even'", source="btt.ein")


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
    assert_error(error(text), 5, 17, "T = 6 does not divide into (g t): the declared part is 4")


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


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    except DSLError as err:
        assert str(err).startswith(structure.source)
        if err.pos is None:
            assert f"has no option --{option}" in err.message
        return
    assert all(v >= 1 for level in instance.levels for v in level.sizes.values())
