"""Load a Llama model folder for :class:`~langchain_ragr1.policies.fast.FastPolicy` without transformers' modeling code.

``FastPolicy`` only runs :class:`~langchain_ragr1.policies.decoder.LlamaDecoder`, its own copy of the weights, so
building a transformers ``LlamaForCausalLM`` first only costs time at start-up: on a 2-core machine importing
transformers' model loading code (which imports ``torch.distributed.tensor``, ``torch._dynamo`` and SymPy) and its
tokenizer auto-classes took about 1.9 s of a 4.2 s model load. :func:`load_direct` reads the folder's
``config.json`` and ``model.safetensors`` with safetensors' own loader, casts each tensor to the dtype the
transformers model would hold (``Tensor.to``, what ``from_pretrained(dtype=...)`` does: the same bits) and builds
the engine from them; the tokenizer is its ``tokenizer.json`` in a
:class:`~langchain_ragr1.json_tokenizer.JsonTokenizer` (no transformers import at all: the same ids and chat-template
text), or, for a folder that one cannot reproduce, its ``tokenizer_config.json`` class (``TokenizersBackend``) loaded
directly, which skips the model config that ``AutoTokenizer`` reads (and the imports behind it).

:func:`direct_unsupported` says why a folder cannot take this path (another architecture, a sharded or quantised
checkpoint, RoPE scaling, ...); ``FastPolicy.from_pretrained`` then loads it through transformers as before and
logs the reason once. The transformers model of a direct load is a :class:`DeferredModel`: the settings the
engine lacks (``top_k``, ``min_p``, ``repetition_penalty``) still go through ``model.generate``, which loads the
model on that first use.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from langchain_ragr1.json_tokenizer import load_json_tokenizer
from langchain_ragr1.openmp import in_own_thread
from langchain_ragr1.paths import read_json_object, safetensors_names

logger = logging.getLogger(__name__)

__all__ = ["DeferredModel", "direct_unsupported", "load_direct", "load_tokenizer"]

#: The dtypes the direct load casts to (``from_pretrained``'s ``dtype``).
DTYPES: tuple[str, ...] = ("bfloat16", "float32", "float16")
#: config.json keys the engine reads; a folder without one of them goes through transformers.
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "rms_norm_eps", "max_position_embeddings",
             "vocab_size")
_LAYER_TENSORS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                  "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")
_TOKENIZER_CLASS = "TokenizersBackend"


def _rope_theta(config: dict[str, Any]) -> tuple[float | None, str | None]:
    """(RoPE base, None) for transformers' default RoPE, else (None, why not)."""
    rope = config.get("rope_parameters")
    if rope is None:  # the transformers 4 layout: rope_theta (default 10000) and rope_scaling
        if config.get("rope_scaling") is not None:
            return None, f"rope_scaling {config['rope_scaling']!r}"
        theta = config.get("rope_theta", 10000.0)
    else:
        if not isinstance(rope, dict) or rope.get("rope_type", "default") != "default":
            return None, f"rope parameters {rope!r} are not the default RoPE"
        if set(rope) - {"rope_type", "rope_theta", "partial_rotary_factor"} or rope.get("partial_rotary_factor", 1) != 1:
            return None, f"rope parameters {rope!r} are not the default RoPE"
        theta = rope.get("rope_theta")
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta <= 0:
        return None, f"rope_theta {theta!r}"
    return float(theta), None


def direct_unsupported(path: str | Path, dtype: str = "bfloat16") -> str | None:
    """``None`` when :func:`load_direct` can load the model folder ``path`` as ``dtype``, else why not
    (reading only its JSON files and the safetensors header)."""
    path = Path(path)
    if dtype not in DTYPES:
        return f"dtype {dtype!r} is not one of {', '.join(DTYPES)}"
    config = read_json_object(path / "config.json")
    if config is None:
        return "no readable config.json"
    if config.get("model_type") != "llama":
        return f"model type {config.get('model_type')!r} is not llama"
    if config.get("architectures", ["LlamaForCausalLM"]) != ["LlamaForCausalLM"]:
        return f"architectures {config.get('architectures')!r} are not LlamaForCausalLM"
    missing = [key for key in _REQUIRED if not isinstance(config.get(key), (int, float))]
    if missing:
        return f"config.json lacks {', '.join(missing)}"
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False), ("pretraining_tp", 1)):
        if key in config and config[key] != ok:
            return f"{key} is {config[key]!r}"
    if "quantization_config" in config:
        return "a quantised checkpoint"
    _, why = _rope_theta(config)
    if why:
        return why
    weights = path / "model.safetensors"
    if not weights.is_file():
        return "no single model.safetensors (a sharded or .bin checkpoint)"
    if not (path / "tokenizer.json").is_file():
        return "no tokenizer.json"
    names, why = safetensors_names(weights)
    if names is None:
        return why
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{name}.weight" for i in range(int(config["num_hidden_layers"])) for name in _LAYER_TENSORS}
    tied = config.get("tie_word_embeddings", False)
    if not tied:
        expected.add("lm_head.weight")
    if names != expected:
        odd = sorted(names ^ expected)
        return f"the checkpoint's tensor names differ from a {'tied ' if tied else ''}Llama's ({', '.join(odd[:3])}...)"
    return None


