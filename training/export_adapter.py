"""Ship a trained LoRA adapter: copy it with its weights cast to float16 (half the size).

    python training/export_adapter.py runs/sft-default/final langchain_ragr1/adapters/smollm2-ragr1-sft

The same command as ``python -m langchain_ragr1.tuning.export_adapter`` (one implementation:
``langchain_ragr1/tuning/export_adapter.py``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

from langchain_ragr1.tuning.export_adapter import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
