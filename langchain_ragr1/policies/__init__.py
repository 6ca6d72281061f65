"""Policies: what writes the model turns.

Heavy backends (torch, vLLM, OpenAI clients) are imported on first access only, and so is LangChain (the
``ragr1`` command reads the backend names from :mod:`langchain_ragr1.policies.factory` before anything loads).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from langchain_ragr1.policies.sampling import Sampling

_LAZY = {
    "Generation": "langchain_ragr1.policies.base",
    "Policy": "langchain_ragr1.policies.base",
    "LangChainPolicy": "langchain_ragr1.policies.langchain",
    "FastPolicy": "langchain_ragr1.policies.fast",
    "TransformersPolicy": "langchain_ragr1.policies.transformers",
    "ContinuousTransformersPolicy": "langchain_ragr1.policies.continuous",
    "VLLMPolicy": "langchain_ragr1.policies.vllm",
    "openai_server_policy": "langchain_ragr1.policies.openai_server",
}

if TYPE_CHECKING:  # the lazy names, visible to type checkers and IDEs (imported on first use)
    from langchain_ragr1.policies.base import Generation as Generation
    from langchain_ragr1.policies.base import Policy as Policy
    from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy as ContinuousTransformersPolicy
    from langchain_ragr1.policies.fast import FastPolicy as FastPolicy
    from langchain_ragr1.policies.langchain import LangChainPolicy as LangChainPolicy
    from langchain_ragr1.policies.openai_server import openai_server_policy as openai_server_policy
    from langchain_ragr1.policies.transformers import TransformersPolicy as TransformersPolicy
    from langchain_ragr1.policies.vllm import VLLMPolicy as VLLMPolicy

__all__ = ["Sampling", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
