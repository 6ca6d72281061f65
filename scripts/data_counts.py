"""Counts of a generated QA set by question kind, phrasing and mode (the data table of reports/sft.md).

    .venv/bin/python scripts/data_counts.py --data ragr1-train \
        [--trajectories runs/sft-v3/trajectories.jsonl] [--json]

From the set's items it counts, per kind: questions, the attributes or relations asked (the
``template``'s family, e.g. ``founder`` of ``single-hop/founder/2``), the distinct phrasings
(templates) and the questions per phrasing index. With ``--trajectories`` (a ``make_sft_data``
output) it adds the trajectories per kind and mode, matched to the set by ``id``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence


def family(template: str) -> str:
    """The attribute or relation of a ``template`` (``kind/family/index``; a bridge's two hops joined
    by ``+``, its wording indices left out: ``bridge/location/1+population/0`` -> ``location+population``)."""
    parts = template.split("/")
    if len(parts) < 3:
        return template
    words = [w for part in parts[1:-1] for w in part.split("+") if not w.isdigit()]
    return "+".join(words)


def phrasing_index(template: str) -> str:
    return template.rsplit("/", 1)[-1] if "/" in template else "?"


def count(items: Sequence[Any], trajectories: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "questions": 0, "families": Counter(), "templates": set(), "by_phrasing": Counter(),
        "trajectories": Counter()})
    kind_of = {}
    for item in items:
        row = kinds[item.kind]
        row["questions"] += 1
        kind_of[item.id] = item.kind
        template = getattr(item, "template", None) or "(none)"
        row["families"][family(template)] += 1
        row["templates"].add(template)
        row["by_phrasing"][phrasing_index(template)] += 1
    unmatched = 0
    for record in trajectories:
        kind = kind_of.get(record.get("id"))
        if kind is None:
            unmatched += 1
            continue
        kinds[kind]["trajectories"][record.get("mode", "?")] += 1
    out = {kind: {"questions": row["questions"], "families": dict(row["families"].most_common()),
                  "templates": len(row["templates"]),
                  "questions_per_phrasing_index": dict(sorted(row["by_phrasing"].items())),
                  "trajectories_by_mode": dict(row["trajectories"])}
           for kind, row in sorted(kinds.items())}
    return {"kinds": out, "questions": len(items), "trajectories": len(trajectories),
            "trajectories_unmatched": unmatched}


def render(result: dict[str, Any]) -> str:
    modes = sorted({m for row in result["kinds"].values() for m in row["trajectories_by_mode"]})
    head = ["kind", "questions", "attributes / relations", "phrasings", "questions by phrasing index"]
    head += [f"trajectories {m}" for m in modes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, row in result["kinds"].items():
        by_index = ", ".join(f"{k}: {v}" for k, v in row["questions_per_phrasing_index"].items())
        cells = [kind, str(row["questions"]), str(len(row["families"])), str(row["templates"]), by_index]
        cells += [str(row["trajectories_by_mode"].get(m, 0)) for m in modes]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n{result['questions']} questions; {result['trajectories']} trajectories"
                 + (f" ({result['trajectories_unmatched']} not in the set)" if result["trajectories_unmatched"] else ""))
    for kind, row in result["kinds"].items():
        lines.append(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in row["families"].items()))
    return "\n".join(lines)


def read_trajectories(path: Path) -> list[dict[str, Any]]:
    """The ``id`` and ``mode`` of each trajectory (a bad line is :func:`iter_jsonl`'s error, naming file and line)."""
    from langchain_ragr1.tuning.sft_data import iter_jsonl

    return [{"id": record.get("id"), "mode": record.get("mode")} for record in iter_jsonl(path)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a QA set (a named set such as ragr1-train, or a file)")
    parser.add_argument("--trajectories", type=Path, help="a make_sft_data trajectories.jsonl")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    from langchain_ragr1.data.items import DataError
    from langchain_ragr1.data.loaders import load_qa

    if args.trajectories and not args.trajectories.is_file():
        parser.error(f"--trajectories {args.trajectories}: no such file")
    try:
        trajectories = read_trajectories(args.trajectories) if args.trajectories else []
        result = count(load_qa(args.data), trajectories)
    except DataError as exc:  # a bad line or item: its message names the file and line, no traceback
        raise SystemExit(str(exc)) from exc
    print(json.dumps(result, indent=2) if args.json else render(result))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
