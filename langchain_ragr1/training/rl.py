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

import csv
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from langchain_ragr1.config import RagR1Config
from langchain_ragr1.extras import require
from langchain_ragr1.training.checkpoints import last_complete_checkpoint
from langchain_ragr1.training.rl_config import ConfigError, RLRunConfig
from langchain_ragr1.training.rl_rewards import default_rewards
from langchain_ragr1.training.rl_rollout import GraphRollout, RolloutSettings
from langchain_ragr1.training.run_config import build_trl_config

logger = logging.getLogger(__name__)

#: metrics.csv columns: our name -> TRL / GraphRollout log key.
METRIC_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "exact_match": "rewards/exact_match/mean",
    "format_valid": "rewards/format/mean",
    "turns": "ragr1/turns",
    "response_tokens": "completions/mean_length",
    "env_tokens": "ragr1/env_tokens",
    "truncated": "ragr1/truncated",
    "truncated_total": "ragr1/truncated_total",
    "answered": "ragr1/answered",
    "loss": "loss",
    "kl": "kl",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "step_time": "step_time",
    # where an optimizer step's time went (TimedGRPOTrainer): the graph rollouts, the no-grad
    # log-prob passes (the reference model's, and the old policy's when TRL needs them), and the
    # rest (the policy's loss forward and backward, rewards, optimizer); peak RSS of the process
    "rollout_s": "timing/rollout_s",
    "reference_s": "timing/reference_s",
    "policy_s": "timing/policy_s",
    "peak_rss_gb": "timing/peak_rss_gb",
}


def metric_rows(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per logged training step (entries with a ``reward``)."""
    return [{"step": e["step"], **{name: e.get(key, "") for name, key in METRIC_KEYS.items()}}
            for e in log_history if "reward" in e and "step" in e]


def write_metrics(log_history: Sequence[dict[str, Any]], output_dir: str | Path, *, plot: bool = True) -> list[dict]:
    """``metrics.csv`` and (with ``plot``) ``metrics.png``: reward, EM, turns and response length per step."""
    rows = metric_rows(log_history)
    out = Path(output_dir)
    with (out / "metrics.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", *METRIC_KEYS])
        writer.writeheader()
        writer.writerows(rows)
    if plot and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("reward", "reward"), ("exact_match", "exact match"), ("turns", "retrieval turns"),
                  ("response_tokens", "response tokens (policy)")]
        fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
        steps = [r["step"] for r in rows]
        for ax, (key, label) in zip(axes.flat, panels):
            values = [float(r[key]) if r[key] != "" else float("nan") for r in rows]
            ax.plot(steps, values, marker="o" if len(rows) < 30 else None)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        for ax in axes[1]:
            ax.set_xlabel("optimizer step")
        fig.suptitle("Stage 2 RL (GRPO, graph rollouts)")
        fig.tight_layout()
        fig.savefig(out / "metrics.png", dpi=100)
        plt.close(fig)
    return rows


def _metrics_callback(output_dir: Path, echo: bool):
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Rewrites metrics.csv at every log (a killed run keeps its curve) and logs one line per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            write_metrics(state.log_history, output_dir, plot=False)
            if echo:
                get = lambda k: logs.get(METRIC_KEYS[k], float("nan"))  # noqa: E731
                logger.info(f"step {state.global_step}/{state.max_steps}: reward {get('reward'):.3f} "
                      f"EM {get('exact_match'):.3f} format {get('format_valid'):.3f} turns {get('turns'):.2f} "
                      f"tokens {get('response_tokens'):.1f} truncated {get('truncated'):.2f} "
                      f"loss {logs.get('loss', float('nan')):.4f} | {get('step_time'):.1f} s: rollout "
                      f"{get('rollout_s'):.1f}, reference {get('reference_s'):.1f}, policy {get('policy_s'):.1f}; "
                      f"peak RSS {get('peak_rss_gb'):.1f} GB")

    return MetricsCallback()


def load_questions(config: RLRunConfig) -> list:
    """The run's questions (``config.data`` through ``load_qa``), a seeded subset if ``max_questions``."""
    import random

    from langchain_ragr1.data import load_qa

    items = load_qa(config.data)
    if not items:
        raise ConfigError(f"RL config: data {config.data!r} has no questions (an empty filter_rl_data.py output?)")
    if config.max_questions and config.max_questions < len(items):
        items = random.Random(config.seed).sample(items, config.max_questions)
    return items


def make_dataset(items: Sequence[Any]):
    """A ``datasets.Dataset`` with ``prompt`` (the question), ``id``, ``golden_answers``."""
    require("datasets", "training")
    from datasets import Dataset

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
    vllm = {}
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

    GRPOTrainer = require("trl", "training").GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._phase_s = {"rollout": 0.0, "reference": 0.0, "step": 0.0}
            inner = self.rollout_func
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
        callbacks=[_metrics_callback(output_dir, echo)],
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


def solve_counts(agent: Any, items: Sequence[Any], attempts: int, *, chunk: int = 8,
                 progress: bool = True) -> list[int]:
    """How many of ``attempts`` episodes of ``agent`` answer each item exactly right (batched, concurrent)."""
    from tqdm.auto import tqdm

    from langchain_ragr1.protocol import exact_match

    counts: list[int] = []
    with tqdm(total=len(items), desc=f"sampling {attempts} attempts", unit="question", disable=not progress) as bar:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            questions = [it.question for it in part for _ in range(attempts)]
            results = agent.batch(questions, config={"max_concurrency": len(questions)})
            for i, item in enumerate(part):
                episodes = results[i * attempts:(i + 1) * attempts]
                counts.append(int(sum(exact_match(r.get("answer"), item.golden_answers) for r in episodes)))
            bar.update(len(part))
    return counts


def select_rl_questions(items: Sequence[Any], counts: Sequence[int], attempts: int, *,
                        keep_solved: float = 0.25, seed: int = 0) -> tuple[list, dict[str, int]]:
    """The paper's RL filter: questions solved sometimes (0 < count < attempts), plus a seeded
    ``keep_solved`` fraction of the always-solved ones; never-solved ones are dropped.
    Returns the kept items (in input order) and the counts per group."""
    import random

    sometimes = [i for i, c in enumerate(counts) if 0 < c < attempts]
    always = [i for i, c in enumerate(counts) if c >= attempts]
    kept_always = random.Random(seed).sample(always, round(keep_solved * len(always)))
    keep = sorted(sometimes + kept_always)
    stats = {"questions": len(items), "never_solved": len(items) - len(sometimes) - len(always),
             "sometimes_solved": len(sometimes), "always_solved": len(always),
             "always_solved_kept": len(kept_always), "kept": len(keep)}
    return [items[i] for i in keep], stats
