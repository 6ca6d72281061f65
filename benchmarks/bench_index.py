"""FAISS (flat, HNSW64, IVF) vs Chroma vs Milvus (milvus-lite) on the bundled corpus, side by side: recall@3 of the
entity queries of the shipped QA sets, search time per query (the query vectors embedded once, beforehand, so only
the index is timed), build time from the shipped MiniLM vectors and index size.

    python benchmarks/bench_index.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from langchain_ragr1.corpus import load_bundled_corpus  # noqa: E402
from langchain_ragr1.data import load_qa  # noqa: E402
from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings  # noqa: E402
from langchain_ragr1.retrievers.shipped import shipped_vectors  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def query_pairs() -> list[tuple[str, str]]:
    items = [item for name in ("ragr1-dev", "ragr1-test") for item in load_qa(name)
             if len(item.gold_queries) == len(item.evidence_titles)]
    return [(q[0], title) for item in items for q, title in zip(item.gold_queries, item.evidence_titles, strict=True)]


def measure(search, query_vectors, titles_of, pairs, repeats: int) -> tuple[float, float]:
    hits, times = 0, []
    for (_query, title), vector in zip(pairs, query_vectors, strict=True):
        found = search(vector)
        hits += title in titles_of(found)
        for _ in range(repeats):
            started = time.perf_counter()
            search(vector)
            times.append(time.perf_counter() - started)
    return hits / len(pairs), statistics.median(times) * 1000


def main() -> None:
    import faiss

    from langchain_ragr1.retrievers.chroma import build_chroma_store
    from langchain_ragr1.retrievers.faiss_index import INDEX_FILE, build_faiss_index
    from langchain_ragr1.retrievers.milvus import build_milvus_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per query")
    args = parser.parse_args()
    documents, embeddings = load_bundled_corpus(), MiniLMEmbeddings()
    vectors = shipped_vectors(documents, embeddings)
    assert vectors is not None, "the shipped vectors do not match this corpus/model"
    titles = [d.metadata["title"] for d in documents]
    pairs = query_pairs()
    query_vectors = [np.asarray(embeddings.embed_query(q), dtype=np.float32) for q, _ in pairs]
    faiss.omp_set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("flat", "hnsw", "ivf"):
            started = time.perf_counter()
            built = build_faiss_index(documents, Path(tmp) / kind, embeddings=embeddings, vectors=vectors,
                                      index_type=kind, show_progress=False)
            build_s = time.perf_counter() - started

            def search(v, index=built.index):
                return index.search(v[None, :], 3)[1][0]

            recall, ms = measure(search, query_vectors, lambda rows_: {titles[i] for i in rows_}, pairs, args.repeats)
            rows.append((f"FAISS {kind}", recall, ms, build_s, (Path(tmp) / kind / INDEX_FILE).stat().st_size))
        stores = (("Chroma (HNSW)", "chroma", build_chroma_store), ("Milvus-lite (FLAT)", "milvus.db", build_milvus_store))
        for name, where, build in stores:
            started = time.perf_counter()
            store = build(documents, Path(tmp) / where, embeddings=embeddings, vectors=vectors, show_progress=False)
            build_s = time.perf_counter() - started
            recall, ms = measure(lambda v, store=store: store.similarity_search_by_vector(v.tolist(), k=3), query_vectors,
                                 lambda docs: {d.metadata.get("title") for d in docs}, pairs, args.repeats)
            rows.append((name, recall, ms, build_s, folder_bytes(Path(tmp) / where)))
    print(f"{len(documents)} passages x {vectors.shape[1]} dims (shipped MiniLM vectors), {len(pairs)} queries, "
          f"search time = median of {args.repeats} timed searches per query, query already embedded")
    print(f"{'index':<20} {'recall@3':>9} {'ms/query':>9} {'build s':>8} {'on disk MB':>11}")
    for name, recall, ms, build_s, size in rows:
        print(f"{name:<20} {recall:>9.3f} {ms:>9.3f} {build_s:>8.1f} {size / 1e6:>11.1f}")


if __name__ == "__main__":
    main()
