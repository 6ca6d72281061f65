"""Stage 2 RL: GRPO with the RAG-R1 graph as the rollout environment.

    python training/run_rl.py [--config training/configs/rl_cpu.yaml] [--max_steps N] \
        [--output_dir DIR] [--data SPEC] [--model_name_or_path DIR] [--validate-only] [--quiet]

The same command as ``python -m langchain_ragr1.tuning.run_rl`` (one implementation:
``langchain_ragr1/tuning/run_rl.py``); ``--config`` also takes a packaged config's name
(``rl_cpu``, the default; see ``--list-configs``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

from langchain_ragr1.tuning.run_rl import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
