"""Stage 2 RL run: TRL's ``GRPOTrainer`` with the RAG-R1 graph as the rollout environment.

:func:`train_rl` loads the questions and the retriever, builds :class:`GraphRollout`
(:mod:`.rl_rollout`) and the rewards (:mod:`.rl_rewards`), trains (LoRA or full) with
checkpoints every ``save_steps`` and resumes from the last complete ``checkpoint-<step>``
(a folder without a readable ``trainer_state.json``, e.g. from a process killed while
saving, is skipped). Every logged step is appended to ``metrics.csv`` (reward, exact
match, format, retrieval turns, response length, truncations, loss, KL); ``metrics.png``
plots them at the end and the final model or adapter lands in ``output_dir/final``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from langchain_ragr1.config import RagR1Config
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.extras import require
from langchain_ragr1.policies.continuous import check_continuous_sampling
from langchain_ragr1.tuning.args import RLScriptArguments
from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint
from langchain_ragr1.tuning.metrics import metric_rows, metrics_callback, write_metrics
from langchain_ragr1.tuning.rl_questions import load_questions
from langchain_ragr1.tuning.rl_rewards import default_rewards
from langchain_ragr1.tuning.rl_rollout import GraphRollout, RolloutSettings, rollout_sampling

logger = logging.getLogger(__name__)


def make_dataset(items: Sequence[Any]):
    """A ``datasets.Dataset`` with ``prompt`` (the question), ``id``, ``golden_answers``."""
    Dataset = require("datasets", "training").Dataset

    return Dataset.from_list([{"prompt": it.question, "id": str(it.id), "golden_answers": list(it.golden_answers)}
                              for it in items])


def check_rl(parsed: tuple[Any, ...]) -> None:
    """What crosses the parsed ``(RLScriptArguments, trl.GRPOConfig, trl.ModelConfig, RagR1Config)``
    (nothing loads): the rollout samples as GRPOConfig says, vLLM needs a GPU, one weight per reward."""
    script, args, _, _ = parsed
    sampling = rollout_sampling(args, script.max_new_tokens, repeat_stop_tokens=script.repeat_stop_tokens,
                                repeat_stop_count=script.repeat_stop_count)  # a bad top_k, min_p, ...: named here
    if sampling.greedy:
        raise ConfigError(f"RL: temperature must be > 0 (GRPO compares sampled episodes), got {args.temperature}")
    if args.generation_kwargs:
        raise ConfigError("RL: generation_kwargs is not supported by the graph rollout; use GRPOConfig's own "
                          "temperature, top_p, top_k, min_p and repetition_penalty")
    if script.rollout_backend == "continuous" and not args.use_vllm:
        check_continuous_sampling(sampling)
    if args.use_vllm and args.use_cpu:
        raise ConfigError("RL: use_vllm needs a GPU (use_cpu is set); on a CPU use the transformers rollouts")
    names = [f.__name__ for f in default_rewards()]
    if args.reward_weights is not None and len(args.reward_weights) != len(names):
        raise ConfigError(f"RL: reward_weights needs one weight per reward ({', '.join(names)}), "
                          f"got {args.reward_weights}")


def timed_trainer_class() -> type:
    """``GRPOTrainer`` that also logs where each optimizer step's time goes (see METRIC_KEYS)."""
    import resource
    import time

    import torch

    GRPOTrainer: Any = require("trl", "training").GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._phase_s = {"rollout": 0.0, "reference": 0.0, "step": 0.0}
            inner = getattr(self, "rollout_func", None)
            if inner is not None:
                def timed_rollout(prompts: Any, trainer: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return inner(prompts, trainer)
                    finally:
                        self._phase_s["rollout"] += time.perf_counter() - started
                self.rollout_func = timed_rollout

        def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if not torch.is_grad_enabled():  # the reference (or old-policy) pass, not the loss pass
                self._phase_s["reference"] += time.perf_counter() - started
            return out

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            started = time.perf_counter()
            out = super().training_step(model, inputs, num_items_in_batch)
            phase = self._phase_s
            phase["step"] += time.perf_counter() - started
            if self._step % self.current_gradient_accumulation_steps == 0:  # an optimizer step ended
                metrics = self._metrics["train"]
                metrics["timing/rollout_s"].append(phase["rollout"])
                metrics["timing/reference_s"].append(phase["reference"])
                metrics["timing/policy_s"].append(phase["step"] - phase["rollout"] - phase["reference"])
                metrics["timing/peak_rss_gb"].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
                self._phase_s = dict.fromkeys(phase, 0.0)
            return out

    return TimedGRPOTrainer


def build_trainer(script: RLScriptArguments, args: Any, model_args: Any, agent: RagR1Config, *, model: Any,
                  tokenizer: Any, retriever: Any, items: Sequence[Any], reward_funcs: list[Callable] | None = None,
                  echo: bool = False, callbacks: Sequence[Any] = ()) -> tuple[Any, GraphRollout]:
    """A ready ``GRPOTrainer`` over the parsed run (``args``: its ``trl.GRPOConfig``, LoRA from
    ``model_args`` through TRL's ``get_peft_config``) and its :class:`GraphRollout`, whose agent
    is ``agent`` whole. ``reward_funcs`` (TRL batch functions) replace exact match + format;
    ``callbacks``: more ``TrainerCallback``s."""
    import os

    trl = require("trl", "training")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rollout = GraphRollout(retriever, RolloutSettings(agent=agent, max_new_tokens=script.max_new_tokens,
                                                      repeat_stop_tokens=script.repeat_stop_tokens,
                                                      repeat_stop_count=script.repeat_stop_count,
                                                      max_batch_size=script.max_batch_size,
                                                      backend=script.rollout_backend))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = timed_trainer_class()(
        model=model,
        reward_funcs=reward_funcs or default_rewards(),
        args=args,
        train_dataset=make_dataset(items),
        processing_class=tokenizer,
        peft_config=trl.get_peft_config(model_args),
        rollout_func=rollout,
        callbacks=[metrics_callback(output_dir, echo), *callbacks],
    )
    return trainer, rollout


def train_rl(script: RLScriptArguments, args: Any, model_args: Any, agent: RagR1Config, *, progress: bool = True,
             retriever: Any = None, callbacks: Sequence[Any] = (), policy: Any = None) -> dict[str, Any]:
    """Train from the parsed ``(RLScriptArguments, trl.GRPOConfig, trl.ModelConfig, RagR1Config)``;
    returns ``{global_step, resumed_from, final_dir, metrics_rows, truncated, ...}``.

    ``retriever`` replaces the one the script arguments name, ``policy`` the rollouts' policy
    over the trainer's weights (a fixed one: :attr:`GraphRollout.policy`), ``callbacks`` are more
    ``TrainerCallback``s. Under ``accelerate launch`` each process rolls out its own share of
    the step's questions (TRL gathers the rewards for the group advantages), gradients are
    averaged (DDP), and only the main process writes files."""
    check_rl((script, args, model_args, agent))
    from langchain_ragr1.tuning.sft import load_model

    items = load_questions(script, args.seed)  # data errors before the model loads
    if retriever is None:
        from langchain_ragr1.retrievers.factory import make_retriever

        retriever = make_retriever(script.retriever, k=agent.k, store=script.retriever_store,
                                   url=script.retriever_url, show_progress=progress)
    model_path, model, tokenizer = load_model(model_args, "default", agent.mode)  # the policy of the mode trained
    trainer, rollout = build_trainer(script, args, model_args, agent, model=model, tokenizer=tokenizer,
                                     retriever=retriever, items=items, echo=progress, callbacks=callbacks)
    if policy is not None:
        rollout.policy = policy
    last = args.resume_from_checkpoint or last_complete_checkpoint(args.output_dir)
    if last:
        logger.warning("Resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    output_dir = Path(args.output_dir)
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))  # the Trainer saves on the main process only
    rows = metric_rows(trainer.state.log_history)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final_dir))
        write_metrics(trainer.state.log_history, output_dir)
    return {
        "global_step": trainer.state.global_step,
        "resumed_from": last,
        "final_dir": str(final_dir),
        "model": model_path,
        "questions": len(items),
        "prompts_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps // args.num_generations,
        "episodes": rollout.totals["episodes"],
        "truncated": rollout.totals["truncated"],
        "train_runtime": result.metrics.get("train_runtime"),
        "metrics_csv": str(output_dir / "metrics.csv"),
        "metrics_png": str(output_dir / "metrics.png"),
        "metrics_rows": rows,
    }
