"""How generated questions are worded: at least three phrasings per relation or attribute and per
question kind, with the descriptors people add (a role or country, ``"the German composer Johann
Sebastian Bach"``; a region, ``"Accra, a capital city of Ghana"``; a possessive, ``"Ghana's"``),
different question words and word orders.

Slots: ``{e}`` the entity's name; ``{d}`` the entity with its descriptor (a template with ``{d}``
is used only when the article has a descriptor that does not give the answer away); ``{p}`` the
entity's possessive. Comparisons use ``{a}`` and ``{b}``, fan-outs ``{l}`` (the listed entities),
bridges ``{x}`` (how the question refers to the article the first hop names). Every generated item
records its phrasing as ``"<kind>/<key>/<index>"`` in :attr:`~langchain_ragr1.data.items.QAItem.template`.
"""

from __future__ import annotations

import random
import re
from typing import Mapping, Sequence

_WHO = {  # relation -> (verb, noun): "Who founded X?", "the founder of X"
    "director": ("directed", "director"), "composer": ("composed", "composer"), "artist": ("made", "artist"),
    "painter": ("painted", "painter"), "author": ("wrote", "author"), "creator": ("created", "creator"),
    "discoverer": ("discovered", "discoverer"), "founder": ("founded", "founder"),
    "inventor": ("invented", "inventor"), "designer": ("designed", "designer"),
}
_PASSIVE = {"wrote": "written", "made": "made"}

#: Single-hop questions by attribute or relation (``painter``: an artist who painted the work).
SINGLE: dict[str, tuple[str, ...]] = {
    "birth year": ("In what year was {e} born?", "When was {d} born?", "What is {p} year of birth?",
                   "{e} was born in which year?"),
    "death year": ("In what year did {e} die?", "When did {d} die?", "What is {p} year of death?",
                   "{e} died in which year?"),
    "population": ("What is the population of {e}?", "How many people live in {d}?", "What is {p} population?",
                   "{e} has how many inhabitants?"),
    "area": ("What is the area of {e}?", "How large is {d} in area?", "What is {p} total area?",
             "How much area does {e} cover?"),
    "elevation": ("What is the elevation of {e}?", "At what elevation is {d}?", "What is {p} elevation?",
                  "How high is {e}?"),
    "length": ("How long is {e}?", "What is the length of {d}?", "What is {p} length?", "{e} is how long?"),
    "founding year": ("In what year was {e} founded?", "When was {d} established?", "What year was {e} founded in?",
                      "{e} was founded in which year?"),
    **{role: (f"Who {verb} {{e}}?", f"Who was the {noun} of {{d}}?", f"{{e}} was {_PASSIVE.get(verb, verb)} by whom?",
              f"Who is {{p}} {noun}?")
       for role, (verb, noun) in _WHO.items()},
    "describer": ("Who first described {e}?", "Who was the first to describe {d}?",
                  "{e} was first described by whom?"),
    "capital": ("What is the capital of {e}?", "Which city is the capital of {d}?", "What is {p} capital?",
                "{e} has which city as its capital?"),
    "capital of": ("Which country or region has {e} as its capital?", "{e} is the capital of which country or region?",
                   "Of which country or region is {d} the capital?", "Which country or region is {e} the capital of?"),
    "location": ("Where is {e} located?", "Where is {d}?", "In what place is {e} located?",
                 "{e} lies in which place?"),
    "part of": ("What is {e} part of?", "{e} is part of what?", "Of what is {d} a part?",
                "What larger whole does {e} belong to?"),
}
#: A work's year by its participle (``"published"``); ``premiered`` has its own.
_WORK_SINGLE = ("In what year was {e} {v}?", "When was {d} {v}?", "{e} was {v} in which year?",
                "What year was {e} {v} in?")
_PREMIERE_SINGLE = ("In what year did {e} premiere?", "When did {d} premiere?", "{e} premiered in which year?")


def work_single(verb: str) -> tuple[str, ...]:
    """The single-hop phrasings of a work's year (``verb``: its participle)."""
    if verb == "premiered":
        return _PREMIERE_SINGLE
    return tuple(t.replace("{v}", verb) for t in _WORK_SINGLE)


