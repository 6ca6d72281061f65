"""A model folder's tokenizer straight from its ``tokenizer.json``, without transformers' tokenizer code.

Importing transformers' ``TokenizersBackend`` (``transformers.tokenization_utils_tokenizers``) and building it took
about 0.65 s of a cached ``ragr1 ask``'s 2.3 s model load on a 2-core machine, where the ``tokenizers`` package and
``jinja2`` import in ~0.04 s. :class:`JsonTokenizer` is the folder's ``tokenizers.Tokenizer`` with the little of
``TokenizersBackend`` that ragr1 uses, done as transformers does it:

- ``tokenizer(text, add_special_tokens=..., split_special_tokens=...)``: the backend's ``encode`` with
  ``encode_special_tokens`` set for the call, truncation and padding set for the call (``padding=True``,
  ``truncation=True``, ``max_length``, ``return_tensors="pt"``: what the query embedder asks);
- ``apply_chat_template(messages, tokenize=False, add_generation_prompt=...)``: the template (``chat_template.jinja``
  before ``tokenizer_config.json``'s ``chat_template``) rendered in transformers' sandboxed Jinja environment
  (``trim_blocks``, ``lstrip_blocks``, loop controls, its ``tojson``, ``raise_exception``, ``strftime_now``,
  ``dict`` and ``namespace``) with the named special tokens (``bos_token``, ``eos_token``, ...) as variables;
- ``decode`` without the clean-up of spaces, the special tokens and their ids, ``added_tokens_decoder``, ``len``.

:func:`json_tokenizer_unsupported` accepts only folders where that is all transformers would do: a
``tokenizer_config.json`` of known keys whose named special tokens are already special tokens of ``tokenizer.json``
(transformers would add them otherwise), one chat template, no ``{% generation %}`` tag, a vocabulary of at most
100,000 tokens (transformers patches the pre-tokenizer of some larger ones). Other folders keep transformers'
tokenizer. The tests compare the ids, texts and special tokens with ``AutoTokenizer``'s on the shipped models.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from langchain_ragr1.paths import read_json_object

__all__ = ["JsonTokenizer", "as_transformers_tokenizer", "json_tokenizer_unsupported", "load_json_tokenizer"]

#: transformers' named special tokens, in its order (``SPECIAL_TOKENS_ATTRIBUTES``: ``all_special_ids`` follows it).
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
#: ``tokenizer_config.json`` keys that change nothing transformers does with a ``tokenizer.json``: bookkeeping, the
#: length limit, ``add_bos_token``/``add_eos_token`` (dropped when a tokenizer.json exists) and a slow BERT
#: tokenizer's settings (the tokenizer.json's normalizer and pre-tokenizer hold them).
_PLAIN_KEYS = frozenset({
    "backend", "tokenizer_class", "is_local", "local_files_only", "name_or_path", "model_max_length",
    "clean_up_tokenization_spaces", "add_bos_token", "add_eos_token", "do_lower_case", "tokenize_chinese_chars",
    "strip_accents", "do_basic_tokenize", "never_split", "chat_template", "added_tokens_decoder", "padding_side",
    "truncation_side", *SPECIAL_TOKENS,
})
#: Tokenizer classes whose ``from_pretrained`` over a tokenizer.json builds what :class:`JsonTokenizer` builds.
CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast", "BertTokenizer", "BertTokenizerFast"})
_MAX_VOCAB = 100_000  # transformers' _patch_mistral_regex looks at larger vocabularies
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' names for a message's reasoning


def json_tokenizer_unsupported(path: str | Path) -> str | None:
    """Why :class:`JsonTokenizer` cannot load the folder ``path``'s tokenizer as transformers would, from its
    ``tokenizer_config.json`` and chat template files (:func:`load_json_tokenizer` checks the loaded
    ``tokenizer.json`` too), or ``None``."""
    path = Path(path)
    config = read_json_object(path / "tokenizer_config.json")
    if config is None:
        return "no readable tokenizer_config.json"
    if config.get("tokenizer_class") not in CLASSES:
        return f"tokenizer class {config.get('tokenizer_class')!r}"
    if not (path / "tokenizer.json").is_file():
        return "no tokenizer.json"
    odd = sorted(set(config) - _PLAIN_KEYS)
    if odd:
        return f"tokenizer_config.json sets {', '.join(odd)}"
    if (path / "chat_template.json").exists() or (path / "additional_chat_templates").exists():
        return "several chat templates"
    template = _template_text(path, config)
    if template is not None and not isinstance(template, str):
        return "several chat templates"
    if template is not None and re.search(r"\{%-?\s*generation\s*-?%\}", template):
        return "a chat template with {% generation %} blocks"
    for key in ("padding_side", "truncation_side"):
        if config.get(key, "right") != "right":
            return f"{key} {config[key]!r}"
    for key in SPECIAL_TOKENS:
        if config.get(key) is not None and not isinstance(config[key], str):
            return f"{key} is not a plain string"
    added = config.get("added_tokens_decoder") or {}
    if not isinstance(added, dict) or not all(str(i).isdigit() and isinstance(t, dict) for i, t in added.items()):
        return "an added_tokens_decoder that is not a map of ids to tokens"
    return None


def _backend_unsupported(tokenizer: "JsonTokenizer", config: dict[str, Any]) -> str | None:
    """Why the loaded ``tokenizer.json`` differs from what transformers would build from the folder, or ``None``."""
    backend = tokenizer.backend_tokenizer
    if backend.post_processor is None:
        return "tokenizer.json has no post-processor (transformers builds one)"
    if backend.get_vocab_size(with_added_tokens=False) > _MAX_VOCAB:
        return f"a vocabulary of {backend.get_vocab_size(with_added_tokens=False)} tokens"
    added = backend.get_added_tokens_decoder()
    special = {token.content for token in added.values() if token.special}
    for key, value in tokenizer.special_tokens_map.items():
        if value not in special:  # transformers adds it
            return f"{key} {value!r} is not a special token of tokenizer.json"
    for index, token in (config.get("added_tokens_decoder") or {}).items():
        known = added.get(int(index))
        if known is None or any(getattr(known, key, None) != value for key, value in token.items()):
            return f"added token {index} of tokenizer_config.json differs from tokenizer.json's"
    return None


def _template_text(path: Path, config: dict[str, Any]) -> Any:
    """The folder's chat template as transformers reads it: ``chat_template.jinja`` first, else the config's."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    return config.get("chat_template")


