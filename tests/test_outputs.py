"""Outputs (einsearch/outputs.py): paths refused before the work, files written whole with the mode
a plain open gives, failed writes leaving nothing, standard output that cannot be written; and
hypothesis driving describe --plot and generate -o over random targets."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from einsearch import outputs
from einsearch.cli import main
from einsearch.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
UNWRITABLE = Path("/proc/einsearch-test")  # a pseudo file system: no new files, even for root


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def refused(path, message: str, **kwargs) -> None:
    with pytest.raises(OutputError) as caught:
        outputs.file_target(path, option="-o", **kwargs)
    assert str(caught.value) == message


def test_file_targets_refused_before_the_work(tmp_path):
    (tmp_path / "taken").write_text("mine")
    (tmp_path / "plain").write_text("")
    refused("", "-o '': an empty path names no file", force=True)
    refused(tmp_path, f"-o {tmp_path}: is a directory", force=True)
    refused("/dev/null", "-o /dev/null: is not a regular file (a device, FIFO or socket)", force=True)
    refused(tmp_path / "taken", f"-o {tmp_path / 'taken'}: exists; pass --force to overwrite it", force=False)
    refused(tmp_path / "no" / "x", f"-o {tmp_path / 'no' / 'x'}: the folder {tmp_path / 'no'} does not exist",
            force=False)  # fmt: skip
    refused(tmp_path / "plain" / "x", f"-o {tmp_path / 'plain' / 'x'}: {tmp_path / 'plain'} is not a directory",
            force=False)  # fmt: skip
    with pytest.raises(OutputError, match="^-o /proc/x.png: cannot write in /proc: "):
        outputs.file_target(UNWRITABLE.parent / "x.png", force=True, option="-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "taken"]  # the probes left nothing


def test_written_with_the_mode_a_plain_open_gives(tmp_path):
    """0666 less the umask for a new file (generated files were 0600); a replaced file keeps its mode."""
    for mask in (0o022, 0o027, 0o077):
        with umask(mask):
            outputs.file_target(tmp_path / f"new{mask:o}", force=False).write("text")
            with open(tmp_path / f"plain{mask:o}", "w") as handle:
                handle.write("text")
        assert stat.S_IMODE(os.stat(tmp_path / f"new{mask:o}").st_mode) == 0o666 & ~mask
        assert os.stat(tmp_path / f"new{mask:o}").st_mode == os.stat(tmp_path / f"plain{mask:o}").st_mode
    kept = tmp_path / "kept"
    kept.write_text("old")
    kept.chmod(0o640)
    outputs.file_target(kept, force=True).write(b"new")
    assert kept.read_bytes() == b"new" and stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_a_link_is_written_through(tmp_path):
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    outputs.file_target(tmp_path / "link.txt", force=True).write("new")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_a_failed_write_leaves_nothing(tmp_path, failing):
    """A full device (at the write or at the rename): one OutputError, the old file untouched, no
    temporary file left."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    checked = outputs.file_target(target, force=True, option="-o")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    patch = (
        mock.patch("os.fdopen", side_effect=full) if failing == "write" else mock.patch("os.replace", side_effect=full)
    )
    with patch, pytest.raises(OutputError, match="^-o .*out.txt: cannot write: no space left on device$"):
        checked.write("new" * 1000)
    assert os.listdir(tmp_path) == ["out.txt"] and target.read_text() == "old"


def test_directory_targets(tmp_path):
    (tmp_path / "file").write_text("")
    folder = outputs.directory_target(tmp_path / "a" / "b", option="--out")
    assert not (tmp_path / "a").exists()  # checked, not made: nothing is written before the work
    folder.file("results.json", force=False).write("{}")
    assert (tmp_path / "a" / "b" / "results.json").read_text() == "{}"
    for bad, message in [
        (tmp_path / "file", "is not a directory"),
        (tmp_path / "file" / "x", f"{tmp_path / 'file'} is not a directory"),
        (UNWRITABLE / "x", "cannot write in /proc"),
        ("", "an empty path names no folder"),
    ]:
        with pytest.raises(OutputError, match=message):
            outputs.directory_target(bad, option="--out")


