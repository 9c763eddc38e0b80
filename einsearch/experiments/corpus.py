"""The language-modelling corpus: the source of a fixed list of Python standard-library modules.

Every machine with Python has it, so nothing is downloaded: the files are read from the running
interpreter's standard-library folder (``sysconfig``), the same bytes on every run of the same
Python. They are split by file: ``VALIDATION`` is held out whole, ``TRAIN`` is trained on, each
side the files' text joined in the listed order. Characters are the tokens; the vocabulary is
every character of the corpus, sorted. Every listed file exists as one file in CPython 3.10 to
3.13.

The corpus changes with the Python release, so runs are comparable only on the same one: its
SHA-256 (of the train text, a zero byte, the validation text, UTF-8) is recorded with every
result, and ``DOCUMENTED`` holds its hash on each release it was measured on; a corpus with
another hash is reported as not documented.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import EinsearchError

TRAIN = (
    "_pydecimal", "_pyio", "argparse", "ast", "bdb", "codecs", "configparser", "contextlib", "dataclasses",
    "datetime", "dis", "doctest", "enum", "fractions", "ftplib", "functools", "gzip", "imaplib", "inspect",
    "ipaddress", "locale", "mailbox", "mimetypes", "optparse", "pdb", "pickle", "pickletools", "platform",
    "plistlib", "pstats", "pydoc", "random", "shutil", "smtplib", "socket", "socketserver", "ssl", "statistics",
    "subprocess", "tarfile", "tempfile", "threading", "tokenize", "trace", "traceback", "turtle", "typing",
    "warnings", "weakref", "webbrowser",
)  # fmt: skip
VALIDATION = ("calendar", "difflib", "gettext", "heapq", "pprint", "textwrap", "uuid")

# SHA-256 of the corpus per CPython release it was measured on.
DOCUMENTED = {
    "3.10.13": "2aac39821fc349c2cb45d4f784489b573fbc3b7e0e2a97f12029c761a18d7485",
    "3.11.7": "93b3c9538b7e97fe078d140298e6797ffdda543063dbd1ec2acaa14445e52288",
    "3.12.1": "921e6c6c21ab93a1156486cde8ea294fa0667ad93bd5d1c3ea024a0cbd9c1e68",
    "3.13.0": "21a8b52579b7c5731ef9cd981382053b5af5d0e47401d786502c8df555024956",
}


class CorpusError(EinsearchError):
    """The standard library's source is not there to read (a Python installed without it)."""


class CorpusWarning(UserWarning):
    """The corpus is not a documented one: its losses compare only with runs on the same corpus."""


@dataclass(frozen=True)
class Corpus:
    """The train and validation text and where they came from."""

    train: str
    validation: str
    folder: str  # the standard-library folder read
    python: str  # the interpreter's version, e.g. 3.11.7

    @cached_property
    def vocabulary(self) -> str:
        """Every character of the corpus, sorted: token i is ``vocabulary[i]``."""
        return "".join(sorted(set(self.train) | set(self.validation)))

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.train.encode() + b"\0" + self.validation.encode()).hexdigest()

    @property
    def documented(self) -> bool:
        """Whether this corpus is one of the documented ones."""
        return self.sha256 in DOCUMENTED.values()

    def warning(self) -> str | None:
        """What to tell a user whose corpus is not the documented one (None when it is)."""
        if self.documented:
            return None
        return (f"the corpus read from Python {self.python}'s standard library is not a documented one "
                f"(CPython {', '.join(DOCUMENTED)}): losses compare only between runs on the same corpus "
                f"(sha256 {self.sha256[:12]}...)")  # fmt: skip

    def to_dict(self) -> dict:
        return {
            "source": "Python standard-library modules (einsearch.experiments.corpus)",
            "python": self.python,
            "sha256": self.sha256,
            "documented": self.documented,
            "train_files": [f"{name}.py" for name in TRAIN],
            "validation_files": [f"{name}.py" for name in VALIDATION],
            "train_characters": len(self.train),
            "validation_characters": len(self.validation),
            "vocabulary": len(self.vocabulary),
        }


def stdlib_folder() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def read(names: tuple[str, ...], folder: Path) -> str:
    """The listed modules' source, joined in order (CorpusError naming the first one missing)."""
    texts = []
    for name in names:
        path = folder / f"{name}.py"
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise CorpusError(f"cannot read the corpus file {path}: {getattr(err, 'strerror', None) or err} "
                              "(the experiment needs the Python standard library's source)") from None  # fmt: skip
    return "".join(texts)


def load(folder: Path | None = None) -> Corpus:
    """The corpus of the running Python (or of the standard-library ``folder`` given)."""
    folder = stdlib_folder() if folder is None else folder
    return Corpus(read(TRAIN, folder), read(VALIDATION, folder), str(folder), platform.python_version())
