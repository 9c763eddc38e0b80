"""The Python API: load, resolve, describe, plan; values that compare and hash by value; the
shipped formula cache; the README's Python example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import einsearch
from einsearch.analyze import cache
from einsearch.analyze.formulas import evaluate, formulas
from einsearch.structure import Instance, Level, Operand

ROOT = Path(__file__).resolve().parents[1]


def test_describe_to_dict_is_what_the_command_prints():
    from click.testing import CliRunner

    from einsearch.cli import main

    instance = einsearch.load("mlr").resolve({"T": 256, "D": 64}, levels=3, ranks=[8, 4, 2])
    printed = CliRunner().invoke(main, ["describe", "mlr", "--T", "256", "--D", "64", "--levels", "3",
                                        "--ranks", "8,4,2", "--json"]).output  # fmt: skip
    assert json.loads(printed) == json.loads(json.dumps(einsearch.describe(instance).to_dict()))
    text = CliRunner().invoke(main, ["describe", "mlr", "--T", "256", "--D", "64", "--levels", "3", "--ranks", "8,4,2"])
    assert text.output.rstrip("\n") == str(einsearch.describe(instance))


def test_structures_levels_and_instances_compare_by_value():
    a = einsearch.load("btt").resolve(D=64)
    b = einsearch.load("btt").resolve({"D": 64})
    assert a == b and hash(a) == hash(b) and a is not b
    assert a.levels[0] == b.levels[0] and hash(a.levels[0]) == hash(b.levels[0])
    assert a != einsearch.load("btt").resolve(D=64, s=2)
    assert einsearch.load("btt") == einsearch.load("btt")
    assert len({a, b}) == 1


def test_an_instance_from_plain_data():
    """No text: a standard head built by hand describes and plans like the catalog's."""
    x = "x"
    level = Level(
        1,
        (
            Operand(x, "query", (("t",), ("i",))),
            Operand("WQ", "factor", (("i",), ("a",))),
            Operand("WK", "factor", (("j",), ("a",))),
            Operand(x, "key", (("u",), ("j",))),
        ),  # fmt: skip
        {"t": 128, "u": 128, "i": 32, "j": 32, "a": 8},
    )
    handmade = Instance("head", {"T": 128, "D": 32}, (level,))
    catalog = einsearch.load("lowrank").resolve(T=128, D=32, r=8)
    mine, theirs = einsearch.describe(handmade), einsearch.describe(catalog)
    assert (mine.params, mine.rank, mine.flops) == (theirs.params, theirs.rank, theirs.flops)
    assert mine.formulas.params == str(theirs.params)  # no symbols: the numbers themselves
    assert einsearch.plan(handmade).flops == einsearch.plan(catalog).flops


def test_errors_share_one_root():
    with pytest.raises(einsearch.EinsearchError):
        einsearch.load("no-such-structure")
    with pytest.raises(einsearch.EinsearchError):
        einsearch.load("mlr").resolve(T=3)


def test_shipped_formula_cache_is_current():
    """The cache shipped for the catalog equals what sympy derives and the exact rank gives now
    (rebuild: write_shipped())."""
    shipped = json.loads(cache.SHIPPED.read_text())
    assert shipped == json.loads(json.dumps(cache.rebuild_shipped(cache.shipped_names())))


@pytest.mark.parametrize("name", einsearch.catalog_names())
def test_cached_formulas_evaluate_to_the_counts(name, tmp_path, monkeypatch):
    """A formula read from a cache (shipped or written) is the one sympy derives, and evaluates to
    describe's numbers."""
    monkeypatch.setenv("EINSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "SHIPPED", tmp_path / "none.json")
    instance = einsearch.load(name).resolve()
    first = einsearch.describe(instance, rank_limit=1)  # computed, then written to tmp_path (exact rank skipped)
    assert list(tmp_path.glob("*.json"))
    again = einsearch.describe(instance, rank_limit=1)  # read back
    assert again.formulas == first.formulas == formulas(first.plan)
    assert evaluate(again.formulas.params, instance) == again.params
    assert evaluate(again.formulas.per_token, instance) == again.flops.per_token
    assert evaluate(again.formulas.scored_pairs, instance) == again.flops.scored_pairs


def test_exact_rank_is_cached(tmp_path, monkeypatch):
    """The exact rank is computed once per instance and bound and read back after (the shipped cache
    holds the catalog's defaults): a fresh run need not import flint nor build a matrix."""
    from einsearch.analyze import exact

    monkeypatch.setenv("EINSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "SHIPPED", tmp_path / "none.json")
    instance = einsearch.load("btt").resolve(D=64)
    first = einsearch.describe(instance)
    assert first.rank_numeric == exact.exact_rank(instance, first.rank_bound) == 64

    def no_computing(*args):
        raise AssertionError("computed again")

    monkeypatch.setattr(exact, "exact_rank", no_computing)
    assert einsearch.describe(instance).rank_numeric == 64
    other = einsearch.load("btt").resolve(D=36)
    assert len({cache.rank_key(instance, 64), cache.rank_key(instance, 63), cache.rank_key(other, 64)}) == 3


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using einsearch from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})


def test_readme_generate_example_trains_and_decodes(tmp_path, monkeypatch):
    """The README's generate section: the command, then its Python block, run as written (on one
    torch thread: its tensors are small, and threads waiting on a busy machine cost ten times more)."""
    import torch
    from click.testing import CliRunner

    from einsearch.cli import main

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Generating a PyTorch module", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"```bash\n(einsearch generate .*?)\n```", section).group(1)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, command.split()[1:])
    assert result.exit_code == 0, result.output
    monkeypatch.syspath_prepend(str(tmp_path))
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert namespace["loss"].item() < 4.0
