"""The offline QA generator (v2): reproducible shipped sets, verified answers and facts, disjoint splits."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from langchain_ragr1.data import DataError, load_qa
from langchain_ragr1.data.generate import (
    EXCLUDED_DIGESTS_FILE,
    KINDS,
    TRAIN_COUNTS,
    collect_facts,
    corpus_texts,
    generate_split,
    reserved_titles,
    split_of,
    title_digest,
    verify_item,
    write_shipped,
)
from langchain_ragr1.data.items import SHIPPED_DIR


@pytest.fixture(scope="module")
def corpus():
    return corpus_texts()


@pytest.fixture(scope="module")
def facts(corpus):
    return collect_facts(*corpus)


@pytest.fixture(scope="module")
def splits(corpus, facts):
    return {
        "train": generate_split("train", TRAIN_COUNTS, corpus=corpus, facts=facts),
        "dev": load_qa("ragr1-dev"),
        "test": load_qa("ragr1-test"),
    }


def test_shipped_files_are_reproduced_byte_for_byte(tmp_path):
    write_shipped(tmp_path)
    for split in ("dev", "test"):
        name = f"ragr1-{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (SHIPPED_DIR / name).read_bytes()


def test_every_kind_present_and_bridge_share(splits):
    for name, items in splits.items():
        kinds = collections.Counter(i.kind for i in items)
        assert set(kinds) == set(KINDS), name
        assert kinds["bridge"] / len(items) >= 0.2, (name, kinds)
        assert {i.source for i in items} == {f"ragr1-{name}"}
        assert all(i.id.startswith(f"ragr1-{name}-") for i in items)
    assert len(splits["dev"]) >= 90 and len(splits["test"]) >= 90 and len(splits["train"]) >= 700


def test_attributes_are_mixed(splits):
    for name, items in splits.items():
        others = [i for i in items if i.kind != "bridge"]
        years = [i for i in others if i.facts[0]["attribute"] in ("birth year", "death year")]
        assert len(years) <= 0.41 * len(others), name
        assert len({f["attribute"] for i in items for f in i.facts}) >= 8, name


def test_every_item_and_fact_verifies(corpus, splits):
    texts = corpus[0]
    for items in splits.values():
        for item in items:
            verify_item(item, texts)
            assert item.reasoning and len(item.facts) == len(item.evidence_titles)
            for fact in item.facts:
                text = texts[fact["title"]]
                assert fact["value"] in fact["quote"] and fact["quote"] in text and len(fact["quote"]) <= 110
                assert fact["statement"].endswith(".")
            if item.kind == "bridge":
                assert len(item.gold_queries) == 2 and item.facts[0]["value"] in item.gold_queries[1][0]
            elif item.kind == "fan-out":
                assert len(item.gold_queries) == 1 and len(item.gold_queries[0]) in (3, 4)
            elif item.kind == "comparison":
                assert len(item.gold_queries[0]) == 2
                assert item.golden_answers[0] in {f["entity"] for f in item.facts}


def test_splits_share_no_evidence_article(splits, facts):
    titles = {name: {t for i in items for t in i.evidence_titles} for name, items in splits.items()}
    assert not titles["train"] & titles["dev"] and not titles["train"] & titles["test"]
    assert not titles["dev"] & titles["test"]
    where = split_of(facts)
    for relation, target in facts.links:  # linked articles always land in one split
        assert where[relation.title] == where[target]


def test_reserved_titles_are_never_evidence(splits, facts):
    digests = set(EXCLUDED_DIGESTS_FILE.read_text().split())
    assert len(digests) >= 500 and all(len(d) == 64 for d in digests)
    reserved = reserved_titles()
    assert facts.excluded >= 1
    for items in splits.values():
        for item in items:
            for title in item.evidence_titles + [f["title"] for f in item.facts]:
                assert title_digest(title) not in digests and title not in reserved
    if reserved:  # the shared file, where it is here, is exactly what the shipped digests exclude
        assert {title_digest(t) for t in reserved} <= digests


def test_same_seed_same_items_other_seed_other_items(corpus, facts):
    counts = {"comparison": 5, "single-hop": 5, "bridge": 3}
    first = generate_split("dev", counts, seed=7, corpus=corpus, facts=facts)
    assert first == generate_split("dev", counts, seed=7, corpus=corpus, facts=facts)
    assert first != generate_split("dev", counts, seed=8, corpus=corpus, facts=facts)


def test_verifier_rejects_wrong_answers_and_unsupported_facts(corpus):
    texts = corpus[0]
    items = {}
    for item in load_qa("ragr1-test"):
        items.setdefault(item.kind, item)
    comparison = items["comparison"]
    loser = next(f["entity"] for f in comparison.facts if f["entity"] != comparison.golden_answers[0])
    with pytest.raises(DataError, match="the corpus gives"):
        verify_item(dataclasses.replace(comparison, golden_answers=[loser]), texts)
    bridge = items["bridge"]
    with pytest.raises(DataError, match="the corpus gives"):
        verify_item(dataclasses.replace(bridge, golden_answers=["1"]), texts)
    wrong_value = [dict(bridge.facts[0]), dict(bridge.facts[1], value="12345")]
    with pytest.raises(DataError, match="is not in the text"):
        verify_item(dataclasses.replace(bridge, facts=wrong_value), texts)
    single = items["single-hop"]
    tampered = dict(texts)
    tampered[single.evidence_titles[0]] = "Nothing here. Nothing at all."
    with pytest.raises(DataError, match="is not in the text"):
        verify_item(single, tampered)
    with pytest.raises(DataError, match="not in the corpus"):
        verify_item(dataclasses.replace(single, evidence_titles=["No Such Article"]), texts)
    with pytest.raises(DataError, match="one fact per evidence article"):
        verify_item(dataclasses.replace(single, facts=[]), texts)


def test_old_v1_sets_still_load():
    for name, n in (("ragr1-dev-v1", 91), ("ragr1-test-v1", 93)):
        items = load_qa(name)
        assert len(items) == n and all(i.facts == [] and i.reasoning is None for i in items)
        assert {i.source for i in items} == {name}
