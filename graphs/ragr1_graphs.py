"""Entry points for the LangGraph CLI, Studio and Agent Server (named in ``langgraph.json``).

``ragr1`` is RAG-R1 (several queries per search), ``ragr1_single`` the Search-R1 single-query
variant, both over the bundled offline default (SmolLM2 + the Wikipedia summaries). Each is a
factory: the model loads on the first run, not at import, and is reused afterwards.

Environment: ``RAGR1_RETRIEVER`` = ``chroma`` (default) | ``bm25`` (starts in seconds) |
``http`` (with ``RAGR1_RETRIEVER_URL``); ``RAGR1_MODEL`` = a transformers model folder.

    pip install -e . "langgraph-cli[inmem]" && langgraph dev --config graphs/langgraph.json
"""

import os
from functools import lru_cache

from langchain_core.runnables import RunnableConfig

from langchain_ragr1 import RagR1Agent

RETRIEVER_ENV = "RAGR1_RETRIEVER"
URL_ENV = "RAGR1_RETRIEVER_URL"
MODEL_ENV = "RAGR1_MODEL"


@lru_cache(maxsize=None)
def load_agent(mode: str) -> RagR1Agent:
    """The default agent in ``mode``, built once per process."""
    return RagR1Agent.from_default(
        mode=mode,
        retriever=os.environ.get(RETRIEVER_ENV, "chroma"),
        url=os.environ.get(URL_ENV),
        model_path=os.environ.get(MODEL_ENV) or None,
        show_progress=False,
    )


def make_multi_graph(config: RunnableConfig):
    """The compiled RAG-R1 graph (multi-query)."""
    return load_agent("multi").graph


def make_single_graph(config: RunnableConfig):
    """The compiled single-query (Search-R1) variant of the same graph."""
    return load_agent("single").graph
