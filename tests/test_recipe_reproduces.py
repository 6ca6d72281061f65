"""The shipped recipes reproduce through the TRL-style scripts: the numbers below were recorded
with the scripts as they were before the rewrite (their own YAML layer; commit 22e824b), on the
tiny model of tests/_recipe.py with the same seed, batch and data, and the new scripts must give
them again from the shipped configs.

SFT: ``run_sft --config sft_default`` (bf16, LoRA r16, trajectory samples), two optimizer steps.
RL: the ``rl_cpu`` GRPOConfig, LoRA and agent through ``build_trainer`` with a scripted token-level
policy (rollouts sampled by the tiny model run in concurrent threads, so their tokens depend on
timing; a fixed policy makes the step's numbers depend on the training settings alone) and a
reward that alternates 0, 1 so that the step has a gradient."""

from __future__ import annotations

from pathlib import Path

import pytest
from _recipe import logged_rows, make_sft_dir, make_tiny_model_dir
from langchain_core.documents import Document

RL_QUESTIONS = Path(__file__).parent / "data" / "rl_recipe_questions.jsonl"
#: before the rewrite: loss.csv of `training/run_sft.py --config sft_default --max-steps 2`
SFT_RECORDED = [{"loss": 10.788895606994629, "grad_norm": 0.46227797865867615, "learning_rate": 0.0},
                {"loss": 10.781572341918945, "grad_norm": 0.517687976360321, "learning_rate": 0.0005}]
#: before the rewrite: the first two steps of build_trainer(load_config(rl_cpu), ...) as described above
RL_RECORDED = [{"loss": 9.853994065167626e-09, "grad_norm": 0.008606762625277042, "kl": 0.0},
               {"loss": 0.0, "grad_norm": 0.008966603316366673, "kl": 1.9227304193236705e-09}]


@pytest.fixture(scope="module")
def recipe_dirs(tmp_path_factory, smollm2_tokenizer):
    root = tmp_path_factory.mktemp("recipe")
    return make_tiny_model_dir(root / "tiny", smollm2_tokenizer), make_sft_dir(root / "sftdata", smollm2_tokenizer)


def test_sft_recipe_gives_the_recorded_losses(recipe_dirs, tmp_path):
    from langchain_ragr1.tuning import run_sft

    model, data = recipe_dirs
    assert run_sft.main(["--config", "sft_default", "--model_name_or_path", str(model), "--dataset", str(data),
                         "--output_dir", str(tmp_path / "sft"), "--max_steps", "2", "--quiet"]) == 0
    rows = logged_rows(tmp_path / "sft" / "loss.csv", ("loss", "grad_norm", "learning_rate"))
    assert rows == [pytest.approx(r, rel=1e-5, abs=1e-9) for r in SFT_RECORDED]


def test_rl_recipe_gives_the_recorded_step(recipe_dirs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy
    from langchain_ragr1.tuning import run_rl
    from langchain_ragr1.tuning.rl import build_trainer
    from langchain_ragr1.tuning.rl_questions import load_questions

    model_dir, _ = recipe_dirs
    # the 8 questions the recorded run drew (rl_cpu's seed, max_questions 8) from ragr1-train as generator v2
    # made it; ragr1-train is generator v3's now, so they are pinned here in the order drawn
    script, args, model_args, agent = run_rl.parse(argv=[
        "--config", "rl_cpu", "--retriever", "bm25", "--data", str(RL_QUESTIONS), "--model_name_or_path", str(model_dir),
        "--max_steps", "2", "--output_dir", str(tmp_path / "rl"), "--reward_weights", "1.0"])

    def alternating(prompts, completions, **_):
        return [float(i % 2) for i in range(len(completions))]

    retriever = MemoryRetriever(documents=[Document(page_content="Paris is the capital of France.")], k=1)
    trainer, rollout = build_trainer(script, args, model_args, agent, model=AutoModelForCausalLM.from_pretrained(model_dir),
                                     tokenizer=AutoTokenizer.from_pretrained(model_dir), retriever=retriever,
                                     items=load_questions(script, args.seed), reward_funcs=[alternating])
    rollout.policy = ScriptedPolicy(["<think>look it up</think><search> capital of France, France capital </search>",
                                     "<think>found it</think><answer> Paris </answer>"], token_level=True)
    trainer.train()
    rows = [{k: r[k] for k in ("loss", "grad_norm", "kl")} for r in trainer.state.log_history[:2]]
    assert rows == [pytest.approx(r, rel=1e-4, abs=1e-12) for r in RL_RECORDED]
