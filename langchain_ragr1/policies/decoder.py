"""A lean decoding engine for Llama-family causal LMs on CPU: the loop that ``FastPolicy`` runs.

Decoding a small model on a CPU is bound by reading its weights once per step and by the
per-operation overhead of a general forward pass. :class:`LlamaDecoder` keeps only what a
Llama block computes, on weights prepared once:

- the q/k/v projections fused into one matrix and gate/up into another (4 matrix products a
  layer instead of 7), in ``bfloat16`` (half the bytes of fp32; prepacked once into oneDNN's
  blocked layout, as torch.compile's freezing pass does, which reads them 1.5-2x faster than
  ``F.linear`` on plain bf16 here), ``float32``, or per-channel int8 for
  ``torch._weight_int8pack_mm`` (a quarter of the bytes);
- a key/value cache allocated once per batch and written in place (no ``torch.cat`` per step);
- a batch of prompts of different lengths prefilled row by row on each prompt's own tokens, into its row of the
  shared left-padded cache: the prefill computes the prompts' positions, not batch x the longest (RAG-R1 episodes
  in one batch range from 175 to 2,000 tokens, so left padding was about a third of the prefill's positions);
  rows of about the same length stay one padded pass (:data:`ROW_PREFILL_ABOVE`);
- optionally (a :class:`PrefixCache`), the keys and values of recent sequences kept for the next call: a prompt
  is prefilled from the end of its longest common prefix with one of them (an episode's next turn starts with
  its previous prompt and turn; every RAG-R1 prompt starts with the same instructions);
- grouped-query attention without repeating keys and values (the query heads of a group are
  folded into the query length);
- logits of the last position only during the prefill, and rows that finished dropped from the
  batch so later steps compute only the live ones;
- at batch 1, optionally, prompt-lookup speculative decoding (``prompt_lookup_num_tokens``): a draft of
  up to K tokens copied from the row's own context (what followed the most recent earlier occurrence of
  its last n tokens) is verified in one forward pass over 1 + K positions, which reads the weights once
  like a single step. Greedy keeps the argmax tokens; sampling keeps the exact distribution
  (:meth:`Sampler.verify`). The static KV cache makes a rejection free: its columns are overwritten.

The arithmetic is transformers' own (same RMSNorm, rotary embedding and attention formula, same
dtype casts), so with the same weights and dtype the greedy tokens equal ``model.generate``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from langchain_ragr1.policies.weights import WEIGHT_KINDS

__all__ = ["MAX_NGRAM", "SUPPORTED_MODEL_TYPES", "DecodeResult", "LlamaDecoder", "NgramDrafter", "PrefixCache",
           "Sampler", "supports"]

#: Model types whose decoder block is Llama's (pre-norm RMSNorm, rotary q/k, SiLU-gated MLP).
SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "mistral", "qwen2")
#: Prompt positions a prefill forward pass takes at once (bounds the activations' memory).
PREFILL_CHUNK = 512
#: A batch is prefilled row by row (each prompt on its own tokens) when left padding would compute more than this
#: many times the positions the rows need: one pass over the padded batch computes more positions a second (bigger
#: matrix products), so it wins when the rows are about as long. Measured (SmolLM2-135M, bf16, 2 cores): 8 first
#: turns of 171-178 tokens 1.15 s padded vs 1.42 s row by row; 3 turns of 550-1,074 tokens 3.25 s vs 2.38 s.
ROW_PREFILL_ABOVE = 1.25
#: Prompt lookup: the longest suffix (in tokens) matched against the context; shorter ones down to 1 are tried next.
MAX_NGRAM = 3


def _causal_lm(model: Any) -> Any:
    """The transformers causal LM inside ``model`` (a peft ``PeftModel`` wraps it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports(model: Any) -> str | None:
    """``None`` when :class:`LlamaDecoder` can run ``model`` (or the causal LM a peft model wraps), else why not."""
    model = _causal_lm(model)
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        return f"model type {kind!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        return f"activation {act!r} is not silu"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope type {rope.get('rope_type')!r} is not the default"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    if any(p.device.type != "cpu" for p in model.parameters()):
        return "the model is not on the CPU"
    return None


#: Whether the packed product agreed with ``F.linear``, per weight shape ([out, in], bf16) checked in this process.
#: What the check catches (a torch whose oneDNN kernel or blocked layout is wrong for a shape) does not depend on the
#: values, so one check serves every matrix of a shape: SmolLM2 has 5 shapes in 121 matrices, and each check
#: converts its matrix to fp32 (about half the decoder's build time when every matrix was checked).
_PACKED_SHAPE_AGREES: dict[tuple[int, ...], bool] = {}


def _packed_agrees(weight: torch.Tensor, packed: torch.Tensor) -> bool:
    """Whether oneDNN's product with ``packed`` equals ``F.linear`` with ``weight`` up to bf16 rounding, on a probe."""
    probe = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    got = torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "").float()
    want = F.linear(probe.float(), weight.float())
    return bool(torch.allclose(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().max())))


