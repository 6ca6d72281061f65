"""The repetition stop: end a model turn once it has started to loop.

A small model decoding greedily can fall into a loop inside a turn ("The article says: ...
The article says: ...") and then runs on to its token budget. :class:`RepeatTracker` watches the
turn's token ids as they are generated and fires on the token that completes the ``count``-th
copy of the turn's last ``span`` tokens: copies that do not overlap, one after the other or
not, all inside the same turn. It is incremental (one dictionary look-up of the last ``span``
ids per new token), so the decoding loops run it at every step for every row of a batch.

The token-level policies stop a turn there (``finish_reason="repetition"``, the tokens up to and
including that one kept exactly as sampled) and the graph counts such a turn as invalid.
:func:`repetition_end` applies the same rule to a finished list of ids (backends that cannot stop
mid-turn, offline statistics); :func:`text_units` gives text-level turns their units.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["RepeatTracker", "repetition_end", "text_repetition_end", "text_units"]


class RepeatTracker:
    """Fires when the ids pushed so far end in a ``span``-token sequence that has now occurred
    ``count`` times without overlap (``span`` 0: never).

    Each new id costs one hash of the last ``span`` ids. Copies are counted greedily from the left
    (a copy counts when it starts at or after the end of the last counted copy of the same
    sequence), which finds the most non-overlapping copies, so the tracker fires at the first
    token at which ``count`` such copies exist.

    >>> tracker = RepeatTracker(span=2, count=3)
    >>> [tracker.push(t) for t in [7, 8, 9, 7, 8, 7, 8]]
    [False, False, False, False, False, False, True]
    """

    __slots__ = ("span", "count", "_tokens", "_copies", "fired_at")

    def __init__(self, span: int, count: int) -> None:
        self.span = span
        self.count = count
        self._tokens: list[int] = []
        #: a span of ids -> (copies counted, end of the last counted copy)
        self._copies: dict[tuple[int, ...], tuple[int, int]] = {}
        #: the number of ids pushed when it fired (the turn's length to keep), or ``None``
        self.fired_at: int | None = None

    def __len__(self) -> int:
        return len(self._tokens)

    def push(self, token: int) -> bool:
        """Add the turn's next id; whether the turn has repeated itself (it stays fired)."""
        self._tokens.append(int(token))
        if self.fired_at is not None:
            return True
        n, span = len(self._tokens), self.span
        if span <= 0 or n < span:
            return False
        key = tuple(self._tokens[n - span:])
        copies, end = self._copies.get(key, (0, 0))
        if copies == 0 or n - span >= end:
            copies, end = copies + 1, n
            self._copies[key] = (copies, end)
        if copies >= self.count:
            self.fired_at = n
            return True
        return False

    def update(self, tokens: Sequence[int]) -> bool:
        """Push the ids of ``tokens`` (the whole turn so far) that are not pushed yet; whether the
        turn has repeated itself. For callers that see the growing turn rather than each new id."""
        for token in tokens[len(self._tokens):]:
            if self.push(token):
                return True
        return self.fired_at is not None


def repetition_end(ids: Sequence[int], span: int, count: int) -> int | None:
    """How many of ``ids`` a turn keeps under the repetition stop (the ids up to and including the
    one that completes the ``count``-th copy of a ``span``-id sequence), or ``None`` if it never fires.
    """
    if span <= 0:
        return None
    tracker = RepeatTracker(span, count)
    for token in ids:
        if tracker.push(token):
            return tracker.fired_at
    return None


_UNIT = re.compile(r"\w+|[^\w\s]")


def text_units(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of ``text``'s units for a text-level turn, which has no
    token ids: each word and each punctuation mark (roughly a small model's tokens)."""
    return [m.span() for m in _UNIT.finditer(text)]


def text_repetition_end(text: str, span: int, count: int) -> int | None:
    """The characters of ``text`` a text-level turn keeps under the repetition stop (through the unit
    that completes the ``count``-th copy of a ``span``-unit sequence), or ``None`` if it never fires."""
    if span <= 0:
        return None
    tracker = RepeatTracker(span, count)
    vocabulary: dict[str, int] = {}
    for unit in _UNIT.finditer(text):  # lazily: a looping megabyte stops at its first copies
        if tracker.push(vocabulary.setdefault(unit.group(), len(vocabulary))):
            return unit.end()
    return None
