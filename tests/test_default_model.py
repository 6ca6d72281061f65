"""The trained default: the shipped SFT adapter merged into the bundled SmolLM2, and what it does."""

from __future__ import annotations

import pytest

from langchain_ragr1 import models
from langchain_ragr1.errors import MissingResourceError


def test_model_aliases_and_a_missing_adapter(monkeypatch, tmp_path, default_model_dir):
    assert models.resolve_model_path("base") == default_model_dir
    assert models.resolve_model_path(default_model_dir) == default_model_dir
    monkeypatch.setitem(models.ADAPTER_DIRS, "multi", tmp_path / "gone")
    monkeypatch.setitem(models.ADAPTER_DIRS, "single", tmp_path / "no-sq")
    for mode in ("multi", "single"):  # single falls back to the multi-query adapter when it has none
        with pytest.raises(MissingResourceError, match="gone/adapter_model.safetensors.*--model base"):
            models.resolve_model_path(None, mode=mode)
    with pytest.raises(MissingResourceError, match="not a LoRA adapter folder"):
        models.merge_adapter(default_model_dir, tmp_path, tmp_path / "out")


def test_the_shipped_adapters_are_small_and_float16():
    import json

    from safetensors import safe_open

    shipped = [folder for folder in models.ADAPTER_DIRS.values() if (folder / "adapter_config.json").is_file()]
    assert models.ADAPTER_DIRS["multi"] in shipped  # the default's; single-query only once trained and measured
    for folder in shipped:
        weights = folder / "adapter_model.safetensors"
        assert weights.stat().st_size < 12_000_000  # LoRA r 16 on all 7 projections: 9.8 MB in float16
        with safe_open(str(weights), "pt") as handle:
            assert {str(handle.get_slice(k).get_dtype()) for k in handle.keys()} == {"F16"}
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_default_agent_follows_the_protocol(default_model_dir):
    """The merged default model searches, reads and answers in protocol on a shipped test question."""
    from langchain_ragr1.agent import default_agent
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.data import load_qa
    from langchain_ragr1.retrievers.bm25 import BM25Retriever

    path = models.default_model_path(show_progress=False)
    assert path.name.startswith("SmolLM2-135M-Instruct-ragr1-sft-") and (path / "config.json").is_file()
    assert models.default_model_path(show_progress=False) == path  # merged once, then reused
    items = [i for i in load_qa("ragr1-test") if i.kind == "single-hop"][:2]
    corpus = load_bundled_corpus()
    evidence = {t for i in items for t in i.evidence_titles}
    docs = [d for d in corpus if d.metadata["title"] in evidence] + corpus[:300]
    agent = default_agent(retriever=BM25Retriever.from_documents(docs, k=3), temperature=0,
                          max_new_tokens=128, show_progress=False)
    results = agent.batch([i.question for i in items])
    for result in results:
        assert result["stop_reason"] == "answer" and result["invalid_turns"] == 0, result["trace"]
        assert result["turns"] >= 1 and result["answer"]
