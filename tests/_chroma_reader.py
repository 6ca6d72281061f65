"""One reader of an embedded Chroma store: ``python tests/_chroma_reader.py STORE OUT GO``.

Opens the store as the agent does (``open_chroma_store`` + ``chroma_retriever``), writes
``OUT.ready`` and waits for the file ``GO`` (so that several readers query at the same moment), runs the queries
of :func:`queries` and writes ``OUT``: ``{"results": [[id, score], ...] per query, "started",
"ended"}``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

DIM = 32


def queries() -> list[str]:
    return [f"passage {i} about topic {i % 7}" for i in range(0, 240, 2)]


def embeddings():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    return DeterministicFakeEmbedding(size=DIM)  # seeded by each text's sha256: the same in every process


def main(store: str, out: str, go: str) -> None:
    from langchain_ragr1.retrievers.chroma import chroma_retriever, open_chroma_store

    retriever = chroma_retriever(open_chroma_store(store, embeddings=embeddings()), k=5)
    Path(out + ".ready").touch()
    deadline = time.monotonic() + 120
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.time()
    results = [[[d.metadata.get("id", d.id), round(d.metadata["score"], 6)] for d in retriever.invoke(q)]
               for q in queries()]
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"results": results, "started": started, "ended": time.time()}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
