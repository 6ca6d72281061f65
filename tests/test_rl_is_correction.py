"""TRL's importance-sampling correction for rollouts from rounded weights (``rollout_weights`` bfloat16/int8/
int4 with the fast engine): TRL computes and applies it only with vLLM; ``TimedGRPOTrainer`` does the same
off vLLM from GRPOConfig's own ``vllm_importance_sampling_*`` fields."""

from __future__ import annotations

import math

import pytest
import torch
from test_rl import Item, alternating, retriever, tiny_config

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.tuning.rl import (
    build_trainer,
    check_rl,
    fold_ratio_into_advantages,
    importance_sampling_ratio,
)

OLD = torch.tensor([[-1.0, -2.0, -0.5, -3.0, 0.0],
                    [-0.2, -0.4, -9.0, -0.1, -0.3]])
SAMPLING = torch.tensor([[-1.5, -1.0, -5.0, -3.0, 0.0],  # third token: retrieved (masked), far apart
                         [-0.2, -0.2, -1.0, float("nan"), 0.0]])  # a NaN sampling log-prob counts as no difference
MASK = torch.tensor([[1, 1, 0, 1, 0],  # last: padding
                     [1, 1, 0, 1, 1]])


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_the_ratio_is_trls_truncated_or_masked_exp_old_minus_sampling(mode):
    diff = [[0.5, -1.0, 0.0, 0.0, 0.0], [0.0, -0.2, 0.0, 0.0, -0.3]]  # (old - sampling) on the mask, by hand
    clip_min, clip_max = 0.5, 1.5
    ratio = importance_sampling_ratio(OLD, SAMPLING, MASK, mode, clip_min, clip_max)
    if mode.startswith("token"):
        raw = [[math.exp(d) for d in row] for row in diff]
    else:
        raw = [[math.exp(sum(row))] for row in diff]  # exp(-0.5), exp(-0.5)
    if mode.endswith("truncate"):
        want = [[min(max(r, clip_min), clip_max) for r in row] for row in raw]
    else:
        want = [[r if clip_min <= r <= clip_max else 0.0 for r in row] for row in raw]
    assert ratio.shape == ((2, 5) if mode.startswith("token") else (2, 1))
    torch.testing.assert_close(ratio, torch.tensor(want))
    if mode == "token_mask":  # exp(0.5) > 1.5 and exp(-1) < 0.5: masked; the masked and NaN tokens: 1
        assert ratio[0].tolist()[:2] == [0.0, 0.0] and ratio[0, 2] == ratio[1, 3] == 1.0
    # TRL's defaults: no lower bound, 3.0 above
    assert importance_sampling_ratio(OLD, SAMPLING, MASK, mode, None, 3.0).min() > 0
    with pytest.raises(ValueError, match="sequence_mask"):
        importance_sampling_ratio(OLD, SAMPLING, MASK, "seq", None, 3.0)


def _inputs(trainer, tokenizer, beta: float) -> dict:
    """A batch of 4 sequences as _generate_and_score_completions leaves it (retrieved tokens in tool_mask)."""
    torch.manual_seed(1)
    prompt_ids = torch.randint(5, len(tokenizer), (4, 6))
    completion_ids = torch.randint(5, len(tokenizer), (4, 10))
    completion_mask = torch.ones(4, 10, dtype=torch.long)
    completion_mask[1, 7:] = 0  # padding
    tool_mask = torch.ones(4, 10, dtype=torch.long)
    tool_mask[:, 3:5] = 0  # retrieved
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": completion_mask, "tool_mask": tool_mask,
              "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5]),
              "num_items_in_batch": (completion_mask * tool_mask).sum()}
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([inputs["prompt_mask"], completion_mask], 1), 10)
    inputs["sampling_per_token_logps"] = logps + 0.15 * torch.randn_like(logps)  # a rounded policy's
    if beta:
        inputs["ref_per_token_logps"] = logps + 0.01 * torch.randn_like(logps)
    return inputs


