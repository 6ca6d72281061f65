"""Optional dependencies: import them, or fail with the ``pip install`` that adds them."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from langchain_ragr1.errors import MissingResourceError

#: extra -> what it is for (the extras of pyproject.toml that users install by hand).
EXTRAS = {
    "training": "SFT and RL training (TRL, datasets)",
    "server": "the /retrieve HTTP server (FastAPI, uvicorn)",
    "openai": "OpenAI-compatible model servers (langchain-openai, langchain-community)",
    "vllm": "the vLLM engine on a GPU",
    "langgraph": "`langgraph dev` and LangGraph Studio (langgraph-cli[inmem])",
    "sqlite": "the SQLite checkpointer",
    "faiss": "FAISS indexes (faiss-cpu; a GPU build of FAISS is the swap for GPUs)",
    "milvus": "Milvus vector stores (langchain-milvus; milvus-lite runs one embedded)",
}


class MissingExtraError(MissingResourceError):
    """An optional package is missing; the message names the extra to install."""


def install_hint(extra: str) -> str:
    return f'pip install "langchain-ragr1[{extra}]"'


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install "langchain-ragr1[extra]"``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    try:
        return import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise MissingExtraError(
            f"{purpose or EXTRAS[extra]} needs the package {missing!r}, which is not installed: "
            f"run `{install_hint(extra)}`."
        ) from exc
