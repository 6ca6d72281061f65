"""Stage 2 RL: GRPO (TRL's GRPOTrainer) with the RAG-R1 graph as the rollout environment.

    python -m langchain_ragr1.tuning.run_rl [--config rl_cpu] [--learning_rate 1e-5] [--num_generations 4] ...
    python training/run_rl.py [--config training/configs/rl_cpu.yaml] ...   # a checkout: the same
    accelerate launch training/run_rl.py --config rl_cpu ...              # several processes

Every field of ``RLScriptArguments`` (``--data``, ``--retriever``, ``--max_new_tokens``, ...),
``trl.GRPOConfig`` (``--beta``, ``--num_generations``, ``--use_vllm``, ...), ``trl.ModelConfig``
(``--use_peft --lora_r 8``) and the agent's ``RagR1Config`` (``--mode``, ``--k``,
``--max_turns``, ...) is a flag and a YAML key, as in ``trl grpo``. With no arguments: the
packaged CPU config ``rl_cpu`` (the default model + LoRA, the bundled corpus, 50 steps);
``--config`` takes a YAML file or a packaged config's name (``--list-configs``) and flags
override it. Resumes from the last complete ``checkpoint-<step>`` in the output folder; writes
``metrics.csv``, ``metrics.png`` and ``final/`` (the LoRA adapter or full model).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: busy-waiting OpenMP threads slow CPUs

import sys  # noqa: E402
from typing import Any, Mapping, Sequence  # noqa: E402

from langchain_ragr1.config import RagR1Config  # noqa: E402
from langchain_ragr1.tuning.args import RLScriptArguments, RunParser  # noqa: E402

DEFAULT_CONFIG = "rl_cpu"


def make_parser(default_config: str | None = DEFAULT_CONFIG) -> RunParser:
    """``(RLScriptArguments, trl.GRPOConfig, trl.ModelConfig, RagR1Config)`` with the project's defaults."""
    from langchain_ragr1.extras import require

    trl = require("trl", "training")
    return RunParser((RLScriptArguments, trl.GRPOConfig, trl.ModelConfig, RagR1Config), label="RL",
                     description=(__doc__ or "").split("\n\n")[0],
                     default_config=default_config)


def parse(values: Mapping[str, Any] | None = None, argv: Sequence[str] = ()) -> tuple[Any, ...]:
    """The parsed ``(RLScriptArguments, trl.GRPOConfig, trl.ModelConfig, RagR1Config)``
    from a mapping of YAML keys (``values``) and flags (``argv``, as on the command line;
    ``--config FILE`` when there are no ``values``): the script's settings for Python use."""
    return make_parser().parse(list(argv), values)


def main(argv: Sequence[str] | None = None) -> int:
    from langchain_ragr1.tuning.args import run_main
    from langchain_ragr1.tuning.rl import check_rl, train_rl

    return run_main(argv, make_parser(), check=check_rl, train=train_rl, rows_key="metrics_rows")


if __name__ == "__main__":
    sys.exit(main())
