"""Deterministic QA over the bundled Wikipedia summaries, verified against the corpus text (v3).

Facts are read from the passages (``"{description}. {extract}"``) by conservative patterns
(:mod:`langchain_ragr1.data.facts`):

- numeric attributes: a person's birth and death year (``"Romanian sculptor (1876–1957)"``,
  ``People`` articles), a population (``"a population of 284,124"``), an area (``"an area of
  238,533 km2"``), an elevation, a length (``"8,900 kilometres (5,500 mi) long"``), a founding
  or establishment year and a work's year from its description (``"1818 novel by Mary
  Shelley"``: published; a film: released; a painting: painted; an opera: premiered ...);
- relations between articles: a work's creator (director, author, composer, artist), a
  country's capital (``"Its capital and largest city is Accra"`` in the country's article, or
  ``"Accra is the capital of Ghana"`` in the city's), who discovered, founded, invented,
  created, designed or first described something (a person article, also after a descriptor:
  ``"created in 1907 by the Spanish artist Pablo Picasso"``), where something is located
  (``"Public university in Beijing, China"``, ``"It is located in ..."``) and what it is part
  of (``"Scotland is a country that is part of the United Kingdom"``). A relation in the text
  counts only when its clause is about the article itself (no ``which``/``who`` clause, comma
  or parenthesis before the verb), so ``"the Gulf of Guinea, which is part of the Atlantic"``
  says nothing about Accra.

Four kinds: ``single-hop`` (one attribute or relation), ``comparison`` (which of two entities
has the larger/earlier value), ``fan-out`` (the largest/earliest of three or four: parallel
lookups) and ``bridge`` (a relation, then an attribute of the article it names: two hops).
Questions are worded as people ask them (:mod:`langchain_ragr1.data.phrasings`): at least three
phrasings per attribute or relation and per kind, with descriptors (``"the German composer
Johann Sebastian Bach"``, ``"Accra, a capital city of Ghana"``), possessives (``"Ghana's
capital"``), other question words and word orders; a descriptor that contains the answer is never
used. Each item records its phrasing in ``template`` (``"single-hop/founder/2"``,
``"bridge/location/1+population/0"``). A bridge chain may be asked in up to
:data:`BRIDGE_PHRASINGS` wordings in one split (the corpus has few chains).

Every item carries ``facts`` (one per evidence article, in hop order: title, entity, attribute,
value and a short quote, both exact substrings of the article's text, and a plain statement)
and a ``reasoning`` sentence. Articles linked by a relation form a group; each group goes to
train/dev/test by a hash, so the splits share no evidence article; a group holding an evidence
article of the v2 sets (``ragr1-dev``, ``ragr1-test``, see :data:`PINNED_SETS`) keeps that split,
so ``ragr1-train`` never uses their evidence. Articles whose title's sha256 is listed in
``excluded_titles.sha256`` (or named in the reserved-titles file, see :func:`reserved_titles`)
are never used. :func:`verify_item` re-derives every answer and fact from the corpus text.

Shipped: ``ragr1-dev-v3`` and ``ragr1-test-v3`` (``python -m langchain_ragr1.data.generate``
rewrites them); ``ragr1-train`` is :func:`generate_train`, made on the fly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NoReturn

from langchain_ragr1.data.facts import (
    PERSON_RELATIONS,
    RELATIONS,
    ROLE_VERB,
    WORK_ATTRIBUTES,
    WORK_YEARS,
    Fact,
    article_facts,
    descriptor,
    display_name,
    is_person,
    lifespan,
    name_offsets,
    prefix_name,
    proper_words,
    relation_candidates,
    resolve,
)
from langchain_ragr1.data.items import FACT_KEYS, SHIPPED_DIR, DataError, QAItem, write_jsonl
from langchain_ragr1.data.phrasings import (
    BRIDGE_ASK,
    BRIDGE_REFER,
    COMPARE,
    SINGLE,
    choose,
    described,
    possessive,
    tidy,
    work_single,
)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
KINDS: tuple[str, ...] = ("comparison", "bridge", "fan-out", "single-hop")
DEFAULT_SEED = 1234
#: Items per kind in the shipped dev and test sets.
SHIPPED_COUNTS: dict[str, int] = {"comparison": 25, "fan-out": 20, "bridge": 25, "single-hop": 30}
#: Items per kind of the on-the-fly train split (bridge and single-hop are limited by the corpus; see docs).
TRAIN_COUNTS: dict[str, int] = {"comparison": 520, "fan-out": 420, "bridge": 460, "single-hop": 700}
#: Wordings per bridge chain (relation + attribute of the named article) at most: bridges are what the
#: corpus has fewest of, and a second wording of the same chain is a question people also ask.
BRIDGE_PHRASINGS = 2
#: The generator's version: the shipped dev/test sets it writes are ``ragr1-dev-v3`` and ``ragr1-test-v3``.
VERSION = "v3"
#: Earlier shipped sets whose evidence articles stay in their split (never train evidence).
PINNED_SETS: dict[str, str] = {"ragr1-dev": "dev", "ragr1-test": "test"}
#: Largest share of birth/death-year items among comparison, fan-out and single-hop items.
PEOPLE_YEAR_SHARE = 0.4
#: sha256 hex digests of titles that are never used as evidence (kept for an external evaluation).
EXCLUDED_DIGESTS_FILE = Path(__file__).resolve().parent / "excluded_titles.sha256"

def title_digest(title: str) -> str:
    return hashlib.sha256(title.encode("utf-8")).hexdigest()


def reserved_titles() -> set[str]:
    """Titles kept for an external evaluation, if their file is here: ``$RAGR1_RESERVED_TITLES``,
    else ``<repo>/../shared/reserved_titles.txt``; empty when neither exists."""
    env = os.environ.get("RAGR1_RESERVED_TITLES")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "reserved_titles.txt"
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def excluded_digests() -> set[str]:
    """sha256 digests of titles never used as evidence: the shipped list plus any reserved-titles file."""
    shipped = set()
    if EXCLUDED_DIGESTS_FILE.is_file():
        shipped = {line.strip() for line in EXCLUDED_DIGESTS_FILE.read_text().splitlines() if line.strip()}
    return shipped | {title_digest(t) for t in reserved_titles()}


def write_excluded_digests(titles: Iterable[str], path: Path = EXCLUDED_DIGESTS_FILE) -> int:
    """Write the sorted digests of ``titles`` (e.g. :func:`reserved_titles`), one per line."""
    digests = sorted({title_digest(t) for t in titles})
    path.write_text("".join(d + "\n" for d in digests))
    return len(digests)


# ---------------------------------------------------------------- the corpus as facts and links

def corpus_texts() -> tuple[dict[str, str], set[str]]:
    """Title -> passage text of the bundled corpus, and the titles in its ``People`` topic."""
    from langchain_ragr1.corpus import load_bundled_corpus

    docs = load_bundled_corpus()
    people = {d.metadata["title"] for d in docs if d.metadata.get("topic") == "People"}
    return {d.metadata["title"]: d.page_content for d in docs}, people


@dataclass
class Facts:
    attributes: dict[str, dict[str, Fact]]  # title -> attribute -> fact
    links: list[tuple[Fact, str]]  # (relation fact in its article, title of the article it names)
    excluded: int  # articles of the corpus left out as reserved
    descriptors: dict[str, str] = field(default_factory=dict)  # title -> short description for questions


def collect_facts(texts: Mapping[str, str], people_titles: set[str], digests: set[str] | None = None) -> Facts:
    """Every attribute and relation of the usable (not excluded) articles."""
    digests = excluded_digests() if digests is None else digests
    usable = {t: x for t, x in texts.items() if title_digest(t) not in digests}
    people_titles = {t for t, x in usable.items() if is_person(t, x, people_titles)}
    attributes = {}
    for title in sorted(usable):
        found = article_facts(title, usable[title], title in people_titles)
        if found:
            attributes[title] = found
    by_name: dict[str, list[str]] = {}
    for title in usable:
        by_name.setdefault(display_name(title), []).append(title)
    names = {n: ts[0] for n, ts in by_name.items() if len(ts) == 1}
    links: list[tuple[Fact, str]] = []
    for title in sorted(usable):
        for candidate in relation_candidates(title, usable[title]):
            name = _longest_name(candidate, names)
            if name is None or names[name] == title:
                continue
            target = names[name]
            if candidate.attribute in ROLE_VERB or candidate.attribute in PERSON_RELATIONS:
                if target not in people_titles or title in people_titles:
                    continue  # a person's work or find: never a person's own relation to a person
            elif target in people_titles or title in people_titles:
                continue  # places and things only
            fact = resolve(candidate, usable[title], name)
            if fact is not None and (fact.attribute, fact.title, target) not in {(f.attribute, f.title, t)
                                                                                  for f, t in links[-3:]}:
                links.append((fact, target))
    proper = proper_words(usable.values())
    descriptors = {t: d for t in usable if (d := descriptor(usable[t], display_name(t), proper))}
    return Facts(attributes, links, len(texts) - len(usable), descriptors)


def _longest_name(candidate: Fact, names: Mapping[str, str]) -> str | None:
    """The longest article name that the relation's text names (after a person's descriptor, if any)."""
    assert candidate.target is not None  # relation_candidates gives every relation a target
    if candidate.value:  # a work's creator from its description: the whole text is the name
        return candidate.target if candidate.target in names else None
    for offset in name_offsets(candidate.attribute, candidate.target):
        target = candidate.target[offset:]
        words = target.split(" ")
        for n in range(min(len(words), 8), 0, -1):
            name = " ".join(words[:n]).rstrip(",;")
            if name in names and prefix_name(target, name):
                return name
    return None


def _bucket(key: str) -> str:
    value = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "dev" if value < 15 else "test" if value < 30 else "train"


def pinned_titles(sets: Mapping[str, str] = PINNED_SETS) -> dict[str, str]:
    """Title -> split of every evidence article of the shipped sets named in ``sets`` (name -> split)."""
    pinned: dict[str, str] = {}
    for name, split in sets.items():
        path = SHIPPED_DIR / f"{name}.jsonl"
        if not path.is_file():
            raise DataError(f"{path} is missing: the generator keeps {name}'s evidence out of ragr1-train; restore "
                            f"it with `git checkout -- {path.relative_to(SHIPPED_DIR.parents[2])}`.")
        for line in path.read_text(encoding="utf-8").splitlines():  # the shipped set's own rows (no loader: no cycle)
            for title in json.loads(line)["evidence_titles"] if line.strip() else ():
                pinned[title] = split if pinned.get(title, split) == split else "held out"
    return pinned


def split_of(facts: Facts, pinned: Mapping[str, str] | None = None) -> dict[str, str]:
    """Split per article: articles linked by any relation (union-find) share the split of their group.

    A group that holds a ``pinned`` title (title -> split) takes that split; a group pinned to two
    splits is ``"held out"`` (in none). Other groups go by a hash of their first title."""
    parent: dict[str, str] = {}

    def find(title: str) -> str:
        parent.setdefault(title, title)
        while parent[title] != title:
            parent[title] = parent[parent[title]]
            title = parent[title]
        return title

    for fact, target in facts.links:
        a, b = find(fact.title), find(target)
        if a != b:
            parent[max(a, b)] = min(a, b)
    titles = set(facts.attributes) | {f.title for f, _ in facts.links} | {t for _, t in facts.links}
    group_split: dict[str, str] = {}
    for title, split in sorted((pinned or {}).items()):
        root = find(title)
        group_split[root] = split if group_split.get(root, split) == split else "held out"
    return {t: group_split.get(find(t)) or _bucket(find(t)) for t in titles}


# ---------------------------------------------------------------- questions

_MAX_WORDS = ("later", "latest", "larger", "largest", "higher", "highest", "longer", "longest", "more recent",
              "most recent", "most recently")
_MIN_WORDS = ("first", "earlier", "earliest", "smaller", "smallest", "lower", "lowest", "shorter", "shortest",
              "older", "oldest")
_SUPERLATIVE = {"later": "latest", "earlier": "earliest", "larger": "largest", "smaller": "smallest",
                "higher": "highest", "lower": "lowest", "longer": "longest", "shorter": "shortest"}
_WORDS = {"birth year": ("later", "earlier"), "death year": ("later", "earlier"), "population": ("larger", "smaller"),
          "area": ("larger", "smaller"), "elevation": ("higher", "lower"), "length": ("longer", "shorter"),
          "founding year": ("later", "earlier"), "work year": ("later", "earlier")}
_QUERY_WORD = {"capital": "capital", "capital of": "country", "describer": "first described", "location": "location"}
_PERSON_SECOND = ("birth year", "death year")
_BRIDGE_SECOND = {  # relation -> attributes of the named article asked by bridges
    "capital": ("population", "area", "elevation", "founding year"),
    "capital of": ("population", "area"),
    "location": ("population", "area", "elevation", "founding year"),
    "part of": ("population", "area"),
    **{relation: _PERSON_SECOND for relation in set(ROLE_VERB) | PERSON_RELATIONS},
}
_WORK_YEARS_BY_ATTRIBUTE = dict((attribute, verb) for _, (attribute, verb) in WORK_YEARS)


def family(attribute: str) -> str:
    """Attributes compared with each other: all of a work's years are one family."""
    return "work year" if attribute in WORK_ATTRIBUTES else attribute


