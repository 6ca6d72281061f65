"""Stage 1 SFT: train on the trajectories written by training/make_sft_data.py, with TRL's SFTTrainer.

    python -m langchain_ragr1.tuning.run_sft --config sft_default [--learning_rate 1e-4] [--max_steps N] ...
    python training/run_sft.py --config training/configs/sft_default.yaml ...   # a checkout: the same
    accelerate launch training/run_sft.py --config sft_default ...              # several processes

Every field of ``SFTScriptArguments`` (``--dataset``, ``--sample_format``, ...), ``trl.SFTConfig``
and ``trl.ModelConfig`` (``--model_name_or_path``, ``--use_peft --lora_r 16``) is a flag and a
YAML key, as in ``trl sft``; ``--config`` takes a YAML file or a packaged config's name
(``--list-configs``) and flags override it. Resumes from the last ``checkpoint-<step>`` in the
output folder; writes ``loss.csv``, ``loss.png`` and ``final/`` (the LoRA adapter or full model,
with the tokenizer).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: busy-waiting OpenMP threads slow CPUs

import sys  # noqa: E402
from typing import Any, Mapping, Sequence  # noqa: E402

from langchain_ragr1.tuning.args import RunParser, SFTScriptArguments  # noqa: E402


def make_parser() -> RunParser:
    """``(SFTScriptArguments, trl.SFTConfig, trl.ModelConfig)`` with the project's defaults."""
    from langchain_ragr1.extras import require

    trl = require("trl", "training")
    return RunParser((SFTScriptArguments, trl.SFTConfig, trl.ModelConfig), label="SFT",
                     description=(__doc__ or "").split("\n\n")[0])


def parse(values: Mapping[str, Any] | None = None, argv: Sequence[str] = ()) -> tuple[Any, ...]:
    """The parsed ``(SFTScriptArguments, trl.SFTConfig, trl.ModelConfig)``
    from a mapping of YAML keys (``values``) and flags (``argv``, as on the command line;
    ``--config FILE`` when there are no ``values``): the script's settings for Python use."""
    return make_parser().parse(list(argv), values)


def main(argv: Sequence[str] | None = None) -> int:
    from langchain_ragr1.tuning.args import run_main
    from langchain_ragr1.tuning.sft import check_sft, train_sft

    return run_main(argv, make_parser(), check=check_sft, train=train_sft, rows_key="loss_rows")


if __name__ == "__main__":
    sys.exit(main())
