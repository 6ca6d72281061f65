"""Training curves. RL: ``metrics.csv`` rewritten at every logged step (a killed run keeps its
curve), ``metrics.png``, and the trainer callback that writes them and logs one line per step.
SFT: ``loss.csv`` and ``loss.png``."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Sequence

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
    # TRL's importance-sampling metrics (rollouts from rounded weights, or vLLM's): how far the sampling
    # log-probs are from the policy's, and the ratio that corrects the loss
    "sampling_logp_diff_mean": "sampling/sampling_logp_difference/mean",
    "sampling_logp_diff_max": "sampling/sampling_logp_difference/max",
    "is_ratio_min": "sampling/importance_sampling_ratio/min",
    "is_ratio_mean": "sampling/importance_sampling_ratio/mean",
    "is_ratio_max": "sampling/importance_sampling_ratio/max",
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


def metrics_callback(output_dir: Path, echo: bool):
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


def loss_rows(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """One row per logged SFT step: step, epoch, loss, learning_rate, grad_norm."""
    return [
        {"step": e["step"], "epoch": e.get("epoch", float("nan")), "loss": e["loss"],
         "learning_rate": e.get("learning_rate", float("nan")), "grad_norm": e.get("grad_norm", float("nan"))}
        for e in log_history if "loss" in e and "step" in e
    ]


def write_loss_curve(log_history: list[dict[str, Any]], output_dir: str | Path) -> list[dict[str, float]]:
    """``loss.csv`` (step, epoch, loss, learning_rate, grad_norm) and ``loss.png``; returns the rows."""
    rows = loss_rows(log_history)
    out = Path(output_dir)
    with (out / "loss.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "epoch", "loss", "learning_rate", "grad_norm"])
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="o" if len(rows) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (target-turn tokens)")
    ax.set_title("Stage 1 SFT")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return rows
