"""Stage 1 SFT data: teacher trajectories through the real graph, rejection-sampled, cut into samples.

    python training/make_sft_data.py --data ragr1-train --mode multi --teacher oracle \
        --retriever bm25 --limit 30 --out runs/sft-multi

The same command as ``python -m langchain_ragr1.tuning.make_sft_data`` (one implementation:
``langchain_ragr1/tuning/make_sft_data.py``; ``--help`` lists the teachers and options).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

from langchain_ragr1.tuning.make_sft_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
