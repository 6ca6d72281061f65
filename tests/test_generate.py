"""The offline QA generator: reproducible shipped sets, verified answers, disjoint splits."""

from __future__ import annotations

import dataclasses

import pytest

from langchain_ragr1.data import DataError, load_qa
from langchain_ragr1.data.generate import (
    SHIPPED_COUNTS,
    corpus_texts,
    generate_split,
    verify_item,
    write_shipped,
)
from langchain_ragr1.data.loaders import SHIPPED_DIR


@pytest.fixture(scope="module")
def corpus():
    return corpus_texts()


def test_shipped_files_are_reproduced_byte_for_byte(tmp_path):
    write_shipped(tmp_path)
    for split in ("dev", "test"):
        name = f"ragr1-{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (SHIPPED_DIR / name).read_bytes()


def test_every_item_verifies_and_splits_share_no_article(corpus):
    train = generate_split("train", {k: 5 * v for k, v in SHIPPED_COUNTS.items()}, corpus=corpus)
    dev, test = load_qa("ragr1-dev"), load_qa("ragr1-test")
    for item in dev + test:
        verify_item(item, corpus[0])
    titles = [{t for i in items for t in i.evidence_titles} for items in (train, dev, test)]
    assert not titles[0] & titles[1] and not titles[0] & titles[2] and not titles[1] & titles[2]
    kinds = {i.kind for i in train}
    assert kinds == {"comparison", "bridge", "fan-out", "single-hop"}
    assert all(len(i.gold_queries[0]) >= 3 for i in train if i.kind == "fan-out")
    assert all(len(i.gold_queries) == 2 for i in train if i.kind == "bridge")
    assert all(i.golden_answers[0] in {t.split(" (")[0] for t in i.evidence_titles}
               for i in train if i.kind == "comparison")


def test_same_seed_same_items_other_seed_other_items(corpus):
    counts = {"comparison": 5, "single-hop": 5}
    first = generate_split("dev", counts, seed=7, corpus=corpus)
    assert first == generate_split("dev", counts, seed=7, corpus=corpus)
    assert first != generate_split("dev", counts, seed=8, corpus=corpus)


def test_verifier_rejects_wrong_answers_and_unsupported_facts(corpus):
    texts = corpus[0]
    items = {i.kind: i for i in load_qa("ragr1-test")}
    comparison = items["comparison"]
    loser = next(t for t in comparison.evidence_titles if t != comparison.golden_answers[0])
    with pytest.raises(DataError, match="the corpus gives"):
        verify_item(dataclasses.replace(comparison, golden_answers=[loser]), texts)
    bridge = items["bridge"]
    with pytest.raises(DataError, match="was not born"):
        verify_item(dataclasses.replace(bridge, golden_answers=["1"]), texts)
    single = items["single-hop"]
    tampered = dict(texts)
    tampered[single.evidence_titles[0]] = "A person with no dates. Nothing here."
    with pytest.raises(DataError, match="no lifespan"):
        verify_item(single, tampered)
    with pytest.raises(DataError, match="not in the corpus"):
        verify_item(dataclasses.replace(single, evidence_titles=["No Such Article"]), texts)
