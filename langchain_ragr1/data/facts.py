"""Facts read from the bundled Wikipedia passages (``"{description}. {extract}"``) by conservative
patterns: a person's lifespan, populations, areas, elevations, lengths, founding and work years,
and relations between articles: a work's creator (from its description), a country's capital,
who discovered, founded, invented, created, designed or first described something (a person,
possibly after a descriptor: ``"invented by Italian scientist Alessandro Volta"``), where
something is located and what it is part of.

Each :class:`Fact` keeps its value and a short quote, both exact substrings of the article's
text; :mod:`langchain_ragr1.data.generate` turns facts into questions. :func:`descriptor` gives
an article's short description as a noun phrase (``"German composer"``) for questions that
describe an entity the way people do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

_LIFESPAN_RE = re.compile(r"\((\d{3,4})\s*[–-]\s*(\d{3,4})\)")
_CREATOR_RE = re.compile(r"^(.*?)\s+by ([A-Z][^,;()]+?)\s*$")
_WORK_YEAR_RE = re.compile(r"^(\d{3,4}) ([^,;()]*?)(?:\s+by [A-Z][^,;()]*)?$")
_ROLES = (
    (("film",), "director"), (("opera", "symphony", "concerto", "composition", "ballet", "oratorio"), "composer"),
    (("painting", "sculpture", "fresco", "mural"), "artist"),
    (("novel", "book", "play", "poem", "novella", "tragedy", "comedy", "essay", "treatise"), "author"),
)
ROLE_VERB = {"director": "directed", "composer": "composed", "artist": "made", "author": "written",
              "creator": "created"}
ROLE_QUESTION = {"director": "Who directed {e}?", "composer": "Who composed {e}?", "artist": "Who made {e}?",
                  "author": "Who wrote {e}?", "creator": "Who created {e}?"}
#: A work's kind word -> (attribute, past participle used in questions and statements).
WORK_YEARS = (
    (("film", "album", "single", "song", "musical"), ("release year", "released")),
    (("novel", "novella", "book", "poem", "essay", "treatise", "pamphlet"), ("publication year", "published")),
    (("play", "tragedy", "comedy"), ("writing year", "written")),
    (("painting", "fresco", "mural"), ("painting year", "painted")),
    (("opera", "ballet"), ("premiere year", "premiered")),
    (("symphony", "concerto", "composition", "oratorio", "sonata"), ("composition year", "composed")),
    (("sculpture", "work"), ("creation year", "created")),
)
WORK_ATTRIBUTES = {attribute for _, (attribute, _) in WORK_YEARS}
_PARENS_RE = re.compile(r"\s*\([^)]*\)$")

_NUMBER = r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?: (million|billion))?"
_ABOUT = r"(?:about |approximately |around |roughly |some |nearly |almost |over |more than |an estimated )?"
_POPULATION_RE = re.compile(r"\bpopulation (?:of|was|is) " + _ABOUT + _NUMBER + r"(?![\d,]*\s*(?:km|square|sq|%|per))")
_AREA_RE = re.compile(r"\barea of " + _ABOUT + r"(" + _NUMBER + r" (?:square kilometres|square kilometers|km2|km²))")
_ELEVATION_RE = re.compile(r"\belevation of " + _ABOUT + r"(" + _NUMBER + r" (?:metres|meters|m)\b)")
_LENGTH_RE = re.compile(r"\b(" + _NUMBER + r" (?:kilometres|kilometers|km))(?: \([\d,.]+ mi(?:les)?\))? long\b")
_FOUNDED_RE = re.compile(r"\b(founded|established) in (\d{3,4})\b(?! BC)")
_CAPITAL_OF_RE = re.compile(r"\bis the capital(?: and (?:the )?largest city)? of (?:the )?([A-Z][^.;:()]*)")
_ITS_CAPITAL_RE = re.compile(r"\b[Ii]ts capital(?: and (?:the )?largest city)? is ([A-Z][^.;:()]*)")
_DISCOVERED_RE = re.compile(r"\bdiscovered (?:in \d{4} )?by ([A-Z][^.;:()]*)")
#: Head nouns of a description that places its article (``"Public university in Beijing, China"``).
_PLACES = ("city", "town", "village", "river", "lake", "mountain", "island", "university", "museum", "palace",
           "church", "temple", "cathedral", "mosque", "castle", "bridge", "tower", "park", "desert", "volcano",
           "waterfall", "stadium", "monument", "port", "peninsula", "bay", "valley", "archipelago", "mountain range",
           "building", "skyscraper", "square", "fortress", "region", "province", "state", "municipality")
_BY = r" (?:in \d{3,4} )?by (?:the )?([A-Z][^.;:()]*)"
#: Relations written in an article's text: attribute -> the pattern whose group 1 starts with the named article's name.
TEXT_RELATIONS: dict[str, re.Pattern] = {
    "capital": _ITS_CAPITAL_RE,
    "capital of": _CAPITAL_OF_RE,
    "discoverer": _DISCOVERED_RE,
    "founder": re.compile(r"\b(?:co-)?founded" + _BY),
    "inventor": re.compile(r"\binvented" + _BY),
    "creator": re.compile(r"\bcreated" + _BY),
    "designer": re.compile(r"\bdesigned" + _BY),
    "describer": re.compile(r"\bfirst described" + _BY),
    "location": re.compile(r"(?:^(?:[A-Za-z-]+ ){0,3}?(?i:" + "|".join(_PLACES) + r")|\b(?:is|are|was) (?:located|"
                           r"situated)) in (?:the )?([A-Z][^.;:()]*)"),
    "part of": re.compile(r"\b(?:is|are|was|forms) (?:a |an )?part of (?:the )?([A-Z][^.;:()]*)"),
}
#: Relations that name a person (the article named must be a person, the article itself not).
PERSON_RELATIONS = frozenset({"discoverer", "founder", "inventor", "creator", "designer", "describer"})
#: How each relation is said, ``{e}`` the entity and ``{v}`` the article named.
RELATION_STATEMENT = {
    "capital": "The capital of {e} is {v}.", "capital of": "{e} is the capital of {v}.",
    "discoverer": "{e} was discovered by {v}.", "founder": "{e} was founded by {v}.",
    "inventor": "{e} was invented by {v}.", "creator": "{e} was created by {v}.",
    "designer": "{e} was designed by {v}.", "describer": "{e} was first described by {v}.",
    "location": "{e} is located in {v}.", "part of": "{e} is part of {v}.",
}
#: A person's descriptor written before the name (``"Italian scientist "``, ``"the English astronomer "``).
_PERSON_DESCRIPTOR_RE = re.compile(r"^(?:[A-Z][a-z]+(?:-[A-Z][a-z]+)* )?(?:[a-z]+ ){1,2}(?=[A-Z])")
_METRO_WORDS = re.compile(r"metropolitan|metro\b|urban area|agglomeration|greater|conurbation|region|county|"
                          r"district|province|municipality|including", re.I)

#: Description words that make an article outside the ``People`` topic a person (with a lifespan).
_PERSON_WORDS = frozenset(
    "writer philosopher polymath composer painter physicist chemist mathematician scientist economist naturalist "
    "biologist actor filmmaker navigator explorer founder inventor magnate artist scholar astronomer engineer "
    "singer trumpeter neurologist statesman general emperor sultan priest theologian poet playwright animator "
    "activist nobleman musician printmaker sculptor architect diplomat officer businessman mystic imam "
    "historian microbiologist pharmacist novelist".split()
)
_YEAR_ATTRIBUTES = {"birth year", "death year", "founding year"} | WORK_ATTRIBUTES
RELATIONS = set(TEXT_RELATIONS) | set(ROLE_VERB)


@dataclass(frozen=True)
class Fact:
    """One fact of one article, read from its text; ``value`` and ``quote`` are exact substrings."""

    title: str
    entity: str
    attribute: str
    value: str
    quote: str
    statement: str
    number: float | None = None  # numeric attributes: the value as a number
    target: str | None = None  # relations: the text after the relation word (the named article's name)
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def record(self) -> dict[str, str]:
        return {"title": self.title, "entity": self.entity, "attribute": self.attribute, "value": self.value,
                "quote": self.quote, "statement": self.statement}


# ---------------------------------------------------------------- reading facts from a passage

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


def made_by(what: str) -> bool:
    """Whether a description's ``"<what> by <name>"`` names a maker: not ``"series of wars led by"``
    (the generator asks only about these; the verifier still accepts the v2 sets' one such item)."""
    return not re.search(r"(?<!creat)(?<!writt)(?<!compos)(?<!direct)(?<!paint)(?<!establish)ed$", what)


def display_name(title: str) -> str:
    """A title without its disambiguation, ``"Mercury (planet)"`` -> ``"Mercury"``."""
    return _PARENS_RE.sub("", title)


def _role(what: str) -> str:
    lowered = what.lower()
    for words, role in _ROLES:
        if any(w in lowered for w in words):
            return role
    return "creator"


def _work_year_kind(what: str) -> tuple[str, str] | None:
    words = what.lower().split()
    for kinds, result in WORK_YEARS:
        if words and words[-1] in kinds:
            return result
    return None


def parse_number(digits: str, scale: str | None = None) -> float:
    """``"284,124"`` -> 284124.0, ``("5.55", "million")`` -> 5550000.0."""
    value = float(digits.replace(",", ""))
    return value * {"million": 1e6, "billion": 1e9}.get(scale or "", 1)


def number_aliases(written: str, digits: str, scale: str | None) -> list[str]:
    """The value as written first, then the bare number as written and without separators."""
    out = [written, digits]
    if scale:
        out = [written, f"{digits} {scale}"]
        whole = parse_number(digits, scale)
        if whole == int(whole):
            out += [f"{int(whole):,}", str(int(whole))]
    elif "," in digits:
        out.append(digits.replace(",", ""))
    return list(dict.fromkeys(out))


def _quote(text: str, start: int, end: int, limit: int = 100) -> str:
    """A short exact substring around ``text[start:end]``: from the sentence start when it fits."""
    sentence = max(text.rfind(". ", 0, start) + 2, 0) if text.rfind(". ", 0, start) >= 0 else 0
    left = sentence if end - sentence <= limit else max(sentence, start - max(0, limit - (end - start)) // 2)
    if left > sentence:  # start at a word
        space = text.find(" ", left, start)
        left = space + 1 if space >= 0 else start
    return text[left:end].strip()


def _sentences_before(text: str, position: int) -> int:
    """How many sentence breaks of the extract come before ``position`` (the description is sentence 0)."""
    return text.count(". ", 0, position)


def _population(title: str, text: str) -> Fact | None:
    matches = list(_POPULATION_RE.finditer(text))
    if not matches:
        return None
    match = matches[0]
    if len(matches) > 1 and _sentences_before(text, match.start()) > 2:
        return None
    sentence_start = text.rfind(". ", 0, match.start()) + 1
    if _METRO_WORDS.search(text[max(sentence_start, match.start() - 60): match.end()]):
        return None
    digits, scale = match.group(1), match.group(2)
    written = digits + (f" {scale}" if scale else "")
    number = parse_number(digits, scale)
    if number < 100 or ("." in digits and not scale):
        return None
    entity = display_name(title)
    return Fact(title, entity, "population", written, _quote(text, match.start(), match.end()),
                f"{entity} has a population of {written}.", number=number,
                aliases=tuple(number_aliases(written, digits, scale)))


def _measure(title: str, text: str, attribute: str, regex: re.Pattern, template: str) -> Fact | None:
    matches = list(regex.finditer(text))
    if len(matches) != 1:  # the only one: a second figure could be of a part
        return None
    match = matches[0]
    written, digits, scale = match.group(1), match.group(2), match.group(3)
    number = parse_number(digits, scale)
    if number <= 0:
        return None
    entity = display_name(title)
    return Fact(title, entity, attribute, written, _quote(text, match.start(), match.end()),
                template.format(e=entity, v=written), number=number,
                aliases=tuple(number_aliases(written, digits, scale)))


def _founded(title: str, text: str) -> Fact | None:
    matches = list(_FOUNDED_RE.finditer(text))
    if len(matches) != 1 or _sentences_before(text, matches[0].start()) > 2:
        return None
    match = matches[0]
    year = int(match.group(2))
    if not 100 <= year <= 2025:
        return None
    entity = display_name(title)
    return Fact(title, entity, "founding year", match.group(2), _quote(text, match.start(), match.end()),
                f"{entity} was {match.group(1)} in {match.group(2)}.", number=float(year), aliases=(match.group(2),))


def _work_year(title: str, text: str) -> Fact | None:
    desc = description(text)
    match = _WORK_YEAR_RE.match(desc)
    if not match or len(desc) > 100:
        return None
    kind = _work_year_kind(match.group(2))
    year = int(match.group(1))
    if kind is None or not 100 <= year <= 2025:
        return None
    attribute, verb = kind
    entity = display_name(title)
    return Fact(title, entity, attribute, match.group(1), desc, f"{entity} was {verb} in {match.group(1)}.",
                number=float(year), aliases=(match.group(1),))


def _lifespan_facts(title: str, text: str) -> list[Fact]:
    span = lifespan(text)
    if not span:
        return []
    desc = description(text)
    match = _LIFESPAN_RE.search(desc)
    assert match is not None  # lifespan() found it in the same description
    quote = desc if len(desc) <= 100 else _quote(desc, match.start(), match.end())
    entity = display_name(title)
    born, died = match.group(1), match.group(2)
    return [Fact(title, entity, "birth year", born, quote, f"{entity} was born in {born}.", number=float(span[0]),
                 aliases=(born,)),
            Fact(title, entity, "death year", died, quote, f"{entity} died in {died}.", number=float(span[1]),
                 aliases=(died,))]


def is_person(title: str, text: str, people_titles: set[str]) -> bool:
    """A ``People`` article, or one whose description is a person's (``"German composer (1685–1750)"``)."""
    if title in people_titles:
        return True
    words = set(re.findall(r"[a-z]+", _LIFESPAN_RE.split(description(text))[0].lower()))
    return lifespan(text) is not None and bool(words & _PERSON_WORDS)


def relation_candidates(title: str, text: str, strict: bool = True) -> list[Fact]:
    """Relations as written; ``target`` is the text that must start with the named article's name.

    A work's creator read from its description comes complete (``value`` set); the relations of
    :data:`TEXT_RELATIONS` come with only their ``target`` and are completed by :func:`resolve`.
    ``strict=False`` (the verifier) also accepts a description's non-maker (see :func:`made_by`)."""
    entity = display_name(title)
    out = []
    found = creator(text)
    if found:
        role = _role(found[0])
        desc = description(text)
        if len(desc) <= 100 and (made_by(found[0]) or not strict):
            verb = "painted" if role == "artist" and "painting" in found[0].lower() else ROLE_VERB[role]
            out.append(Fact(title, entity, role, found[1], desc, f"{entity} was {verb} by {found[1]}.",
                            target=found[1]))
    for attribute, regex in TEXT_RELATIONS.items():
        match = regex.search(text)
        if match:
            out.append(Fact(title, entity, attribute, "", "", "", target=match.group(1).strip()))
    return out


def prefix_name(target: str, name: str) -> bool:
    """Whether ``target`` (text after a relation word) names exactly ``name`` and nothing longer."""
    if not target.startswith(name) or not name:
        return False
    rest = target[len(name):]
    for joint in (" and ", ", and ", " or "):
        if rest.startswith(joint) and not rest[len(joint):][:1].islower():
            return False  # "the capital of England and the United Kingdom": more than one
    if rest.startswith(" of "):
        return False  # a longer name: "the City of Cape Town", "Cyrus the Great of the Achaemenid dynasty"
    return not rest or rest[0] in ",;" or (rest[0] == " " and rest[1:2].islower())


def name_offsets(attribute: str, target: str) -> tuple[int, ...]:
    """Where in ``target`` the named article's name may start: at once, or (a person) after a descriptor."""
    match = _PERSON_DESCRIPTOR_RE.match(target) if attribute in PERSON_RELATIONS else None
    return (0, match.end()) if match else (0,)


def resolve(fact: Fact, text: str, name: str) -> Fact | None:
    """The relation ``fact`` completed for the article named ``name``; None if the text does not say so."""
    if fact.value:  # a work's creator, complete from its description
        return fact if fact.target == name else None
    assert fact.target is not None  # relation_candidates gives every relation a target
    offset = next((o for o in name_offsets(fact.attribute, fact.target) if prefix_name(fact.target[o:], name)), None)
    match = TEXT_RELATIONS[fact.attribute].search(text)
    if offset is None or match is None:
        return None
    end = match.start(1) + offset + len(name)
    if text[match.start(1) + offset: end] != name:
        return None
    if fact.attribute not in ("capital", "capital of") and not _about_entity(text, match.start(), fact.entity):
        return None
    the = "the " if text[:match.start(1)].endswith(" the ") and offset == 0 else ""
    statement = RELATION_STATEMENT[fact.attribute].format(e=fact.entity, v=the + name)
    return Fact(fact.title, fact.entity, fact.attribute, name, _quote(text, match.start(), end), statement,
                target=fact.target)


_SUBJECT_RE = re.compile(r"^(?:It|Its|They|The [a-z]+)\b")


def _about_entity(text: str, position: int, entity: str) -> bool:
    """Whether the clause that ends at ``position`` is about the article itself: the description, or
    a sentence that starts with its name, ``It``, ``Its``, ``They`` or ``The <noun>`` and has no
    relative clause, comma or parenthesis that could make something else the subject."""
    start = text.rfind(". ", 0, position)
    head = text[start + 2 if start >= 0 else 0: position]
    if re.search(r"\b(?:which|who|whose|where)\b|[,()]", head):
        return False
    return start < 0 or head.startswith(entity.split(" ")[0]) or bool(_SUBJECT_RE.match(head))


_DIRECTION_WORDS = re.compile(r"\b(?:first|last|earl|late|larg|small|high|low|long|short|old|recent|most|least|"
                              r"big|tall|deep|great|major|main|new)", re.I)


def descriptor(text: str, entity: str, proper: frozenset[str] = frozenset()) -> str | None:
    """The article's short description as a noun phrase for a question (``"German composer"``,
    ``"public university in Beijing, China"``), or None when it would not read well: too long,
    with digits, the entity's own name, or a word that could tip a comparison. ``proper``: words
    that keep their capital (``German``); any other first word is lower-cased."""
    desc = _LIFESPAN_RE.sub("", description(text)).strip().rstrip(",")
    words = desc.split()
    if not 1 <= len(words) <= 6 or re.search(r"[\d()\"';:]", desc) or entity.lower() in desc.lower():
        return None
    if _DIRECTION_WORDS.search(desc) or not desc[:1].isupper():
        return None
    if words[0] not in proper and len(words) > 1 and words[1][:1].isupper():
        return None  # a name, not a description ("Public Broadcasting ...")
    return desc if words[0] in proper else desc[:1].lower() + desc[1:]


def proper_words(texts: Iterable[str]) -> frozenset[str]:
    """Capitalised words that the texts write capitalised mid-sentence more often than not (``German``)."""
    upper: dict[str, int] = {}
    lower: dict[str, int] = {}
    for text in texts:
        for word in re.findall(r"(?<=[a-z,] )([A-Za-z][a-z]+)\b", text):
            counts = upper if word[0].isupper() else lower
            counts[word.lower()] = counts.get(word.lower(), 0) + 1
    return frozenset(w.capitalize() for w, n in upper.items() if n > lower.get(w, 0))


def article_facts(title: str, text: str, person: bool) -> dict[str, Fact]:
    """The attribute facts of one article by attribute (lifespans only when ``person``)."""
    facts = _lifespan_facts(title, text) if person else []
    for fact in (
        _population(title, text),
        _measure(title, text, "area", _AREA_RE, "{e} has an area of {v}."),
        _measure(title, text, "elevation", _ELEVATION_RE, "{e} has an elevation of {v}."),
        _measure(title, text, "length", _LENGTH_RE, "{e} is {v} long."),
        _founded(title, text),
        None if person else _work_year(title, text),
    ):
        if fact is not None:
            facts.append(fact)
    return {f.attribute: f for f in facts}


# ---------------------------------------------------------------- excluded (reserved) titles
