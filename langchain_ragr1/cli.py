"""The ``ragr1`` command: ``ask`` a question, ``index`` a corpus, ``convert`` a GGUF model, ``eval`` a QA set."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.markup import escape

from langchain_ragr1.defaults import RETRIEVER_KINDS
from langchain_ragr1.errors import RagR1Error
from langchain_ragr1.protocol import MODES, ProtocolError, normalize_question

_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


def _add_agent_options(parser: argparse.ArgumentParser, *, temperature: float) -> None:
    """The model, retriever and episode options that `ask` and `eval` share."""
    parser.add_argument("--k", type=int, default=3, help="passages per query")
    parser.add_argument("--max-turns", type=int, default=4, help="model turns that may search")
    parser.add_argument("--max-new-tokens", type=int, default=500, help="tokens per model turn")
    parser.add_argument("--temperature", type=float, default=temperature,
                        help=f"sampling temperature (default {temperature:g}; 0 is greedy)")
    parser.add_argument("--model", default="default",
                        help="a transformers model folder, 'default' (SmolLM2 + the shipped SFT adapter) "
                             "or 'base' (the untrained SmolLM2)")
    parser.add_argument("--retriever", choices=RETRIEVER_KINDS, default="chroma")
    parser.add_argument("--store", help="a Chroma folder or BM25 index built by `ragr1 index`")
    parser.add_argument("--corpus", help="a JSONL/text corpus to index on the fly")
    parser.add_argument("--url", help="a Search-R1 /retrieve endpoint (with --retriever http)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragr1", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    ask = commands.add_parser("ask", help="answer a question with the RAG-R1 agent")
    ask.add_argument("question")
    ask.add_argument("--mode", choices=MODES, default="multi")
    _add_agent_options(ask, temperature=0.7)
    ask.add_argument("--json", action="store_true", help="print the result as JSON")

    index = commands.add_parser("index", help="build a Chroma or BM25 store from a corpus")
    index.add_argument("inputs", nargs="*", help="JSONL files, text files or folders")
    index.add_argument("--bundled", action="store_true", help="index the bundled Wikipedia")
    index.add_argument("--store", required=True, help="output folder")
    index.add_argument("--kind", choices=("chroma", "bm25"), default="chroma")
    index.add_argument("--limit", type=int, help="index only the first N documents")

    convert = commands.add_parser("convert", help="convert a GGUF model to a transformers folder")
    convert.add_argument("gguf")
    convert.add_argument("out")
    _eval_parser(commands)
    return parser


def _eval_parser(commands) -> None:
    from langchain_ragr1.config import STRATEGIES
    from langchain_ragr1.data import BENCHMARKS, NAMED_SETS

    ev = commands.add_parser("eval", help="evaluate modes on a QA set (metrics, predictions, report)")
    ev.add_argument("--data", required=True, help=f"a QA file, NAME:PATH with NAME one of "
                    f"{', '.join(BENCHMARKS)}, or one of {', '.join(NAMED_SETS)}")
    ev.add_argument("--mode", nargs="+", choices=list(STRATEGIES), default=["multi"])
    ev.add_argument("--limit", type=int, help="evaluate only the first N questions")
    ev.add_argument("--out", required=True, help="output folder (resumes from its predictions.jsonl)")
    _add_agent_options(ev, temperature=0.0)
    ev.add_argument("--batch-size", type=int, default=8, help="concurrent episodes per chunk")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_trace(result: dict, console: Console) -> None:
    """Each think, search (with its queries and retrieved titles) and answer of an episode."""
    retrievals = iter(result.get("retrievals") or [])
    for segment in result["segments"]:
        text = segment["text"]
        if segment["role"] == "policy":
            thoughts = _THINK_RE.findall(text)
            for thought in thoughts:
                console.print(f"[dim]think:[/dim] {escape(thought.strip())}")
            if not thoughts:  # show what a model that ignores the protocol wrote
                console.print(f"[dim]model:[/dim] {escape(_shorten(text))}")
        elif segment["role"] == "env" and "<information>" in text:
            for hit in next(retrievals, []):
                titles = [d.metadata.get("title") or d.page_content[:40] for d in hit["documents"]]
                console.print(f"[cyan]search:[/cyan] {escape(hit['query'])}")
                console.print(f"   [dim]retrieved:[/dim] {escape('; '.join(map(str, titles)))}")
        elif segment["role"] == "env":
            console.print("[yellow]invalid action: the model is told to try again[/yellow]")
    answer = result.get("answer")
    console.print(
        f"[bold green]answer:[/bold green] {escape(answer)}" if answer is not None
        else f"[bold red]no answer[/bold red] ({result.get('stop_reason')})"
    )
    console.print(f"[dim]retrieval turns: {result['turns']}, model turns: {result['steps']}[/dim]")


def _ask(args: argparse.Namespace, console: Console) -> int:
    from langchain_ragr1.defaults import default_agent

    normalize_question(args.question)  # fail before loading anything
    agent = default_agent(
        model_path=args.model,
        retriever=args.retriever,
        store=args.store,
        corpus=args.corpus,
        url=args.url,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        mode=args.mode,
        k=args.k,
        max_turns=args.max_turns,
    )
    result = agent.invoke(args.question)
    if args.json:
        payload = {key: result[key] for key in ("question", "answer", "turns", "queries", "trace")}
        payload["documents"] = [d.metadata.get("title") for d in result["documents"]]
        print(json.dumps(payload, indent=2))
    else:
        print_trace(result, console)
    return 0


def _index(args: argparse.Namespace, console: Console) -> int:
    from langchain_ragr1.corpus import load_bundled_corpus, load_corpus_file

    if args.bundled == bool(args.inputs):
        raise RagR1Error("Give corpus files to index, or --bundled for the bundled corpus.")
    documents = [] if args.inputs else load_bundled_corpus()
    for path in args.inputs:
        documents.extend(load_corpus_file(path))
    documents = documents[: args.limit] if args.limit else documents
    if args.kind == "bm25":
        from langchain_ragr1.retrievers.bm25 import BM25Retriever

        BM25Retriever.from_documents(documents).save(args.store)
    else:
        from langchain_ragr1.retrievers.chroma import build_chroma_store

        build_chroma_store(documents, args.store)
    console.print(f"indexed {len(documents)} documents into {args.store} ({args.kind})")
    return 0


def _convert(args: argparse.Namespace, console: Console) -> int:
    from langchain_ragr1.models import convert_gguf

    console.print(f"converted into {convert_gguf(Path(args.gguf), Path(args.out))}")
    return 0


def _eval(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from langchain_ragr1.evaluation import run_eval
    from langchain_ragr1.report import metrics_table

    with Progress(console=console, transient=False) as bar:
        def progress_factory(total: int):
            task = bar.add_task("evaluating", total=total)
            return lambda n: bar.advance(task, n)

        metrics = run_eval(
            args.data, args.mode, args.out, limit=args.limit, model=args.model,
            retriever=args.retriever, store=args.store, corpus=args.corpus, url=args.url, k=args.k,
            max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, batch_size=args.batch_size,
            progress_factory=progress_factory,
        )
    console.print(metrics_table(metrics), markup=False)
    console.print(f"wrote {args.out}/metrics.json, predictions.jsonl, report.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ragr1`` command."""
    # torch loads later: passive OpenMP waiting keeps the retriever and generator threads (and
    # any other process on a small machine) from spinning against each other.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parser().parse_args(argv)
    console = Console(soft_wrap=True)
    handlers = {"ask": _ask, "index": _index, "convert": _convert, "eval": _eval}
    try:
        return handlers[args.command](args, console)
    except (RagR1Error, ProtocolError) as exc:
        console.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
