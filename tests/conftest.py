"""Shared fixtures: the converted default model and a tiny random policy on its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from langchain_ragr1.paths import CACHE_ENV

# With other processes on this 2-core machine, OpenMP's spin-waiting threads make torch
# 5-10x slower; passive waiting avoids that. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_CACHE = Path(__file__).resolve().parents[1] / ".ragr1-cache"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The bundled SmolLM2 converted once into $RAGR1_HOME (default: the repo's .ragr1-cache)."""
    from langchain_ragr1.models import base_model_path

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, os.environ.get(CACHE_ENV) or str(REPO_CACHE))
        return base_model_path(show_progress=False)


@pytest.fixture(scope="session")
def smollm2_tokenizer(default_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture
def tiny_model(smollm2_tokenizer):
    """A random 2-layer Llama with SmolLM2's vocabulary and 256 positions."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=smollm2_tokenizer.bos_token_id,
        eos_token_id=smollm2_tokenizer.eos_token_id,
        pad_token_id=smollm2_tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_policy(tiny_model, smollm2_tokenizer):
    """A greedy TransformersPolicy on the tiny model (16 new tokens), closed afterwards."""
    from langchain_ragr1.policies import Sampling, TransformersPolicy

    policy = TransformersPolicy(
        tiny_model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=16, temperature=0), batch_wait_s=0.05
    )
    yield policy
    policy.close()


@pytest.fixture
def varied_model(smollm2_tokenizer):
    """A random 2-layer Llama with weights large enough that its turns vary (at the default init it repeats
    one token, which hides misplaced positions, masks and stop cuts)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.5,
        bos_token_id=smollm2_tokenizer.bos_token_id, eos_token_id=smollm2_tokenizer.eos_token_id,
        pad_token_id=smollm2_tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_folder(tmp_path, smollm2_tokenizer, varied_model):
    """:func:`varied_model` saved with SmolLM2's tokenizer."""
    varied_model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    smollm2_tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"
