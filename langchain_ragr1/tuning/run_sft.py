"""Stage 1 SFT: train on the dataset written by training/make_sft_data.py.

    python -m langchain_ragr1.tuning.run_sft --config sft_cpu_lora [--max-steps N] \
        [--output-dir DIR] [--dataset DIR] [--model DIR] [--validate-only] [--quiet]
    python training/run_sft.py --config training/configs/sft_cpu_lora.yaml ...   # a checkout: the same

``--config`` takes a YAML file or a packaged config's name (``--list-configs``). Resumes
from the last ``checkpoint-<step>`` in the output folder; writes ``loss.csv``, ``loss.png``
and ``final/`` (the LoRA adapter or full model, with the tokenizer).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: busy-waiting OpenMP threads slow CPUs

import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from langchain_ragr1.logs import log_to_stderr  # noqa: E402
from langchain_ragr1.tuning.run_config import print_packaged_configs, run_command, run_parser  # noqa: E402

LABEL = "SFT"


def main(argv: Sequence[str] | None = None) -> int:
    parser = run_parser(__doc__ or "", LABEL, "SFTConfig", default_config=None,
                        data_option=("--dataset", "override dataset (make_sft_data.py's --out folder or its dataset/)"),
                        model_help="override model (a transformers model folder)", quiet_help="no progress bar")
    args = parser.parse_args(argv)
    log_to_stderr(logging.WARNING if args.quiet else logging.INFO)
    if args.list_configs:
        return print_packaged_configs(LABEL)
    if not args.config:
        parser.error("--config is required (a YAML file or a packaged config's name; see --list-configs)")

    from langchain_ragr1.tuning.sft import sft_args, train_sft
    from langchain_ragr1.tuning.sft_config import load_config

    def check() -> Any:
        config = load_config(args.config, max_steps=args.max_steps, output_dir=args.output_dir,
                             dataset=args.dataset, model=args.model)
        if args.validate_only:
            sft_args(config, use_cpu=True)  # TRL's checks of the values (on any machine)
        return config

    def train(config: Any) -> dict[str, Any]:
        config.check_dataset()
        return train_sft(config, progress=not args.quiet)

    return run_command(check, train, validate_only=args.validate_only, rows_key="loss_rows")


if __name__ == "__main__":
    sys.exit(main())
