"""The command line as a user runs it: output keys and numbers, errors, files, and start-up imports."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from einsearch import catalog, report
from einsearch.analyze import describe as analyze
from einsearch.cli import main
from einsearch.planner import plan

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
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
    code, out, _ = run("describe", "mlr", "--T", "512", "--D", "5")  # sum r_l > D: levels overlap in x's span
    assert code == 0 and "rank       448   (bound 448; exact rank of a random instance 448: agree)" in out
    desc = analyze(catalog.find("btt").resolve({"D": 64}))
    loose = dataclasses.replace(desc, rank_bound=desc.rank + 1)
    assert "the bound is not tight here" in report.rank_text(loose)
    assert "ABOVE THE BOUND" in report.rank_text(dataclasses.replace(desc, rank_bound=desc.rank - 1))


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
    assert data["flops"] == sum(schedule["flops"] for schedule in data["schedules"])
    steps = data["schedules"][0]["steps"]
    assert data["schedules"][0]["flops"] == sum(step["flops"] for step in steps)
    assert [step["op"] for step in steps].count("attend") == 3  # the band's tiles, in three batched calls
    macs = run_json("plan", "swa", "--T", "512", "--window", "64", "--B", "2", "--macs")
    assert macs["flops"] * 2 == data["flops"]


def test_plan_text():
    code, out, _ = run("plan", "mlr", "--T", "256", "--D", "64", "--levels", "3", "--ranks", "8,4,2")
    assert code == 0
    assert "alternatives" in out and "opt_einsum" in out and "naive" in out


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
        (["describe", "btt", "--D"], "--D: needs a value"),
        (["describe", "btt", "D"], "unexpected argument 'D'"),
        (["describe", "btt", "--D", "0"], "--D: expected a positive whole number, got 0"),
        (["plan", "mlr", "--ranks", "1,2"], "--ranks: has 2 entries but levels = 8 needs 8"),
        (["check", "absent.ein"], "absent.ein: no such file"),
    ],
)
def test_errors_exit_2(args, message):
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    assert err.startswith("einsearch: error: ") and message in err


@pytest.mark.parametrize("command", ["check", "describe", "plan", "generate"])
def test_a_level_with_no_causal_pair_is_refused(command, tmp_path):
    """A band of future keys only scores nothing once causal: every command refuses the file, at the band."""
    path = tmp_path / "future.ein"
    path.write_text(MINE + "score += x[t, i] A[i, r] B[j, r] x[u, j]  where -10 <= t - u <= -1\n")
    assert_one_line_error([command, str(path), *(["-o", str(tmp_path / "f.py")] if command == "generate" else [])],
                          f"{path}:5:49: the band -10 <= t - u <= -1 scores no pair: every key it reaches comes "
                          "after its query (u > t), and a causal model scores none")  # fmt: skip
    assert os.listdir(tmp_path) == ["future.ein"]


def test_errors_name_the_users_file(tmp_path):
    path = tmp_path / "bad.ein"
    path.write_text(MINE.replace("K[j, r]", "K[j, q]"))
    code, _, err = run("describe", str(path))
    assert code == 2 and f"{path}:4:" in err and "index q" in err


def test_plot_and_force(tmp_path, monkeypatch):
    target = tmp_path / "pattern.png"
    code, _, _ = run("describe", "swa", "--T", "64", "--window", "8", "--plot", str(target))
    assert code == 0 and target.read_bytes().startswith(b"\x89PNG")
    target.write_bytes(b"keep")
    code, _, err = run("describe", "swa", "--T", "64", "--window", "8", "--plot", str(target))
    assert code == 2 and "--force" in err and target.read_bytes() == b"keep"
    monkeypatch.setattr("einsearch.plot.pattern_png", lambda *args: b"\x89PNG again")  # drawn once above is enough
    code, _, _ = run("describe", "swa", "--T", "64", "--window", "8", "--plot", str(target), "--force")
    assert code == 0 and target.read_bytes() == b"\x89PNG again"
    code, _, err = run("describe", "swa", "--plot", str(tmp_path / "missing" / "p.png"))
    assert code == 2 and f"the folder {tmp_path / 'missing'} does not exist" in err


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes ``import matplotlib`` fail
    code, _, err = run("describe", "swa", "--plot", str(tmp_path / "p.png"))
    assert code == 2 and "pip install 'einsearch[plot]'" in err
    assert not (tmp_path / "p.png").exists()


STRUCTURE_COMMANDS = ["check", "describe", "plan", "generate", "bench"]


@pytest.mark.parametrize("command", STRUCTURE_COMMANDS)
def test_help_lists_the_structures_own_options(command):
    """`COMMAND btt --help` shows btt's options as `check btt` does: kind of value, doc, default
    (resolved with the options given before --help)."""
    code, out, _ = run(command, "btt", "--help")
    assert code == 0 and "Options of btt:" in out and "Examples:" in out
    lines = " ".join(out.split())  # as one line: click wraps long docs
    for expected in ["--D N model width (features per token) [default: 256]", "--s N TT-rank [default: 1]",
                     "--split [balanced|research] default split of D", "[default: balanced]", "--a N"]:  # fmt: skip
        assert expected in lines, expected
    _, out, _ = run(command, "btt", "--D", "96", "--help")
    assert "query-side outer factor of D [default: 8]" in " ".join(out.split())
    _, out, _ = run(command, "mlr", "--help")
    assert "--ranks N,N,... rank of each level (sums to the head dimension) [default: 32,8,6,4,4,4,4,2]" in " ".join(
        out.split()
    )
    _, out, _ = run(command, "--help")
    assert "Options of the structure:" in out


def commands(group=main, prefix=()):
    """Every command and group of the command line, as the words that name it."""
    yield prefix
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*prefix, name))


@pytest.mark.parametrize("words", list(commands()), ids=" ".join)
def test_every_help_has_examples(words):
    code, out, _ = run(*words, "--help")
    assert code == 0 and re.search(r"Examples:\n +einsearch ", out)


@pytest.mark.parametrize("command", ["describe", "plan", "generate", "bench"])
def test_heads_default_to_one_everywhere(command):
    (heads,) = [p for p in main.commands[command].params if p.name == "heads"]
    assert heads.default == 1 and "every command's default is 1: the structure as written is one head" in heads.help


def test_version():
    """One source of truth: pyproject.toml's version, through the installed package's metadata."""
    import einsearch

    declared = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert einsearch.__version__ == declared
    for flag in ("-V", "--version"):
        assert run(flag) == (0, f"einsearch, version {declared}\n", "")


def python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


HEAVY = ["torch", "sympy", "networkx", "matplotlib", "jinja2", "scipy"]
LIGHT_COMMANDS = ["list", "check btt", "describe btt --D 64 --T 64", "describe btt", "plan mlr"]


def test_start_up_imports_nothing_heavy():
    """list, check, describe and plan of catalog entries, run in one fresh process, import none of
    these (torch alone takes longer than the whole command; the shipped formula cache spares sympy;
    the rank cut is a small max-flow, not networkx's)."""
    code = "import sys\nfrom einsearch.cli import main\n" \
        f"for command in {LIGHT_COMMANDS!r}:\n    try:\n        main(command.split())\n" \
        "    except SystemExit as e:\n        assert not e.code, (command, e.code)\n" \
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"  # fmt: skip
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_entry_points():
    result = python("cli.py", "list")
    assert result.returncode == 0 and "btt" in result.stdout
    result = python("-m", "einsearch", "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout and "describe" in result.stdout


# ---------------------------------------------------------------------------------------------
# Hostile input: one line `einsearch: error: ...` naming the file or option, exit 2, never a traceback

CATALOG_LIST = ", ".join(catalog.names())
HOSTILE = [
    (["mlr", "--T", "3"], "--T: T = 3 does not divide into (g t) at l = 2: T must be a multiple of 2 "
     "(g = 2^(l - 1) = 2); for every l in 1..8 it must be a multiple of 128"),
    (["mlr", "--T", "192"], "--T: T = 192 does not divide into (g t) at l = 8: T must be a multiple of 128 "
     "(g = 2^(l - 1) = 128)"),
    (["mlr", "--ranks", "a,b"], "--ranks: expected whole numbers separated by commas, got 'a,b'"),
    (["mlr", "--ranks", "1,2"], "--ranks: has 2 entries but levels = 8 needs 8 (pass 8 comma-separated values)"),
    (["mlr", "--levels", "0"], "--levels: must be a whole number from 1 to 4096 (the number of entries of ranks), "
     "got 0"),
    (["mlr", "--levels", "3"], "--levels: levels = 3 needs 3 entries of ranks but its default has 8 (pass --ranks "
     "with 3 comma-separated values)"),
    (["mlr", "--D", "4", "--D", "8"], "--D is given twice (4, then 8); give it once"),
    (["mlr", "--D=4", "--D", "8"], "--D is given twice (4, then 8); give it once"),
    (["mlr", "--foo", "3"], "mlr has no option --foo (its options: --T, --D, --levels, --ranks)"),
    (["mlr", "--level", "3"], "mlr has no option --level; did you mean --levels? (its options: --T, --D, --levels, "
     "--ranks)"),
    (["btt", "--split", "even"], "--split: must be one of balanced, research, got 'even'"),
    (["tt", "--a", "3"], "--a: c = D / (a * b) = 64/3 is not a whole number (D = 512, a = 3, b = 8)"),
    (["mlrr"], f"mlrr: no catalog structure of this name; did you mean mlr? (catalog: {CATALOG_LIST}; or give a path "
     "to a .ein file)"),
    (["nosuch.ein"], "nosuch.ein: no such file"),
    (["/"], "/: is a directory, not a .ein file"),
]  # fmt: skip
FILES = [
    ("empty.ein", "1:1: no score: add a line like `score = x[t, i] W[i, j] x[u, j]`"),
    ("bom_only.ein", "1:1: no score: add a line like `score = x[t, i] W[i, j] x[u, j]`"),
    ("nul_byte.ein", "2:12: binary file: a NUL byte (a .ein file is UTF-8 text)"),
    ("binary.ein", "3:1: binary file: a NUL byte (a .ein file is UTF-8 text)"),
    ("latin1_doc.ein", "4:9: not UTF-8: byte 0xe9 (save the file as UTF-8)"),
    ("utf16.ein", "1:1: not UTF-8: the file starts with a UTF-16 byte-order mark (save the file as UTF-8)"),
]


def assert_one_line_error(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert (code, out) == (2, ""), err
    assert err == f"einsearch: error: {message}\n"


@pytest.mark.parametrize("command", ["describe", "check", "plan"])
@pytest.mark.parametrize(("args", "message"), HOSTILE)
def test_hostile_arguments(command, args, message):
    assert_one_line_error([command, *args], message)


@pytest.mark.parametrize("command", ["describe", "check"])
@pytest.mark.parametrize(("fixture", "message"), FILES)
def test_hostile_files(command, fixture, message):
    path = str(FIXTURES / fixture)
    assert_one_line_error([command, path], f"{path}:{message}")


def test_bom_file_is_read():
    code, out, err = run("check", str(FIXTURES / "bom.ein"))
    assert code == 0 and out.rstrip().endswith("ok"), err


def test_directory_fifo_and_unreadable_file(tmp_path, monkeypatch):
    assert_one_line_error(["describe", str(tmp_path)], f"{tmp_path}: is a directory, not a .ein file")
    fifo = tmp_path / "pipe.ein"
    os.mkfifo(fifo)
    # in a subprocess with a timeout: a command that opened the FIFO would wait for a writer forever
    result = python("-m", "einsearch", "check", str(fifo))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"einsearch: error: {fifo}: is not a regular file (a FIFO, socket or device), not a .ein " \
        "file\n"  # fmt: skip
    secret = tmp_path / "secret.ein"
    secret.write_text(MINE)
    secret.chmod(0)
    if os.access(secret, os.R_OK):  # root reads anything: make the open fail as it would for a user
        from einsearch import structure

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(secret))

        monkeypatch.setattr(structure.os, "open", refuse)
    assert_one_line_error(["describe", str(secret)], f"{secret}: cannot be read: permission denied")


def test_generate_writes_refuses_and_forces(tmp_path):
    target = tmp_path / "mlr_attn.py"
    args = ["generate", "mlr", "--T", "64", "--D", "32", "--levels", "3", "--ranks", "4,2,2", "--heads", "2"]
    code, out, _ = run(*args, "-o", str(target))
    assert code == 0 and out.startswith(f"wrote {target}: MlrAttention, 2 heads")
    first = target.read_text()
    assert first.startswith('"""MlrAttention: MLR attention')
    assert f"einsearch generate mlr --T 64 --D 32 --levels 3 --ranks 4,2,2 --heads 2 -o {target}" in first
    target.write_text("mine")
    code, _, err = run(*args, "-o", str(target))
    assert code == 2 and "exists; pass --force" in err and target.read_text() == "mine"
    code, _, _ = run(*args, "-o", str(target), "--force")
    assert code == 0 and target.read_text() == first
    assert not [p for p in tmp_path.iterdir() if p.name != target.name]  # no temporary file left


def test_generate_to_stdout_and_errors(tmp_path):
    code, out, _ = run("generate", "btt", "--D", "16", "-o", "-", "--class-name", "Bilinear")
    assert code == 0 and "class Bilinear(nn.Module):" in out and not list(tmp_path.iterdir())
    code, _, err = run("generate", "btt", "--D", "16", "--heads", "3", "-o", "-")
    assert code == 2 and "--heads: must divide d_model = 16, got 3" in err
    code, _, err = run("generate", "btt", "--class-name", "not valid", "-o", "-")
    assert code == 2 and "--class-name" in err
    code, _, err = run("generate", "btt", "-o", str(tmp_path / "missing" / "x.py"))
    assert code == 2 and "does not exist" in err