def _onednn_pack(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (bf16 [out, in]) in oneDNN's prepacked layout, or ``None`` where this torch has no
    oneDNN or the packed product disagrees with ``F.linear`` beyond bf16 rounding (checked once per shape)."""
    shape = tuple(weight.shape)
    if _PACKED_SHAPE_AGREES.get(shape) is False:
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        if shape not in _PACKED_SHAPE_AGREES:
            _PACKED_SHAPE_AGREES[shape] = _packed_agrees(weight, packed)
    except (AttributeError, RuntimeError, NotImplementedError):
        return None
    return packed if _PACKED_SHAPE_AGREES[shape] else None


def _weight(linear: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias that ``linear`` applies: a plain ``nn.Linear``'s, or for a peft LoRA layer
    its base weight plus the active adapters' deltas (unless they are merged in already)."""
    base = getattr(linear, "base_layer", None)
    if base is None or not hasattr(linear, "get_delta_weight"):
        return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
    weight = base.weight.detach()
    if not getattr(linear, "merged", False) and not getattr(linear, "disable_adapters", False):
        for name in linear.active_adapters:
            if name in linear.lora_A:
                weight = weight + linear.get_delta_weight(name).detach().to(weight.dtype)
    return weight, None if base.bias is None else base.bias.detach()


#: Weights per int4 group (one scale and one zero point each): GGUF Q4_1's block, the bundled model's format.
INT4_GROUP = 32


def _int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] as asymmetric 4-bit groups of :data:`INT4_GROUP` along ``in`` (GGUF Q4_1's
    scheme: w = min + q x (max - min) / 15), packed for ``torch._weight_int4pack_mm_for_cpu`` (which
    computes (q - 8) x scale + zero)."""
    out, inner = weight.shape
    groups = weight.view(out, inner // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp_min(1e-12)
    q = torch.round((groups - low) / scale).clamp(0, 15).to(torch.int32).view(out, inner)
    zero = low + 8 * scale
    scales = torch.stack([scale.squeeze(-1).t(), zero.squeeze(-1).t()], -1).contiguous().to(torch.bfloat16)
    return torch._convert_weight_to_int4pack_for_cpu(q, 1), scales


@dataclass
class _Linear:
    """One weight matrix as the engine multiplies it: dense (bf16/fp32), bf16 prepacked for oneDNN
    (``packed``), or int8 with per-row scales (``scale``)."""

    weight: torch.Tensor
    scale: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    packed: torch.Tensor | None = None
    #: int4: the packed 4-bit weight and its [groups, out, 2] scales and zero points
    int4: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def of(cls, linears: Sequence[Any], kind: str, dtype: torch.dtype) -> "_Linear":
        """``linears`` (``nn.Linear`` or peft LoRA layers with the same input) as one matrix."""
        weights, biases = zip(*(_weight(linear) for linear in linears))
        w = torch.cat(weights, 0) if len(weights) > 1 else weights[0]
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat([b.detach() if b is not None else torch.zeros(t.shape[0], dtype=t.dtype)
                              for t, b in zip(weights, biases)]).to(dtype)
        if kind == "bfloat16":
            w = w.to(dtype).contiguous()
            packed = _onednn_pack(w)
            # packed: the plain copy is not needed, a meta tensor keeps its shape for the byte counts
            return cls(w if packed is None else w.to("meta"), None, bias, packed)
        if kind == "int4" and w.shape[1] % INT4_GROUP == 0:
            return cls(w.to("meta", torch.bfloat16), None, bias, None, _int4(w.float()))
        if kind not in ("int8", "int4"):  # (an int4 matrix whose width is not a multiple of the group: int8)
            return cls(w.to(dtype).contiguous(), None, bias)
        w = w.float()
        scale = (w.abs().amax(1) / 127.0).clamp_min(1e-12)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        return cls(q, scale.to(dtype), bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.int4 is not None:
            y = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]), self.int4[0], INT4_GROUP, self.int4[1])
            y = y.reshape(*shape[:-1], y.shape[-1])
            if self.bias is not None:
                y = y + self.bias
        elif self.packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed, self.bias, "none", [], "")
            y = y.reshape(*shape[:-1], y.shape[-1])
        elif self.scale is None:
            y = F.linear(x, self.weight, self.bias)
        else:
            y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight, self.scale)
            y = y.reshape(*shape[:-1], y.shape[-1])
            if self.bias is not None:
                y = y + self.bias
        return y

    @property
    def nbytes(self) -> int:
        if self.int4 is not None:
            return self.weight.numel() // 2 + self.int4[1].numel() * 2
        return sum(t.numel() * t.element_size() for t in (self.weight, self.scale, self.bias) if t is not None)


@dataclass
class _Layer:
    norm1: torch.Tensor
    qkv: _Linear
    o: _Linear
    norm2: torch.Tensor
    gate_up: _Linear
    down: _Linear


@dataclass
class Sampler:
    """Temperature then top-p sampling (transformers' order), as ``generate``'s ``pick``; its :meth:`probs` gives
    prompt lookup the processed distribution that :meth:`verify` needs to keep the output distribution exact."""

    temperature: float = 1.0
    top_p: float = 1.0
    generator: torch.Generator | None = None

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` [rows, vocab] divided by the temperature, outside the top-p nucleus set to -inf."""
        scores = logits / self.temperature
        if self.top_p < 1.0:
            # the smallest set whose mass reaches top_p
            ordered, index = torch.sort(scores, descending=False)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= (1 - self.top_p)
            drop[:, -1] = False
            scores = scores.masked_fill(drop.scatter(1, index, drop), float("-inf"))
        return scores

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution [rows, vocab] that :meth:`__call__` samples from."""
        return self.scores(logits).softmax(dim=-1)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(self.probs(logits), 1, generator=self.generator).squeeze(1)

    def verify(self, probs: torch.Tensor, draft: int) -> int:
        """A token drawn from ``probs`` [vocab] given a point-mass ``draft``: ``draft`` with probability
        ``probs[draft]``, else one from :func:`residual` (``probs`` without ``draft``). Its distribution is
        ``probs`` exactly: p(d) x 1 + (1 - p(d)) x 0 for d, (1 - p(d)) x p(x) / (1 - p(d)) = p(x) for x != d."""
        if float(torch.rand((), generator=self.generator)) < float(probs[draft]):
            return draft
        rest = residual(probs, draft)
        if rest is None:  # p(d) = 1 up to rounding
            return draft
        return int(torch.multinomial(rest, 1, generator=self.generator))


def residual(probs: torch.Tensor, draft: int) -> torch.Tensor | None:
    """``probs`` [vocab] with ``draft`` removed and renormalised (``None`` when nothing else has mass)."""
    rest = probs.clone()
    rest[draft] = 0
    total = float(rest.sum())
    return rest / total if total > 0 else None


class NgramDrafter:
    """Drafts from a row's own context (prompt + tokens so far): the tokens that followed the most recent earlier
    occurrence of its last n tokens, n from ``max_ngram`` down to 1. An index per n keeps each n-gram's latest
    occurrence that has a continuation, so a draft costs a few dict look-ups, not a scan of the context. A
    continuation shorter than the draft (the match overlaps the suffix: a loop) is repeated with its period."""

    def __init__(self, context: Sequence[int], max_ngram: int = MAX_NGRAM) -> None:
        self.max_ngram = max_ngram
        self.tokens: list[int] = []
        self.index: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_ngram + 1)]
        self.extend(context)

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            end = len(self.tokens)  # the n-grams ending here now have a continuation: ``token``
            for n in range(1, min(self.max_ngram, end) + 1):
                self.index[n][tuple(self.tokens[end - n : end])] = end
            self.tokens.append(token)

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens to verify (none when no suffix of the context occurred before)."""
        if k <= 0:
            return []
        length = len(self.tokens)
        for n in range(min(self.max_ngram, length - 1), 0, -1):
            start = self.index[n].get(tuple(self.tokens[length - n :]))
            if start is not None:
                # a continuation that runs into the suffix itself repeats with its period (a loop goes on looping)
                period = length - start
                return [self.tokens[start + i % period] for i in range(k)]
        return []


@dataclass
class _Prefix:
    tokens: list[int]
    #: per layer, the keys and values of ``tokens`` [kv_heads, len, head_dim]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class PrefixCache:
    """The keys and values of the last ``capacity`` sequences :meth:`LlamaDecoder.generate` decoded (each prompt +
    its tokens but the last, whose keys were never computed), least recently used dropped first. A prompt then
    reuses those of its longest common prefix with one of them and is prefilled from there: keys and values at a
    position depend on the tokens up to it only, so the reused columns are those a prefill would compute (up to
    the rounding of a product over a different number of positions). A sequence that extends a stored one
    replaces it. Memory: 2 x layers x kv_heads x head_dim numbers per token (SmolLM2-135M in bf16: 23 KB)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: list[_Prefix] = []
        #: prompt positions taken from here instead of computed, over this cache's life
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, prompt: Sequence[int]) -> tuple[int, _Prefix | None]:
        """The longest common prefix of ``prompt`` with a stored sequence, at most ``len(prompt) - 1`` tokens
        (the last prompt position is computed: it gives the first logits), and that sequence (marked used)."""
        best, found = 0, None
        for entry in self._entries:
            n = _common_prefix(entry.tokens, prompt, len(prompt) - 1)
            if n > best:
                best, found = n, entry
        if found is not None:
            self._entries.remove(found)
            self._entries.append(found)
        return best, found

    def store(self, tokens: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        if self.capacity <= 0 or not tokens:
            return
        self._entries = [e for e in self._entries
                         if not (len(e.tokens) <= len(tokens) and _common_prefix(e.tokens, tokens) == len(e.tokens))]
        self._entries.append(_Prefix(tokens, keys, values))
        del self._entries[: max(0, len(self._entries) - self.capacity)]


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int | None = None) -> int:
    n = min(len(a), len(b)) if limit is None else min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class DecodeResult:
    """What one row of a batch generated: token ids and the log-prob of each under the raw logits."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    #: ``"eos"`` (an end id, which is kept as the last token), ``"stop"`` (``should_stop`` said so) or ``"length"``.
    finish_reason: str = "length"
    #: forward passes after the prefill that produced this row's tokens (each verifies a draft or takes one step)
    forwards: int = 0


class LlamaDecoder:
    """Batched prefill + decode over a Llama-family ``model``'s weights (see the module docstring).

    ``weights`` is ``"bfloat16"`` (default), ``"float32"``, ``"int8"`` (weight-only, per output
    channel; activations in bf16) or ``"int4"`` (weight-only, asymmetric groups of 32 like GGUF Q4_1).
    The model itself is left as it is: the engine holds its own copy.
    """

    def __init__(self, model: Any, *, weights: str = "bfloat16") -> None:
        reason = supports(model)
        if reason is not None:
            raise ValueError(f"LlamaDecoder cannot run this model: {reason}")
        model = _causal_lm(model)
        inner = model.model
        rotary = inner.rotary_emb
        self._assemble(model.config, inner.layers, inner.embed_tokens.weight, inner.norm.weight, model.lm_head,
                       rotary.inv_freq, float(getattr(rotary, "attention_scaling", 1.0)), weights)

    @classmethod
    def from_tensors(cls, config: Any, tensors: dict[str, torch.Tensor], *, weights: str = "bfloat16") -> "LlamaDecoder":
        """The engine over a Llama checkpoint's tensors (``model.layers.0.self_attn.q_proj.weight``, ...: the
        names in its ``model.safetensors``, in the dtype the transformers model would hold them), without building
        that model: ``config`` has the attributes this engine reads (``num_attention_heads``,
        ``num_key_value_heads``, ``head_dim``, ``rms_norm_eps``, ``max_position_embeddings``, ``rope_theta``).
        The rotary frequencies are transformers' default RoPE's; a tied head (no ``lm_head.weight``) is the
        embedding. :mod:`langchain_ragr1.policies.direct` checks a folder before calling this."""
        def linear(name: str) -> SimpleNamespace:
            return SimpleNamespace(weight=tensors[f"{name}.weight"], bias=None)

        blocks = []
        for i in range(config.num_hidden_layers):
            at = f"model.layers.{i}"
            blocks.append(SimpleNamespace(
                self_attn=SimpleNamespace(**{p: linear(f"{at}.self_attn.{p}") for p in ("q_proj", "k_proj", "v_proj", "o_proj")}),
                mlp=SimpleNamespace(**{p: linear(f"{at}.mlp.{p}") for p in ("gate_proj", "up_proj", "down_proj")}),
                input_layernorm=linear(f"{at}.input_layernorm"),
                post_attention_layernorm=linear(f"{at}.post_attention_layernorm"),
            ))
        embed = tensors["model.embed_tokens.weight"]
        head = SimpleNamespace(weight=tensors.get("lm_head.weight", embed), bias=None)
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # transformers' LlamaRotaryEmbedding.compute_default_rope_parameters
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        decoder = cls.__new__(cls)
        decoder._assemble(config, blocks, embed, tensors["model.norm.weight"], head, inv_freq, 1.0, weights)
        return decoder

    def _assemble(self, config: Any, blocks: Sequence[Any], embed: torch.Tensor, norm: torch.Tensor, lm_head: Any,
                  inv_freq: torch.Tensor, rope_scale: float, weights: str) -> None:
        if weights not in WEIGHT_KINDS:
            raise ValueError(f"weights={weights!r}: use one of {', '.join(WEIGHT_KINDS)}")
        self.weights = weights
        self.dtype = torch.float32 if weights == "float32" else torch.bfloat16
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim ** -0.5
        dt = self.dtype
        self.layers: list[_Layer] = []
        for block in blocks:
            attn, mlp = block.self_attn, block.mlp
            self.layers.append(_Layer(
                norm1=block.input_layernorm.weight.detach().to(dt),
                qkv=_Linear.of([attn.q_proj, attn.k_proj, attn.v_proj], weights, dt),
                o=_Linear.of([attn.o_proj], weights, dt),
                norm2=block.post_attention_layernorm.weight.detach().to(dt),
                gate_up=_Linear.of([mlp.gate_proj, mlp.up_proj], weights, dt),
                down=_Linear.of([mlp.down_proj], weights, dt),
            ))
        self.embed = embed.detach().to(dt)
        self.norm = norm.detach().to(dt)
        self.head = _Linear.of([lm_head], weights, dt)
        self.inv_freq = inv_freq.detach().float()
        self.rope_scale = rope_scale
        self.max_positions = config.max_position_embeddings
        self._cos, self._sin = self._rope_table(min(self.max_positions, 4096))

    # --- sizes (for the benchmark's roofline) -------------------------------------------------

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights one decode step reads (every matrix and norm once; the embedding
        lookup reads a row per token)."""
        mats = [m for layer in self.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        norms = sum(t.numel() * t.element_size() for layer in self.layers for t in (layer.norm1, layer.norm2))
        return sum(m.nbytes for m in mats) + self.head.nbytes + norms

    @property
    def matmul_params(self) -> int:
        """Multiply-adds of the matrix products per token (each is 2 FLOPs)."""
        mats = [m for layer in self.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        return sum(m.weight.numel() for m in mats) + self.head.weight.numel()

    # --- the forward pass ---------------------------------------------------------------------

    def _rope_table(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # transformers' LlamaRotaryEmbedding: fp32 freqs = position * inv_freq, emb = [freqs, freqs]
        freqs = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.rope_scale, emb.sin() * self.rope_scale

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        need = int(positions.max()) + 1
        if need > self._cos.shape[0]:
            self._cos, self._sin = self._rope_table(max(need, 2 * self._cos.shape[0]))
        return self._cos[positions].to(self.dtype)[:, None], self._sin[positions].to(self.dtype)[:, None]

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.dtype != torch.float32:
            # one fused kernel (fp32 inside) instead of eight ops: bf16 rounds once, at its output
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        # transformers' LlamaRMSNorm, cast for cast: fp32 gives its numbers exactly
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return (x * cos) + (rotated * sin)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: "_Cache", start: int,
                 mask: torch.Tensor) -> torch.Tensor:
        """Hidden states of ``ids`` [B, T] at cache columns ``start .. start+T``; ``mask`` [B, 1, T, start+T]
        says which cached columns each query may see. Writes the new keys and values into ``cache``."""
        b, t = ids.shape
        g = self.heads // self.kv_heads
        d = self.head_dim
        end = start + t
        x = F.embedding(ids.reshape(-1), self.embed)  # [B*T, hidden]: the products take 2-d inputs as they are
        cos, sin = self._rope(positions)
        q_width, kv_width = self.heads * d, self.kv_heads * d
        # the mask as the additive bias SDPA turns a boolean mask into (0 / -inf), once per pass instead of once per
        # layer; the query heads of a group attend to the same keys: fold them into the query length
        bias = torch.zeros(mask.shape, dtype=self.dtype).masked_fill_(~mask, float("-inf"))
        group_bias = bias if g == 1 else bias.repeat(1, 1, g, 1)
        for i, layer in enumerate(self.layers):
            h = self._rms(x, layer.norm1)
            qk, v = layer.qkv(h).split((q_width + kv_width, kv_width), dim=-1)
            # q and k rotated together (elementwise: the same numbers as one at a time)
            qk = self._rotate(qk.view(b, t, self.heads + self.kv_heads, d).transpose(1, 2), cos, sin)
            q, k = qk.split((self.heads, self.kv_heads), dim=1)
            keys, values = cache.keys[i], cache.values[i]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v.view(b, t, self.kv_heads, d).transpose(1, 2)
            q = q.reshape(b, self.kv_heads, g * t, d)
            a = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=group_bias,
                                               scale=self.scaling)
            a = a.view(b, self.heads, t, d).transpose(1, 2).reshape(b * t, q_width)
            x = x + layer.o(a)
            h = self._rms(x, layer.norm2)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        return x.view(b, t, -1)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self._rms(hidden, self.norm)).float()

    # --- generation ---------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        end_ids: Sequence[int] = (),
        pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
        should_stop: Callable[[int, list[int]], bool] | None = None,
        on_first_token: Callable[[], None] | None = None,
        prompt_lookup_num_tokens: int = 0,
        prefixes: PrefixCache | None = None,
    ) -> list[DecodeResult]:
        """Continue each of ``prompts`` (token ids) by up to ``max_new_tokens`` tokens.

        ``pick(logits [rows, vocab] fp32) -> ids [rows]`` chooses each token (default: argmax, greedy);
        a row ends at an id in ``end_ids`` (kept) or when ``should_stop(its prompt's index, its tokens)`` is
        true (asked after each new token of the row).
        Log-probs are ``log_softmax`` of the raw logits at the chosen ids.

        ``prompt_lookup_num_tokens`` > 0 (one prompt only; more prompts decode as with 0): prompt-lookup
        speculative decoding with drafts of up to that many tokens (see :class:`NgramDrafter`), each verified
        in one forward pass. Greedy, the tokens are the argmax ones (in float32 those of 0 up to the rounding of
        a several-position product); with a ``pick`` that is a :class:`Sampler` the output distribution is
        exactly ``pick``'s; any other ``pick`` decodes as with 0.

        ``prefixes``: each prompt is prefilled from the end of its longest common prefix with a sequence there
        (its keys and values copied), and each decoded sequence is stored there for later calls.
        """
        lookup = (prompt_lookup_num_tokens > 0 and len(prompts) == 1 and max_new_tokens > 0
                  and (pick is None or isinstance(pick, Sampler)))
        n = len(prompts)
        width = max(map(len, prompts))
        pads = torch.tensor([width - len(p) for p in prompts])
        cache = _Cache.empty(len(self.layers), n, self.kv_heads, width + max_new_tokens, self.head_dim, self.dtype)
        ends = set(end_ids)
        pick = pick or (lambda logits: logits.argmax(-1))
        columns = torch.arange(width + max_new_tokens)
        valid = columns[None, :] >= pads[:, None]  # [B, S]: not padding

        reuse = [prefixes.match(p) if prefixes is not None and len(p) else (0, None) for p in prompts]
        computed = sum(len(p) - r for p, (r, _) in zip(prompts, reuse))  # positions the rows need
        if min(map(len, prompts)) > 0 and n * width > ROW_PREFILL_ABOVE * computed:
            hidden = self._prefill_rows(prompts, cache, reuse)
            if prefixes is not None:
                prefixes.reused_tokens += sum(r for r, _ in reuse)
        else:
            hidden = self._prefill_padded(prompts, cache)
        logits = self._logits(hidden)

        def store(row: int, prompt: Sequence[int], tokens: list[int], end: int) -> None:
            # the cache holds the keys of the prompt and of every token but the last one, up to column ``end``
            if prefixes is not None:
                start = end - len(prompt) - len(tokens) + 1
                prefixes.store(list(prompt) + tokens[:-1], [k[row, :, start:end].clone() for k in cache.keys],
                               [v[row, :, start:end].clone() for v in cache.values])

        if lookup:
            result = self._decode_lookup(list(prompts[0]), logits, cache, max_new_tokens, ends,
                                         pick if isinstance(pick, Sampler) else None, should_stop, on_first_token,
                                         prompt_lookup_num_tokens)
            if result.token_ids:
                store(0, prompts[0], result.token_ids, len(prompts[0]) + len(result.token_ids) - 1)
            return [result]

        results = [DecodeResult() for _ in range(n)]
        live = list(range(n))  # the batch row -> the prompt it continues
        pos = width - pads  # the next position of each live row
        col = width
        for step in range(max_new_tokens):
            chosen = pick(logits)
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None]).squeeze(1)
            if step == 0 and on_first_token is not None:
                on_first_token()
            keep = []
            for row, (token, lp) in enumerate(zip(chosen.tolist(), logprobs.tolist())):
                result = results[live[row]]
                result.token_ids.append(token)
                result.logprobs.append(lp)
                if token in ends:
                    result.finish_reason = "eos"
                elif should_stop is not None and should_stop(live[row], result.token_ids):
                    result.finish_reason = "stop"
                else:
                    keep.append(row)
            last = not keep or step == max_new_tokens - 1
            for row in range(len(live)):
                if last or row not in keep:
                    store(row, prompts[live[row]], results[live[row]].token_ids, col)
            if last:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep)
                cache = cache.select(index)
                valid, pos, chosen = valid[index], pos[index], chosen[index]
                live = [live[r] for r in keep]
            mask = valid[:, None, None, : col + 1]
            hidden = self._forward(chosen[:, None], pos[:, None], cache, col, mask)
            logits = self._logits(hidden[:, -1])
            for row in live:
                results[row].forwards += 1
            pos = pos + 1
            col += 1
        return results

    def _prefill_padded(self, prompts: Sequence[Sequence[int]], cache: "_Cache") -> torch.Tensor:
        """The prefill of ``prompts`` left-padded to the longest, in chunks over the whole batch: writes columns
        [0, width) of every row of ``cache`` (padding included) and returns each row's last hidden state [B, hidden]."""
        width = max(map(len, prompts))
        pads = torch.tensor([width - len(p) for p in prompts])
        ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
        columns = torch.arange(width)
        valid = columns[None, :] >= pads[:, None]  # [B, width]: not padding
        # the last chunk's last position gives the first logits
        hidden = None
        for start in range(0, width, PREFILL_CHUNK):
            end = min(width, start + PREFILL_CHUNK)
            cols = columns[start:end]
            causal = cols[:, None] >= columns[None, :end]  # [T, end]
            # a padding query sees itself only (a row with no key would give NaN)
            visible = valid[:, None, :end] | (cols[:, None] == columns[None, :end])[None]
            mask = (causal[None] & visible)[:, None]  # [B, 1, T, end]
            positions = (cols[None, :] - pads[:, None]).clamp_min(0)
            hidden = self._forward(ids[:, start:end], positions, cache, start, mask)
        assert hidden is not None
        return hidden[:, -1]

    def _prefill_rows(self, prompts: Sequence[Sequence[int]], cache: "_Cache",
                      reuse: Sequence[tuple[int, _Prefix | None]] = ()) -> torch.Tensor:
        """The prefill of each of ``prompts`` (none empty) on its own tokens only, in chunks: row r's keys and values
        go to columns [pad_r, width) of its row of the shared left-padded ``cache`` (through a view, so the decode
        steps see the same layout as after :meth:`_prefill_padded`), at positions 0 .. len-1 under a plain causal
        mask. Rows of very different lengths (RAG-R1 transcripts: 175 to 2,000 tokens) no longer compute the
        padding: the positions computed are the prompts' total, not B x width. Returns the last hidden states
        [B, hidden].

        The padding columns [0, pad_r) are zeroed, not computed: the cache is ``torch.empty``, and a NaN left there
        would poison attention even under the -inf bias (NaN + -inf = NaN; 0 x NaN = NaN).

        ``reuse``: per row, (n, a stored sequence whose first n tokens are the prompt's): the row's first n columns
        are copied from there, and its prefill starts after them."""
        width = max(map(len, prompts))
        last = []
        for r, prompt in enumerate(prompts):
            pad, length = width - len(prompt), len(prompt)
            for k, v in zip(cache.keys, cache.values):
                k[r, :, :pad].zero_()
                v[r, :, :pad].zero_()
            row = _Cache([k[r : r + 1, :, pad:] for k in cache.keys], [v[r : r + 1, :, pad:] for v in cache.values])
            reused, entry = reuse[r] if reuse else (0, None)
            if entry is not None:
                for i in range(len(self.layers)):
                    row.keys[i][0, :, :reused] = entry.keys[i][:, :reused]
                    row.values[i][0, :, :reused] = entry.values[i][:, :reused]
            ids = torch.tensor([list(prompt)], dtype=torch.long)
            columns = torch.arange(length)
            hidden = None
            for start in range(reused, length, PREFILL_CHUNK):
                end = min(length, start + PREFILL_CHUNK)
                cols = columns[start:end]
                mask = (cols[:, None] >= columns[None, :end])[None, None]  # [1, 1, T, end]: causal
                hidden = self._forward(ids[:, start:end], cols[None], row, start, mask)
            assert hidden is not None
            last.append(hidden[:, -1])
        return torch.cat(last)

    def _decode_lookup(
        self, prompt: list[int], logits: torch.Tensor, cache: "_Cache", max_new_tokens: int, ends: set[int],
        sampler: Sampler | None, should_stop: Callable[[int, list[int]], bool] | None,
        on_first_token: Callable[[], None] | None, num_tokens: int,
    ) -> DecodeResult:
        """One row's decoding after its prefill (``logits`` [1, vocab] of its last prompt position), with prompt
        lookup: each forward pass takes the last token and a draft, and yields 1 to 1 + len(draft) tokens."""
        result = DecodeResult()
        drafter = NgramDrafter(prompt)
        col = len(prompt)  # the cache column of the next forward pass's first id (the last token)
        draft: list[int] = []
        while True:
            # logits [1 + len(draft), vocab]: row j chooses the token after the last one and draft[:j]
            greedy = logits.argmax(-1).tolist() if sampler is None else []
            new: list[int] = []
            for j in range(logits.shape[0]):
                if sampler is None:
                    token = greedy[j]
                elif j < len(draft):
                    token = sampler.verify(sampler.probs(logits[j : j + 1])[0], draft[j])
                else:
                    token = int(sampler(logits[j : j + 1])[0])
                new.append(token)
                if j == len(draft) or token != draft[j]:
                    break
            logprobs = torch.log_softmax(logits[: len(new)], dim=-1).gather(1, torch.tensor(new)[:, None]).squeeze(1)
            if not result.token_ids and on_first_token is not None:
                on_first_token()
            for token, lp in zip(new, logprobs.tolist()):
                result.token_ids.append(token)
                result.logprobs.append(lp)
                if token in ends:
                    result.finish_reason = "eos"
                    return result
                if should_stop is not None and should_stop(0, result.token_ids):
                    result.finish_reason = "stop"
                    return result
                if len(result.token_ids) == max_new_tokens:
                    return result
            drafter.extend(new)
            if result.forwards:  # the last pass wrote the last token and the accepted draft from ``col`` on
                col += len(new)
            draft = drafter.draft(min(num_tokens, max_new_tokens - len(result.token_ids) - 1))
            ids = torch.tensor([[new[-1], *draft]])
            columns = torch.arange(col, col + ids.shape[1])
            # each position sees the columns up to its own: never a rejected draft's leftover further on
            mask = (torch.arange(col + ids.shape[1])[None, :] <= columns[:, None])[None, None]
            hidden = self._forward(ids, columns[None], cache, col, mask)
            logits = self._logits(hidden[0])
            result.forwards += 1


@dataclass
class _Cache:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @classmethod
    def empty(cls, layers: int, batch: int, heads: int, length: int, dim: int, dtype: torch.dtype) -> "_Cache":
        shape = (batch, heads, length, dim)
        return cls([torch.empty(shape, dtype=dtype) for _ in range(layers)],
                   [torch.empty(shape, dtype=dtype) for _ in range(layers)])

    def select(self, rows: torch.Tensor) -> "_Cache":
        return _Cache([k.index_select(0, rows) for k in self.keys], [v.index_select(0, rows) for v in self.values])


def flops_per_token(decoder: LlamaDecoder, context: int) -> float:
    """FLOPs of one decoded token at ``context`` cached positions: 2 per weight multiply-add, plus
    attention's q.k and p.v products (2 x 2 x heads x head_dim per cached position)."""
    attention = 4 * decoder.heads * decoder.head_dim * context * len(decoder.layers)
    return 2.0 * decoder.matmul_params + attention


def kv_bytes_per_token(decoder: LlamaDecoder, context: int, element: int | None = None) -> float:
    """Bytes of the key/value cache one decoded token reads at ``context`` cached positions, in the
    engine's dtype or ``element`` bytes per number."""
    element = element or torch.empty((), dtype=decoder.dtype).element_size()
    return 2.0 * len(decoder.layers) * decoder.kv_heads * decoder.head_dim * context * element

