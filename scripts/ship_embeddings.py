"""Recompute the shipped MiniLM embeddings of the bundled corpus (langchain_ragr1/embeddings/).

Run after the bundled corpus, the embedder or the passage format changes (the store then
refuses the old vectors and embeds instead, which ragr1 says on stderr):

    .venv/bin/python scripts/ship_embeddings.py
"""

import time

from langchain_ragr1.corpus import load_bundled_corpus
from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
from langchain_ragr1.retrievers.shipped import write_shipped_vectors

if __name__ == "__main__":
    started = time.perf_counter()
    documents = load_bundled_corpus()
    path = write_shipped_vectors(documents, MiniLMEmbeddings(show_progress=True))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(documents)} passages) "
          f"in {time.perf_counter() - started:.0f} s")
