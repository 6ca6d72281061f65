"""Stage 1 SFT data: teacher trajectories through the real graph, rejection-sampled, cut into samples.

    python -m langchain_ragr1.tuning.make_sft_data --data ragr1-train --mode multi --teacher oracle \
        --retriever bm25 --limit 30 --out runs/sft-multi
    python training/make_sft_data.py ...   # a checkout: the same command
    # a large model behind an OpenAI-compatible server (e.g. `vllm serve Qwen/Qwen2.5-72B-Instruct`):
    python -m langchain_ragr1.tuning.make_sft_data --teacher openai --teacher-model Qwen/Qwen2.5-72B-Instruct \
        --base-url http://127.0.0.1:8000/v1 --data nq:train.jsonl --out runs/sft-qwen
    # a local transformers model folder:
    python -m langchain_ragr1.tuning.make_sft_data --teacher transformers --teacher-model PATH --out runs/sft-local

Teacher failures (an error or a request past ``--teacher-timeout``) are retried ``--retries``
times, then the question is skipped and counted in ``errors``; the run goes on.

Writes ``DIR/trajectories.jsonl`` (kept trajectories: question, gold answers, mode and the
segments with text, token ids and what the graph parsed: each model turn's ``action`` and each
``<information>`` block's ``retrieval``; what a ``sample_format: trajectory`` SFT run trains on,
one sequence per trajectory), ``DIR/samples.jsonl`` (one model turn per sample, kind 1..4),
``DIR/dataset/`` (a saved ``datasets.Dataset`` of those turn samples, for
``sample_format: turns``; samples longer than ``--max-length`` are dropped and counted) and
``DIR/counts.json`` (with tokens per epoch in both formats); prints the counts.
``--mode multi single`` writes a trajectory of every question in each mode.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from langchain_ragr1.protocol import Mode

TEACHERS = ("oracle", "openai", "transformers")


def _parser() -> argparse.ArgumentParser:
    from langchain_ragr1.protocol import MODES
    from langchain_ragr1.retrievers.factory import RETRIEVER_KINDS

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", default="ragr1-train", help="a QA set name or file (see load_qa)")
    parser.add_argument("--mode", choices=MODES, nargs="+", default=["multi"],
                        help="one or both modes; with both, every question gets a trajectory in each")
    parser.add_argument("--teacher", choices=TEACHERS, default="oracle",
                        help="oracle: follows each item's gold_queries (needs generated/FanOutQA items); "
                             "openai: a model behind an OpenAI-compatible server (--base-url, --teacher-model); "
                             "transformers: a local model folder (--teacher-model)")
    parser.add_argument("--teacher-model", help="the served model name (openai) or a model folder (transformers)")
    parser.add_argument("--base-url", help="the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--flavour", choices=("chat", "completions"), default="chat",
                        help="openai teacher: /chat/completions or /completions")
    parser.add_argument("--teacher-timeout", type=float, default=120.0, help="seconds per teacher request (openai)")
    parser.add_argument("--temperature", type=float, default=0.7, help="teacher sampling temperature")
    parser.add_argument("--max-new-tokens", type=int, default=500, help="teacher tokens per turn")
    parser.add_argument("--retriever", choices=RETRIEVER_KINDS, default="bm25")
    parser.add_argument("--store", help="a Chroma folder or BM25 index")
    parser.add_argument("--corpus", help="a corpus file to index on the fly")
    parser.add_argument("--url", help="a Search-R1 /retrieve endpoint (with --retriever http)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--limit", type=int, help="use the first N questions (after --shuffle)")
    parser.add_argument("--shuffle", action="store_true",
                        help="shuffle the questions with --seed first (ragr1-train starts with its bridge items)")
    parser.add_argument("--tokenizer", help="model folder (or gemma3-270m) whose tokenizer to use (default: bundled SmolLM2)")
    parser.add_argument("--max-length", type=int, default=2048, help="longest sample in tokens; longer ones are dropped")
    parser.add_argument("--no-search-fraction", type=float, default=0.1,
                        help="share of questions the oracle answers without searching (kind 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retries", type=int, default=1, help="extra attempts of a failing episode")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def check_teacher_args(args: argparse.Namespace) -> None:
    """Fail on missing teacher options before anything loads."""
    from langchain_ragr1.errors import ConfigError

    if args.teacher != "oracle" and not args.teacher_model:
        raise ConfigError(f"--teacher {args.teacher} needs --teacher-model "
                          + ("(the served model's name)" if args.teacher == "openai" else "(a model folder)"))
    if args.teacher == "openai" and not args.base_url:
        raise ConfigError("--teacher openai needs --base-url, e.g. http://127.0.0.1:8000/v1")


def make_teacher(args: argparse.Namespace, items: list, tokenizer, mode: Mode = "multi"):
    """The teacher policy named by ``--teacher`` (options checked by :func:`check_teacher_args`)."""
    from langchain_ragr1.tuning.oracle import OraclePolicy

    if args.teacher == "oracle":
        return OraclePolicy(items, tokenizer, mode=mode, seed=args.seed,
                            no_search_fraction=args.no_search_fraction)
    if args.teacher == "openai":
        from langchain_ragr1.policies.openai_server import openai_server_policy

        # Our own retries (--retries) decide what happens to a failing question.
        return openai_server_policy(args.base_url, args.teacher_model, flavour=args.flavour,
                                    temperature=args.temperature, max_tokens=args.max_new_tokens,
                                    timeout=args.teacher_timeout, max_retries=0)
    from langchain_ragr1.policies.transformers import Sampling, TransformersPolicy

    return TransformersPolicy.from_pretrained(
        args.teacher_model, sampling=Sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from langchain_ragr1.logs import log_to_stderr

    log_to_stderr()  # the package's notices (a one-time model conversion, skipped questions) on stderr
    from transformers import AutoTokenizer

    from langchain_ragr1 import RagR1Agent
    from langchain_ragr1.data import load_qa
    from langchain_ragr1.errors import RagR1Error
    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.retrievers.factory import make_retriever
    from langchain_ragr1.tuning.sft_data import (
        TrajectoryCounts,
        build_sft_dataset,
        make_trajectories,
        to_sft_samples,
        token_accounting,
        write_jsonl,
    )

    try:
        check_teacher_args(args)
        items = load_qa(args.data)
        if args.shuffle:
            random.Random(args.seed).shuffle(items)
        items = items[: args.limit] if args.limit else items
        path = resolve_model_path(args.tokenizer or "base", show_progress=not args.quiet)
        tokenizer = AutoTokenizer.from_pretrained(path)
        retriever = make_retriever(args.retriever, k=args.k, store=args.store, corpus=args.corpus,
                                   url=args.url, show_progress=not args.quiet)
        trajectories, by_mode = [], {}
        for mode in dict.fromkeys(args.mode):
            teacher = make_teacher(args, items, tokenizer, mode)
            agent = RagR1Agent(teacher, retriever, mode=mode, k=args.k, max_turns=args.max_turns)
            kept, by_mode[mode] = make_trajectories(agent, items, retries=args.retries,
                                                    progress=not args.quiet)
            trajectories += kept
        counts = sum(by_mode.values(), TrajectoryCounts())
        samples = [s for t in trajectories for s in to_sft_samples(t)]
        report: dict = {}
        dataset = build_sft_dataset(samples, tokenizer, args.max_length, report=report)
        accounting = token_accounting(trajectories, tokenizer, args.max_length)
    except RagR1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajectories, out / "trajectories.jsonl")
    write_jsonl(samples, out / "samples.jsonl")
    if args.quiet:
        from langchain_ragr1.extras import require

        require("datasets", "training").disable_progress_bars()
    dataset.save_to_disk(str(out / "dataset"))
    summary = {
        "data": args.data, "mode": args.mode, "teacher": args.teacher, "retriever": args.retriever,
        "trajectories": {k: v for k, v in counts.to_dict().items() if k != "error_messages"},
        "trajectories_by_mode": {m: {k: v for k, v in c.to_dict().items() if k != "error_messages"}
                                 for m, c in by_mode.items()},
        "item_kinds_kept_by_mode": {m: dict(Counter(t["item_kind"] for t in trajectories if t["mode"] == m))
                                    for m in by_mode},
        "errors": counts.error_messages[:10],
        "item_kinds_kept": dict(Counter(t["item_kind"] for t in trajectories)),
        "sft": report,
        "token_accounting": accounting,
    }
    (out / "counts.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