def load_json_tokenizer(path: str | Path, *, model_input_names: Sequence[str] = ("input_ids", "attention_mask")
                        ) -> tuple["JsonTokenizer | None", str | None]:
    """``(the folder's JsonTokenizer, None)``, or ``(None, why not)`` for a folder whose tokenizer transformers
    would build otherwise."""
    why = json_tokenizer_unsupported(path)
    if why is not None:
        return None, why
    tokenizer = JsonTokenizer(path, model_input_names=model_input_names)
    why = _backend_unsupported(tokenizer, read_json_object(Path(path) / "tokenizer_config.json") or {})
    return (None, why) if why is not None else (tokenizer, None)


class Encoded(dict):
    """What ``JsonTokenizer(...)`` returns: transformers' ``BatchEncoding`` as far as ragr1 reads it (the keys, and
    ``to(device)`` for tensors)."""

    def to(self, device: Any) -> "Encoded":
        return Encoded({key: value.to(device) if hasattr(value, "to") else value for key, value in self.items()})


class JsonTokenizer:
    """A folder's ``tokenizer.json`` and ``tokenizer_config.json`` (see the module docstring); build it with
    :func:`load_json_tokenizer`, which checks the folder first. Encoding calls are serialised by a lock (each sets
    the backend's special-token, truncation and padding state for itself, as transformers does)."""

    def __init__(self, path: str | Path, *, model_input_names: Sequence[str] = ("input_ids", "attention_mask")) -> None:
        from tokenizers import Tokenizer

        self.path = Path(path)
        config = read_json_object(self.path / "tokenizer_config.json") or {}
        self.backend_tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.model_input_names = list(model_input_names)
        self.model_max_length = int(config.get("model_max_length", 1 << 60))
        self.chat_template: str | None = _template_text(self.path, config)
        self._special = {key: config[key] for key in SPECIAL_TOKENS if config.get(key) is not None}
        self._lock = threading.Lock()
        self._template: tuple[str, Any] | None = None
        self._transformers: Any = None

    # --- special tokens -------------------------------------------------------------------

    def _token(self, key: str) -> str | None:
        return self._special.get(key)

    def _id(self, key: str) -> int | None:
        token = self._special.get(key)
        return None if token is None else self.convert_tokens_to_ids(token)

    bos_token = property(lambda self: self._token("bos_token"))
    eos_token = property(lambda self: self._token("eos_token"))
    unk_token = property(lambda self: self._token("unk_token"))
    bos_token_id = property(lambda self: self._id("bos_token"))
    eos_token_id = property(lambda self: self._id("eos_token"))
    unk_token_id = property(lambda self: self._id("unk_token"))
    pad_token_id = property(lambda self: self._id("pad_token"))

    @property
    def pad_token(self) -> str | None:
        return self._token("pad_token")

    @pad_token.setter
    def pad_token(self, value: str | None) -> None:
        if value is None:
            self._special.pop("pad_token", None)
        else:
            self._special["pad_token"] = str(value)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens (``bos_token``, ...), as the chat template sees them."""
        return {key: self._special[key] for key in SPECIAL_TOKENS if key in self._special}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self.special_tokens_map.values()))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(token) for token in self.all_special_tokens]

    @property
    def added_tokens_decoder(self) -> dict[int, Any]:
        return self.backend_tokenizer.get_added_tokens_decoder()

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        """A token's id (the unknown token's id for one not in the vocabulary), or a list of them."""
        if isinstance(tokens, str):
            index = self.backend_tokenizer.token_to_id(tokens)
            return index if index is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> Any:
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(int(index)) for index in ids]

    # --- text <-> ids ---------------------------------------------------------------------

    def __call__(self, text: str | Sequence[str], *, add_special_tokens: bool = True,
                 split_special_tokens: bool = False, padding: bool = False, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> Encoded:
        """Encode one text (lists of ids) or a batch of texts (a list of lists, or tensors with
        ``return_tensors="pt"``): the keys of ``model_input_names``. ``padding=True`` pads to the longest text of
        the batch (on the right, with the pad token); ``truncation=True`` cuts each to ``max_length`` tokens
        (default ``model_max_length``)."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}: only 'pt' (or None)")
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        backend = self.backend_tokenizer
        with self._lock:
            backend.encode_special_tokens = split_special_tokens
            if truncation:
                backend.enable_truncation(max_length=max_length or self.model_max_length, stride=0,
                                          strategy="longest_first", direction="right")
            else:
                backend.no_truncation()
            if padding:
                pad = self.pad_token
                if pad is None:
                    raise ValueError("padding=True needs a pad token")
                backend.enable_padding(direction="right", pad_id=self.convert_tokens_to_ids(pad), pad_type_id=0,
                                       pad_token=pad, length=None, pad_to_multiple_of=None)
            else:
                backend.no_padding()
            if batched:  # transformers' call: padding=True pads the batch to its longest text
                encodings = backend.encode_batch(texts, add_special_tokens=add_special_tokens)
            else:
                encodings = [backend.encode(texts[0], add_special_tokens=add_special_tokens)]
        fields = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}
        out = Encoded({name: [getattr(e, fields[name]) for e in encodings]
                       for name in ("input_ids", "token_type_ids", "attention_mask")
                       if name == "input_ids" or name in self.model_input_names})
        if return_tensors == "pt":
            import torch

            return Encoded({key: torch.tensor(value) for key, value in out.items()})
        return out if batched else Encoded({key: value[0] for key, value in out.items()})

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = False) -> str:
        """The text of ``token_ids`` (transformers' ``decode``; the clean-up of spaces is not done here)."""
        if clean_up_tokenization_spaces:
            raise ValueError("JsonTokenizer.decode does not clean up tokenization spaces")
        return self.backend_tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    # --- the chat template ----------------------------------------------------------------

    def apply_chat_template(self, conversation: Sequence[dict[str, Any]], *, tokenize: bool = True,
                            add_generation_prompt: bool = False) -> str:
        """The chat template's text for one conversation of plain messages (string fields), as transformers'
        ``apply_chat_template(..., tokenize=False)`` renders it; ragr1 encodes that text itself."""
        if tokenize:
            raise ValueError("JsonTokenizer.apply_chat_template renders text only: pass tokenize=False")
        if not self.chat_template:
            raise ValueError("the tokenizer has no chat template")
        messages = []
        for message in conversation:
            if not isinstance(message, dict) or not all(isinstance(v, str) or v is None for v in message.values()):
                raise TypeError(f"a chat message is a dict of strings, not {message!r}")
            message = {key: value for key, value in message.items() if value is not None}
            reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            messages.append(message)
        if not messages:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        if self._template is None or self._template[0] != self.chat_template:  # compiled once per template text
            self._template = (self.chat_template, _compile(self.chat_template))
        return self._template[1].render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt, **self.special_tokens_map)

    def transformers(self) -> Any:
        """transformers' ``TokenizersBackend`` of the same folder (loaded on the first call): what
        ``model.generate``'s stop strings need."""
        if self._transformers is None:
            from transformers.tokenization_utils_tokenizers import TokenizersBackend

            tokenizer = TokenizersBackend.from_pretrained(self.path, model_input_names=self.model_input_names)
            tokenizer.pad_token = self.pad_token
            self._transformers = tokenizer
        return self._transformers


def as_transformers_tokenizer(tokenizer: Any) -> Any:
    """transformers' tokenizer for ``tokenizer`` (itself unless it is a :class:`JsonTokenizer`)."""
    return tokenizer.transformers() if isinstance(tokenizer, JsonTokenizer) else tokenizer


def _compile(template: str) -> Any:
    """``template`` in transformers' chat-template environment (``_cached_compile_jinja_template``)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    class TemplateDict:
        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's signature trick: namespace(self=...) works
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}.")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=TemplateDict(),
                       namespace=TemplateNamespace)
    return env.from_string(template)
