"""Ship a trained LoRA adapter: copy it with its weights cast to float16 (half the size).

    python -m langchain_ragr1.tuning.export_adapter runs/sft-default/final langchain_ragr1/adapters/smollm2-ragr1-sft
    python -m langchain_ragr1.tuning.export_adapter runs/campaign-sq/best langchain_ragr1/adapters/smollm2-ragr1-sft-sq
    python training/export_adapter.py SRC DEST   # a checkout: the same command
    python -m langchain_ragr1.tuning.export_adapter runs/x/checkpoint-40 merged/ --merge-into base  # a model folder

The default model of each agent mode (``langchain_ragr1.models.default_model_path(mode)``) merges
that mode's adapter (``langchain_ragr1.models.ADAPTER_DIRS``: ``adapters/smollm2-ragr1-sft`` for
multi, ``adapters/smollm2-ragr1-sft-sq`` for single) into the bundled SmolLM2 once, keyed by its
digest; single mode uses the multi-query adapter while ``smollm2-ragr1-sft-sq`` holds none, so
exporting into that folder (created if absent) is what switches single mode to its own adapter.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("src", help="the adapter folder a LoRA run saved (OUTPUT_DIR/final)")
    parser.add_argument("dest", help="where to write the shipped copy")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--base-model-name", default="SmolLM2-135M-Instruct",
                        help="recorded in adapter_config.json instead of the local base path")
    parser.add_argument("--merge-into", metavar="BASE", default=None,
                        help="write a plain model folder instead: the adapter merged into BASE (a model folder, "
                             "'base' for the bundled SmolLM2, or another alias of --model)")
    args = parser.parse_args(argv)
    from langchain_ragr1.errors import RagR1Error
    from langchain_ragr1.models import export_adapter, merge_adapter, resolve_model_path

    try:
        if args.merge_into:
            out = merge_adapter(resolve_model_path(args.merge_into), args.src, args.dest)
            print(f"wrote {out} (merged into {args.merge_into})")
            return 0
        out = export_adapter(args.src, args.dest, dtype=args.dtype, base_model_name=args.base_model_name)
    except RagR1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = (out / "adapter_model.safetensors").stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
