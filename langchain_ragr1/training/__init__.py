"""Stage 1 (format-learning SFT) data: a teacher policy, rejection-sampled trajectories, samples."""

from langchain_ragr1.training.oracle import OraclePolicy
from langchain_ragr1.training.sft_data import (
    KINDS,
    EmptySFTDataError,
    TrajectoryCounts,
    build_sft_dataset,
    make_trajectories,
    read_jsonl,
    to_sft_samples,
    write_jsonl,
)

__all__ = [
    "KINDS",
    "EmptySFTDataError",
    "OraclePolicy",
    "TrajectoryCounts",
    "build_sft_dataset",
    "make_trajectories",
    "read_jsonl",
    "to_sft_samples",
    "write_jsonl",
]
