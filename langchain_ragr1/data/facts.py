"""Facts read from the bundled Wikipedia passages (``"{description}. {extract}"``) by conservative
patterns: a person's lifespan, populations, areas, elevations, lengths, founding and work years,
and relations between articles (a work's creator, a country's capital, an object's discoverer).

Each :class:`Fact` keeps its value and a short quote, both exact substrings of the article's
text; :mod:`langchain_ragr1.data.generate` turns facts into questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
RELATIONS = {"capital", "capital of", "discoverer"} | set(ROLE_VERB)


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


def relation_candidates(title: str, text: str) -> list[Fact]:
    """Relations as written; ``target`` is the text that must start with the named article's name."""
    entity = display_name(title)
    out = []
    found = creator(text)
    if found:
        role = _role(found[0])
        desc = description(text)
        if len(desc) <= 100:
            verb = "painted" if role == "artist" and "painting" in found[0].lower() else ROLE_VERB[role]
            out.append(Fact(title, entity, role, found[1], desc, f"{entity} was {verb} by {found[1]}.",
                            target=found[1]))
    for regex, attribute in ((_ITS_CAPITAL_RE, "capital"), (_CAPITAL_OF_RE, "capital of"),
                             (_DISCOVERED_RE, "discoverer")):
        match = regex.search(text)
        if match:
            out.append(Fact(title, entity, attribute, "", "", "", target=match.group(1).strip()))
    return out


def prefix_name(target: str, name: str) -> bool:
    """Whether ``target`` (text after a relation word) names exactly ``name`` and nothing longer."""
    if not target.startswith(name) or not name:
        return False
    rest = target[len(name):]
    if rest.startswith(" and ") or rest.startswith(", and ") or rest.startswith(" or "):
        return False  # "the capital of England and the United Kingdom": more than one
    return not rest or rest[0] in ",;" or (rest[0] == " " and rest[1:2].islower())


def resolve(fact: Fact, text: str, name: str) -> Fact | None:
    """The relation ``fact`` completed for the article named ``name``; None if the text does not say so."""
    if fact.attribute in ROLE_VERB:
        return fact if fact.target == name else None
    assert fact.target is not None  # relation_candidates gives every relation a target
    if not prefix_name(fact.target, name):
        return None
    regex = {"capital": _ITS_CAPITAL_RE, "capital of": _CAPITAL_OF_RE, "discoverer": _DISCOVERED_RE}[fact.attribute]
    match = regex.search(text)
    if match is None:
        return None
    value_start = match.start(1)
    end = value_start + len(name)
    quote = _quote(text, match.start(), end)
    if fact.attribute == "capital":
        statement = f"The capital of {fact.entity} is {name}."
    elif fact.attribute == "capital of":
        statement = f"{fact.entity} is the capital of {name}."
    else:
        statement = f"{fact.entity} was discovered by {name}."
    return Fact(fact.title, fact.entity, fact.attribute, name, quote, statement, target=fact.target)


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