def load_tokenizer(path: str | Path) -> Any:
    """The folder's tokenizer: a :class:`~langchain_ragr1.json_tokenizer.JsonTokenizer` (its ``tokenizer.json``
    without transformers' tokenizer code) where that is what transformers would build, else its
    ``TokenizersBackend`` loaded directly when ``tokenizer_config.json`` names that class (what ``AutoTokenizer``
    returns for it, without reading the model config), else ``AutoTokenizer``'s."""
    path = Path(path)
    tokenizer, why = load_json_tokenizer(path)
    if tokenizer is not None:
        return tokenizer
    logger.debug("The tokenizer of %s loads through transformers: %s", path, why)
    config = read_json_object(path / "tokenizer_config.json") or {}
    if config.get("tokenizer_class") == _TOKENIZER_CLASS and (path / "tokenizer.json").is_file():
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        return TokenizersBackend.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class DeferredModel:
    """Stands for the transformers model of a folder whose engine :func:`load_direct` built: ``config`` and
    ``generation_config`` (its EOS ids) come from the folder's JSON files; any other attribute (``generate``,
    ``device``, ...) loads the model with ``from_pretrained(path, dtype=dtype)`` on first use and is the model's."""

    def __init__(self, path: Path, dtype: str, config: dict[str, Any], eos_token_id: Any) -> None:
        self._path, self._dtype = path, dtype
        self._model: Any = None
        self._lock = threading.Lock()
        self.config = SimpleNamespace(**config)
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)

    def eval(self) -> "DeferredModel":
        return self

    @property
    def loaded(self) -> bool:
        """Whether the transformers model has been loaded."""
        return self._model is not None

    def load(self) -> Any:
        """The transformers model (loaded on the first call)."""
        with self._lock:
            if self._model is None:
                from transformers import AutoModelForCausalLM

                logger.info("Loading the transformers model of %s for model.generate", self._path)
                self._model = AutoModelForCausalLM.from_pretrained(self._path, dtype=self._dtype).eval()
            return self._model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_path", "_dtype", "_model", "_lock"):
            raise AttributeError(name)
        return getattr(self.load(), name)


def load_direct(path: str | Path, *, weights: str = "bfloat16", dtype: str = "bfloat16") -> tuple[Any, Any, DeferredModel]:
    """``(tokenizer, decoder, model)`` of a folder that :func:`direct_unsupported` accepts: the engine built from
    its tensors cast to ``dtype`` (the transformers model's), ``model`` a :class:`DeferredModel`."""
    import torch
    from safetensors.torch import load_file

    from langchain_ragr1.policies.decoder import LlamaDecoder

    path = Path(path)
    config = read_json_object(path / "config.json") or {}
    theta, _ = _rope_theta(config)
    generation = read_json_object(path / "generation_config.json") or {}
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    tokenizer = load_tokenizer(path)
    target = getattr(torch, dtype)
    settings = dict(config)
    settings["num_key_value_heads"] = config.get("num_key_value_heads") or config["num_attention_heads"]
    settings["rope_theta"] = theta

    def build() -> LlamaDecoder:
        tensors = {name: tensor.to(target) for name, tensor in load_file(path / "model.safetensors").items()}
        return LlamaDecoder.from_tensors(SimpleNamespace(**settings), tensors, weights=weights)

    # the casts and oneDNN packing run parallel regions: on a thread that ends, so that no OpenMP pool stays behind
    # beside the generating thread's (langchain_ragr1.openmp)
    decoder = in_own_thread(build, "ragr1-load-model")
    return tokenizer, decoder, DeferredModel(path, dtype, settings, eos)
