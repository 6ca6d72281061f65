"""Deterministic QA over the bundled Wikipedia summaries, verified against the corpus text.

Facts come from two patterns of the article descriptions: a person's lifespan
(``"Romanian sculptor (1876–1957)"``) and a work's creator (``"1878 novel by Leo Tolstoy"``).
Four kinds: ``single-hop`` (a birth or death year), ``comparison`` (who was born/died
first of two, answer one of them), ``fan-out`` (earliest/latest of three or four people:
parallel lookups) and ``bridge`` (the birth year of a work's creator: two hops). Articles
are assigned to train/dev/test by a hash of the linked group they belong to, so splits share
no evidence article. :func:`verify_item` re-derives every answer from the corpus text.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Mapping

from langchain_ragr1.data.loaders import DataError, QAItem

SPLITS: tuple[str, ...] = ("train", "dev", "test")
KINDS: tuple[str, ...] = ("comparison", "bridge", "fan-out", "single-hop")
DEFAULT_SEED = 1234
#: Items per kind in the shipped dev and test sets (bridge is limited by the corpus).
SHIPPED_COUNTS: dict[str, int] = {"comparison": 30, "fan-out": 25, "bridge": 20, "single-hop": 25}

_LIFESPAN_RE = re.compile(r"\((\d{3,4})\s*[–-]\s*(\d{3,4})\)")
_CREATOR_RE = re.compile(r"^(.*?)\s+by ([A-Z][^,;()]+?)\s*$")
_ROLES = (
    (("film",), "director"), (("opera", "symphony", "concerto", "composition", "ballet"), "composer"),
    (("painting", "sculpture", "fresco", "mural"), "artist"),
    (("novel", "book", "play", "poem", "novella", "tragedy", "comedy", "essay", "treatise"), "author"),
)
_PARENS_RE = re.compile(r"\s*\([^)]*\)$")


@dataclass(frozen=True)
class Person:
    title: str
    born: int
    died: int


def description(text: str) -> str:
    """The description part of a bundled passage (``"{description}. {extract}"``)."""
    return text.split(". ", 1)[0]


def lifespan(text: str) -> tuple[int, int] | None:
    """``(born, died)`` from a passage's description, or None (AD years, plausible spans only)."""
    match = _LIFESPAN_RE.search(description(text))
    if not match:
        return None
    born, died = int(match.group(1)), int(match.group(2))
    return (born, died) if 0 < died - born < 110 else None


def creator(text: str) -> tuple[str, str] | None:
    """``(what, name)`` from a work's description such as ``"1878 novel by Leo Tolstoy"``."""
    match = _CREATOR_RE.match(description(text))
    return (match.group(1), match.group(2)) if match else None


def display_name(title: str) -> str:
    """A title without its disambiguation, ``"Mercury (planet)"`` -> ``"Mercury"``."""
    return _PARENS_RE.sub("", title)


def _role(what: str) -> str:
    lowered = what.lower()
    for words, role in _ROLES:
        if any(w in lowered for w in words):
            return role
    return "creator"


def _bucket(key: str) -> str:
    value = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "dev" if value < 15 else "test" if value < 30 else "train"


def corpus_texts() -> tuple[dict[str, str], set[str]]:
    """Title -> passage text of the bundled corpus, and the titles in its ``People`` topic."""
    from langchain_ragr1.corpus import load_bundled_corpus

    docs = load_bundled_corpus()
    people = {d.metadata["title"] for d in docs if d.metadata.get("topic") == "People"}
    return {d.metadata["title"]: d.page_content for d in docs}, people


def _facts(texts: Mapping[str, str], people_titles: set[str]) -> tuple[dict[str, Person], list[tuple[str, str]]]:
    people = {}
    for title, text in texts.items():
        span = lifespan(text) if title in people_titles else None
        if span:
            people[title] = Person(title, *span)
    names = {display_name(t): t for t in sorted(people)}
    links = []
    for title, text in sorted(texts.items()):
        found = creator(text)
        if found and found[1] in names and names[found[1]] != title and title not in people:
            links.append((title, names[found[1]]))
    return people, links


