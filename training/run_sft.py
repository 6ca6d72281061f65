"""Stage 1 SFT: train on the dataset written by training/make_sft_data.py.

    python training/run_sft.py --config training/configs/sft_cpu_lora.yaml [--max_steps N] \
        [--output_dir DIR] [--dataset DIR] [--model_name_or_path DIR] [--validate-only] [--quiet]

The same command as ``python -m langchain_ragr1.tuning.run_sft`` (one implementation:
``langchain_ragr1/tuning/run_sft.py``); ``--config`` also takes a packaged config's name
(``sft_cpu_lora``, see ``--list-configs``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

from langchain_ragr1.tuning.run_sft import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