def _pair(verb: str, high: str, low: str, who: str = "which") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Three two-entity phrasings for the larger value and three for the smaller."""
    def three(word: str) -> tuple[str, ...]:
        return (f"{who.capitalize()} {verb} {word}, {{a}} or {{b}}?", f"Of {{a}} and {{b}}, {who} {verb} {word}?",
                f"Which of the two {verb} {word}: {{a}} or {{b}}?")
    return three(high), three(low)


def _fan(verb: str, high: str, low: str, who: str = "which") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Three phrasings over a list ``{l}`` for the largest value and three for the smallest."""
    first = "Who among" if who == "who" else "Which of"
    def three(word: str) -> tuple[str, ...]:
        return (f"{first} {{l}} {verb} {word}?", f"Among {{l}}, {who} {verb} {word}?",
                f"Of these, {who} {verb} {word}: {{l}}?")
    return three(high), three(low)


#: Comparison (two) and fan-out (three or four) questions by attribute family: ((max, min), (max, min)).
COMPARE: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "birth year": (_pair("was born", "later", "earlier", "who"), _fan("was born", "latest", "earliest", "who")),
    "death year": (_pair("died", "later", "earlier", "who"), _fan("died", "latest", "earliest", "who")),
    "population": (_pair("has the", "larger population", "smaller population"),
                   _fan("has the", "largest population", "smallest population")),
    "area": (_pair("has the", "larger area", "smaller area"), _fan("has the", "largest area", "smallest area")),
    "elevation": (_pair("lies at the", "higher elevation", "lower elevation"),
                  _fan("lies at the", "highest elevation", "lowest elevation")),
    "length": (_pair("is", "longer", "shorter"), _fan("is the", "longest", "shortest")),
    "founding year": (_pair("was founded", "later", "earlier"), _fan("was founded", "latest", "earliest")),
    "work year": (_pair("is", "more recent", "older"), _fan("is the", "most recent", "oldest")),
}

#: How a bridge refers to the article its first hop names, by relation.
BRIDGE_REFER: dict[str, tuple[str, ...]] = {
    **{role: (f"the {noun} of {{e}}", f"the person who {verb} {{d}}", f"{{p}} {noun}")
       for role, (verb, noun) in _WHO.items()},
    "describer": ("the person who first described {e}", "the first person to describe {d}",
                  "whoever first described {e}"),
    "capital": ("the capital of {e}", "the capital city of {d}", "{p} capital"),
    "capital of": ("the country or region whose capital is {e}", "the country or region with {d} as its capital",
                   "the place that has {e} as its capital"),
    "location": ("the place where {e} is located", "the place where {d} lies", "the place that {e} is in"),
    "part of": ("what {e} is part of", "the larger whole that {d} belongs to", "the whole that {e} is a part of"),
}
#: A bridge's question about that article, by the second hop's attribute.
BRIDGE_ASK: dict[str, tuple[str, ...]] = {
    "birth year": ("In what year was {x} born?", "When was {x} born?", "{x} was born in which year?"),
    "death year": ("In what year did {x} die?", "When did {x} die?", "{x} died in which year?"),
    "population": ("What is the population of {x}?", "How many people live in {x}?", "{x} has how many inhabitants?"),
    "area": ("What is the area of {x}?", "What is the total area of {x}?", "How much area does {x} cover?"),
    "elevation": ("What is the elevation of {x}?", "At what elevation is {x}?", "How high is {x}?"),
    "founding year": ("In what year was {x} founded?", "When was {x} established?", "{x} was founded in which year?"),
}

_SMALL_WORDS = frozenset("of in on for from by and with at to the a an".split())


def possessive(entity: str) -> str:
    return entity + ("'" if entity.endswith("s") else "'s")


def described(entity: str, descriptor: str) -> str:
    """``"the German composer Bach"`` for a short descriptor, else ``"Accra, a capital city of Ghana,"``."""
    words = descriptor.split()
    if len(words) <= 3 and not _SMALL_WORDS & {w.lower() for w in words} and "," not in descriptor:
        return f"the {descriptor} {entity}"
    article = "an" if descriptor[:1].lower() in "aeiou" else "a"
    return f"{entity}, {article} {descriptor},"


def tidy(question: str) -> str:
    """A rendered question with its first letter capitalised and no comma left before ``?`` or ``:``."""
    question = re.sub(r",([?:])", r"\1", question)
    question = re.sub(r",,", ",", question)
    return question[:1].upper() + question[1:]


def choose(rng: random.Random, templates: Sequence[str], slots: Mapping[str, str | None]) -> tuple[int, str]:
    """A seeded choice among the templates whose slots are all available: ``(index, rendered text)``."""
    usable = [i for i, t in enumerate(templates)
              if all(slots.get(name) is not None for name in re.findall(r"\{(\w)\}", t))]
    index = rng.choice(usable)
    return index, templates[index].format(**{k: v for k, v in slots.items() if v is not None})
