"""What makes LoRA SFT on a CPU cheaper without changing what is learned (``sft_fast``).

Three levers, each a script argument of :class:`~langchain_ragr1.tuning.args.SFTScriptArguments`
(``benchmarks/bench_sft.py`` measures them):

``lora_layers: K``
    LoRA only on the top ``K`` decoder layers (PEFT's ``layers_to_transform``): nothing below them
    needs a gradient, so autograd stops at layer ``N - K``.
``cache_frozen_layers: true``
    With ``lora_layers``, the frozen lower layers never change, so the hidden states entering
    layer ``N - K`` are computed once per distinct sample (:class:`FrozenLayerCache`, on disk
    under ``output_dir/frozen_cache``: reused across epochs and after a resume, rebuilt when the
    model, the cut or the data differ) and fed to the model as ``inputs_embeds``; the lower layers
    are replaced by pass-throughs (:func:`pass_through_class`) (the list keeps its length, so adapter names such as
    ``layers.22.self_attn.q_proj.lora_A`` and the saved adapter are those of the full model).
``lm_head_on_labels: true``
    The LM head (576 x 49,152 for SmolLM2: as costly as ~8 decoder layers per position) only on
    the positions whose next token is labelled (~12% of a trajectory), through the model's own
    ``logits_to_keep``; the loss is TRL's (summed cross-entropy / ``num_items_in_batch``) and so
    are the logged ``entropy`` and ``mean_token_accuracy`` (both are means over labelled
    positions, which are the only ones scored).

TRL 1.16's ``SFTTrainer`` scores every position on a CPU (its fused head is compact only with
Triton) and adds a full-vocabulary entropy on each; :func:`fast_trainer_class` replaces just
``compute_loss``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.paths import atomic_write_text

logger = logging.getLogger(__name__)

CACHE_DIR = "frozen_cache"
_CACHE_VERSION = 1
#: A cache build records how far it got this often (a killed build goes on from there).
_FLUSH_SECONDS = 60.0


def _read_partial(path: Path, signature: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a build cut short, if it is for ``signature`` (else None: start afresh)."""
    try:
        partial = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    states = path.parent / "states.bin"
    if partial.get("signature") != signature or not states.is_file():
        return None
    itemsize = 2 if partial.get("dtype") in ("bfloat16", "float16") else 4
    if states.stat().st_size < partial["offset"] * partial["hidden"] * itemsize:
        return None  # the states file lost what the record says it holds
    return partial


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder layers of a causal LM (PEFT-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ConfigError(f"SFT: lora_layers/cache_frozen_layers need a decoder with a .layers list; "
                          f"{type(base).__name__} has none (set lora_layers: 0)")
    return layers


def top_layers(model: Any, k: int) -> list[int]:
    """The indices of the top ``k`` decoder layers, or a :class:`ConfigError` naming ``lora_layers``."""
    n = len(decoder_layers(model))
    if not 0 < k <= n:
        raise ConfigError(f"SFT: lora_layers must be between 1 and the model's {n} decoder layers (0: all); got {k}")
    return list(range(n - k, n))


@functools.cache
def pass_through_class() -> type:
    """``PassThrough``: a decoder layer whose output is cached, returning the hidden states it is given
    (made on first use: torch is imported lazily)."""
    import torch

    class PassThrough(torch.nn.Module):
        def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            return hidden_states

    return PassThrough


def drop_frozen_layers(model: Any, first_kept: int) -> None:
    """Replace decoder layers ``0 .. first_kept - 1`` by pass-throughs (the cache feeds their output)."""
    PassThrough = pass_through_class()
    layers = decoder_layers(model)
    for i in range(first_kept):
        if any(p.requires_grad for p in layers[i].parameters()):
            raise ConfigError(f"SFT: decoder layer {i} has trainable parameters; only layers below the "
                              f"lora_layers can be cached")
        layers[i] = PassThrough()


def sample_key(ids: Iterable[int]) -> str:
    """The cache key of a sample: a hash of its token ids."""
    import numpy as np

    return hashlib.sha1(np.asarray(list(ids), dtype=np.int64).tobytes()).hexdigest()


class _Stop(Exception):
    pass


def _grabber(captured: list[Any]) -> Any:
    """A forward pre-hook that records the hidden states entering its layer, then stops the forward."""
    def grab(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    return grab


def _layer_input(model: Any, ids: list[int], autocast: Any, captured: list[Any]) -> Any:
    """The hidden states entering the hooked layer for one sample, on the CPU."""
    import torch

    captured.clear()
    tokens = torch.tensor([ids], dtype=torch.long, device=model.device)
    with autocast():
        try:
            model(input_ids=tokens, attention_mask=torch.ones_like(tokens), use_cache=False)
        except _Stop:
            pass
    return captured[0][0].detach().cpu()


class FrozenLayerCache:
    """The hidden states entering decoder layer ``layer`` for each distinct sample, in one
    memory-mapped file (``states.bin``) with ``index.json`` {key: [offset, length]} and a
    signature of model, layer, precision and data; :meth:`lookup` gives a batch of them."""

    def __init__(self, folder: Path, index: dict[str, list[int]], hidden: int, dtype: Any) -> None:
        import numpy as np

        self.folder, self.index, self.hidden, self.dtype = folder, index, hidden, dtype
        total = sum(length for _, length in index.values())
        self._states = np.memmap(folder / "states.bin", dtype=np.int16 if dtype.itemsize == 2 else np.float32,
                                 mode="r", shape=(max(total, 1), hidden))

    @classmethod
    def build(cls, model: Any, samples: list[list[int]], layer: int, folder: Path, *,
              signature: dict[str, Any], autocast: Any) -> tuple[FrozenLayerCache, bool]:
        """The cache of ``samples`` (token id lists) at ``layer``: reused from ``folder`` when its
        signature matches, else (re)built by running the model up to ``layer`` under ``autocast``
        (a context-manager factory: the training step's own) in eval mode: dropout in the frozen layers,
        if a model had any (SmolLM2 and Gemma 3 have none), is off in the cache. Returns ``(cache, built)``."""
        import numpy as np
        import torch

        keys = {sample_key(ids): ids for ids in samples}
        signature = {**signature, "version": _CACHE_VERSION, "layer": layer,
                     "data": hashlib.sha1("".join(sorted(keys)).encode()).hexdigest()}
        meta_path, partial_path = folder / "meta.json", folder / "partial.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("signature") == signature:
                logger.info("Frozen-layer cache reused: %s", folder)
                return cls(folder, meta["index"], meta["hidden"], getattr(torch, meta["dtype"])), False
            logger.warning("Frozen-layer cache in %s is for other settings or data: rebuilding it", folder)
        index: dict[str, list[int]] = {}
        offset, hidden, dtype = 0, 0, None
        partial = _read_partial(partial_path, signature)
        if partial is not None:  # a build cut short (a killed run): go on from its last flush
            index, offset, hidden = partial["index"], partial["offset"], partial["hidden"]
            dtype = getattr(torch, partial["dtype"])
            logger.warning("Frozen-layer cache: resuming the build in %s at %d of %d samples",
                           folder, len(index), len(keys))
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        captured: list[Any] = []
        def flush(out: Any) -> None:
            out.flush()
            atomic_write_text(partial_path, json.dumps({"signature": signature, "index": index, "offset": offset,
                                                        "hidden": hidden, "dtype": str(dtype).split(".")[-1]}))

        todo = [(key, ids) for key, ids in keys.items() if key not in index]
        handle = decoder_layers(model)[layer].register_forward_pre_hook(_grabber(captured), with_kwargs=True)
        was_training = model.training
        model.eval()
        start = last_flush = time.monotonic()
        try:
            with open(folder / "states.bin", "r+b" if partial is not None else "wb") as out, torch.no_grad():
                out.truncate(offset * hidden * (dtype.itemsize if dtype is not None else 0))
                out.seek(0, 2)
                for done, (key, ids) in enumerate(todo, 1):
                    state = _layer_input(model, ids, autocast, captured)
                    hidden, dtype = state.shape[-1], state.dtype
                    raw = state.view(torch.int16) if state.element_size() == 2 else state.float()
                    out.write(raw.contiguous().numpy().tobytes())
                    index[key] = [offset, len(ids)]
                    offset += len(ids)
                    now = time.monotonic()
                    if now - last_flush >= _FLUSH_SECONDS or done == len(todo):
                        flush(out)
                        last_flush = now
                        rate = done / max(now - start, 1e-9)
                        logger.info("Frozen-layer cache: %d of %d samples (%d tokens), %.1f min, ~%.1f min left",
                                    len(index), len(keys), offset, (now - start) / 60,
                                    (len(todo) - done) / rate / 60)
        finally:
            handle.remove()
            model.train(was_training)
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ConfigError(f"SFT: cannot cache hidden states of dtype {dtype}")
        if offset == 0:
            np.zeros((1, hidden), dtype=np.int16).tofile(folder / "states.bin")
        meta = {"signature": signature, "index": index, "hidden": hidden, "dtype": str(dtype).split(".")[-1]}
        meta_path.write_text(json.dumps(meta), encoding="utf-8")  # written last: its presence means complete
        partial_path.unlink(missing_ok=True)
        return cls(folder, index, hidden, dtype), True

    def lookup(self, input_ids: Any, attention_mask: Any | None) -> Any:
        """The cached hidden states of a right-padded batch, ``(batch, seq, hidden)``, zeros on padding;
        a ``KeyError`` if a row is not a cached sample (never a silent recomputation)."""
        import torch

        batch, seq = input_ids.shape
        out = torch.zeros(batch, seq, self.hidden, dtype=self.dtype)
        for row in range(batch):
            n = int(attention_mask[row].sum()) if attention_mask is not None else seq
            key = sample_key(input_ids[row, :n].tolist())
            if key not in self.index:
                raise KeyError(f"sample of {n} tokens (row {row}) is not in the frozen-layer cache {self.folder}")
            offset, length = self.index[key]
            raw = torch.from_numpy(self._states[offset:offset + length].copy())
            out[row, :n] = raw.view(self.dtype) if self.dtype.itemsize == 2 else raw.to(self.dtype)
        return out.to(input_ids.device)


def fast_trainer_class(base: type) -> type:
    """``base`` (``trl.SFTTrainer``) whose ``compute_loss`` scores only labelled positions and feeds the
    cached hidden states when ``self.frozen_cache`` is set. Same loss and metrics as TRL's."""
    import torch
    import torch.nn.functional as F

    class FastSFTTrainer(base):
        frozen_cache: FrozenLayerCache | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                raise ValueError("lm_head_on_labels / cache_frozen_layers do not return the model's full outputs")
            mode = "train" if self.model.training else "eval"
            labels = inputs["labels"]
            next_labels = labels[:, 1:]
            keep = next_labels.ne(-100).any(dim=0).nonzero().squeeze(-1)  # positions whose next token is labelled
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward["use_cache"] = False
            if self.frozen_cache is not None:
                ids = forward.pop("input_ids")
                forward["inputs_embeds"] = self.frozen_cache.lookup(ids, inputs.get("attention_mask"))
            logits = model(**forward, logits_to_keep=keep).logits.float()
            targets = next_labels[:, keep]
            per_token = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
            valid = targets.ne(-100)
            num_tokens = valid.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():
                log_probs = logits[valid].log_softmax(-1)
                entropy = -(log_probs.exp() * log_probs).sum(-1).sum()
                correct = (logits[valid].argmax(-1) == targets[valid]).sum()
            gather = self.accelerator.gather_for_metrics
            num_valid = gather(valid.sum()).sum()
            entropy_sum, num_correct = gather(entropy).sum(), gather(correct).sum()
            self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(
                (num_correct / num_valid).item() if num_valid > 0 else 0.0)
            if mode == "train" and "attention_mask" in inputs:
                self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return FastSFTTrainer