def _single_key(fact: Fact) -> tuple[str, tuple[str, ...]]:
    """The phrasing key of a single-hop fact and its templates."""
    if fact.attribute in WORK_ATTRIBUTES:
        return fact.attribute, work_single(_WORK_YEARS_BY_ATTRIBUTE[fact.attribute])
    if fact.attribute == "artist" and " painted by " in fact.statement:
        return "painter", SINGLE["painter"]
    return fact.attribute, SINGLE[fact.attribute]


def _slots(fact: Fact, descriptors: Mapping[str, str], avoid: Iterable[str]) -> dict[str, str | None]:
    """``{e}``, ``{p}`` and (when the descriptor gives none of ``avoid`` away) ``{d}`` for the fact's entity."""
    found = descriptors.get(fact.title)
    if found and any(a and a.lower() in found.lower() for a in avoid):
        found = None
    return {"e": fact.entity, "p": possessive(fact.entity), "d": described(fact.entity, found) if found else None}


def _query(fact: Fact) -> str:
    if fact.attribute in ROLE_VERB or fact.attribute in PERSON_RELATIONS or fact.attribute in _QUERY_WORD:
        return f"{fact.entity} {_QUERY_WORD.get(fact.attribute, fact.attribute)}"
    word = "year" if fact.attribute in WORK_ATTRIBUTES else fact.attribute
    return f"{fact.entity} {word}"