def einsearch_to(stdout, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "einsearch", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, timeout=120)  # fmt: skip


@pytest.mark.parametrize("args", [["plan", "mlr", "--T", "64", "--levels", "2", "--ranks", "4,2"],
                                  ["generate", "lowrank", "-o", "-"]])  # fmt: skip
def test_a_full_standard_output_is_one_line_and_exit_2(args):
    with open("/dev/full", "w") as full:
        result = einsearch_to(full, *args)
    assert (result.returncode, result.stderr) == (2, "einsearch: error: standard output: cannot write: no space "
                                                     "left on device\n")  # fmt: skip


def test_a_closed_pipe_ends_quietly():
    process = subprocess.Popen([sys.executable, "-m", "einsearch", "list"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    process.stdout.close()
    assert process.stderr.read() == b"" and process.wait(timeout=120) == 1


# ---------------------------------------------------------------------------------------------
# Hypothesis: random targets through the commands

KINDS = ["new", "existing", "link", "dangling link", "directory", "file as folder", "missing folder", "empty",
         "device", "unwritable"]  # fmt: skip
REPLACEABLE = ("existing", "link", "dangling link")  # written with --force
PNG = b"\x89PNG fake"  # the figure itself is not what is fuzzed, its path is
BASE = ["lowrank", "--T", "16", "--D", "8"]


def make_target(kind: str, root: Path) -> str:
    """A path of the given kind under ``root``; an existing file is made with mode 0600."""
    out = root / "out.bin"
    if kind in ("existing", "link"):
        real = root / ("real.bin" if kind == "link" else "out.bin")
        real.write_bytes(b"old")
        real.chmod(0o600)
        if kind == "link":
            out.symlink_to(real)
    elif kind == "dangling link":
        out.symlink_to(root / "nowhere.bin")
    elif kind == "directory":
        out.mkdir()
    elif kind == "file as folder":
        (root / "file").write_bytes(b"")
        out = root / "file" / "out.bin"
    elif kind == "missing folder":
        out = root / "missing" / "out.bin"
    elif kind != "new":
        return {"empty": "", "device": "/dev/null", "unwritable": str(UNWRITABLE.parent / "out.bin")}[kind]
    return str(out)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: its kind, mode, and content (or link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else ""
        found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return found


@settings(max_examples=40, deadline=None, derandomize=True)
@given(command=st.sampled_from(["generate", "describe"]), kind=st.sampled_from(KINDS), force=st.booleans(),
       full=st.booleans())  # fmt: skip
def test_random_output_targets(command, kind, force, full):
    """Written whole (the content, the mode a plain open gives, a link kept) or refused with one line
    and exit 2 and nothing changed; never a traceback. ``full``: the device fills up at the rename."""
    with tempfile.TemporaryDirectory() as folder, umask(0o022):
        root = Path(folder)
        target = make_target(kind, root)
        before = snapshot(root)
        option = "-o" if command == "generate" else "--plot"
        args = [command, *BASE, option, target, *["--force"] * force]
        full_device = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with mock.patch("einsearch.plot.pattern_png", return_value=PNG), \
                mock.patch("os.replace", side_effect=full_device) if full else nullcontext():  # fmt: skip
            result = CliRunner().invoke(main, args, catch_exceptions=False)
        succeeds = not full and (kind == "new" or (force and kind in REPLACEABLE))
        assert result.exit_code == (0 if succeeds else 2), result.output
        if not succeeds:
            assert result.stdout == "" and result.stderr.startswith("einsearch: error: ")
            assert result.stderr.count("\n") == 1 and snapshot(root) == before
            return
        written = Path(os.path.realpath(target))
        if command == "describe":
            assert written.read_bytes() == PNG
        else:
            source = CliRunner().invoke(main, ["generate", *BASE, "-o", "-"]).stdout
            assert written.read_text() == source.replace(" -o -\n", f" -o {target}\n")
        assert stat.S_IMODE(written.stat().st_mode) == (0o600 if kind in ("existing", "link") else 0o644)
        assert os.path.islink(target) == (kind in ("link", "dangling link"))
        assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
