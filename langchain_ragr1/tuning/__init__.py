"""Stage 1 (format-learning SFT) data: a teacher policy, rejection-sampled trajectories, samples."""

from langchain_ragr1.tuning.oracle import OraclePolicy
from langchain_ragr1.tuning.sft_data import (
    KINDS,
    SAMPLE_FORMATS,
    EmptySFTDataError,
    TrajectoryCounts,
    build_sft_dataset,
    make_trajectories,
    read_jsonl,
    to_samples,
    to_sft_samples,
    to_trajectory_sample,
    token_accounting,
    write_jsonl,
)

__all__ = [
    "KINDS",
    "SAMPLE_FORMATS",
    "EmptySFTDataError",
    "OraclePolicy",
    "TrajectoryCounts",
    "build_sft_dataset",
    "make_trajectories",
    "read_jsonl",
    "to_samples",
    "to_sft_samples",
    "to_trajectory_sample",
    "token_accounting",
    "write_jsonl",
]

# Stage 2 RL (GRPO with graph rollouts); the trainer module imports TRL lazily.
from langchain_ragr1.tuning.args import RLScriptArguments, SFTScriptArguments  # noqa: E402
from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint  # noqa: E402
from langchain_ragr1.tuning.rl import train_rl  # noqa: E402
from langchain_ragr1.tuning.rl_rewards import RewardError, exact_match_score, format_score, trl_reward  # noqa: E402
from langchain_ragr1.tuning.rl_rollout import GraphRollout, RolloutSettings, episode_sample  # noqa: E402

__all__ += [
    "GraphRollout",
    "RLScriptArguments",
    "SFTScriptArguments",
    "RewardError",
    "RolloutSettings",
    "episode_sample",
    "exact_match_score",
    "format_score",
    "last_complete_checkpoint",
    "train_rl",
    "trl_reward",
]
