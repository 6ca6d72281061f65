"""RL data selection (the paper's filter): keep the questions the current policy solves sometimes.

    python training/filter_rl_data.py [--data ragr1-train] [--model DIR] [--attempts 10] \
        [--keep-solved 0.25] [--limit N] --out runs/rl-data.jsonl

The same command as ``python -m langchain_ragr1.tuning.filter_rl_data`` (one implementation:
``langchain_ragr1/tuning/filter_rl_data.py``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

from langchain_ragr1.tuning.filter_rl_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
