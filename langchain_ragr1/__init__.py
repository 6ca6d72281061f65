"""RAG-R1 for LangChain and LangGraph: reason, search with several queries at once, answer.

>>> from langchain_ragr1 import RagR1Agent
>>> agent = RagR1Agent(llm=chat_model, retriever=retriever, mode="multi", k=3)  # doctest: +SKIP
>>> agent.invoke("Who was born first, Marie Curie or Albert Einstein?")["answer"]  # doctest: +SKIP

Every name but the errors loads when it is first used (LangGraph, torch, Chroma with it).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from langchain_ragr1.errors import ConfigError, MissingResourceError, ProtocolError, RagR1Error, RetrievalError

try:
    __version__ = version("langchain-ragr1")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# name -> module, imported on first access: `import langchain_ragr1` (and so `ragr1`'s start, which prints its
# first line before anything heavy loads) costs no LangGraph, LangChain, torch or Chroma import
_LAZY = {
    "RagR1Agent": "langchain_ragr1.agent",
    "default_agent": "langchain_ragr1.agent",
    "RagR1Config": "langchain_ragr1.config",
    "RagR1Context": "langchain_ragr1.config",
    "RagR1State": "langchain_ragr1.graph",
    "build_graph": "langchain_ragr1.graph",
    "episode_result": "langchain_ragr1.graph",
    "Generation": "langchain_ragr1.policies.base",
    "Policy": "langchain_ragr1.policies.base",
    "LangChainPolicy": "langchain_ragr1.policies.langchain",
    "Sampling": "langchain_ragr1.policies.sampling",
    "Action": "langchain_ragr1.protocol",
    "exact_match": "langchain_ragr1.protocol",
    "f1_score": "langchain_ragr1.protocol",
    "make_prompt": "langchain_ragr1.protocol",
    "normalize_answer": "langchain_ragr1.protocol",
    "parse_action": "langchain_ragr1.protocol",
    "render_information": "langchain_ragr1.protocol",
    "episode_json": "langchain_ragr1.results",
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
    from langchain_ragr1.agent import RagR1Agent as RagR1Agent
    from langchain_ragr1.agent import default_agent as default_agent
    from langchain_ragr1.config import RagR1Config as RagR1Config
    from langchain_ragr1.config import RagR1Context as RagR1Context
    from langchain_ragr1.corpus import load_bundled_corpus as load_bundled_corpus
    from langchain_ragr1.corpus import load_corpus_file as load_corpus_file
    from langchain_ragr1.graph import RagR1State as RagR1State
    from langchain_ragr1.graph import build_graph as build_graph
    from langchain_ragr1.graph import episode_result as episode_result
    from langchain_ragr1.integrations import RagR1Retriever as RagR1Retriever
    from langchain_ragr1.models import base_model_path as base_model_path
    from langchain_ragr1.models import default_model_path as default_model_path
    from langchain_ragr1.policies.base import Generation as Generation
    from langchain_ragr1.policies.base import Policy as Policy
    from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy as ContinuousTransformersPolicy
    from langchain_ragr1.policies.langchain import LangChainPolicy as LangChainPolicy
    from langchain_ragr1.policies.openai_server import openai_server_policy as openai_server_policy
    from langchain_ragr1.policies.sampling import Sampling as Sampling
    from langchain_ragr1.policies.transformers import TransformersPolicy as TransformersPolicy
    from langchain_ragr1.policies.vllm import VLLMPolicy as VLLMPolicy
    from langchain_ragr1.protocol import Action as Action
    from langchain_ragr1.protocol import exact_match as exact_match
    from langchain_ragr1.protocol import f1_score as f1_score
    from langchain_ragr1.protocol import make_prompt as make_prompt
    from langchain_ragr1.protocol import normalize_answer as normalize_answer
    from langchain_ragr1.protocol import parse_action as parse_action
    from langchain_ragr1.protocol import render_information as render_information
    from langchain_ragr1.results import episode_json as episode_json
    from langchain_ragr1.retrievers.bm25 import BM25Retriever as BM25Retriever
    from langchain_ragr1.retrievers.chroma import build_chroma_store as build_chroma_store
    from langchain_ragr1.retrievers.chroma import open_chroma_store as open_chroma_store
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings as MiniLMEmbeddings
    from langchain_ragr1.retrievers.factory import make_retriever as make_retriever
    from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever as SearchR1HTTPRetriever
    from langchain_ragr1.server import create_retrieval_app as create_retrieval_app

__all__ = [
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
