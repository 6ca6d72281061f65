"""Why answers are wrong: classify each episode of a ``ragr1 eval`` run from its predictions.

    .venv/bin/python scripts/analyze_predictions.py runs/eval/new-test --data ragr1-test \
        [--limit 48 --sample stratified] [--json]

For every mode and question kind it counts the wrong answers by the first failing step:

- ``no_answer``: the episode ended without an answer (turn budget, format, error);
- ``search``: the model did not search for everything the question needs (fewer search turns
  than a bridge's hops, or fewer queries than a comparison's entities; not for naive-rag,
  whose one search is the question);
- ``retrieval``: it searched, but an evidence article was not among the retrieved documents;
- ``reading``: all evidence was retrieved but the final ``<think>`` does not state every
  deciding value as the passages write it (items with ``facts`` only);
- ``reasoning``: every value was stated, and the answer is still wrong (e.g. the comparison).

Items without ``facts`` (old sets) put evidence-found errors under ``reading``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
CLASSES = ("no_answer", "search", "retrieval", "reading", "reasoning")


def final_think(trace: str) -> str:
    """The reasoning of the last model turn in an episode's trace."""
    thinks = _THINK_RE.findall(trace or "")
    return thinks[-1] if thinks else ""


def classify(record: dict[str, Any], item: Any) -> str | None:
    """None for a right answer, else the first failing step (one of :data:`CLASSES`)."""
    if record.get("em"):
        return None
    if not record.get("answer"):
        return "no_answer"
    needed_turns = len(item.gold_queries) if item.kind == "bridge" else 1
    needed_queries = sum(len(turn) for turn in item.gold_queries)
    searched = [q for turn in record.get("queries") or [] for q in (turn if isinstance(turn, list) else [turn])]
    # naive-rag's one search (the question itself) is fixed by the strategy, not chosen
    if record.get("mode") != "naive-rag" and (record.get("turns", 0) < needed_turns or len(searched) < needed_queries):
        return "search"
    if (record.get("evidence_recall") or 0) < 1:
        return "retrieval"
    facts = getattr(item, "facts", None) or []
    if not facts:
        return "reading"
    think = final_think(record.get("trace", ""))
    return "reasoning" if all(f["value"] in think for f in facts) else "reading"


def read_records(out: Path) -> list[dict[str, Any]]:
    path = out / "predictions.jsonl"
    opener = open
    if not path.is_file() and (out / "predictions.jsonl.gz").is_file():
        path, opener = out / "predictions.jsonl.gz", gzip.open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def breakdown(records: Sequence[dict[str, Any]], items: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """``{mode: {kind: {class: count, "n": questions, "right": count}}}`` (kind ``all`` included)."""
    table: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for record in records:
        item = items.get(record["id"])
        if item is None:
            continue
        verdict = classify(record, item)
        for kind in (item.kind or "none", "all"):
            cell = table[record["mode"]][kind]
            cell["n"] += 1
            cell["right" if verdict is None else verdict] += 1
    return {mode: {kind: dict(cell) for kind, cell in kinds.items()} for mode, kinds in table.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from langchain_ragr1.evaluation import SAMPLINGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a `ragr1 eval --out` folder")
    parser.add_argument("--data", required=True, help="the QA set it ran on (name or file)")
    parser.add_argument("--limit", type=int, help="only the N questions `ragr1 eval --limit N` took")
    parser.add_argument("--sample", choices=SAMPLINGS, default="first",
                        help="how that eval picked them (its --sample)")
    parser.add_argument("--sample-seed", type=int, default=0, help="its --sample-seed")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    from langchain_ragr1.data import load_qa
    from langchain_ragr1.evaluation import select_items

    picked = select_items(load_qa(args.data), args.limit, args.sample, args.sample_seed)
    items = {item.id: item for item in picked}
    table = breakdown(read_records(Path(args.out)), items)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print("| mode | kind | n | right | " + " | ".join(CLASSES) + " |")
    print("|---|---|---|---|" + "---|" * len(CLASSES))
    for mode, kinds in table.items():
        for kind in sorted(kinds, key=lambda k: (k == "all", k)):
            cell = kinds[kind]
            print(f"| {mode} | {kind} | {cell['n']} | {cell.get('right', 0)} | "
                  + " | ".join(str(cell.get(c, 0)) for c in CLASSES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
