"""RAG-R1 for LangChain and LangGraph: reason, search with several queries at once, answer.

>>> from langchain_ragr1 import RagR1Agent
>>> agent = RagR1Agent(llm=chat_model, retriever=retriever, mode="multi", k=3)  # doctest: +SKIP
>>> agent.invoke("Who was born first, Marie Curie or Albert Einstein?")["answer"]  # doctest: +SKIP

Heavy pieces (torch, Chroma) load only when their names are first used.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from langchain_ragr1.agent import RagR1Agent, default_agent
from langchain_ragr1.config import RagR1Config, RagR1Context
from langchain_ragr1.errors import ConfigError, MissingResourceError, ProtocolError, RagR1Error, RetrievalError
from langchain_ragr1.graph import RagR1State, build_graph, episode_result
from langchain_ragr1.policies.base import Generation, Policy
from langchain_ragr1.policies.langchain import LangChainPolicy
from langchain_ragr1.policies.sampling import Sampling
from langchain_ragr1.protocol import (
    Action,
    exact_match,
    f1_score,
    make_prompt,
    normalize_answer,
    parse_action,
    render_information,
)
from langchain_ragr1.results import episode_json

try:
    __version__ = version("langchain-ragr1")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# name -> module, imported on first access
_LAZY = {
    "TransformersPolicy": "langchain_ragr1.policies.transformers",
    "ContinuousTransformersPolicy": "langchain_ragr1.policies.continuous",
    "MiniLMEmbeddings": "langchain_ragr1.retrievers.embeddings",
    "BM25Retriever": "langchain_ragr1.retrievers.bm25",
    "SearchR1HTTPRetriever": "langchain_ragr1.retrievers.http",
    "build_chroma_store": "langchain_ragr1.retrievers.chroma",
    "open_chroma_store": "langchain_ragr1.retrievers.chroma",
    "load_bundled_corpus": "langchain_ragr1.corpus",
    "load_corpus_file": "langchain_ragr1.corpus",
    "make_retriever": "langchain_ragr1.retrievers.factory",
    "default_model_path": "langchain_ragr1.models",
    "base_model_path": "langchain_ragr1.models",
    "RagR1Retriever": "langchain_ragr1.integrations",
    "VLLMPolicy": "langchain_ragr1.policies.vllm",
    "openai_server_policy": "langchain_ragr1.policies.openai_server",
    "create_retrieval_app": "langchain_ragr1.server",
}

if TYPE_CHECKING:  # the lazy names, visible to type checkers and IDEs (imported on first use)
    from langchain_ragr1.corpus import load_bundled_corpus as load_bundled_corpus
    from langchain_ragr1.corpus import load_corpus_file as load_corpus_file
    from langchain_ragr1.integrations import RagR1Retriever as RagR1Retriever
    from langchain_ragr1.models import base_model_path as base_model_path
    from langchain_ragr1.models import default_model_path as default_model_path
    from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy as ContinuousTransformersPolicy
    from langchain_ragr1.policies.openai_server import openai_server_policy as openai_server_policy
    from langchain_ragr1.policies.transformers import TransformersPolicy as TransformersPolicy
    from langchain_ragr1.policies.vllm import VLLMPolicy as VLLMPolicy
    from langchain_ragr1.retrievers.bm25 import BM25Retriever as BM25Retriever
    from langchain_ragr1.retrievers.chroma import build_chroma_store as build_chroma_store
    from langchain_ragr1.retrievers.chroma import open_chroma_store as open_chroma_store
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings as MiniLMEmbeddings
    from langchain_ragr1.retrievers.factory import make_retriever as make_retriever
    from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever as SearchR1HTTPRetriever
    from langchain_ragr1.server import create_retrieval_app as create_retrieval_app

__all__ = [
    "RagR1Agent",
    "default_agent",
    "RagR1Config",
    "RagR1Context",
    "RagR1State",
    "build_graph",
    "episode_result",
    "episode_json",
    "Policy",
    "Generation",
    "LangChainPolicy",
    "Sampling",
    "Action",
    "make_prompt",
    "parse_action",
    "render_information",
    "normalize_answer",
    "exact_match",
    "f1_score",
    "RagR1Error",
    "ConfigError",
    "MissingResourceError",
    "RetrievalError",
    "ProtocolError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'langchain_ragr1' has no attribute {name!r}")