def _split_of(people: Mapping[str, Person], links: list[tuple[str, str]]) -> dict[str, str]:
    """Split per article; a work and its creator share the split of the creator."""
    split = {title: _bucket(title) for title in people}
    for work, person in links:
        split[work] = split[person]
    return split


def _compare(rng: random.Random, pool: list[Person], size: int, used: set) -> QAItem | None:
    attribute = rng.choice(("born", "died"))
    pick = rng.choice(("first", "last"))
    group = rng.sample(pool, size)
    values = [getattr(p, attribute) for p in group]
    names = [display_name(p.title) for p in group]
    if len(set(values)) != size or len(set(names)) != size:
        return None
    key = (attribute, pick, frozenset(p.title for p in group))
    if key in used:
        return None
    used.add(key)
    best = (min if pick == "first" else max)(group, key=lambda p: getattr(p, attribute))
    verb = {"born": "was born", "died": "died"}[attribute]
    if size == 2:
        kind, question = "comparison", f"Who {verb} {pick}, {names[0]} or {names[1]}?"
    else:
        listed = ", ".join(names[:-1]) + f" or {names[-1]}"
        superlative = "earliest" if pick == "first" else "latest"
        kind, question = "fan-out", f"Who among {listed} {verb} {superlative}?"
    queries = [f"{n} {'birth' if attribute == 'born' else 'death'} year" for n in names]
    return QAItem(
        id="", question=question, golden_answers=[display_name(best.title)], kind=kind,
        evidence_titles=[p.title for p in group], gold_queries=[queries],
    )


def _single(rng: random.Random, pool: list[Person], used: set) -> QAItem | None:
    person = rng.choice(pool)
    attribute = rng.choice(("born", "died"))
    if (attribute, person.title) in used:
        return None
    used.add((attribute, person.title))
    name = display_name(person.title)
    question = f"In what year was {name} born?" if attribute == "born" else f"In what year did {name} die?"
    return QAItem(
        id="", question=question, golden_answers=[str(getattr(person, attribute))], kind="single-hop",
        evidence_titles=[person.title], gold_queries=[[f"{name} {'birth' if attribute == 'born' else 'death'} year"]],
    )


def _bridge(work: str, person: Person, texts: Mapping[str, str]) -> QAItem:
    what, _ = creator(texts[work])
    name = display_name(work)
    return QAItem(
        id="", question=f"In what year was the {_role(what)} of {name} born?",
        golden_answers=[str(person.born)], kind="bridge", evidence_titles=[work, person.title],
        gold_queries=[[name], [f"{display_name(person.title)} birth year"]],
    )


