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


def test_a_cached_start_neither_hashes_nor_merges_the_adapter_and_a_changed_adapter_is_noticed(monkeypatch, tmp_path):
    import hashlib
    import os
    import shutil

    monkeypatch.setenv("RAGR1_HOME", str(tmp_path / "home"))
    adapter, other = tmp_path / "adapter", tmp_path / "other"
    shutil.copytree(models.ADAPTER_DIRS["multi"], adapter)
    shutil.copytree(models.ADAPTER_DIRS["multi"], other)
    (other / "adapter_config.json").write_text((other / "adapter_config.json").read_text() + "\n")
    weights = adapter / "adapter_model.safetensors"
    hashed: list[int] = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda data=b"": (hashed.append(len(data)), real_sha256(data))[1])

    def expected() -> str:
        return real_sha256(weights.read_bytes() + (adapter / "adapter_config.json").read_bytes()).hexdigest()[:12]

    first = models._adapter_digest(adapter)
    assert first == expected() and len(hashed) == 1
    second = models._adapter_digest(other)  # another adapter (the other mode's) keeps its own record
    assert second != first and len(hashed) == 2
    monkeypatch.setitem(models.ADAPTER_DIRS, "multi", adapter)
    merged = tmp_path / "home" / "models" / f"{models.DEFAULT_MODEL_NAME}-ragr1-sft-{first}"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")

    def no_merge(*args, **kwargs):
        raise AssertionError("a cached start merged or converted again")

    monkeypatch.setattr(models, "merge_adapter", no_merge)
    monkeypatch.setattr(models, "base_model_path", no_merge)
    assert models.default_model_path() == merged and models._adapter_digest(other) == second
    assert len(hashed) == 2  # stats only: nothing hashed again

    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the same size, other bytes, a later modification time
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    changed = models._adapter_digest(adapter)
    assert changed == expected() != first and len(hashed) == 3
    with pytest.raises(AssertionError, match="merged or converted again"):
        models.default_model_path()  # a new adapter: a new folder, merged anew
    (tmp_path / "home" / "models" / models._DIGEST_RECORD).write_text("not json")
    assert models._adapter_digest(adapter) == changed and len(hashed) == 4  # an unreadable record: hashed again


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
