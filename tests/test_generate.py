"""The offline QA generator (v3): reproducible shipped sets, verified answers and facts, disjoint splits,
phrasings people use, and the v2 sets kept (their evidence never in ragr1-train)."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from langchain_ragr1.data import DataError, load_qa
from langchain_ragr1.data.facts import PERSON_RELATIONS, RELATIONS
from langchain_ragr1.data.generate import (
    EXCLUDED_DIGESTS_FILE,
    KINDS,
    TRAIN_COUNTS,
    VERSION,
    collect_facts,
    corpus_texts,
    generate_split,
    pinned_titles,
    reserved_titles,
    split_of,
    title_digest,
    verify_item,
    write_shipped,
)
from langchain_ragr1.data.items import SHIPPED_DIR
from langchain_ragr1.data.phrasings import BRIDGE_ASK, BRIDGE_REFER, COMPARE, SINGLE, work_single


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
        "dev": load_qa(f"ragr1-dev-{VERSION}"),
        "test": load_qa(f"ragr1-test-{VERSION}"),
    }


def _source(split: str) -> str:
    return "ragr1-train" if split == "train" else f"ragr1-{split}-{VERSION}"


def test_shipped_files_are_reproduced_byte_for_byte(tmp_path):
    write_shipped(tmp_path)
    for split in ("dev", "test"):
        name = f"ragr1-{split}-{VERSION}.jsonl"
        assert (tmp_path / name).read_bytes() == (SHIPPED_DIR / name).read_bytes()


def test_every_kind_present_and_bridge_share(splits):
    for name, items in splits.items():
        kinds = collections.Counter(i.kind for i in items)
        assert set(kinds) == set(KINDS), name
        assert kinds["bridge"] / len(items) >= 0.2, (name, kinds)
        assert {i.source for i in items} == {_source(name)}
        assert all(i.id.startswith(f"{_source(name)}-") for i in items)
    assert len(splits["dev"]) == 100 and len(splits["test"]) == 100
    assert len(splits["train"]) >= 2 * 878  # twice the v2 generator's train split


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
    where = split_of(facts, pinned_titles())
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


def test_v2_sets_load_unchanged_and_still_verify(corpus):
    for name in ("ragr1-dev", "ragr1-test"):
        items = load_qa(name)
        assert len(items) == 100 and {i.source for i in items} == {name}
        assert all(i.id.startswith(f"{name}-0") and i.template is None for i in items)
        for item in items:
            verify_item(item, corpus[0])


def test_ragr1_train_never_uses_v2_or_v3_dev_test_evidence():
    train = {t for i in load_qa("ragr1-train") for t in i.evidence_titles}
    for name in ("ragr1-dev", "ragr1-test", f"ragr1-dev-{VERSION}", f"ragr1-test-{VERSION}"):
        held = {t for i in load_qa(name) for t in i.evidence_titles}
        assert held and not train & held, name


def test_pinned_groups_keep_their_split(facts):
    pinned = pinned_titles()
    assert set(pinned.values()) <= {"dev", "test", "held out"} and len(pinned) >= 150
    where = split_of(facts, pinned)
    for title, split in pinned.items():
        if title in where:
            assert where[title] == split
    # a group pinned to two splits is in none
    relation, target = next((f, t) for f, t in facts.links if f.attribute == "location")
    both = split_of(facts, {relation.title: "dev", target: "test"})
    assert both[relation.title] == both[target] == "held out"


def test_every_relation_and_kind_has_three_phrasings():
    for key, templates in {**SINGLE, **BRIDGE_REFER, **BRIDGE_ASK}.items():
        assert len(set(templates)) >= 3, key
    for verb in ("published", "premiered", "released"):
        assert len(set(work_single(verb))) >= 3
    for fam, (pair, fan) in COMPARE.items():
        for templates in (*pair, *fan):
            assert len(set(templates)) >= 3, fam
    assert set(RELATIONS) <= set(SINGLE) and set(RELATIONS) <= set(BRIDGE_REFER)


def test_train_uses_the_phrasings_with_descriptors_and_new_relations(splits):
    train = splits["train"]
    assert all(i.template and i.template.startswith(f"{i.kind}/") for i in train)
    by_key = collections.defaultdict(set)
    for item in train:
        kind, key, index = item.template.split("/", 2)
        by_key[(kind, key.split("-")[0])].add(index)
    for (kind, key), used in by_key.items():
        n = sum(1 for i in train if i.template.startswith(f"{kind}/{key}"))
        if n >= 20 and kind != "bridge":
            assert len(used) >= 3, (kind, key, used)
    questions = " ".join(i.question for i in train)
    assert "'s " in questions and " the English " in questions and ", a city in " in questions
    assert {"where", "when", "who", "which", "what", "how"} <= {i.question.split()[0].lower() for i in train}
    single = {i.facts[0]["attribute"] for i in train if i.kind == "single-hop"}
    bridge = {i.facts[0]["attribute"] for i in train if i.kind == "bridge"}
    for relation in ("founder", "creator", "location", "part of"):
        assert relation in single, relation
    assert {"location", "creator"} <= bridge and PERSON_RELATIONS & single


def test_descriptors_never_give_the_answer_away(splits):
    for item in splits["train"]:
        if item.kind in ("single-hop", "bridge"):
            entity = item.facts[0]["entity"]
            rest = item.question.replace(entity, " ")
            answers = item.golden_answers[:1] + ([item.facts[0]["value"]] if item.kind == "bridge" else [])
            assert not any(a in rest for a in answers), item
