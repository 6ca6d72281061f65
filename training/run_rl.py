"""Stage 2 RL: GRPO with the RAG-R1 graph as the rollout environment.

    python training/run_rl.py [--config training/configs/rl_cpu.yaml] [--max-steps N] \
        [--output-dir DIR] [--data SPEC] [--model DIR] [--validate-only] [--quiet]

With no arguments: the CPU config (default model + LoRA, BM25 over the bundled corpus,
50 steps). Resumes from the last complete ``checkpoint-<step>`` in the output folder;
writes ``metrics.csv``, ``metrics.png`` and ``final/`` (the LoRA adapter or full model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "rl_cpu.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="a YAML run config (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, help="override max_steps (optimizer steps)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--data", help="override data (a load_qa spec, e.g. filter_rl_data.py's JSONL)")
    parser.add_argument("--model", help="override model: a transformers model folder, 'default' or 'base'")
    parser.add_argument("--validate-only", action="store_true", help="check the config and exit; loads nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    from langchain_ragr1.errors import RagR1Error
    from langchain_ragr1.training.rl_config import load_config

    try:
        config = load_config(args.config, max_steps=args.max_steps, output_dir=args.output_dir,
                             data=args.data, model=args.model)
        if args.validate_only:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        from langchain_ragr1.training.rl import train_rl

        summary = train_rl(config, progress=not args.quiet)
    except RagR1Error as exc:  # bad config, missing model or data: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary.pop("metrics_rows")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
