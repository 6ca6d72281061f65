"""scripts/data_counts.py: a QA set counted by kind, phrasing and mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from langchain_ragr1.data import QAItem
from langchain_ragr1.data.items import DataError

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "data_counts.py"
_SPEC = importlib.util.spec_from_file_location("data_counts", _PATH)
counts = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(counts)


def item(id_, kind, template):
    return QAItem(id=id_, question="q?", golden_answers=["a"], kind=kind, template=template)


ITEMS = [item("1", "single-hop", "single-hop/founder/0"), item("2", "single-hop", "single-hop/founder/2"),
         item("3", "single-hop", "single-hop/population/0"),
         item("4", "bridge", "bridge/location/1+population/0"), item("5", "bridge", None)]


def test_counts_by_kind_family_phrasing_and_mode():
    trajectories = [{"id": "1", "mode": "multi"}, {"id": "1", "mode": "single"}, {"id": "4", "mode": "multi"},
                    {"id": "zzz", "mode": "multi"}]
    result = counts.count(ITEMS, trajectories)
    single = result["kinds"]["single-hop"]
    assert single["questions"] == 3
    assert single["families"] == {"founder": 2, "population": 1}
    assert single["templates"] == 3
    assert single["questions_per_phrasing_index"] == {"0": 2, "2": 1}
    assert single["trajectories_by_mode"] == {"multi": 1, "single": 1}
    bridge = result["kinds"]["bridge"]
    assert bridge["families"] == {"location+population": 1, "(none)": 1}
    assert bridge["trajectories_by_mode"] == {"multi": 1}
    assert result["trajectories_unmatched"] == 1
    table = counts.render(result)
    assert "| single-hop | 3 | 2 | 3 | 0: 2, 2: 1 | 1 | 1 |" in table
    assert "(1 not in the set)" in table


def test_a_bad_trajectories_line_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "1", "mode": "multi"}) + "\n{broken\n")
    with pytest.raises(DataError, match=r"t\.jsonl, line 2: not JSON"):
        counts.read_trajectories(path)
    with pytest.raises(SystemExit, match=r"t\.jsonl, line 2: not JSON"):  # the command: the message, no traceback
        counts.main(["--data", "ragr1-dev", "--trajectories", str(path)])