def _listed(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def _name_aliases(title: str, text: str | None) -> list[str]:
    """A named article's display name, its title, and the full name its extract opens with."""
    out = [display_name(title), title]
    if text and ". " in text:
        extract = text.split(". ", 1)[1]
        match = re.match(r"([A-Z][^,()]{2,60}?) (?:was|is|\()", extract)
        if match and len(match.group(1).split()) <= 6 and display_name(title).split()[-1] in match.group(1):
            out.append(match.group(1).strip())
    return list(dict.fromkeys(out))


def _number(fact: Fact) -> float:
    """An attribute fact's value as a number (every fact of :func:`article_facts` has one)."""
    assert fact.number is not None, f"{fact.title!r}: {fact.attribute} is not numeric"
    return fact.number


def _comparison(rng: random.Random, pools: Mapping[str, list[Fact]], fam: str, size: int, used: set,
                texts: Mapping[str, str], descriptors: Mapping[str, str]) -> QAItem | None:
    pool = pools.get(fam, [])
    if len(pool) < size:
        return None
    group = rng.sample(pool, size)
    numbers = sorted(_number(f) for f in group)
    if len({f.entity for f in group}) != size or len({f.title for f in group}) != size:
        return None
    years = fam in ("birth year", "death year", "founding year", "work year")
    if any((b - a < 1) if years else (b < 1.2 * a) for a, b in zip(numbers, numbers[1:])):
        return None  # values must differ clearly
    pick_max = rng.random() < 0.5
    key = (fam, pick_max, frozenset(f.title for f in group))
    if key in used:
        return None
    used.add(key)
    best = (max if pick_max else min)(group, key=_number)
    others = [f.entity for f in group]
    # only "the German composer Bach" forms: an appositive's commas would blur the list
    names = [d if (d := _slots(f, descriptors, others)["d"]) and d.startswith("the ") and rng.random() < 0.4
             else f.entity for f in group]
    pairs, fans = COMPARE[fam]
    word = _WORDS[fam][0 if pick_max else 1]
    if size == 2:
        kind = "comparison"
        index, question = choose(rng, pairs[0 if pick_max else 1], {"a": names[0], "b": names[1]})
        reasoning = _comparison_reasoning(rng, group, best, word)
    else:
        kind = "fan-out"
        index, question = choose(rng, fans[0 if pick_max else 1], {"l": _listed(names)})
        reasoning = _fan_out_reasoning(rng, group, best, _SUPERLATIVE[word])
    return QAItem(
        id="", question=tidy(question), golden_answers=_name_aliases(best.title, texts.get(best.title)), kind=kind,
        evidence_titles=[f.title for f in group], gold_queries=[[_query(f) for f in group]],
        facts=[f.record() for f in group], reasoning=reasoning,
        template=f"{kind}/{fam}-{'max' if pick_max else 'min'}/{index}",
    )


def _comparison_reasoning(rng: random.Random, group: list[Fact], best: Fact, word: str) -> str:
    other = next(f for f in group if f is not best)
    return rng.choice((
        " ".join(f.statement for f in group) + f" {best.value} is {word} than {other.value}, so the answer "
        f"is {best.entity}.",
        f"The passages give {best.value} for {best.entity} and {other.value} for {other.entity}; "
        f"{best.value} is {word}, so the answer is {best.entity}.",
        f"{best.entity}: {best.value}; {other.entity}: {other.value}. {best.value} is {word} than "
        f"{other.value}, so {best.entity} is the answer.",
    ))


def _fan_out_reasoning(rng: random.Random, group: list[Fact], best: Fact, word: str) -> str:
    values = ", ".join(f.value for f in group[:-1]) + f" and {group[-1].value}"
    return rng.choice((
        f"The {word} of {values} is {best.value}, so the answer is {best.entity}.",
        f"Looking up each one gives {values}; {best.value} ({best.entity}) is the {word}, "
        f"so the answer is {best.entity}.",
        "; ".join(f"{f.entity}: {f.value}" for f in group) + f". The {word} is {best.value}, so the answer "
        f"is {best.entity}.",
    ))


def _single(rng: random.Random, fact: Fact, texts: Mapping[str, str], descriptors: Mapping[str, str],
            target: str | None = None) -> QAItem:
    if fact.number is not None:
        answers = list(fact.aliases)
    else:
        assert target is not None  # a relation (no number) comes with the title of the article it names
        answers = [fact.value] + [a for a in _name_aliases(target, texts.get(target)) if a != fact.value]
    key, templates = _single_key(fact)
    index, question = choose(rng, templates, _slots(fact, descriptors, answers))
    statement = ("t" + fact.statement[1:]) if fact.statement.startswith("The capital of ") else fact.statement
    reasoning = rng.choice((
        f"The passage says {statement}",
        f"The article {fact.title} says: \"{fact.quote}\"; so the answer is {fact.value}.",
        f"{fact.statement[:-1]}, so the answer is {fact.value}.",
    ))
    return QAItem(
        id="", question=tidy(question), golden_answers=answers, kind="single-hop", evidence_titles=[fact.title],
        gold_queries=[[_query(fact)]], facts=[fact.record()], reasoning=reasoning,
        template=f"single-hop/{key}/{index}",
    )


def _bridge(rng: random.Random, relation: Fact, second: Fact, descriptors: Mapping[str, str]) -> QAItem:
    slots = _slots(relation, descriptors, [second.entity, second.value])
    refer, referred = choose(rng, BRIDGE_REFER[relation.attribute], slots)
    ask, question = choose(rng, BRIDGE_ASK[second.attribute], {"x": referred})
    referred = referred.rstrip(",")
    first_query = (relation.entity if relation.attribute in ROLE_VERB or relation.attribute == "capital of"
                   else _query(relation))
    reasoning = rng.choice((
        f"{second.entity}, {referred}, {second.statement[len(second.entity) + 1:]}",
        f"{relation.statement} {second.statement} So the answer is {second.value}.",
        f"First hop: {relation.statement} Second hop: {second.statement} The answer is {second.value}.",
    ))
    return QAItem(
        id="", question=tidy(question), golden_answers=list(second.aliases), kind="bridge",
        evidence_titles=[relation.title, second.title], gold_queries=[[first_query], [_query(second)]],
        facts=[relation.record(), second.record()], reasoning=reasoning,
        template=f"bridge/{relation.attribute}/{refer}+{second.attribute}/{ask}",
    )


def _weights(kind: str) -> dict[str, float]:
    base = {"birth year": 0.2, "death year": 0.15, "population": 0.2, "area": 0.12, "elevation": 0.05,
            "length": 0.06, "founding year": 0.08, "work year": 0.14}
    if kind == "single-hop":
        base.update({"relation": 0.45})
    return base


@dataclass
class _Pools:
    """The facts of one split: attribute facts by family, and relations (with the article named) by relation."""

    attributes: dict[str, list[Fact]]
    relations: dict[str, list[tuple[Fact, str]]]


def _pools(facts: Facts, where: Mapping[str, str], split: str) -> _Pools:
    attributes: dict[str, list[Fact]] = {}
    for title in sorted(facts.attributes):
        if where.get(title) == split:
            for fact in facts.attributes[title].values():
                attributes.setdefault(family(fact.attribute), []).append(fact)
    relations: dict[str, list[tuple[Fact, str]]] = {}
    for fact, target in facts.links:
        if where.get(fact.title) == split and where.get(target) == split:
            relations.setdefault(fact.attribute, []).append((fact, target))
    return _Pools(attributes, relations)


def _bridges(rng: random.Random, pools: _Pools, facts: Facts, wanted: int) -> list[QAItem]:
    """Each link with one attribute of the named article, then further attributes of the same links;
    then (when ``wanted`` asks for more) the same chains again in another phrasing, up to
    :data:`BRIDGE_PHRASINGS` wordings per chain."""
    candidates = []
    for relation, named in (link for attribute in sorted(pools.relations) for link in pools.relations[attribute]):
        found = [facts.attributes.get(named, {}).get(a) for a in _BRIDGE_SECOND[relation.attribute]]
        seconds = [s for s in found if s is not None]
        if seconds:
            rng.shuffle(seconds)
            candidates.append((relation, seconds))
    rng.shuffle(candidates)
    bridges: list[QAItem] = []
    asked: set[str] = set()
    for phrasing in range(BRIDGE_PHRASINGS):  # every chain once, then again in another wording
        for depth in range(4):
            for relation, seconds in candidates:
                if depth >= len(seconds) or len(bridges) >= wanted:
                    continue
                for _ in range(4 if phrasing else 1):
                    item = _bridge(rng, relation, seconds[depth], facts.descriptors)
                    if item.question not in asked:
                        asked.add(item.question)
                        bridges.append(item)
                        break
    return bridges


def _others(rng: random.Random, kind: str, wanted: int, pools: _Pools, texts: Mapping[str, str],
            facts: Facts) -> list[QAItem]:
    """``wanted`` comparison, fan-out or single-hop items; at most :data:`PEOPLE_YEAR_SHARE` on birth/death years.

    A single-hop relation is drawn by relation first (each as likely), so that rare relations (who
    founded, who discovered) are asked as often as the corpus allows."""
    made: list[QAItem] = []
    used: set[tuple] = set()
    people_years, limit = 0, int(PEOPLE_YEAR_SHARE * wanted)
    weights = _weights(kind)
    families = sorted(weights)
    relations = sorted(pools.relations)
    for _ in range(60 * wanted):
        if len(made) >= wanted:
            break
        fam = rng.choices(families, [weights[f] for f in families])[0]
        is_people = fam in ("birth year", "death year")
        if is_people and people_years >= limit:
            continue
        item: QAItem | None
        if kind == "single-hop":
            if fam == "relation":
                if not relations:
                    continue
                fact, target = rng.choice(pools.relations[rng.choice(relations)])
            elif pools.attributes.get(fam):
                fact, target = rng.choice(pools.attributes[fam]), None
            else:
                continue
            if (fact.attribute, fact.title) in used:
                continue
            used.add((fact.attribute, fact.title))
            item = _single(rng, fact, texts, facts.descriptors, target)
        else:
            size = 2 if kind == "comparison" else rng.choice((3, 3, 4))
            item = _comparison(rng, pools.attributes, fam, size, used, texts, facts.descriptors)
        if item is not None:
            made.append(item)
            people_years += is_people
    return made


def generate_split(split: str, counts: Mapping[str, int], *, seed: int = DEFAULT_SEED,
                   corpus: tuple[Mapping[str, str], set[str]] | None = None,
                   facts: Facts | None = None, pinned: Mapping[str, str] | None = None,
                   name: str | None = None) -> list[QAItem]:
    """Up to ``counts[kind]`` verified items of each kind from the articles of ``split``.

    ``corpus`` is :func:`corpus_texts`'s ``(texts, people_titles)``, loaded when absent; ``facts``
    is :func:`collect_facts` of it, computed when absent; ``pinned`` (title -> split) is
    :func:`pinned_titles` when absent (the v2 sets' evidence stays in their split); ``name``
    names the set in ids and ``source`` (``ragr1-{split}`` by default).
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    unknown = set(counts) - set(KINDS)
    if unknown:
        raise DataError(f"Unknown kinds {sorted(unknown)}: use {', '.join(KINDS)}.")
    texts, people_titles = corpus if corpus is not None else corpus_texts()
    facts = facts if facts is not None else collect_facts(texts, people_titles)
    pools = _pools(facts, split_of(facts, pinned_titles() if pinned is None else pinned), split)
    rng = random.Random(f"{seed}-{split}")
    items = _bridges(rng, pools, facts, counts.get("bridge", 0))
    for kind in ("comparison", "fan-out", "single-hop"):
        items += _others(rng, kind, counts.get(kind, 0), pools, texts, facts)
    name = name or f"ragr1-{split}"
    for number, item in enumerate(items, start=1):
        item.id = f"{name}-{number:04d}"
        item.source = name
        verify_item(item, texts)
    return items


def generate_splits(*, seed: int = DEFAULT_SEED, dev_test_counts: Mapping[str, int] = SHIPPED_COUNTS,
                    train_counts: Mapping[str, int] | None = None) -> dict[str, list[QAItem]]:
    """All three splits; dev and test as shipped (``ragr1-dev-v3``, ``ragr1-test-v3``), train as
    :data:`TRAIN_COUNTS` by default."""
    corpus = corpus_texts()
    facts = collect_facts(*corpus)
    return {
        "train": generate_split("train", train_counts or TRAIN_COUNTS, seed=seed, corpus=corpus, facts=facts),
        **{split: generate_split(split, dev_test_counts, seed=seed, corpus=corpus, facts=facts,
                                 name=f"ragr1-{split}-{VERSION}") for split in ("dev", "test")},
    }


def generate_train(*, seed: int = DEFAULT_SEED) -> list[QAItem]:
    """``ragr1-train``: the train split at :data:`TRAIN_COUNTS`."""
    return generate_split("train", TRAIN_COUNTS, seed=seed)


# ---------------------------------------------------------------- verification

def _fail(item: QAItem, why: str) -> NoReturn:
    raise DataError(f"Generated item {item.id} does not verify against the corpus: {why}.")


def _rederive(item: QAItem, record: Mapping[str, str], texts: Mapping[str, str]) -> Fact:
    """The fact ``record`` read again from its article's text (raises if the text does not say it)."""
    title = record.get("title")
    if title is None or title not in texts:
        _fail(item, f"evidence article {title!r} is not in the corpus")
    text = texts[title]
    for key in ("value", "quote"):
        if record[key] not in text:
            _fail(item, f"the {key} {record[key]!r} is not in the text of {title!r}")
    if record["value"] not in record["quote"]:
        _fail(item, f"the quote {record['quote']!r} does not contain the value {record['value']!r}")
    attribute = record["attribute"]
    if attribute in RELATIONS:
        for candidate in relation_candidates(title, text, strict=False):
            if candidate.attribute == attribute:
                fact = resolve(candidate, text, record["value"])
                if fact is not None:
                    return fact
        _fail(item, f"{title!r} does not give {record['value']!r} as its {attribute}")
    found = article_facts(title, text, person=lifespan(text) is not None and attribute in ("birth year", "death year"))
    fact = found.get(attribute)
    if fact is None or fact.value != record["value"]:
        _fail(item, f"{title!r} does not give {record['value']!r} as its {attribute}"
                    + (" (no lifespan in its description)" if attribute.endswith("h year") and not lifespan(text) else ""))
    return fact


def _direction(question: str, names: Iterable[str]) -> str | None:
    for name in names:
        question = question.replace(name, " ")
    lowered = question.lower()
    high = any(re.search(rf"\b{w}\b", lowered) for w in _MAX_WORDS)
    low = any(re.search(rf"\b{w}\b", lowered) for w in _MIN_WORDS)
    return "max" if high and not low else "min" if low and not high else None


def verify_item(item: QAItem, texts: Mapping[str, str]) -> None:
    """Re-derive the facts and gold answer of a generated item from the corpus text; raise DataError if they differ."""
    digests = excluded_digests()
    for title in item.evidence_titles:
        if title not in texts:
            _fail(item, f"evidence article {title!r} is not in the corpus")
        if title_digest(title) in digests:
            _fail(item, f"evidence article {title!r} is reserved")
    for record in item.facts:
        if set(record) != set(FACT_KEYS) or not all(isinstance(v, str) for v in record.values()):
            _fail(item, f"a fact must have exactly the string fields {', '.join(FACT_KEYS)}")
    if [r["title"] for r in item.facts] != item.evidence_titles:
        _fail(item, "there must be one fact per evidence article, in hop order")
    facts = [_rederive(item, record, texts) for record in item.facts]
    if not item.golden_answers:
        _fail(item, "no gold answer")
    answer = item.golden_answers[0]
    if item.kind == "bridge":
        if len(facts) != 2:
            _fail(item, "a bridge needs two facts")
        relation, second = facts
        if relation.attribute not in RELATIONS:
            _fail(item, f"the first hop {relation.attribute!r} is not a relation")
        if relation.value != display_name(second.title):
            _fail(item, f"{relation.title!r} does not name {second.title!r} as its {relation.attribute}")
        if second.attribute not in _BRIDGE_SECOND[relation.attribute]:
            _fail(item, f"the second hop {second.attribute!r} does not follow a {relation.attribute!r}")
        if relation.entity not in item.question:
            _fail(item, "the question does not name the first entity")
        expected = second.value
    elif item.kind == "single-hop":
        if len(facts) != 1:
            _fail(item, "a single-hop item needs one fact")
        expected = facts[0].value
        if facts[0].entity not in item.question:
            _fail(item, f"the question does not name {facts[0].entity!r}")
    elif item.kind in ("comparison", "fan-out"):
        if len(facts) < 2 or len({family(f.attribute) for f in facts}) != 1 or facts[0].number is None:
            _fail(item, "a comparison needs two or more values of one numeric attribute")
        for fact in facts:
            if fact.entity not in item.question:
                _fail(item, f"the question does not name {fact.title!r}")
        numbers = [f.number for f in facts]
        if len(set(numbers)) != len(numbers):
            _fail(item, "two entities share the compared value")
        direction = _direction(item.question, [f.entity for f in facts])
        if direction is None:
            _fail(item, "the question does not say which way to compare")
        best = (max if direction == "max" else min)(facts, key=_number)
        expected = best.entity
    else:
        _fail(item, f"unknown kind {item.kind!r}")
        return
    if answer != expected:
        _fail(item, f"the corpus gives {expected!r}, the item says {item.golden_answers}")


def write_shipped(directory=None, *, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Regenerate the shipped ``ragr1-dev-v3.jsonl`` and ``ragr1-test-v3.jsonl``; returns item counts.

    (``ragr1-dev.jsonl`` / ``ragr1-test.jsonl`` are the v2 generator's sets, kept as they are.)"""
    directory = Path(directory) if directory else SHIPPED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    corpus = corpus_texts()
    facts = collect_facts(*corpus)
    counts = {}
    for split in ("dev", "test"):
        name = f"ragr1-{split}-{VERSION}"
        items = generate_split(split, SHIPPED_COUNTS, seed=seed, corpus=corpus, facts=facts, name=name)
        write_jsonl(items, directory / f"{name}.jsonl")
        counts[name] = len(items)
    return counts


if __name__ == "__main__":
    print(write_shipped())  # noqa: T201 (python -m langchain_ragr1.data.generate prints the counts)
