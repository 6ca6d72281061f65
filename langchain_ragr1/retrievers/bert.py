"""A BERT encoder's forward pass on its ``model.safetensors``, without transformers' modeling code.

:class:`~langchain_ragr1.retrievers.embeddings.EncoderEmbeddings` needs only the last hidden state of a BERT
encoder (the shipped all-MiniLM-L6-v2). Building transformers' ``BertModel`` imports its model loading code
(``torch.distributed.tensor``, ``torch._dynamo``, SymPy: about 1.2 s on a 2-core machine), which ``ragr1 ask``
otherwise no longer imports (:mod:`langchain_ragr1.policies.direct`), and which then ran in the embedder's thread
beside the first model turn. :class:`DirectBert` computes ``BertModel(...).last_hidden_state`` op for op as
transformers' SDPA path does (same weights, same kernels: the same numbers, checked by the tests) for batches
without padding, which is every query; a padded batch (passages) returns ``None`` and the caller uses transformers.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from langchain_ragr1.json_tokenizer import load_json_tokenizer
from langchain_ragr1.paths import read_json_object, safetensors_names

__all__ = ["DirectBert", "bert_unsupported", "load_bert_tokenizer"]

_LAYER_TENSORS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
_EMBEDDINGS = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
               "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias")


def bert_unsupported(path: str | Path) -> str | None:
    """``None`` when :class:`DirectBert` can run the encoder folder ``path``, else why not."""
    path = Path(path)
    config = (read_json_object(path / "config.json") or {})
    if config.get("model_type") != "bert" or config.get("architectures", ["BertModel"]) != ["BertModel"]:
        return f"model type {config.get('model_type')!r} ({config.get('architectures')}) is not a BertModel"
    for key, ok in (("hidden_act", "gelu"), ("position_embedding_type", "absolute"), ("is_decoder", False),
                    ("add_cross_attention", False)):
        if config.get(key, ok) != ok:
            return f"{key} is {config[key]!r}"
    if not all(isinstance(config.get(k), (int, float)) for k in ("hidden_size", "num_attention_heads",
                                                                 "num_hidden_layers", "layer_norm_eps")):
        return "config.json lacks a size"
    if not (path / "model.safetensors").is_file():
        return "no model.safetensors"
    if _tokenizer_class(path) is None:
        return "its tokenizer is not a BertTokenizer with a tokenizer.json"
    names, why = safetensors_names(path / "model.safetensors")
    if names is None:
        return why
    expected = set(_EMBEDDINGS) | {f"encoder.layer.{i}.{name}.{part}" for i in range(int(config["num_hidden_layers"]))
                                   for name in _LAYER_TENSORS for part in ("weight", "bias")}
    extra = names - expected - {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
    if expected - names or extra:
        return f"the checkpoint's tensor names differ from a BertModel's ({sorted((expected - names) | extra)[:3]})"
    return None


def _tokenizer_class(path: Path) -> str | None:
    """The folder's ``tokenizer_class`` when it is BERT's and a ``tokenizer.json`` holds the whole tokenizer."""
    config = read_json_object(path / "tokenizer_config.json")
    if config is None or config.get("tokenizer_class") not in ("BertTokenizer", "BertTokenizerFast"):
        return None
    return config["tokenizer_class"] if (path / "tokenizer.json").is_file() else None


#: BertTokenizer's outputs: TokenizersBackend's default leaves out token_type_ids.
_BERT_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]


def load_bert_tokenizer(path: str | Path, **kwargs: Any) -> Any:
    """The folder's tokenizer with ``BertTokenizer``'s outputs (the same ids, token types and masks: the tests
    compare them): its ``tokenizer.json`` in a :class:`~langchain_ragr1.json_tokenizer.JsonTokenizer` (no
    transformers import), or in transformers' ``TokenizersBackend`` for a folder that one cannot reproduce.
    Importing ``BertTokenizer`` itself imports ``transformers.models``, whose ``__init__`` reads the source of
    every model in transformers (0.45 s here); ``None`` for a folder whose tokenizer is not BERT's."""
    if _tokenizer_class(Path(path)) is None:
        return None
    tokenizer, _ = load_json_tokenizer(path, model_input_names=_BERT_INPUTS)
    if tokenizer is not None:
        return tokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    return TokenizersBackend.from_pretrained(path, model_input_names=list(_BERT_INPUTS), **kwargs)


class DirectBert:
    """``BertModel``'s last hidden state over the folder ``path`` (which :func:`bert_unsupported` accepts), its
    weights cast to ``dtype`` as ``from_pretrained(dtype=...)`` does."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        from safetensors.torch import load_file

        config = (read_json_object(Path(path) / "config.json") or {})
        self.heads = int(config["num_attention_heads"])
        self.head_dim = int(config["hidden_size"]) // self.heads
        self.scaling = self.head_dim ** -0.5
        self.eps = float(config["layer_norm_eps"])
        self.width = int(config["hidden_size"])
        tensors = {name: t.to(dtype) for name, t in load_file(Path(path) / "model.safetensors").items()
                   if not name.startswith("pooler.") and name != "embeddings.position_ids"}
        self.tensors = tensors
        self.layers = [f"encoder.layer.{i}." for i in range(int(config["num_hidden_layers"]))]

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.tensors[f"{name}.weight"], self.tensors[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.width,), self.tensors[f"{name}.weight"], self.tensors[f"{name}.bias"], self.eps)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, **_: Any) -> SimpleNamespace | None:
        """``SimpleNamespace(last_hidden_state=...)``, or ``None`` for a batch with padding (``attention_mask``
        not all ones): transformers masks those, which this pass leaves to it."""
        if attention_mask is not None and not bool(attention_mask.all()):
            return None
        b, t = input_ids.shape
        w = self.tensors
        if token_type_ids is None:
            token_type_ids = torch.zeros((b, t), dtype=torch.long)
        # BertEmbeddings: words + token types, + positions, LayerNorm
        x = F.embedding(input_ids, w["embeddings.word_embeddings.weight"])
        x = x + F.embedding(token_type_ids, w["embeddings.token_type_embeddings.weight"])
        x = x + F.embedding(torch.arange(t)[None], w["embeddings.position_embeddings.weight"])
        x = self._norm(x, "embeddings.LayerNorm")
        shape = (b, t, -1, self.head_dim)
        for at in self.layers:
            q, k, v = (self._linear(x, f"{at}attention.self.{p}").view(shape).transpose(1, 2)
                       for p in ("query", "key", "value"))
            # transformers' sdpa_attention_forward (no mask: a batch without padding)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=self.scaling,
                                               is_causal=False)
            a = a.reshape(b, -1, t, self.head_dim).transpose(1, 2).contiguous().reshape(b, t, -1).contiguous()
            x = self._norm(self._linear(a, f"{at}attention.output.dense") + x, f"{at}attention.output.LayerNorm")
            h = F.gelu(self._linear(x, f"{at}intermediate.dense"))
            x = self._norm(self._linear(h, f"{at}output.dense") + x, f"{at}output.LayerNorm")
        return SimpleNamespace(last_hidden_state=x)
