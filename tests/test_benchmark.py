"""einsearch bench (einsearch/benchmark.py, einsearch/bench_setup.py): arguments and memory checked
before torch is imported, the contenders computing what they claim, and the report's numbers."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import einsearch
from einsearch.bench_setup import ITEMSIZE, bench_setup, size_text
from einsearch.benchmark import NaiveAttention, StandardAttention, bench, round_robin
from einsearch.codegen import attention_class
from einsearch.errors import EinsearchError, OptionError

ROOT = Path(__file__).resolve().parents[1]
FORMS = {  # one small structure per kind of partition of the generated module
    "lowrank": {"T": 32, "D": 16, "r": 4},  # one causal call
    "mlr": {"T": 32, "D": 16, "levels": 3, "ranks": [4, 2, 1]},  # a call per depth
    "swa": {"T": 32, "D": 16, "r": 4, "window": 5},  # a band's strips
    "global-swa": {"T": 32, "D": 16, "rg": 2, "rw": 2, "window": 4},  # a band beside a global term
}


def instance(name: str):
    return einsearch.load(name).resolve(FORMS[name])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "tpu"}, "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
        ({"device": "cuda:x"}, "--device: expected cpu, cuda or cuda:N, got 'cuda:x'"),
        ({"dtype": "float16"}, "--dtype: must be one of float32, bfloat16, float64, got 'float16'"),
        ({"heads": 3}, "--heads: must divide d_model = 16, got 3"),
        ({"length": 0}, "--length: must be at least 1, got 0"),
        ({"decode_context": 1}, "--decode-context: must be at least 2, got 1"),
    ],
)
def test_bad_arguments_are_refused(options, message):
    with pytest.raises(EinsearchError) as caught:
        bench_setup(instance("lowrank"), **options)
    assert str(caught.value) == message


def test_a_run_that_cannot_fit_is_refused_with_the_limit_named():
    """The naive form of a standard head at T = 2^20: 4 T x T buffers (the level's logits and their
    masked copy, the sum, the softmax), kept twice for the backward pass, of float32: 35.2 TB."""
    big = einsearch.load("lowrank").resolve(T=1 << 20)
    with pytest.raises(OptionError) as caught:
        bench_setup(big, available=64 * 10**9)
    message = str(caught.value)
    naive = 4 * (1 << 40) * 2 * ITEMSIZE["float32"]
    assert f"({size_text(naive)} for the naive form's logits;" in message
    assert "but 64.0 GB is available" in message and message.endswith("or pass --no-naive")
    with pytest.raises(OptionError, match="for the activations"):  # still too long without the naive form
        bench_setup(big, naive=False, available=10**9)
    small = bench_setup(instance("lowrank"), available=10**9)
    assert sum(small.memory().values()) <= 10**9 and small.generated and small.naive


def test_refused_before_torch_is_imported():
    """A bad argument costs no torch start-up (seconds and hundreds of MB)."""
    code = ("import sys\nfrom einsearch.cli import main\n"
            "sys.argv = ['einsearch', 'bench', 'lowrank', '--device', 'tpu']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "einsearch: error: --device: expected cpu, cuda or cuda:N, got 'tpu'\n"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_contenders_compute_the_same_attention(name):
    """The generated module and the naive form (its reference scores, one softmax) give the same
    outputs in float64."""
    setup = bench_setup(instance(name), heads=2)
    generated = attention_class(setup.generated)(16, 2).double()
    naive = NaiveAttention(generated)
    x = torch.randn(2, 32, 16, dtype=torch.float64)
    torch.testing.assert_close(naive(x), generated(x), rtol=0, atol=1e-12)


def test_standard_attention_is_causal_softmax_attention():
    torch.manual_seed(0)
    module = StandardAttention(16, 2).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    q, k, v = (t.view(2, 10, 2, 8).transpose(1, 2) for t in module.qkv(x).chunk(3, dim=-1))
    logits = (q @ k.mT / np.sqrt(8)).masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), -torch.inf)
    expected = module.o_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 10, 16))
    torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-12)
    cache = module.new_cache(2, 10)
    decoded = torch.cat([module(x[:, a:b], cache=cache) for a, b in ((0, 7), (7, 9), (9, 10))], 1)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("name", "length"), [("mlr", 40)])
def test_report(name, length, monkeypatch, tmp_path):
    """Every contender timed, standard attention the unit of the ratios, the predicted FLOPs those
    FlopCounterMode counts (MLR at a length that ends inside a block), and no file left
    behind (generated modules are compiled from memory)."""
    (tmp_path / "work").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    report = bench(bench_setup(instance(name), heads=2, length=length, repeat=1))
    assert [row.name for row in report.rows] == ["generated", "naive", "sdpa"]
    sdpa = report.rows[-1]
    assert (sdpa.forward_ratio, sdpa.backward_ratio, sdpa.decode_ratio) == (1.0, 1.0, 1.0)
    assert all(row.forward > 0 and row.backward > 0 for row in report.rows)
    assert report.rows[1].decode is None  # the naive form has no cache
    assert report.predicted_flops == report.counted_flops
    assert (report.length, report.heads, report.decode_context) == (length, 2, length)
    assert "FlopCounterMode" in report.text() and report.to_dict()["rows"][0]["name"] == "generated"
    assert list((tmp_path / "work").iterdir()) == []
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor")] == []


def test_round_robin_takes_turns_after_a_warm_up():
    calls: list[str] = []
    medians = round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeat=3)
    assert calls == ["a", "b"] * 4 and set(medians) == {"a", "b"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_one_line():
    from click.testing import CliRunner

    from einsearch.cli import main

    result = CliRunner().invoke(main, ["bench", "lowrank", "--T", "32", "--D", "16", "--device", "cuda"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "einsearch: error: --device cuda: no such CUDA device (this machine has 0 CUDA devices)\n"
