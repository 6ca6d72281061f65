"""The real pieces together: SmolLM2 (transformers) + MiniLM + embedded Chroma, and the CLI."""

from __future__ import annotations

import json

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent, Sampling, TransformersPolicy, load_bundled_corpus
from langchain_ragr1.cli import main
from langchain_ragr1.retrievers.chroma import build_chroma_store, chroma_retriever
from langchain_ragr1.testing import ScriptedPolicy
from langchain_ragr1.transcript import token_ids_and_mask

pytestmark = pytest.mark.slow

QUESTION = "Who was born first, Marie Curie or Albert Einstein?"


@pytest.fixture(scope="module")
def corpus_slice() -> list[Document]:
    corpus = load_bundled_corpus()
    wanted = {"Marie Curie", "Albert Einstein", "Pierre Curie", "Niels Bohr"}
    return [d for d in corpus if d.metadata["title"] in wanted] + corpus[:40]


@pytest.fixture(scope="module")
def chroma(tmp_path_factory, corpus_slice):
    return build_chroma_store(corpus_slice, tmp_path_factory.mktemp("chroma"), show_progress=False)


@pytest.fixture(scope="module")
def smollm(default_model_dir):
    policy = TransformersPolicy.from_pretrained(default_model_dir, sampling=Sampling(max_new_tokens=24, temperature=0))
    yield policy
    policy.close()


def test_real_model_over_real_chroma_keeps_a_token_exact_transcript(smollm, chroma):
    agent = RagR1Agent(smollm, chroma_retriever(chroma, k=2), max_turns=1)
    result = agent.invoke(QUESTION)
    segments = result["segments"]
    assert segments[0]["role"] == "prompt" and segments[0]["text"].startswith("<|im_start|>")
    assert QUESTION in segments[0]["text"] and "<|im_start|>user" in segments[0]["text"]
    ids, mask = token_ids_and_mask(segments)
    assert smollm.decode(ids) == result["trace"]
    for segment in segments:
        assert smollm.decode(segment["token_ids"]) == segment["text"]
        if segment["role"] == "policy":
            assert len(segment["logprobs"]) == len(segment["token_ids"])
            assert all(lp <= 0 for lp in segment["logprobs"])
    assert sum(mask) == sum(len(s["token_ids"]) for s in segments if s["role"] == "policy")
    assert 1 <= result["steps"] <= 2 and result["turns"] == len(result["queries"])


def test_scripted_search_retrieves_the_right_articles_from_chroma(chroma):
    search = "<think>Compare birth years.</think><search> Marie Curie, Albert Einstein </search>"
    agent = RagR1Agent(ScriptedPolicy([search, "<answer> Marie Curie </answer>"]),
                       chroma_retriever(chroma), k=2)
    result = agent.invoke(QUESTION)
    titles = [[d.metadata["title"] for d in hit["documents"]] for hit in result["retrievals"][0]]
    assert len(titles[0]) == len(titles[1]) == 2  # the agent's k wins over the retriever's
    assert "Marie Curie" in titles[0] and titles[1][0] == "Albert Einstein"
    assert "1867" in result["trace"] and "1879" in result["trace"]


def test_concurrent_episodes_share_batched_generate_calls(smollm, chroma):
    agent = RagR1Agent(smollm, chroma_retriever(chroma, k=1), max_turns=0)
    before = smollm.stats
    results = agent.batch([QUESTION, "Where was Niels Bohr born?", "What is radium?", "Who was Pierre Curie?"])
    after = smollm.stats
    assert len(results) == 4
    assert after.requests - before.requests == 4
    assert after.generate_calls - before.generate_calls < 4  # coalesced, not one at a time


def test_cli_index_then_ask(tmp_path, corpus_slice, default_model_dir, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": d.metadata["id"], "title": d.metadata["title"],
                                            "text": d.page_content}) for d in corpus_slice))
    assert main(["index", str(corpus), "--store", str(tmp_path / "bm25"), "--kind", "bm25"]) == 0
    assert "indexed 44" in capsys.readouterr().err  # the summary is a notice: stderr
    code = main(["ask", QUESTION, "--retriever", "bm25", "--store", str(tmp_path / "bm25"),
                 "--model", str(default_model_dir), "--max-new-tokens", "16", "--max-turns", "1",
                 "--temperature", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["question"] == QUESTION and "turns" in out and QUESTION in out["trace"]


@pytest.mark.slow
def test_readme_ask_on_the_bundled_chroma_default_in_a_real_process(default_model_dir):
    """The README's first command (cached): the default model over the bundled Chroma store, twice.

    The second run opens the cached store and its embedder: loading it while the model loads (in
    another thread) once raced transformers' lazy imports (`cannot import name 'AutoModel'`).
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "RAGR1_HOME": os.environ.get("RAGR1_HOME") or str(Path(__file__).parents[1] / ".ragr1-cache")}
    ragr1 = Path(sys.executable).with_name("ragr1")
    for _ in range(2):
        proc = subprocess.run([str(ragr1), "ask", QUESTION, "--max-new-tokens", "48", "--max-turns", "1", "--json"],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout)
        assert result["question"] == QUESTION and result["stop_reason"] in ("answer", "turn_budget")
        assert "Traceback" not in proc.stderr
