"""What the repetition stop would have done to saved turns: measured offline, no model run.

    .venv/bin/python scripts/repetition_stats.py runs/dev-default-fast/predictions.jsonl \
        reports/sft/eval-new-test/predictions.jsonl.gz [--tokens 24 --count 4] [--grid] [--json] [--turns]

Each record's ``trace`` (a ``ragr1 eval`` predictions file) is split into its model turns (what follows
the chat template's assistant header, between the ``<information>`` blocks and the invalid-action texts);
each turn is tokenised with the default model's tokenizer (``--tokenizer`` for another) and fed to the
same detector the policies run (:func:`langchain_ragr1.policies.repetition.repetition_end`). Re-tokenised
text can differ from the ids the model sampled by a token here and there (``eval-new-test``'s turns give
25,340 tokens where the model generated 25,346), so positions are close, not exact. A turn that closed
its tag on the token where the stop would fire keeps its stop string, as in the policies.

Per file and in total it counts: model turns; turns that did not close a tag (invalid already: they ran to
the token budget or ended without a tag); turns the stop ends (split into those that had closed a tag,
which the stop turns from valid to invalid, and those that had not); the tokens they would not have
generated (against the run's own budget: the saved turns were cut at it); where the stop fires; questions
with a stopped turn; and **false stops**: questions answered right (EM 1) with a stopped turn, and how many
of those had a closed turn stopped. ``--grid`` tries other spans and counts; ``--turns`` lists each stopped
turn of a right answer and each stopped turn that had closed its tag.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from langchain_ragr1.policies.repetition import repetition_end
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS
from langchain_ragr1.protocol import INVALID_ACTION_TEXT, STOP_STRINGS

#: Where the model's first turn starts in a trace: the chat templates' generation prompts (SmolLM2, Gemma 3).
ASSISTANT_HEADERS = ("<|im_start|>assistant\n", "<start_of_turn>model\n")
#: What the graph appends between model turns: an information block (its tags inside are escaped) or the
#: invalid-action text.
_ENVIRONMENT = re.compile(r"\n<information>\n.*?\n</information>\n|" + re.escape(INVALID_ACTION_TEXT), re.DOTALL)
GRID_TOKENS = (8, 12, 16, 20, 24, 32, 40)
GRID_COUNTS = (2, 3, 4)


def model_turns(trace: str) -> list[str] | None:
    """The model turns of an episode's trace, in order, or ``None`` when no known assistant header is in it."""
    for header in ASSISTANT_HEADERS:
        start = trace.find(header)
        if start >= 0:
            return _ENVIRONMENT.split(trace[start + len(header):])
    return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``predictions.jsonl`` (or ``.jsonl.gz``) file."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def tokenised_episodes(records: Iterable[dict[str, Any]], encode: Callable[[str], list[int]]) -> list[dict[str, Any]]:
    """Per record with a readable trace: its id, mode, EM, turns as ``(closed, ids)`` and ``budget``: the run's
    longest turn (its ``--max-new-tokens``: the saved turns were cut there)."""
    episodes: list[dict[str, Any]] = []
    for record in records:
        turns = model_turns(record.get("trace") or "")
        if turns is None:
            continue
        episodes.append({"id": record.get("id"), "mode": record.get("mode"), "em": bool(record.get("em")),
                         "turns": [(turn.rstrip().endswith(STOP_STRINGS), encode(turn)) for turn in turns]})
    budget = max((len(ids) for episode in episodes for _, ids in episode["turns"]), default=0)
    return [{**episode, "budget": budget} for episode in episodes]


def stop_at(closed: bool, ids: Sequence[int], span: int, count: int) -> int | None:
    """The turn's kept length under the stop, or ``None`` when it would not stop (a tag closed on that token wins)."""
    kept = repetition_end(ids, span, count)
    return None if kept is None or (closed and kept >= len(ids)) else kept