def generate_split(split: str, counts: Mapping[str, int], *, seed: int = DEFAULT_SEED,
                   corpus: tuple[Mapping[str, str], set[str]] | None = None) -> list[QAItem]:
    """Up to ``counts[kind]`` verified items of each kind from the articles of ``split``.

    ``corpus`` is :func:`corpus_texts`'s ``(texts, people_titles)``, loaded when absent.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    unknown = set(counts) - set(KINDS)
    if unknown:
        raise DataError(f"Unknown kinds {sorted(unknown)}: use {', '.join(KINDS)}.")
    texts, people_titles = corpus if corpus is not None else corpus_texts()
    people, links = _facts(texts, people_titles)
    split_of = _split_of(people, links)
    pool = [people[t] for t in sorted(people) if split_of[t] == split]
    rng = random.Random(f"{seed}-{split}")
    items: list[QAItem] = []
    bridges = [(w, people[p]) for w, p in links if split_of[w] == split]
    rng.shuffle(bridges)
    items += [_bridge(w, p, texts) for w, p in bridges[: counts.get("bridge", 0)]]
    makers = {
        "comparison": lambda used: _compare(rng, pool, 2, used),
        "fan-out": lambda used: _compare(rng, pool, rng.choice((3, 3, 4)), used),
        "single-hop": lambda used: _single(rng, pool, used),
    }
    for kind in ("comparison", "fan-out", "single-hop"):
        used: set = set()
        made: list[QAItem] = []
        for _ in range(50 * counts.get(kind, 0)):
            if len(made) >= counts.get(kind, 0):
                break
            item = makers[kind](used)
            if item is not None:
                made.append(item)
        items += made
    for number, item in enumerate(items, start=1):
        item.id = f"ragr1-{split}-{number:04d}"
        item.source = f"ragr1-{split}"
        verify_item(item, texts)
    return items


def generate_splits(*, seed: int = DEFAULT_SEED, dev_test_counts: Mapping[str, int] = SHIPPED_COUNTS,
                    train_counts: Mapping[str, int] | None = None) -> dict[str, list[QAItem]]:
    """All three splits; dev and test as shipped, train ten times larger by default."""
    corpus = corpus_texts()
    train_counts = train_counts or {k: 10 * v for k, v in dev_test_counts.items()}
    return {
        "train": generate_split("train", train_counts, seed=seed, corpus=corpus),
        "dev": generate_split("dev", dev_test_counts, seed=seed, corpus=corpus),
        "test": generate_split("test", dev_test_counts, seed=seed, corpus=corpus),
    }


def _fail(item: QAItem, why: str) -> None:
    raise DataError(f"Generated item {item.id} does not verify against the corpus: {why}.")


def verify_item(item: QAItem, texts: Mapping[str, str]) -> None:
    """Re-derive the gold answer of a generated item from the corpus text; raise DataError if it differs."""
    for title in item.evidence_titles:
        if title not in texts:
            _fail(item, f"evidence article {title!r} is not in the corpus")
    if item.kind == "bridge":
        work, person = item.evidence_titles
        found, span = creator(texts[work]), lifespan(texts[person])
        if not found or found[1] != display_name(person):
            _fail(item, f"{work!r} does not name {person!r} as its creator")
        if not span or item.golden_answers != [str(span[0])]:
            _fail(item, f"{person!r} was not born in {item.golden_answers}")
        if display_name(work) not in item.question:
            _fail(item, "the question does not name the work")
        return
    spans = {t: lifespan(texts[t]) for t in item.evidence_titles}
    if None in spans.values():
        _fail(item, "an evidence article has no lifespan in its description")
    attribute = 0 if "born" in item.question else 1
    for title in spans:
        if display_name(title) not in item.question:
            _fail(item, f"the question does not name {title!r}")
    if item.kind == "single-hop":
        expected = str(next(iter(spans.values()))[attribute])
    elif item.kind in ("comparison", "fan-out"):
        latest = " last" in item.question or "latest" in item.question
        values = [span[attribute] for span in spans.values()]
        if len(set(values)) != len(values):
            _fail(item, "two entities share the compared year")
        best = (max if latest else min)(spans, key=lambda t: spans[t][attribute])
        expected = display_name(best)
    else:
        _fail(item, f"unknown kind {item.kind!r}")
        return
    if item.golden_answers != [expected]:
        _fail(item, f"the corpus gives {expected!r}, the item says {item.golden_answers}")


def write_shipped(directory=None, *, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Regenerate the shipped ``ragr1-dev.jsonl`` and ``ragr1-test.jsonl``; returns item counts."""
    from pathlib import Path

    from langchain_ragr1.data.loaders import SHIPPED_DIR, write_jsonl

    directory = Path(directory) if directory else SHIPPED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    corpus = corpus_texts()
    counts = {}
    for split in ("dev", "test"):
        items = generate_split(split, SHIPPED_COUNTS, seed=seed, corpus=corpus)
        write_jsonl(items, directory / f"ragr1-{split}.jsonl")
        counts[split] = len(items)
    return counts


if __name__ == "__main__":
    print(write_shipped())
