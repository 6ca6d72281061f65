"""Stage 2 RL: GRPO with the RAG-R1 graph as the rollout environment.

    python -m langchain_ragr1.tuning.run_rl [--config rl_cpu] [--max-steps N] \
        [--output-dir DIR] [--data SPEC] [--model DIR] [--validate-only] [--quiet]
    python training/run_rl.py [--config training/configs/rl_cpu.yaml] ...   # a checkout: the same

With no arguments: the packaged CPU config ``rl_cpu`` (default model + LoRA, the bundled
corpus, 50 steps). ``--config`` takes a YAML file or a packaged config's name
(``--list-configs``). Resumes from the last complete ``checkpoint-<step>`` in the output
folder; writes ``metrics.csv``, ``metrics.png`` and ``final/`` (the LoRA adapter or full model).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: busy-waiting OpenMP threads slow CPUs

import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from langchain_ragr1.logs import log_to_stderr  # noqa: E402
from langchain_ragr1.tuning.run_config import print_packaged_configs, run_command, run_parser  # noqa: E402

LABEL = "RL"
DEFAULT_CONFIG = "rl_cpu"


def main(argv: Sequence[str] | None = None) -> int:
    parser = run_parser(__doc__ or "", LABEL, "GRPOConfig", default_config=DEFAULT_CONFIG,
                        data_option=("--data", "override data (a load_qa spec, e.g. filter_rl_data.py's JSONL)"),
                        model_help="override model: a transformers model folder, 'default' or 'base'",
                        quiet_help="no progress output")
    args = parser.parse_args(argv)
    log_to_stderr(logging.WARNING if args.quiet else logging.INFO)
    if args.list_configs:
        return print_packaged_configs(LABEL)

    from langchain_ragr1.tuning.rl_config import load_config

    def check() -> Any:
        config = load_config(args.config, max_steps=args.max_steps, output_dir=args.output_dir,
                             data=args.data, model=args.model)
        from langchain_ragr1.tuning.rl import grpo_args
        from langchain_ragr1.tuning.rl_rewards import default_rewards
        from langchain_ragr1.tuning.run_config import uses_cpu

        # TRL's checks of the values before any model loads (--validate-only: on any machine)
        use_cpu = True if args.validate_only else uses_cpu(config.device)
        grpo_args(config, use_cpu=use_cpu, reward_weights=default_rewards(config.format_weight)[1])
        return config

    def train(config: Any) -> dict[str, Any]:
        from langchain_ragr1.tuning.rl import train_rl

        return train_rl(config, progress=not args.quiet)

    return run_command(check, train, validate_only=args.validate_only, rows_key="metrics_rows")


if __name__ == "__main__":
    sys.exit(main())
