"""Language-modelling experiment (einsearch.experiments.lm, `einsearch experiment lm`): the corpus
and its split, the FLOP counts against hand formulas, a tiny deterministic run, and the command's
errors (answered before torch is imported) and outputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from einsearch import load, report
from einsearch.cli import main
from einsearch.experiments import corpus, lm
from einsearch.experiments.settings import LmConfig

TINY = {"width": 16, "layers": 1, "heads": 2, "context": 32, "batch": 4, "eval_tokens": 256, "log_every": 5}


@pytest.fixture(scope="module")
def text() -> corpus.Corpus:
    return corpus.load()


def test_the_corpus_is_split_by_file_and_reads_the_same_bytes(text):
    folder = corpus.stdlib_folder()
    assert set(corpus.TRAIN).isdisjoint(corpus.VALIDATION)
    assert text.validation == "".join((folder / f"{name}.py").read_text(encoding="utf-8") for name in corpus.VALIDATION)
    assert text.train.startswith((folder / f"{corpus.TRAIN[0]}.py").read_text(encoding="utf-8"))
    assert all((folder / f"{name}.py").read_text(encoding="utf-8") not in text.train for name in corpus.VALIDATION)
    again = corpus.load()
    assert again.sha256 == text.sha256 and again.vocabulary == text.vocabulary
    assert sorted(set(text.train + text.validation)) == list(text.vocabulary)


def test_a_corpus_that_is_not_documented_says_so_and_a_missing_file_is_an_error(tmp_path):
    for name in corpus.TRAIN + corpus.VALIDATION:
        (tmp_path / f"{name}.py").write_text(f"# {name}\n")
    other = corpus.load(tmp_path)
    expected = "".join(f"# {name}\n" for name in corpus.TRAIN).encode() + b"\0"
    expected += "".join(f"# {name}\n" for name in corpus.VALIDATION).encode()
    assert other.sha256 == hashlib.sha256(expected).hexdigest()
    assert not other.documented and "not a documented one" in other.warning()
    (tmp_path / "heapq.py").unlink()
    with pytest.raises(corpus.CorpusError, match="heapq.py"):
        corpus.load(tmp_path)


def test_text_encodes_to_the_places_of_its_characters(text):
    ids = lm.encode(text.validation[:3000], text.vocabulary)
    assert "".join(text.vocabulary[i] for i in ids.tolist()) == text.validation[:3000]
    windows = lm.validation_windows(torch.arange(1000), 50, 200)
    assert windows.shape == (4, 51) and windows[0, 0] == 0 and windows[-1, -1] == 999


@pytest.mark.parametrize("name, options", [("mlr", {"levels": 3, "ranks": [3, 2, 1]}),
                                           ("global-swa", {"rg": 2, "rw": 2, "window": 5}),
                                           ("swa", {"r": 2, "window": 40})])  # fmt: skip
def test_causal_pairs_match_a_brute_force_count(name, options, monkeypatch):
    instance = load(name).resolve({**options, "T": 24, "D": 8})
    monkeypatch.setattr(lm, "ROWS", 5)  # several row chunks, the last one short
    per_level, union = lm.causal_pairs(instance)
    covered = [
        [[level.pattern.covers(24, t, u) and u <= t for u in range(24)] for t in range(24)] for level in instance.levels
    ]
    assert per_level == [int(np.sum(grid)) for grid in covered]
    assert union == int(np.sum(np.logical_or.reduce(np.array(covered))))


def test_analyzer_and_flop_counter_match_the_formulas_of_standard_attention(text):
    D, T, H, r, L = 16, 32, 2, 4, 2
    config = LmConfig(structure="lowrank", options={"r": r}, width=D, heads=H, layers=L, context=T)
    instance = config.prepare(text)
    model = lm.LanguageModel(config, len(text.vocabulary), lm.attention_class(instance, H))
    flops = lm.costs(model, instance, config)
    pairs = T * (T + 1) // 2  # causal pairs of one sequence
    per_layer = H * (2 * 2 * D * r) + H * 2 * pairs * (r + D // H) / T + 4 * D * D + 16 * D * D
    assert flops["analyzer"]["per_token"] == L * per_layer
    # the kernel scores the whole T x T square, q.k and p.v at one head size (zero padding to the larger)
    whole = H * (2 * 2 * D * r) + H * 2 * T * 2 * max(r, D // H) + 4 * D * D + 16 * D * D
    assert flops["flop_counter"] == L * whole
    assert flops["read_out"] == 2 * D * len(text.vocabulary)


def test_a_tiny_run_learns_and_is_deterministic(text):
    config = LmConfig(structure="lowrank", options={"r": 4}, steps=40, lr=1e-2, seed=3, **TINY)
    result = lm.train(config, text=text)
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < 0.8 * losses[0] and result.validation_loss < losses[0]
    again = lm.train(config, text=text)
    assert again.losses == result.losses and again.validation_loss == result.validation_loss
    other = lm.train(LmConfig(structure="lowrank", options={"r": 4}, steps=5, lr=1e-2, seed=4, **TINY), text=text)
    assert other.losses[0] != result.losses[0]
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["corpus"]["sha256"] == text.sha256 and payload["tokens"] == 40 * 4 * 32
    assert payload["train_flops"] == 3 * payload["flops_per_token"]["analyzer"]["per_token"] * payload["tokens"]
    assert "validation loss" in report.lm_text(payload)


def test_param_groups_follow_mup_and_hold_every_parameter_once(text):
    config = LmConfig(structure="mlr", options={"levels": 2, "ranks": [3, 1]}, **{**TINY, "width": 32}, base_width=8)
    instance = config.prepare(text)
    model = lm.LanguageModel(config, len(text.vocabulary), lm.attention_class(instance, config.heads))
    lrs = {id(p): g["lr"] for g in model.param_groups() for p in g["params"]}
    assert len(lrs) == sum(1 for _ in model.parameters())
    block = model.blocks[0]
    assert lrs[id(block.fc1.weight)] == pytest.approx(config.lr * 8 / 32)
    assert lrs[id(block.fc2.weight)] == pytest.approx(config.lr * 8 / 128)
    assert lrs[id(model.read_out.weight)] == pytest.approx(config.lr * 8 / 32)
    assert lrs[id(model.embed.weight)] == lrs[id(model.position)] == config.lr
    assert torch.all(model.read_out.weight == 0) and torch.all(block.fc2.weight == 0)
    assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]


BAD = [
    ("lm", ["--structure", "lowrank", "--heads", "3"], "--heads"),
    ("lm", ["--structure", "lowrank", "--T", "1"], "--T"),
    ("lm", ["--structure", "mlr", "--T", "100"], "--T"),  # 8 levels do not fit T = 100
    ("lm", ["--structure", "lowrank", "--r", "x"], "--r"),
    ("lm", ["--structure", "lowrank", "--T", "100000"], "GiB of memory"),
    ("lm", ["--structure", "lowrank", "--T", "1000000"], "characters of validation text"),
    ("lm", ["--structure", "lowrank", "--out", "{file}/run"], "not a directory"),
    ("lm", ["--structure", "lowrank", "--out", "{file}"], "not a directory"),
    ("lm", ["--structure", "lowrank", "--plot", "{folder}"], "is a directory"),
    ("lm", ["--structure", "lowrank", "--plot", "{folder}/missing/loss.png"], "not a directory"),
    ("icr", ["--structure", "lowrank", "--d-input", "100000"], "GiB of memory"),
    ("icr", ["--structure", "lowrank", "--out", "{file}"], "not a directory"),
    ("icr", ["--structure", "lowrank", "--T", "8"], "prompt length"),
]


def test_bad_arguments_and_outputs_exit_2_before_torch_is_imported(tmp_path):
    """Every case in a fresh interpreter that never imports torch: the errors come first."""
    (tmp_path / "file").write_text("")
    cases = [[name, *(arg.format(file=tmp_path / "file", folder=tmp_path) for arg in args)] for name, args, _ in BAD]
    script = (
        "import json, sys\nfrom click.testing import CliRunner\nfrom einsearch.cli import main\n"
        f"results = [CliRunner().invoke(main, ['experiment', *args]) for args in {cases!r}]\n"
        "print(json.dumps([[r.exit_code, r.output] for r in results] + ['torch' in sys.modules]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    answers = json.loads(run.stdout)
    assert answers.pop() is False
    for (code, output), (name, args, message) in zip(answers, BAD):
        assert code == 2 and message in output and "Traceback" not in output, (name, args, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_the_command_writes_results_and_a_plot_and_overwrites_only_with_force(tmp_path):
    args = ["experiment", "lm", "--structure", "swa", "--r", "4", "--window", "4", "--D", "16", "--heads", "2",
            "--layers", "1", "--T", "16", "--batch", "2", "--steps", "3", "--eval-tokens", "32",
            "--out", str(tmp_path / "run"), "--plot", str(tmp_path / "loss.png")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["config"]["steps"] == 3 and written["structure"]["options"]["window"] == 4
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    (tmp_path / "run" / "results.json").write_text("{}")
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert (tmp_path / "run" / "results.json").read_text() == "{}"
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"]["steps"] == 3
