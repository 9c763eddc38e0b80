"""The command line as a user runs it: output keys and numbers, errors, files, and start-up imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from einsearch import catalog
from einsearch.analyze import describe as analyze
from einsearch.cli import main
from einsearch.plan import plan

ROOT = Path(__file__).resolve().parent.parent
MINE = "size T = 64\nsize D = 16\nindex r: 4\nscore = x[t, i] Q[i, r] K[j, r] x[u, j]\n"


def run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``einsearch ARGS``."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str):
    code, out, err = run(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_list():
    entries = run_json("list")
    assert [e["name"] for e in entries] == catalog.names()
    assert all(e["doc"] for e in entries)
    code, out, _ = run("list")
    assert code == 0 and all(name in out for name in catalog.names())


def test_describe_json_keys_and_numbers():
    data = run_json("describe", "btt", "--D", "256")
    for key in ("structure", "sizes", "params", "rank", "rank_bound", "flops", "levels", "pattern"):
        assert key in data
    assert set(data["flops"]) >= {"per_token", "per_pair", "score"}
    for key in ("sequence", "blocks", "window", "feature", "rank"):
        assert key in data["levels"][0]
    T, D = 1024, 256
    assert data["sizes"]["D"] == D and data["sizes"]["T"] == T
    assert data["params"] == 2 * D * 16 == 8192  # s = 1, a = b = 16: D * s * (a + b)
    assert data["rank"] == data["rank_bound"] == D
    assert data["flops"]["per_token"] == 2 * 2 * D * 16 * 1  # query and key maps, 2 per multiply-add
    assert data["flops"]["score"] == T * data["flops"]["per_token"] + 2 * T * T * D
    assert len(data["pattern"]["distance"]) == len(data["pattern"]["flops"])


def test_describe_matches_the_analyzer():
    """The CLI prints what the library computes (the library is checked against formulas elsewhere)."""
    data = run_json("describe", "mlr", "--levels", "3", "--ranks", "8,4,2", "--T", "64", "--D", "32")
    instance = catalog.find("mlr").resolve({"levels": 3, "ranks": [8, 4, 2], "T": 64, "D": 32})
    desc = analyze(instance)
    assert data["params"] == desc.params
    assert data["flops"]["score"] == plan(instance).flops
    assert [level["blocks"] for level in data["levels"]] == [1, 2, 4]


def test_rank_line_says_how_bound_and_exact_rank_compare():
    code, out, _ = run("describe", "btt", "--D", "64")
    assert code == 0 and "exact rank of a random instance 64: agree" in out
    code, out, _ = run("describe", "mlr", "--T", "64", "--D", "4", "--levels", "3", "--ranks", "4,4,4")
    assert code == 0 and "rank       16   (cut bound 28; " in out and "the bound is not tight here" in out


def test_macs_and_heads():
    flops = run_json("describe", "lowrank", "--D", "64")
    macs = run_json("describe", "lowrank", "--D", "64", "--macs")
    assert macs["flops"]["score"] * 2 == flops["flops"]["score"]
    assert macs["units"].startswith("MACs")
    heads = run_json("describe", "lowrank", "--D", "64", "--heads", "4")
    assert heads["totals"]["score"] == 4 * flops["flops"]["score"]
    assert heads["totals"]["params"] == 4 * flops["params"]


def test_plan_json():
    data = run_json("plan", "swa", "--T", "512", "--window", "64", "--B", "2")
    assert data["batch"] == 2
    assert data["flops"] <= data["opt_einsum_flops"] <= data["naive_flops"]
    assert data["flops"] == sum(level["chosen"]["flops"] for level in data["levels"])
    steps = data["levels"][0]["chosen"]["steps"]
    assert data["levels"][0]["chosen"]["flops"] == sum(step["flops"] for step in steps)
    macs = run_json("plan", "swa", "--T", "512", "--window", "64", "--B", "2", "--macs")
    assert macs["flops"] * 2 == data["flops"]


def test_plan_text():
    code, out, _ = run("plan", "mlr", "--T", "256", "--D", "64", "--levels", "3", "--ranks", "8,4,2")
    assert code == 0
    assert "alternatives:" in out and "opt_einsum" in out and "naive" in out


def test_check_a_user_file(tmp_path):
    path = tmp_path / "mine.ein"
    path.write_text(MINE)
    code, out, _ = run("check", str(path))
    assert code == 0 and out.rstrip().endswith("ok")
    data = run_json("check", str(path))
    assert data["factors"] == {"Q": [16, 4], "K": [16, 4]}
    described = run_json("describe", str(path))
    assert described["params"] == 2 * 16 * 4 and described["rank"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["describe", "nosuch"], "nosuch: no catalog structure of this name"),
        (["describe", "btt", "--Q", "3"], "btt has no option --Q"),
        (["describe", "btt", "--D"], "option --D needs a value"),
        (["describe", "btt", "D"], "unexpected argument 'D'"),
        (["describe", "btt", "--D", "0"], "btt.ein:"),
        (["plan", "mlr", "--ranks", "1,2"], "mlr.ein:"),
        (["check", "absent.ein"], "absent.ein: no such file"),
    ],
)
def test_errors_exit_2(args, message):
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    assert err.startswith("einsearch: error: ") and message in err


def test_errors_name_the_users_file(tmp_path):
    path = tmp_path / "bad.ein"
    path.write_text(MINE.replace("K[j, r]", "K[j, q]"))
    code, _, err = run("describe", str(path))
    assert code == 2 and f"{path}:4:" in err and "index q" in err


def test_plot_and_force(tmp_path):
    target = tmp_path / "pattern.png"
    code, _, _ = run("describe", "swa", "--T", "64", "--window", "8", "--plot", str(target))
    assert code == 0 and target.read_bytes().startswith(b"\x89PNG")
    target.write_bytes(b"keep")
    code, _, err = run("describe", "swa", "--T", "64", "--window", "8", "--plot", str(target))
    assert code == 2 and "--force" in err and target.read_bytes() == b"keep"
    code, _, _ = run("describe", "swa", "--T", "64", "--window", "8", "--plot", str(target), "--force")
    assert code == 0 and target.read_bytes().startswith(b"\x89PNG")
    code, _, err = run("describe", "swa", "--plot", str(tmp_path / "missing" / "p.png"))
    assert code == 2 and "is not a directory" in err


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes ``import matplotlib`` fail
    code, _, err = run("describe", "swa", "--plot", str(tmp_path / "p.png"))
    assert code == 2 and "pip install 'einsearch[plot]'" in err
    assert not (tmp_path / "p.png").exists()


def python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["list", "check btt", "describe btt --D 64 --T 64"])
def test_no_torch_at_start_up(command):
    """describe, check and list never import torch (it alone takes longer than the whole command)."""
    code = f"import sys\nfrom einsearch.cli import main\nsys.argv = ['einsearch', *{command.split()!r}]\n" \
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n" \
        "assert 'torch' not in sys.modules, 'torch was imported'\n"  # fmt: skip
    result = python("-c", code)
    assert result.returncode == 0, result.stderr


def test_entry_points():
    result = python("cli.py", "list")
    assert result.returncode == 0 and "btt" in result.stdout
    result = python("-m", "einsearch", "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout and "describe" in result.stdout
