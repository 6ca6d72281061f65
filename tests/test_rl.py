"""Stage 2 RL: graph rollouts for TRL's GRPOTrainer, rewards, config, checkpoints and resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.documents import Document

from langchain_ragr1.config import RagR1Config
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies import Sampling
from langchain_ragr1.protocol import INVALID_ACTION_TEXT
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy
from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint
from langchain_ragr1.tuning.metrics import write_metrics
from langchain_ragr1.tuning.rl import build_trainer, check_rl
from langchain_ragr1.tuning.rl_questions import select_rl_questions, solve_counts
from langchain_ragr1.tuning.rl_rewards import RewardError, default_rewards, trl_reward
from langchain_ragr1.tuning.rl_rollout import GraphRollout, RolloutSettings
from langchain_ragr1.tuning.run_rl import parse

ROOT = Path(__file__).resolve().parents[1]
DOCS = [Document(page_content="Paris is the capital of France."),
        Document(page_content="Berlin is the capital of Germany.")]
TURNS = ["<think>look it up</think><search> capital of France, France capital </search>",
         "<think>found it</think><answer> Paris </answer>"]


def retriever() -> MemoryRetriever:
    return MemoryRetriever(documents=DOCS, k=1)


def scripted_rollout(**settings) -> tuple[GraphRollout, ScriptedPolicy]:
    policy = ScriptedPolicy(TURNS, token_level=True)  # one id per character: chr() decodes
    return GraphRollout(retriever(), RolloutSettings(agent=RagR1Config(max_turns=2), **settings), policy=policy), policy


def test_the_rollout_builds_its_agent_once_and_binds_each_calls_policy():
    rollout, policy = scripted_rollout()
    graph = rollout.agent.graph
    first = rollout(["Capital of France?"] * 2, None)
    second = rollout(["Capital of France?"] * 2, None)
    assert rollout.agent.graph is graph and first["completion_ids"] == second["completion_ids"]
    assert rollout.agent.config == rollout.settings.agent  # every setting of the run, not only mode/k/max_turns
    with pytest.raises(RuntimeError, match="outside a rollout call"):
        rollout.agent.invoke("Capital of France?")  # no policy is bound between calls


def test_rollout_shapes_mask_and_decoding():
    rollout, _ = scripted_rollout()
    out = rollout(["What is the capital of France?"] * 2 + ["Capital of France?"] * 2, None)
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "answer", "turns", "format_ok"):
        assert len(out[key]) == 4, key
    for prompt, ids, mask, lps in zip(out["prompt_ids"], out["completion_ids"], out["env_mask"], out["logprobs"]):
        assert len(ids) == len(mask) == len(lps)
        text = "".join(map(chr, ids))
        assert "".join(map(chr, prompt)).endswith("Capital of France?" if "Capital" in text else "")
        policy_text = "".join(chr(t) for t, m in zip(ids, mask) if m)
        env_text = "".join(chr(t) for t, m in zip(ids, mask) if not m)
        assert policy_text == "".join(TURNS)
        assert env_text.strip().startswith("<information>") and "Paris is the capital" in env_text
        assert "<search>" not in env_text and "<information>" not in policy_text
        assert text == TURNS[0] + env_text + TURNS[1]  # the transcript after the prompt, in order
        assert all(lp == -0.5 for lp, m in zip(lps, mask) if m) and all(lp == 0.0 for lp, m in zip(lps, mask) if not m)
    assert out["answer"] == ["Paris"] * 4 and out["turns"] == [1] * 4 and all(out["format_ok"])
    assert rollout.totals == {"episodes": 4, "truncated": 0, "steps": 1}


def test_rollout_runs_episodes_concurrently():
    policy = ScriptedPolicy(TURNS, token_level=True, delay_s=0.3)
    rollout = GraphRollout(retriever(), RolloutSettings(agent=RagR1Config(max_turns=2)), policy=policy)
    import time

    start = time.perf_counter()
    rollout(["q"] * 8, None)
    assert time.perf_counter() - start < 8 * 2 * 0.3 / 2  # sequential would be 4.8 s


def test_rollout_truncates_and_counts():
    rollout, _ = scripted_rollout(max_completion_length=60)
    out = rollout(["q1", "q1"], None)
    assert [len(ids) for ids in out["completion_ids"]] == [60, 60]
    assert [len(m) for m in out["env_mask"]] == [60, 60] and [len(lp) for lp in out["logprobs"]] == [60, 60]
    assert out["truncated"] == [True, True] and out["format_ok"] == [False, False]
    assert rollout.totals["truncated"] == 2 and rollout.last["ragr1/truncated"] == 1.0


def test_rewards_score_the_answer_not_the_text_and_name_the_failing_question():
    em, fmt = default_rewards()
    assert [em.__name__, fmt.__name__] == ["exact_match", "format"]
    columns = {"id": ["a", "b", "c"], "golden_answers": [["Beijing"], ["Paris"], ["Paris"]],
               "answer": [None, "paris", "Lyon"], "format_ok": [False, True, True]}
    completions = ["... <answer> Beijing </answer>", "x", "Paris"]  # text would mislead; the answer decides
    assert em(prompts=["q"] * 3, completions=completions, **columns) == [0.0, 1.0, 0.0]
    assert fmt(prompts=["q"] * 3, completions=completions, **columns) == [0.0, 1.0, 1.0]

    def broken(*, answer, **_):
        return 1.0 / len(answer)

    with pytest.raises(RewardError, match=r"question id 'c'.*ZeroDivisionError"):
        trl_reward(broken, "broken")(prompts=["q"] * 3, completions=completions,
                                      **{**columns, "answer": ["x", "y", ""]})


def test_shipped_configs_parse_and_flags_override():
    script, args, model, agent = parse(argv=["--config", str(ROOT / "training/configs/rl_cpu.yaml"), "--max_steps", "3",
                                             "--output_dir", "elsewhere"])
    assert model.model_name_or_path is None and script.retriever == "chroma"
    assert (args.max_steps, args.output_dir) == (3, "elsewhere")
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps // args.num_generations == 1
    assert model.lora_r == 8 and args.beta == 0.001 and agent.max_turns == 2
    _, paper, paper_model, paper_agent = parse(argv=["--config", "rl_paper_7b", "--use_cpu", "true"])
    assert paper.use_vllm and not paper_model.use_peft and paper_agent.max_turns == 4
    assert parse({"output_dir": "o", "use_cpu": True, "learning_rate": "1e-5"})[1].learning_rate == 1e-5


def test_cli_rejects_a_bad_config_before_loading_anything(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: o\nnum_generation: 4\n")
    proc = subprocess.run([sys.executable, str(ROOT / "training/run_rl.py"), "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "num_generation" in proc.stderr and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "did you mean 'num_generations'" in proc.stderr


def test_empty_data_is_a_config_error(tmp_path):
    from langchain_ragr1.tuning.rl_questions import load_questions

    (tmp_path / "empty.jsonl").write_text("")
    from langchain_ragr1.errors import RagR1Error

    with pytest.raises(RagR1Error, match="no questions"):  # the loader's DataError names the file
        load_questions(parse({"output_dir": "o", "use_cpu": True, "data": str(tmp_path / "empty.jsonl")})[0], 0)


def test_half_written_checkpoint_is_skipped(tmp_path):
    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-30").mkdir()  # killed while saving: no trainer_state.json
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_st')  # cut mid-write
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_vllm_settings_are_grpo_configs_own():
    _, args, _, _ = parse({"output_dir": "o", "use_vllm": True, "vllm_mode": "server", "use_cpu": True,
                           "vllm_server_base_url": "http://gpu-host:8000", "vllm_gpu_memory_utilization": 0.5})
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://gpu-host:8000")
    assert args.vllm_gpu_memory_utilization == 0.5 and args.reward_weights == [1.0, 0.0]
    assert not args.activation_checkpointing  # ours (TRL's default is on)
    plain = parse({"output_dir": "o", "use_cpu": True})[1]
    assert not plain.use_vllm and plain.num_generations == 8 and plain.per_device_train_batch_size == 8


def test_rl_data_filter_keeps_sometimes_solved_and_a_seeded_share_of_always_solved(tmp_path):
    from langchain_ragr1.agent import RagR1Agent
    from langchain_ragr1.data import QAItem, load_qa, write_jsonl

    items = [QAItem(id=f"q{i}", question=f"question {i}", golden_answers=["Paris"]) for i in range(10)]
    counts = [0, 3, 10, 10, 1, 10, 10, 9, 0, 10]
    kept, stats = select_rl_questions(items, counts, 10, keep_solved=0.25, seed=0)
    assert stats == {"questions": 10, "never_solved": 2, "sometimes_solved": 3, "always_solved": 5,
                     "always_solved_kept": 1, "kept": 4}
    assert {"q1", "q4", "q7"} <= {it.id for it in kept}
    assert kept == select_rl_questions(items, counts, 10, keep_solved=0.25, seed=0)[0]
    write_jsonl(kept, tmp_path / "rl.jsonl")
    assert [it.id for it in load_qa(str(tmp_path / "rl.jsonl"))] == [it.id for it in kept]

    answers = iter(["Paris", "Lyon"] * 20)  # alternate right and wrong across concurrent episodes
    policy = ScriptedPolicy(lambda segments: f"<answer> {next(answers)} </answer>")
    agent = RagR1Agent(policy, retriever(), max_turns=1)
    assert sum(solve_counts(agent, items[:3], 4, chunk=2, progress=False)) == 6


class Item:
    def __init__(self, i):
        self.id, self.question, self.golden_answers = f"q{i}", f"What is the capital of country {i}?", ["Paris"]


def alternating(prompts, completions, **_):
    """Reward 0, 1, 0, 1, ...: every group of 2 has variance, so advantages are non-zero."""
    return [float(i % 2) for i in range(len(completions))]


def tiny_config(tmp_path, **overrides) -> tuple:
    settings = dict(output_dir=str(tmp_path / "run"), num_generations=2, per_device_train_batch_size=4,
                    max_turns=2, max_new_tokens=8, max_completion_length=96, learning_rate=1e-3, beta=0.0,
                    max_steps=1, save_steps=1, use_peft=False, use_cpu=True, temperature=1.0, bf16=False)
    return parse({**settings, **overrides})


def test_grpo_step_gives_retrieved_tokens_no_gradient(tmp_path, tiny_model, smollm2_tokenizer):
    config = tiny_config(tmp_path, reward_weights=[1.0], beta=0.001, use_peft=True, lora_r=4,
                         lora_alpha=8)  # LoRA: the reference is the base
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    captured: dict = {"logps": []}
    forward, compute_loss = trainer.model.forward, trainer.compute_loss

    def spy_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        if getattr(out, "log_probs", None) is not None and out.log_probs.requires_grad:
            out.log_probs.retain_grad()
            captured["logps"].append(out.log_probs)
        return out

    def spy_loss(model, inputs, *args, **kwargs):
        captured["inputs"] = inputs
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.model.forward, trainer.compute_loss = spy_forward, spy_loss
    trainer.train()
    inputs = captured["inputs"]
    completion = inputs["completion_mask"].bool()
    env = completion & (inputs["tool_mask"] == 0)
    own = completion & (inputs["tool_mask"] == 1)
    assert env.any() and own.any()  # invalid-action text and closing EOS are environment tokens
    (logps,) = captured["logps"]
    grad = logps.grad[:, -completion.shape[1]:]
    assert grad[env].abs().max().item() == 0.0
    assert grad[own].abs().max().item() > 0.0
    texts = [smollm2_tokenizer.decode(ids[m.bool()]) for ids, m in zip(inputs["completion_ids"], env)]
    assert any(INVALID_ACTION_TEXT.strip() in t for t in texts)
    assert rollout.totals["steps"] == 1 and trainer.state.global_step == 1
    row = trainer.state.log_history[0]
    for key in ("reward", "ragr1/turns", "ragr1/truncated", "completions/mean_length"):
        assert key in row, key
    # the step's time split: rollouts, the no-grad reference pass (beta > 0), the rest; they add up
    assert row["timing/rollout_s"] > 0 and row["timing/reference_s"] > 0 and row["timing/policy_s"] > 0
    assert row["timing/rollout_s"] + row["timing/reference_s"] + row["timing/policy_s"] == pytest.approx(
        row["step_time"], rel=0.05)
    assert row["timing/peak_rss_gb"] > 0.1


def test_beta_zero_skips_the_reference_pass(tmp_path, tiny_model, smollm2_tokenizer):
    config = tiny_config(tmp_path, reward_weights=[1.0], beta=0.0, use_peft=True, lora_r=4, lora_alpha=8)
    trainer, _ = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                               items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    trainer.train()
    row = trainer.state.log_history[0]
    assert row["timing/reference_s"] == 0.0 and row["timing/rollout_s"] > 0


def test_kill_and_resume_continues_step_and_optimizer(tmp_path, tiny_model, smollm2_tokenizer):
    items = [Item(i) for i in range(4)]
    config = tiny_config(tmp_path, max_steps=2)
    trainer, _ = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                               items=items)
    trainer.train()
    out = Path(config[1].output_dir)
    assert (out / "metrics.csv").read_text().count("\n") == 3  # header + 2 steps, written while training
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # as if killed while writing checkpoint-2
    last = last_complete_checkpoint(out)
    assert last == str(out / "checkpoint-1")

    config = tiny_config(tmp_path, max_steps=3)
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=items)
    trainer.train(resume_from_checkpoint=last)
    assert trainer.state.global_step == 3 and rollout.totals["steps"] == 2  # steps 2 and 3 only
    adam_steps = {int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert adam_steps == {3}  # 1 restored + 2 new: the optimizer state continued
    rows = write_metrics(trainer.state.log_history, out)
    assert [r["step"] for r in rows] == [1, 2, 3] and (out / "metrics.png").is_file()


@pytest.mark.parametrize("backend", ["continuous", "fast"])
def test_grpo_step_with_each_rollout_engine_and_lora(tmp_path, tiny_model, smollm2_tokenizer, backend):
    config = tiny_config(tmp_path, reward_weights=[1.0], use_peft=True, lora_r=4, lora_alpha=8, rollout_backend=backend)
    assert parse({"output_dir": "x"})[0].rollout_backend == "fast"  # the default
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    assert rollout.settings.backend == backend
    trainer.train()
    row = trainer.state.log_history[0]
    assert trainer.state.global_step == 1 and row["timing/rollout_s"] > 0 and "reward" in row


def test_rollout_backend_is_checked():
    with pytest.raises(ConfigError, match="rollout_backend must be one of fast, transformers, continuous; got 'vllm'"):
        parse({"output_dir": "x", "rollout_backend": "vllm"})


def test_default_rewards_pickle_for_trls_async_worker():
    import pickle

    rewards = default_rewards()
    assert [r.__name__ for r in rewards] == ["exact_match", "format"]
    for reward in rewards:
        clone = pickle.loads(pickle.dumps(reward))
        assert clone.__name__ == reward.__name__
        assert clone([None], [None], answer=["Paris"], golden_answers=[["paris"]], format_ok=[True], id=["q"]) == [1.0]


def test_rollout_settings_hold_the_whole_agent_config(tmp_path, tiny_model, smollm2_tokenizer):
    settings = RolloutSettings(agent=RagR1Config(doc_max_tokens=120, k=5, max_turns=2))
    assert (settings.agent.mode, settings.agent.k, settings.agent.max_turns) == ("multi", 5, 2)
    # build_trainer hands the run's agent settings to the rollout whole
    config = tiny_config(tmp_path, reward_weights=[1.0], k=2)
    _, built = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                             items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    assert built.settings.agent == RagR1Config(mode="multi", k=2, max_turns=2)
    rollout = GraphRollout(retriever(), settings, policy=ScriptedPolicy(TURNS, token_level=True))
    out = rollout(["What is the capital of France?"])
    assert len(out["completion_ids"]) == 1 and rollout.totals["episodes"] == 1


def test_the_rollout_samples_with_grpo_configs_sampling_fields(tmp_path, tiny_model, smollm2_tokenizer):
    config = tiny_config(tmp_path, reward_weights=[1.0], top_p=0.9, top_k=7, min_p=0.05, repetition_penalty=1.1,
                         repeat_stop_tokens=16, repeat_stop_count=3)  # the script's repetition stop, too
    trainer, rollout = build_trainer(*config, model=tiny_model, tokenizer=smollm2_tokenizer, retriever=retriever(),
                                     items=[Item(i) for i in range(4)], reward_funcs=[alternating])
    with rollout._policy(trainer) as policy:
        assert policy.sampling == Sampling(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=7, min_p=0.05,
                                           repetition_penalty=1.1, repeat_stop_tokens=16, repeat_stop_count=3)
    with pytest.raises(ConfigError, match="repeat_stop_count"):
        check_rl(tiny_config(tmp_path, repeat_stop_count=1))
