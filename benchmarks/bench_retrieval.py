"""Retrieval: index build rate, store reopen time and query latency for BM25 and Chroma.

BM25 indexes the whole bundled corpus; Chroma (MiniLM embeddings on the CPU) indexes a slice
(``--chroma-slice``) to measure its build rate, and is queried through the full bundled store
(built on first use by ``ragr1 index --bundled``; the slice store when it is absent).
Queries are the first ``--queries`` questions of the shipped dev set.

    python benchmarks/bench_retrieval.py [--chroma-slice 300] [--queries 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from langchain_ragr1 import load_bundled_corpus  # noqa: E402
from langchain_ragr1.data import load_qa  # noqa: E402
from langchain_ragr1.retrievers.bm25 import BM25Retriever  # noqa: E402
from langchain_ragr1.retrievers.chroma import build_chroma_store, chroma_retriever, open_chroma_store  # noqa: E402
from langchain_ragr1.retrievers.factory import _COMPLETE_MARKER, default_store_path  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def latencies(retriever, queries: list[str]) -> tuple[float, float]:
    retriever.invoke(queries[0])  # warm-up
    times = [timed(lambda q=q: retriever.invoke(q))[1] for q in queries]
    ordered = sorted(times)
    return statistics.median(times), ordered[max(0, round(0.95 * len(ordered)) - 1)]


def row(name: str, docs: int, build_s: float, reopen_s: float, p50: float, p95: float) -> str:
    return (f"{name:<26} | {docs:>6} | {docs / build_s:>9.0f} | {reopen_s * 1000:>8.0f} ms | "
            f"{p50 * 1000:>6.1f} ms | {p95 * 1000:>6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chroma-slice", type=int, default=300, help="passages embedded for the build rate")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    corpus = load_bundled_corpus()
    queries = [item.question for item in load_qa("ragr1-dev", limit=args.queries)]
    print(f"{'retriever':<26} | {'docs':>6} | {'passages/s':>9} | {'reopen':>11} | {'p50':>9} | {'p95':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        bm25, build_s = timed(lambda: BM25Retriever.from_documents(corpus))
        bm25.save(Path(tmp) / "bm25")
        reopened, reopen_s = timed(lambda: BM25Retriever.load(Path(tmp) / "bm25"))
        print(row("BM25 (bm25s)", len(corpus), build_s, reopen_s, *latencies(reopened, queries)))

        slice_path = Path(tmp) / "chroma"
        _, build_s = timed(lambda: build_chroma_store(corpus[: args.chroma_slice], slice_path, show_progress=False))
        store, reopen_s = timed(lambda: open_chroma_store(slice_path))
        print(row("Chroma + MiniLM (slice)", args.chroma_slice, build_s, reopen_s,
                  *latencies(chroma_retriever(store, k=3), queries)))

        full = default_store_path()
        if (full / _COMPLETE_MARKER).exists():
            store, reopen_s = timed(lambda: open_chroma_store(full))
            p50, p95 = latencies(chroma_retriever(store, k=3), queries)
            count = store._collection.count()
            print(f"{'Chroma + MiniLM (full)':<26} | {count:>6} | {'-':>9} | {reopen_s * 1000:>8.0f} ms | "
                  f"{p50 * 1000:>6.1f} ms | {p95 * 1000:>6.1f} ms")
        else:
            print(f"(no full bundled Chroma store at {full}: run `ragr1 index --bundled --store {full}`)")


if __name__ == "__main__":
    main()