@pytest.mark.parametrize("loss_type,mode,beta", [("dapo", "sequence_mask", 0.0), ("grpo", "token_truncate", 0.04),
                                                 ("bnpo", "sequence_truncate", 0.04), ("dr_grpo", "token_mask", 0.0)])
def test_folded_advantages_give_trls_vllm_loss_and_gradient(tmp_path, tiny_model, smollm2_tokenizer, loss_type, mode,
                                                              beta):
    """The folded form (advantages x ratio) equals TRL's own ``per_token_loss * importance_sampling_ratio`` (its
    use_vllm branch), loss and gradient, with the KL term added after it."""
    config = tiny_config(tmp_path, reward_weights=[1.0], loss_type=loss_type, beta=beta,
                         vllm_importance_sampling_mode=mode, vllm_importance_sampling_clip_min=0.85,
                         vllm_importance_sampling_clip_max=1.15,
                         **(dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0) if beta else {}))
    trainer, _ = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                               items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before a step
    inputs = _inputs(trainer, smollm2_tokenizer, beta)
    with torch.no_grad():
        old, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1), 10)
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    ratio = importance_sampling_ratio(old, inputs["sampling_per_token_logps"], mask, mode, 0.85, 1.15)
    bounded = ((ratio == 0.85) | (ratio == 1.15) | (ratio == 0)).sum()
    assert 0 < bounded < ratio.numel() if mode.startswith("token") else bounded < ratio.numel()

    def loss_and_grad(batch: dict, use_vllm: bool) -> tuple[float, list]:
        trainer.model.zero_grad()
        trainer.use_vllm = use_vllm
        try:
            loss = trainer._compute_loss(trainer.model, batch)
        finally:
            trainer.use_vllm = False
        loss.backward()
        return loss.item(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]

    trls, trls_grad = loss_and_grad({**inputs, "importance_sampling_ratio": ratio}, use_vllm=True)
    folded = {**inputs, "advantages": fold_ratio_into_advantages(inputs["advantages"], ratio)}
    ours, our_grad = loss_and_grad(folded, use_vllm=False)
    trainer.vllm_importance_sampling_correction = False
    uncorrected, _ = loss_and_grad(inputs, use_vllm=False)
    assert ours == pytest.approx(trls, rel=1e-5, abs=1e-8) and ours != pytest.approx(uncorrected, rel=1e-4)
    assert len(our_grad) == len(trls_grad) > 0
    for a, b in zip(our_grad, trls_grad):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # the trainer's own path: bf16 rollouts, the ratio taken from the loss pass's log-probs (no extra pass)
    trainer.vllm_importance_sampling_correction = True
    trainer._graph_rollout.settings.weights = "bfloat16"
    assert trainer._corrects_rollouts()
    trained, trained_grad = loss_and_grad(inputs, use_vllm=False)
    assert "importance_sampling_ratio" not in inputs and inputs["advantages"].dim() == 1  # the batch is not changed
    assert trained == pytest.approx(trls, rel=1e-5, abs=1e-8)
    for a, b in zip(trained_grad, trls_grad):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def _spied_step(trainer) -> dict:
    """Trains one step, recording the no-grad log-prob passes, the correction's in/out and the loss's inputs."""
    seen: dict = {"no_grad_passes": 0, "corrections": []}
    logps_pass, apply_ratio, compute_loss = (trainer._get_per_token_logps_and_entropies, trainer._apply_ratio,
                                             trainer.compute_loss)

    def spy_logps(*args, **kwargs):
        out = logps_pass(*args, **kwargs)
        if not torch.is_grad_enabled():
            seen["no_grad_passes"] += 1
        return out

    def spy_apply(inputs, old):
        advantages = inputs["advantages"].clone()
        apply_ratio(inputs, old)
        seen["corrections"].append((advantages, old, inputs))

    def spy_loss(model, inputs, *args, **kwargs):
        seen["inputs"] = inputs
        return compute_loss(model, inputs, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = spy_logps
    trainer._apply_ratio = spy_apply
    trainer.compute_loss = spy_loss
    trainer.train()
    return seen


def test_float32_rollouts_get_no_ratio_and_no_extra_pass(tmp_path, tiny_model, smollm2_tokenizer):
    config = tiny_config(tmp_path, reward_weights=[1.0], rollout_backend="fast")  # beta 0: no reference pass
    assert config[0].rollout_weights == "float32" and config[1].vllm_importance_sampling_correction  # TRL's default
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    assert rollout.settings.weights == "float32" and not rollout.rounds_weights
    seen = _spied_step(trainer)
    assert seen["no_grad_passes"] == 0 and seen["corrections"] == []
    assert "importance_sampling_ratio" not in seen["inputs"] and seen["inputs"]["advantages"].dim() == 1
    row = trainer.state.log_history[0]
    assert not any(k.startswith("sampling/") for k in row)


def test_a_grpo_step_with_bf16_rollouts_corrects_and_logs_trls_metrics(tmp_path, tiny_model, smollm2_tokenizer):
    config = tiny_config(tmp_path, reward_weights=[1.0], rollout_backend="fast", rollout_weights="bfloat16",
                         beta=0.001, use_peft=True, lora_r=4, lora_alpha=8)
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    assert rollout.settings.weights == "bfloat16" and rollout.rounds_weights
    seen = _spied_step(trainer)
    assert seen["no_grad_passes"] == 1  # the reference (beta > 0) only: the ratio uses the loss pass's log-probs
    ((advantages, old, inputs),) = seen["corrections"]  # one loss pass: 4 completions, batch 4
    assert old.shape == inputs["sampling_per_token_logps"].shape and not old.requires_grad
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    diff = ((old - inputs["sampling_per_token_logps"]) * mask).sum(-1, keepdim=True)
    want = torch.exp(diff).masked_fill(torch.exp(diff) > 3.0, 0.0)  # TRL's default: sequence_mask, max 3
    torch.testing.assert_close(inputs["importance_sampling_ratio"], want)
    torch.testing.assert_close(inputs["advantages"], advantages * want.squeeze(1))
    assert "old_per_token_logps" not in inputs  # the loss keeps TRL's own (aligned) denominator
    row = trainer.state.log_history[0]
    for key in ("min", "mean", "max"):
        assert f"sampling/importance_sampling_ratio/{key}" in row
    assert row["sampling/importance_sampling_ratio/mean"] == pytest.approx(want.mean().item(), rel=1e-5)
    assert row["sampling/importance_sampling_ratio/min"] == pytest.approx(want.min().item(), rel=1e-5)
    delta = (old - inputs["sampling_per_token_logps"]).abs()[mask.bool()]
    assert row["sampling/sampling_logp_difference/max"] == pytest.approx(delta.max().item(), rel=1e-5)
    assert 0 < row["sampling/sampling_logp_difference/mean"] < 1  # bf16 rounding: small, not zero
    assert trainer.state.global_step == 1


def test_the_correction_follows_grpo_configs_switch_and_rollout_weights_are_checked(tmp_path, tiny_model,
                                                                                   smollm2_tokenizer):
    config = tiny_config(tmp_path, reward_weights=[1.0], rollout_weights="int8",
                         vllm_importance_sampling_correction=False)
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    assert rollout.rounds_weights and not trainer._corrects_rollouts()
    rollout.policy = object()  # a fixed policy: its log-probs are not judged
    assert not rollout.rounds_weights
    with pytest.raises(ConfigError, match="rollout_weights bfloat16 is the fast engine's"):
        check_rl(tiny_config(tmp_path, rollout_weights="bfloat16", rollout_backend="transformers"))
    with pytest.raises(ConfigError, match="rollout_weights must be one of"):
        tiny_config(tmp_path, rollout_weights="float16")
