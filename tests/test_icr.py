"""In-context regression experiment (einsearch.experiments.icr, `einsearch experiment icr`): the
task's data, the encodings, the curriculum, the least-squares baseline, a few training steps, and
the command's errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from einsearch import report
from einsearch.cli import main
from einsearch.experiments import icr, training
from einsearch.experiments.settings import IcrConfig

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


def test_inactive_dims_are_zero_and_y_keeps_unit_scale():
    prompts = icr.sample_prompts(512, 8, 4, torch.Generator().manual_seed(0), active=3)
    assert torch.all(prompts.x[..., 3:] == 0)
    assert 0.8 < prompts.y.pow(2).mean().item() < 1.2


def test_the_curriculum_grows_dims_and_examples_as_the_research_code_does():
    # 500k steps, a stage every 2000, within 6%: 15 stages; d = 64: 4 + 15 * inc >= 64 -> inc = 4.
    config = IcrConfig(d=64, steps=500_000, curriculum_every=2000, curriculum_share=0.06)
    assert [icr.curriculum(step, config) for step in (0, 1999, 2000, 4000)] == [(4, 8), (4, 8), (8, 16), (12, 24)]
    assert icr.curriculum(15 * 2000, config) == (64, 128) and icr.curriculum(499_999, config) == (64, 128)
    short = IcrConfig(d=8, steps=100, curriculum_every=10, curriculum_share=0.5)  # 5 stages, inc 1
    stages = [icr.curriculum(step, short) for step in range(100)]
    assert stages[0] == (4, 8) and stages[39] == (7, 14) and stages[40:] == [(8, 16)] * 60
    assert icr.curriculum(99, IcrConfig(d=8, steps=100)) == (8, 16)  # no curriculum: all of it


def test_paired_tokens_repeat_x_and_research_tokens_put_y_in_the_first_slot():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3)
    paired = icr.encode(x, y, "paired")
    assert paired.shape == (2, 6, 5)
    assert torch.equal(paired[:, 0::2, :4], x) and torch.all(paired[:, 0::2, 4] == 0)
    assert torch.equal(paired[:, 1::2, :4], x) and torch.equal(paired[:, 1::2, 4], y)
    research = icr.encode(x, y, "research")
    assert research.shape == (2, 6, 4)
    assert torch.equal(research[:, 0::2], x)
    assert torch.equal(research[:, 1::2, 0], y) and torch.all(research[:, 1::2, 1:] == 0)


def test_least_squares_is_exact_from_d_examples_on_noiseless_data():
    d = 6
    prompts = icr.sample_prompts(200, d, 2 * d, torch.Generator().manual_seed(1))
    errors = icr.normalised_errors(icr.least_squares(prompts.x, prompts.y), prompts.y)
    assert errors[0] == pytest.approx(1.0)  # nothing seen: predict 0
    assert errors[d // 2] == pytest.approx(1 - (d // 2) / d, abs=0.15)  # min-norm: the seen directions
    assert max(errors[d:]) < 1e-8


def test_learning_rate_warms_up_then_decays_or_stays():
    config = IcrConfig(steps=100, warmup=0.1, min_lr=0.1)
    factors = [training.lr_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] >= 0.1
    constant = IcrConfig(steps=100, warmup=0.1, schedule="constant")
    assert [training.lr_factor(step, constant) for step in range(9, 100)] == [1.0] * 91


def test_param_groups_follow_mup_and_hold_every_parameter_once():
    config = IcrConfig(structure="lowrank", options={"r": 4}, **{**TINY, "width": 32, "heads": 4}, base_width=16)
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


def test_research_settings_drop_every_bias_and_set_the_initial_scales():
    config = IcrConfig(structure="lowrank", options={"r": 4}, **{**TINY, "width": 64}, encoding="research",
                       read_in_std=0.02, position_std=0.02, bias=False)  # fmt: skip
    _, model = icr.build(config)
    assert [name for name, _ in model.named_parameters() if name.endswith("bias")] == []
    assert model.read_in.in_features == config.d
    assert model.read_in.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert model.position.std().item() == pytest.approx(0.02, rel=0.2)


def test_training_a_tiny_model_decreases_the_loss_and_is_deterministic():
    config = IcrConfig(structure="lowrank", options={"r": 4}, steps=30, lr=1e-2, warmup=0.1, **TINY)
    result = icr.train(config)
    losses = [loss for _, loss in result.losses]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    assert len(result.errors) == len(result.least_squares) == 2 * config.d
    again = icr.train(config)
    assert again.losses == result.losses and again.errors == result.errors
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["config"]["prompt_length"] == 16 and payload["structure"]["options"]["T"] == 16
    assert "| model |" in report.icr_text(payload)


def test_a_curriculum_run_trains_on_short_prompts_first():
    config = IcrConfig(structure="lowrank", options={"r": 4}, steps=4, lr=1e-2, curriculum_every=2,
                       curriculum_share=1.0, encoding="research", **{**TINY, "d": 6})  # fmt: skip
    seen = []
    model = icr.build(config)[1]
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    loss_at = icr.batches(model, config)
    for step in range(4):
        loss_at(step)
    assert seen == [16, 16, 20, 20]  # 2 stages of 1 dim and 2 examples: 8 examples, then 10


def test_the_model_attends_with_the_generated_module_at_the_prompt_length():
    config = IcrConfig(structure="mlr", options={"levels": 3, "ranks": [2, 1, 1]}, **TINY)
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
    (["--structure", "lowrank", "--d-input", "100000"], "GiB of memory"),  # T = 400,000
    (["--structure", "lowrank", "--encoding", "interleaved"], "--encoding"),
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
            "--qk-norm", "pooled", "--logit-scale", "sqrt", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["config"]["steps"] == 3 and len(written["errors"]["model"]) == 8
    assert written["config"]["generate_options"] == {"qk_norm": "pooled", "logit_scale": "sqrt"}


def test_help_names_every_research_setting_and_its_value():
    text = " ".join(CliRunner().invoke(main, ["experiment", "icr", "--help"]).output.split())
    for name in icr.RESEARCH:
        option = "--no-bias" if name == "bias" else "--" + name.replace("_", "-")
        assert option in text, option
    for value in ("research: 2000", "research: 0.06", "research: 0.02", "research: 1e-20", "research: none"):
        assert value in text, value
    for option in ("--qk-norm", "--logit-scale", "--rms-cap", "--normalize", "--separate-softmax"):  # the scoring
        assert option in text, option


def test_the_sweeps_pool_keeps_the_jobs_order():
    """Jobs run costliest first in worker processes; results come back in the jobs' order, and the
    progress callback sees each once."""
    import math

    from einsearch.experiments.pool import run_all

    seen = []
    results = run_all([4.0, 9.0, 1.0], math.sqrt, 2, cost=float, done=lambda n, result: seen.append((n, result)))
    assert results == [2.0, 3.0, 1.0]
    assert seen == [(1, 3.0), (2, 2.0), (3, 1.0)]
