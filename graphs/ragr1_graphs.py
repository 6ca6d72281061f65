"""Entry points for the LangGraph CLI, Studio and Agent Server (named in ``langgraph.json``).

``ragr1`` is RAG-R1 (several queries per search), ``ragr1_single`` the Search-R1 single-query
variant, both over the bundled offline default (SmolLM2 + the Wikipedia summaries). Run from
the repository root (the CLI resolves the paths in ``langgraph.json`` against the current
folder)::

    pip install -e ".[langgraph]" && langgraph dev

Each graph is an async factory that the server calls for every run and every read. Building
the agent loads the model and reads files, which must not happen on the server's event loop
(``langgraph dev`` answers ``BlockingError`` otherwise), so :func:`aload_agent` builds it in a
worker thread, once per process: concurrent first runs share that one build, and the two
graphs build one after the other (loading two transformers models at once is not
thread-safe) and share one model and retriever when both modes resolve to the same model
folder. Reads before the first run (Studio's schemas and drawing, a thread's state) get a graph
of the same topology and state over a placeholder model, so Studio opens without loading the
model.

Environment: ``RAGR1_RETRIEVER`` = ``chroma`` (default) | ``bm25`` (starts in seconds) |
``http`` (with ``RAGR1_RETRIEVER_URL``); ``RAGR1_MODEL`` = a transformers model folder;
``RAGR1_HOME`` = where the converted model and the index are cached.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langgraph.pregel import Pregel

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.policies.base import Generation, Policy

if TYPE_CHECKING:  # the server resolves this annotation itself (langgraph_api._factory_utils)
    from langgraph_sdk.runtime import ServerRuntime

RETRIEVER_ENV = "RAGR1_RETRIEVER"
URL_ENV = "RAGR1_RETRIEVER_URL"
MODEL_ENV = "RAGR1_MODEL"

# mode -> the one build of that mode's agent (a thread-safe future: the server runs several
# event loops, in different threads, and any of them may await it)
_BUILDS: dict[str, Future] = {}
# One build at a time: concurrent transformers imports and model loads race.
_BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragr1-build")


# model folder -> the first agent built over it: the other mode's agent reuses its policy and retriever
_BY_FOLDER: dict[Path, RagR1Agent] = {}


@lru_cache(maxsize=None)
def load_agent(mode: str) -> RagR1Agent:
    """The default agent in ``mode`` (blocking: loads the model and the index).

    Two modes whose model resolves to the same folder (both modes' defaults while the package
    ships one adapter, or one ``RAGR1_MODEL``) share one policy and one retriever, so the model is
    held and loaded once, as ``ragr1 eval``'s ``ModePolicies`` does."""
    from langchain_ragr1.models import resolve_model_path

    model_path = os.environ.get(MODEL_ENV) or None
    folder = resolve_model_path(model_path, mode=mode, show_progress=False)
    built = _BY_FOLDER.get(folder)
    if built is not None:
        return RagR1Agent(built.policy, built.retriever, mode=mode)
    agent = RagR1Agent.from_default(
        mode=mode,
        retriever=os.environ.get(RETRIEVER_ENV, "chroma"),
        url=os.environ.get(URL_ENV),
        model_path=model_path,
        show_progress=False,
    )
    return _BY_FOLDER.setdefault(folder, agent)


def _build(mode: str, future: Future) -> None:
    """Worker thread: run :func:`load_agent` into ``future``; a failed build is retried later."""
    try:
        future.set_result(load_agent(mode))
    except BaseException as error:  # noqa: BLE001 - handed to every awaiting run
        if _BUILDS.get(mode) is future:
            del _BUILDS[mode]
        future.set_exception(error)


def _start_build(mode: str) -> Future:
    """The build of ``mode``, started in the builder thread unless it already runs or ran."""
    future: Future = Future()
    build = _BUILDS.setdefault(mode, future)  # atomic: no lock to block the event loop
    if build is future:
        _BUILDER.submit(_build, mode, future)
    return build


async def aload_agent(mode: str) -> RagR1Agent:
    """:func:`load_agent` in a worker thread, once per process (never blocks the event loop)."""
    # shield: a cancelled run stops waiting, but the shared build goes on for the others
    return await asyncio.shield(asyncio.wrap_future(_start_build(mode)))


class _PlaceholderPolicy(Policy):
    """Stands in for the model in graphs that are only inspected, never run."""

    def generate(self, segments: Sequence[Any], *, stop: Sequence[str] = (), config: Any = None) -> Generation:
        raise RuntimeError("this ragr1 graph is for inspection only; runs get the real agent")


class _PlaceholderRetriever(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        raise RuntimeError("this ragr1 graph is for inspection only; runs get the real agent")


@lru_cache(maxsize=None)
def structure_graph(mode: str) -> Pregel:
    """A graph with the real one's topology and state, over placeholders (builds in ms)."""
    return RagR1Agent(_PlaceholderPolicy(), _PlaceholderRetriever(), mode=mode).graph


async def graph_for(mode: str, runtime: Any = None) -> Pregel:
    """The real graph for runs; for reads, the real one once built, else :func:`structure_graph`."""
    if getattr(runtime, "execution_runtime", True) is None:  # a read (no model needed)
        build = _BUILDS.get(mode)
        if build is None or not build.done() or build.exception() is not None:
            return structure_graph(mode)
    return (await aload_agent(mode)).graph


async def make_multi_graph(runtime: ServerRuntime) -> Pregel:
    """The compiled RAG-R1 graph (multi-query)."""
    return await graph_for("multi", runtime)


async def make_single_graph(runtime: ServerRuntime) -> Pregel:
    """The compiled single-query (Search-R1) variant of the same graph."""
    return await graph_for("single", runtime)
