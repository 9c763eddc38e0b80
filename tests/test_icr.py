"""In-context regression experiment (einsearch.icr, `einsearch experiment icr`): the task's data,
the least-squares baseline, a few training steps, and the command's errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from einsearch.experiments import icr
from einsearch.cli import main

TINY = {"d": 4, "width": 16, "layers": 1, "heads": 2, "batch": 32, "test_prompts": 64, "log_every": 1}


def test_prompts_have_the_task_shapes_and_y_is_w_dot_x():
    prompts = icr.sample_prompts(5, 6, 12, torch.Generator().manual_seed(0))
    assert prompts.x.shape == (5, 12, 6) and prompts.y.shape == (5, 12) and prompts.w.shape == (5, 6)
    expected = torch.einsum("bnd,bd->bn", prompts.x.double(), prompts.w.double())
    torch.testing.assert_close(prompts.y.double(), expected, rtol=0, atol=1e-6)
    assert 0.7 < prompts.x.pow(2).sum(-1).mean().item() < 1.3  # x ~ N(0, I/d): |x|^2 about 1


def test_each_prompt_has_its_own_w_and_a_seed_reproduces_the_data():
    first = icr.sample_prompts(64, 8, 16, torch.Generator().manual_seed(3))
    again = icr.sample_prompts(64, 8, 16, torch.Generator().manual_seed(3))
    other = icr.sample_prompts(64, 8, 16, torch.Generator().manual_seed(4))
    assert torch.equal(first.x, again.x) and torch.equal(first.w, again.w)
    assert not torch.equal(first.w, other.w)
    assert len({tuple(w.tolist()) for w in first.w}) == 64
    assert torch.corrcoef(first.w[:, :2].T)[0, 1].abs() < 0.5  # fresh draws, not one w repeated


def test_the_curriculum_zeroes_the_inactive_dims_and_keeps_y_at_unit_scale():
    prompts = icr.sample_prompts(512, 8, 4, torch.Generator().manual_seed(0), active=3)
    assert torch.all(prompts.x[..., 3:] == 0)
    assert 0.8 < prompts.y.pow(2).mean().item() < 1.2
    config = icr.Config(d=8, steps=100, curriculum=0.5, curriculum_start=2)
    stages = [icr.active_dims(step, config) for step in range(100)]
    assert stages[0] == 2 and stages[49] < 8 and stages[50:] == [8] * 50 and stages == sorted(stages)


def test_tokens_interleave_x_and_y():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3)
    for encoding in icr.ENCODINGS:
        tokens = icr.encode(x, y, encoding)
        assert tokens.shape == (2, 6, 5)
        assert torch.equal(tokens[:, 0::2, :4], x) and torch.all(tokens[:, 0::2, 4] == 0)
        assert torch.equal(tokens[:, 1::2, 4], y)
    assert torch.all(icr.encode(x, y, "interleaved")[:, 1::2, :4] == 0)
    assert torch.equal(icr.encode(x, y, "paired")[:, 1::2, :4], x)


def test_least_squares_is_exact_from_d_examples_on_noiseless_data():
    d = 6
    prompts = icr.sample_prompts(200, d, 2 * d, torch.Generator().manual_seed(1))
    errors = icr.normalised_errors(icr.least_squares(prompts.x, prompts.y), prompts.y)
    assert errors[0] == pytest.approx(1.0)  # nothing seen: predict 0
    assert errors[d // 2] == pytest.approx(1 - (d // 2) / d, abs=0.15)  # min-norm: the seen directions
    assert max(errors[d:]) < 1e-8


def test_learning_rate_warms_up_then_decays():
    config = icr.Config(steps=100, warmup=0.1, min_lr=0.1)
    factors = [icr.lr_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] >= 0.1


def test_param_groups_follow_mup_and_hold_every_parameter_once():
    config = icr.Config(structure="lowrank", options={"r": 4}, **{**TINY, "width": 32, "heads": 4}, base_width=16)
    _, model = icr.build(config)
    groups = model.param_groups()
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lrs) == sum(1 for _ in model.parameters())
    block = model.blocks[0]
    assert lrs[id(block.attn.WQ)] == pytest.approx(config.lr * 16 / 32)
    assert lrs[id(block.fc2.weight)] == pytest.approx(config.lr * 16 / 128)
    assert lrs[id(model.read_out.weight)] == pytest.approx(config.lr * 16 / 32)
    assert lrs[id(model.read_in.weight)] == lrs[id(model.position)] == config.lr
    assert torch.all(model.read_out.weight == 0) and torch.all(block.attn.o_proj.weight == 0)


def test_training_a_tiny_model_decreases_the_loss_and_is_deterministic():
    config = icr.Config(structure="lowrank", options={"r": 4}, steps=30, lr=1e-2, warmup=0.1, **TINY)
    result = icr.train(config)
    losses = [loss for _, loss in result.losses]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    assert len(result.errors) == len(result.least_squares) == 2 * config.d
    again = icr.train(config)
    assert again.losses == result.losses and again.errors == result.errors
    payload = json.loads(icr.results_json(result))
    assert payload["config"]["prompt_length"] == 16 and payload["structure"]["options"]["T"] == 16


def test_the_model_attends_with_the_generated_module_at_the_prompt_length():
    config = icr.Config(structure="mlr", options={"levels": 3, "ranks": [2, 1, 1]}, **TINY)
    instance, model = icr.build(config)
    assert (instance.T, instance.D) == (16, 16)
    attention = model.blocks[0].attn
    assert type(attention).__name__ == "MlrAttention" and attention.block_size == 16
    assert attention.n_heads == 2 and set(attention.factors()) == set(instance.factor_shapes)


ERRORS = [
    (["--structure", "nosuch"], "no catalog structure"),
    (["--structure", "mlr", "--d-input", "16"], "--T"),  # 8 levels do not fit T = 64
    (["--structure", "lowrank", "--T", "64"], "prompt length"),
    (["--structure", "lowrank", "--heads", "3"], "heads"),
    (["--structure", "lowrank", "--bogus", "1"], "bogus"),
    (["--structure", "lowrank", "--steps", "0"], "--steps"),
]


@pytest.mark.parametrize("args, message", ERRORS)
def test_command_errors_exit_2(args, message):
    result = CliRunner().invoke(main, ["experiment", "icr", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_command_refuses_to_overwrite_results(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    result = CliRunner().invoke(main, ["experiment", "icr", "--structure", "lowrank", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (tmp_path / "results.json").read_text() == "{}"


def test_command_trains_and_writes_results(tmp_path):
    args = ["experiment", "icr", "--structure", "lowrank", "--r", "4", "--d-input", "4", "--D", "16", "--heads", "2",
            "--layers", "1", "--steps", "3", "--batch", "8", "--test-prompts", "16", "--out", str(tmp_path / "run"),
            "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["config"]["steps"] == 3 and len(written["errors"]["model"]) == 8
