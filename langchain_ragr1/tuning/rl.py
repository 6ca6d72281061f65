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
from langchain_ragr1.extras import require
from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint
from langchain_ragr1.tuning.metrics import metrics_callback, write_metrics
from langchain_ragr1.tuning.rl_config import RLRunConfig
from langchain_ragr1.tuning.rl_questions import load_questions
from langchain_ragr1.tuning.rl_rewards import default_rewards
from langchain_ragr1.tuning.rl_rollout import GraphRollout, RolloutSettings
from langchain_ragr1.tuning.run_config import build_trl_config

logger = logging.getLogger(__name__)

def make_dataset(items: Sequence[Any]):
    """A ``datasets.Dataset`` with ``prompt`` (the question), ``id``, ``golden_answers``."""
    Dataset = require("datasets", "training").Dataset

    return Dataset.from_list([{"prompt": it.question, "id": str(it.id), "golden_answers": list(it.golden_answers)}
                              for it in items])


#: Our keys that reach GRPOConfig under the same name.
GRPO_SAME_NAME = ("output_dir", "learning_rate", "beta", "num_generations", "per_device_train_batch_size",
                  "gradient_accumulation_steps", "max_completion_length", "temperature", "top_p", "max_steps",
                  "save_steps", "save_total_limit", "logging_steps", "seed", "bf16")


def grpo_args(config: RLRunConfig, *, use_cpu: bool, progress: bool = True,
              reward_weights: list[float] | None = None) -> Any:
    """The ``GRPOConfig`` of a run: our keys (vLLM settings when ``use_vllm``), then the TRL
    pass-through (``config.trl_args``: report_to, optim, ...). A value TRL rejects raises
    :class:`ConfigError` naming the key."""
    vllm: dict[str, Any] = {}
    if config.use_vllm:
        vllm = {"use_vllm": True, "vllm_mode": config.vllm_mode,
                "vllm_gpu_memory_utilization": config.vllm_gpu_memory_utilization}
        if config.vllm_server_base_url:
            vllm["vllm_server_base_url"] = config.vllm_server_base_url
    defaults = {  # ours, that a config may change (report_to: tensorboard, ...)
        "save_strategy": "steps",
        "report_to": [],
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
    }
    ours = {
        **{key: getattr(config, key) for key in GRPO_SAME_NAME},
        "reward_weights": reward_weights,
        "use_cpu": use_cpu,
        "activation_checkpointing": config.gradient_checkpointing,  # TRL's default is on
        **vllm,
    }
    return build_trl_config("GRPOConfig", {**defaults, **ours, **config.trl_args},
                            user_keys=[*config.trl_args, *GRPO_SAME_NAME, *vllm, "activation_checkpointing"],
                            label="RL")


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


def build_trainer(config: RLRunConfig, *, model: Any, tokenizer: Any, retriever: Any, items: Sequence[Any],
                  reward_funcs: list[Callable] | None = None, reward_weights: list[float] | None = None,
                  progress: bool = True, echo: bool = False) -> tuple[Any, GraphRollout]:
    """A ready ``GRPOTrainer`` (LoRA from ``config.lora``) and its :class:`GraphRollout`.

    ``reward_funcs`` (TRL batch functions) replace the default exact-match + format rewards.
    """
    import os

    import torch
    require("trl", "training")

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if reward_funcs is None:
        reward_funcs, reward_weights = default_rewards(config.format_weight)
    peft_config = config.lora.to_peft()
    rollout = GraphRollout(retriever, RolloutSettings(
        agent=RagR1Config(mode=config.mode, k=config.k, max_turns=config.max_turns),
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature, top_p=config.top_p, max_batch_size=config.max_batch_size,
        max_completion_length=config.max_completion_length, backend=config.rollout_backend))
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = timed_trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_args(config, use_cpu=use_cpu, progress=progress, reward_weights=reward_weights),
        train_dataset=make_dataset(items),
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
        callbacks=[metrics_callback(output_dir, echo)],
    )
    return trainer, rollout


def train_rl(config: RLRunConfig, *, progress: bool = True, retriever: Any = None) -> dict[str, Any]:
    """Train; returns ``{global_step, resumed_from, final_dir, metrics_rows, truncated, ...}``."""
    config.validate()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.models import resolve_model_path

    items = load_questions(config)  # data errors before the model loads
    model_path = resolve_model_path(config.model, show_progress=progress)
    if retriever is None:
        from langchain_ragr1.retrievers.factory import make_retriever

        retriever = make_retriever(config.retriever, k=config.k, store=config.retriever_store,
                                   url=config.retriever_url, show_progress=progress)
    import torch

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if config.bf16 else torch.float32)
    trainer, rollout = build_trainer(config, model=model, tokenizer=tokenizer, retriever=retriever, items=items,
                                     progress=progress, echo=progress)
    last = last_complete_checkpoint(config.output_dir)
    if last:
        logger.warning("Resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    output_dir = Path(config.output_dir)
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    rows = write_metrics(trainer.state.log_history, output_dir)
    return {
        "global_step": trainer.state.global_step,
        "resumed_from": last,
        "final_dir": str(final_dir),
        "model": str(model_path),
        "questions": len(items),
        "prompts_per_step": config.prompts_per_step,
        "episodes": rollout.totals["episodes"],
        "truncated": rollout.totals["truncated"],
        "train_runtime": result.metrics.get("train_runtime"),
        "metrics_csv": str(output_dir / "metrics.csv"),
        "metrics_png": str(output_dir / "metrics.png"),
        "metrics_rows": rows,
    }
