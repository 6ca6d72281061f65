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
    if script.rollout_weights != "float32" and (script.rollout_backend != "fast" or args.use_vllm):
        raise ConfigError(f"RL: rollout_weights {script.rollout_weights} is the fast engine's (rollout_backend: fast, "
                          f"no vLLM); got rollout_backend {script.rollout_backend}, use_vllm {args.use_vllm}")
    if args.use_vllm and args.use_cpu:
        raise ConfigError("RL: use_vllm needs a GPU (use_cpu is set); on a CPU use the transformers rollouts")
    names = [f.__name__ for f in default_rewards()]
    if args.reward_weights is not None and len(args.reward_weights) != len(names):
        raise ConfigError(f"RL: reward_weights needs one weight per reward ({', '.join(names)}), "
                          f"got {args.reward_weights}")


#: TRL 1.16's ``vllm_importance_sampling_mode`` values: a ratio per token or one per sequence, truncated or masked
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_sampling_ratio(old_logps: Any, sampling_logps: Any, mask: Any, mode: str,
                              clip_min: float | None, clip_max: float | None) -> Any:
    """TRL's truncated/masked importance-sampling ratio (``GRPOTrainer._generate_and_score_completions``
    with vLLM, TRL 1.16): ``exp(old - sampling)`` over the trained tokens (``mask``: the completion mask
    times the env/tool mask; NaN differences count as 0), per token ``(B, T)`` or summed per sequence
    ``(B, 1)``; ``*_truncate`` clamps it to [clip_min, clip_max], ``*_mask`` sets it to 0 outside."""
    import math

    import torch

    if mode not in IS_MODES:
        raise ValueError(f"Unknown vLLM importance sampling level: {mode}. Possible values are "
                         f"{', '.join(repr(m) for m in IS_MODES)}.")
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = clip_min if clip_min is not None else -math.inf
    high = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < low) | (ratio > high), value=0.0)


def fold_ratio_into_advantages(advantages: Any, ratio: Any) -> Any:
    """The advantages times the importance-sampling ratio: ``(B,)`` for a sequence ratio ``(B, 1)``,
    ``(B, T)`` (which TRL's loss takes) for a token one. For TRL's grpo, bnpo, dr_grpo, dapo, luspo,
    cispo and sapo losses this is exactly TRL's ``per_token_loss * importance_sampling_ratio``: each
    is the advantage times a factor that does not depend on it (``-min(c1 A, c2 A) r = -min(c1 A r,
    c2 A r)`` since r >= 0; sapo picks its temperature by the sign of A, and where r = 0 both are 0),
    and TRL adds the KL term after that multiplication, so the KL stays unweighted in both."""
    if ratio.shape[-1] == 1:
        return advantages * ratio.reshape(advantages.shape[0], *([1] * (advantages.dim() - 1)))
    return (advantages if advantages.dim() == 2 else advantages.unsqueeze(1)) * ratio