def measure(episodes: Sequence[dict[str, Any]], span: int, count: int) -> dict[str, Any]:
    """The counts of the module docstring for one ``span`` and ``count``."""
    totals: Counter = Counter({key: 0 for key, _ in COLUMNS if key != "episodes"})  # zeros shown in --json too
    positions: list[int] = []
    for episode in episodes:
        budget = episode["budget"]
        ends = [(closed, ids, stop_at(closed, ids, span, count)) for closed, ids in episode["turns"]]
        stopped = [(closed, ids, kept) for closed, ids, kept in ends if kept is not None]
        totals["turns"] += len(episode["turns"])
        totals["unclosed"] += sum(not closed for closed, _ in episode["turns"])
        totals["at_budget"] += sum(not closed and len(ids) >= budget for closed, ids in episode["turns"])
        totals["tokens"] += sum(len(ids) for _, ids in episode["turns"])
        totals["stopped"] += len(stopped)
        totals["stopped_closed"] += sum(closed for closed, _, _ in stopped)
        totals["stopped_at_budget"] += sum(not closed and len(ids) >= budget for closed, ids, _ in stopped)
        totals["saved"] += sum(len(ids) - kept for _, ids, kept in stopped)
        positions += [kept for _, _, kept in stopped]
        if stopped:
            totals["questions_stopped"] += 1
            totals["false_stops"] += episode["em"]
            totals["false_stops_closed"] += episode["em"] and any(closed for closed, _, _ in stopped)
    return {"tokens_span": span, "count": count, "episodes": len(episodes), **totals, "stop_at": _spread(positions)}


def _spread(values: Sequence[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


COLUMNS = (("episodes", "episodes"), ("turns", "turns"), ("unclosed", "no tag closed"),
           ("at_budget", "at budget"), ("stopped", "stopped"), ("stopped_at_budget", "of them at budget"),
           ("stopped_closed", "of them closed"), ("questions_stopped", "questions"), ("saved", "tokens saved"),
           ("tokens", "tokens"), ("false_stops", "false stops (EM 1)"), ("false_stops_closed", "of them closed"))


def table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table of :func:`measure` results, one row per (label, result)."""
    lines = ["| | " + " | ".join(title for _, title in COLUMNS) + " | stop at (min/median/max) |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for label, result in rows:
        spread = result["stop_at"]
        where = "-" if spread is None else f"{spread['min']}/{spread['median']:g}/{spread['max']}"
        lines.append(f"| {label} | " + " | ".join(str(result.get(key, 0)) for key, _ in COLUMNS) + f" | {where} |")
    return "\n".join(lines)


def listed_turns(episodes: Sequence[dict[str, Any]], span: int, count: int, decode: Callable[[list[int]], str]) -> str:
    """Each stopped turn of a right answer and each stopped turn that had closed its tag, with its end."""
    lines = []
    for episode in episodes:
        for index, (closed, ids) in enumerate(episode["turns"]):
            kept = stop_at(closed, ids, span, count)
            if kept is not None and (closed or episode["em"]):
                lines.append(f"- {episode['id']} ({episode['mode']}, EM {int(episode['em'])}) turn {index + 1}: "
                             f"stopped at token {kept} of {len(ids)}, closed {closed}: ...{decode(ids[:kept])[-160:]!r}")
    return "\n".join(lines) or "(none)"


def _tokenizer(path: str | None) -> Any:
    from transformers import AutoTokenizer

    from langchain_ragr1.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(path or "default", show_progress=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", nargs="+", help="predictions.jsonl(.gz) files of `ragr1 eval` runs")
    parser.add_argument("--tokens", type=int, default=DEFAULT_REPEAT_STOP_TOKENS, help="the repeated span (tokens)")
    parser.add_argument("--count", type=int, default=DEFAULT_REPEAT_STOP_COUNT, help="copies of it that stop a turn")
    parser.add_argument("--tokenizer", default=None, help="a model folder (default: the trained default model)")
    parser.add_argument("--grid", action="store_true", help=f"also all files together for spans {GRID_TOKENS} "
                                                             f"x counts {GRID_COUNTS}")
    parser.add_argument("--turns", action="store_true", help="list the stopped turns of right answers and closed turns")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    tokenizer = _tokenizer(args.tokenizer)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    runs = {path: tokenised_episodes(read_records(Path(path)), encode) for path in args.predictions}
    everything = [episode for episodes in runs.values() for episode in episodes]
    rows = [(path, measure(episodes, args.tokens, args.count)) for path, episodes in runs.items()]
    rows.append(("all", measure(everything, args.tokens, args.count)))
    grid = [(f"{n} tokens x {c}", measure(everything, n, c)) for n in GRID_TOKENS for c in GRID_COUNTS] if args.grid else []
    if args.json:
        print(json.dumps({"runs": dict(rows), "grid": dict(grid)}, indent=2))
        return 0
    print(f"repeat_stop_tokens={args.tokens}, repeat_stop_count={args.count}\n\n{table(rows)}")
    if grid:
        print(f"\nAll files together, other settings:\n\n{table(grid)}")
    if args.turns:
        print("\nStopped turns of right answers, and stopped turns that had closed a tag:\n")
        print(listed_turns(everything, args.tokens, args.count, tokenizer.decode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
