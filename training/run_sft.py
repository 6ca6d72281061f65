"""Stage 1 SFT: train on the dataset written by training/make_sft_data.py.

    python training/run_sft.py --config training/configs/sft_cpu_lora.yaml [--max-steps N] \
        [--output-dir DIR] [--dataset DIR] [--validate-only]

Resumes from the last ``checkpoint-<step>`` in the output folder; writes ``loss.csv``,
``loss.png`` and ``final/`` (the LoRA adapter or full model, with the tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a YAML run config (training/configs/)")
    parser.add_argument("--max-steps", type=int, help="override max_steps (optimizer steps)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--dataset", help="override dataset (make_sft_data.py's --out folder or its dataset/)")
    parser.add_argument("--model", help="override model (a transformers model folder)")
    parser.add_argument("--validate-only", action="store_true", help="check the config and exit; loads nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from langchain_ragr1.training.sft import ConfigError, load_config, train_sft

    try:
        config = load_config(args.config, max_steps=args.max_steps, output_dir=args.output_dir,
                             dataset=args.dataset, model=args.model)
        if args.validate_only:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        config.check_dataset()
        summary = train_sft(config, progress=not args.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary.pop("loss_rows")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