def timed_trainer_class() -> type:
    """``GRPOTrainer`` that also logs where each optimizer step's time goes (see METRIC_KEYS) and
    corrects rollouts sampled from rounded weights (:attr:`GraphRollout.rounds_weights`) with TRL's own
    importance sampling (``GRPOConfig.vllm_importance_sampling_*``), which TRL applies only with vLLM."""
    import resource
    import time

    import torch

    trl = require("trl", "training")
    GRPOTrainer: Any = trl.GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._phase_s = {"rollout": 0.0, "reference": 0.0, "step": 0.0}
            self._ratio_pending: dict[str, Any] | None = None
            self._is_stats: Any = None
            inner = getattr(self, "rollout_func", None)
            self._graph_rollout = inner
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
            pending, self._ratio_pending = self._ratio_pending, None
            if pending is not None:  # the loss pass of a batch whose ratio waits for the policy's log-probs
                self._apply_ratio(pending, out[0].detach())
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
                self._log_is_stats(metrics)
            return out

        def _corrects_rollouts(self) -> bool:
            """TRL's importance-sampling correction is ours to apply: TRL applies it itself with vLLM only."""
            return (not self.use_vllm and self.vllm_importance_sampling_correction
                    and bool(getattr(self._graph_rollout, "rounds_weights", False)))

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            output = super()._generate_and_score_completions(inputs)
            old = output.get("old_per_token_logps")
            if old is not None and self._corrects_rollouts() and output.get("sampling_per_token_logps") is not None:
                self._apply_ratio(output, old)  # TRL computed the old policy's log-probs (steps not aligned)
            return output

        def _compute_loss(self, model: Any, inputs: Any) -> Any:
            if (self._corrects_rollouts() and inputs.get("sampling_per_token_logps") is not None
                    and "importance_sampling_ratio" not in inputs):
                # Generation and optimisation are aligned (TRL skipped the old-policy pass off vLLM): the
                # old policy is the current one, whose log-probs this loss pass computes first (TRL's
                # _compute_loss reads the advantages after that pass). The ratio is taken from them, as
                # TRL takes its PPO denominator (per_token_logps.detach()), instead of a no-grad pass of
                # its own, which measured as long as the bf16 rollouts saved (reports/benchmarks/
                # bench_rollout_tis.txt).
                inputs = self._ratio_pending = dict(inputs)
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._ratio_pending = None

        def _apply_ratio(self, inputs: dict[str, Any], old: Any) -> None:
            """TRL's vLLM importance sampling for rollouts from rounded weights: the ratio of the
            policy's own log-probs ``old`` to the sampling ones, its metrics, and the ratio in the loss."""
            completion_mask, tool_mask = inputs["completion_mask"], inputs.get("tool_mask")
            mask = completion_mask if tool_mask is None else completion_mask * tool_mask
            sampling = inputs["sampling_per_token_logps"]
            ratio = importance_sampling_ratio(old, sampling, mask, self.vllm_importance_sampling_mode,
                                              self.vllm_importance_sampling_clip_min,
                                              self.vllm_importance_sampling_clip_max)
            self._add_is_stats(old, sampling, mask, ratio)
            inputs["importance_sampling_ratio"] = ratio  # TRL's vespo loss reads it from the inputs itself
            if self.loss_type != "vespo":
                # TRL multiplies per_token_loss by this ratio only `if self.use_vllm`; folding it into the
                # advantages is the same loss (fold_ratio_into_advantages says why) without touching
                # use_vllm, which also switches TRL's generation and weight syncing.
                inputs["advantages"] = fold_ratio_into_advantages(inputs["advantages"], ratio)

        def _add_is_stats(self, old: Any, sampling: Any, mask: Any, ratio: Any) -> None:
            """Accumulates TRL's ``sampling/*`` statistics over the optimizer step's batches (logged at its end)."""
            if not self.model.training:  # logged per optimizer step: training's only
                return
            bool_mask = mask.bool()
            delta = torch.abs(old - sampling).detach()
            delta = delta[bool_mask & ~torch.isnan(delta)]
            flat = (ratio.flatten() if ratio.shape[-1] == 1 else ratio[bool_mask]).detach().float()
            inf = torch.tensor(float("inf"), device=old.device)
            stats = torch.stack([delta.sum(), torch.tensor(float(delta.numel()), device=old.device),
                                 delta.max() if delta.numel() else -inf,
                                 flat.sum(), torch.tensor(float(flat.numel()), device=old.device),
                                 flat.min() if flat.numel() else inf, flat.max() if flat.numel() else -inf]).float()
            prev = self._is_stats
            self._is_stats = stats if prev is None else torch.stack([
                prev[0] + stats[0], prev[1] + stats[1], torch.maximum(prev[2], stats[2]), prev[3] + stats[3],
                prev[4] + stats[4], torch.minimum(prev[5], stats[5]), torch.maximum(prev[6], stats[6])])

        def _log_is_stats(self, metrics: Any) -> None:
            """TRL's ``sampling/sampling_logp_difference/mean|max`` and ``sampling/importance_sampling_ratio/
            min|mean|max`` of the optimizer step (over all processes); the means are over the trained tokens
            (sequences for a sequence ratio), as TRL's are over one generation batch."""
            if self._is_stats is None:
                return
            g = self.accelerator.gather(self._is_stats.unsqueeze(0)).view(-1, 7)
            self._is_stats = None
            metrics["sampling/sampling_logp_difference/mean"].append((g[:, 0].sum() / g[:, 1].sum().clamp(min=1)).item())
            metrics["sampling/sampling_logp_difference/max"].append(max(g[:, 2].max().item(), 0.0))
            metrics["sampling/importance_sampling_ratio/min"].append(g[:, 5].min().item())
            metrics["sampling/importance_sampling_ratio/mean"].append((g[:, 3].sum() / g[:, 4].sum().clamp(min=1)).item())
            metrics["sampling/importance_sampling_ratio/max"].append(g[:, 6].max().item())

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
                                                      backend=script.rollout_backend,
                                                      weights=script.rollout_weights))
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
