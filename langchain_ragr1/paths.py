"""Where converted models and built indexes are cached."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

CACHE_ENV = "RAGR1_HOME"


def cache_dir() -> Path:
    """``$RAGR1_HOME`` or ``~/.cache/langchain-ragr1``; created on first use."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "langchain-ragr1")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: a process killed while
    writing leaves the previous file whole, never half of the new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def atomic_folder(
    out_dir: Path, write: Callable[[Path], None], is_complete: Callable[[Path], bool], *,
    replace_incomplete: bool = False,
) -> Path:
    """Run ``write(tmp)`` into a temporary sibling of ``out_dir`` and rename it into place.

    An interrupted ``write`` leaves no partial ``out_dir``; a concurrent writer that finished
    first wins. With ``replace_incomplete`` a leftover ``out_dir`` that is not complete (a cache
    folder from an older, killed build) is replaced; otherwise it makes the rename fail.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    tmp.chmod(out_dir.parent.stat().st_mode & 0o777)
    try:
        write(tmp)
        if replace_incomplete and out_dir.exists() and not is_complete(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not is_complete(out_dir):  # not a concurrent writer that won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (a model folder's ``config.json``, ...); ``None`` when the file is missing,
    unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def safetensors_names(path: Path) -> tuple[set[str] | None, str | None]:
    """``(the tensor names in the safetensors file's header, None)``, or ``(None, why it cannot be read)``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return set(handle.keys()), None
    except Exception as exc:  # noqa: BLE001 (an unreadable header: transformers says what is wrong with it)
        return None, f"{path.name} cannot be read ({exc})"
