"""Which ``checkpoint-<step>`` folder a resumed run starts from.

The Trainer writes ``trainer_state.json`` last when it saves a checkpoint, so a folder without
it was cut short (a killed process, a full disk) and is skipped in favour of the one before.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-step checkpoint in ``output_dir`` with a readable ``trainer_state.json``, or None."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    for _, path in found:
        try:
            json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("Skipping %s: no readable %s (its save was cut short).", path, TRAINER_STATE)
            continue
        return str(path)
    return None
