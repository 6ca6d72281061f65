"""RL data selection (the paper's filter): keep the questions the current policy solves
sometimes but not always, plus a seeded fraction of the always-solved ones.

    python -m langchain_ragr1.tuning.filter_rl_data [--data ragr1-train] [--model DIR] [--attempts 10] \
        [--keep-solved 0.25] [--limit N] --out runs/rl-data.jsonl
    python training/filter_rl_data.py ...   # a checkout: the same command

Each question is attempted ``--attempts`` times through the agent (batched, sampled at
``--temperature``); the kept questions are written as FlashRAG-style JSONL, which
``load_qa`` reads back (point ``data:`` in an RL config at it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None) -> int:
    from langchain_ragr1.logs import log_to_stderr
    from langchain_ragr1.protocol import MODES

    log_to_stderr()  # the package's notices (a one-time model conversion) on stderr
    from langchain_ragr1.retrievers.factory import RETRIEVER_KINDS  # light: no torch

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", default="ragr1-train", help="a load_qa spec (default: %(default)s)")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    parser.add_argument("--model", help="a transformers model folder, 'default' (the shipped SFT model of --mode) "
                        "or 'base'")
    parser.add_argument("--attempts", type=int, default=10, help="episodes per question (paper: 10)")
    parser.add_argument("--keep-solved", type=float, default=0.25, help="fraction of always-solved kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only the first N questions (after --shuffle)")
    parser.add_argument("--shuffle", action="store_true", help="shuffle the questions with --seed first")
    parser.add_argument("--retriever", choices=RETRIEVER_KINDS, default="chroma")
    parser.add_argument("--url", help="the /retrieve URL for --retriever http")
    parser.add_argument("--mode", choices=MODES, default="multi")
    parser.add_argument("--k", type=int, default=3, help="passages per query")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8, help="questions per batch of episodes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.attempts < 2 or not 0 <= args.keep_solved <= 1 or args.batch_size < 1 or args.temperature <= 0:
        parser.error("--attempts must be >= 2, --keep-solved in [0, 1], --batch-size >= 1, --temperature > 0")

    from langchain_ragr1.agent import RagR1Agent
    from langchain_ragr1.data import load_qa, write_jsonl
    from langchain_ragr1.errors import RagR1Error
    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.policies.transformers import Sampling, TransformersPolicy
    from langchain_ragr1.retrievers.factory import make_retriever
    from langchain_ragr1.tuning.rl_questions import select_rl_questions, solve_counts

    try:
        items = load_qa(args.data)
        if args.shuffle:
            random.Random(args.seed).shuffle(items)
        items = items[: args.limit] if args.limit else items
        path = resolve_model_path(args.model, mode=args.mode, show_progress=not args.quiet)
        retriever = make_retriever(args.retriever, k=args.k, url=args.url, show_progress=not args.quiet)
    except RagR1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with TransformersPolicy.from_pretrained(
            path, sampling=Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=0.95),
            max_batch_size=args.batch_size * args.attempts) as policy:
        agent = RagR1Agent(policy, retriever, mode=args.mode, k=args.k, max_turns=args.max_turns)
        counts = solve_counts(agent, items, args.attempts, chunk=args.batch_size, progress=not args.quiet)
    kept, stats = select_rl_questions(items, counts, args.attempts, keep_solved=args.keep_solved, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(kept, out)
    print(json.dumps({**stats, "model": str(path), "out": str(out)}, indent=2))
    if not kept:
        print("warning: no question kept (never solved, or always solved with --keep-solved 0): "
              "RL has nothing to learn from this set", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
