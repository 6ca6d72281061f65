"""FastPolicy / LlamaDecoder: the same turns as TransformersPolicy (model.generate) at fp32, close
log-probs in bf16 and int8, stop strings, sampling, LoRA weights, the fallback for other models."""

from __future__ import annotations

import logging

import pytest
import torch
from _threads import run_threads

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies import Sampling, TransformersPolicy
from langchain_ragr1.policies.decoder import LlamaDecoder
from langchain_ragr1.policies.factory import check_policy_settings
from langchain_ragr1.policies.fast import FastPolicy
from langchain_ragr1.protocol import make_prompt

QUESTIONS = [
    "Who wrote Hamlet",
    "Which is older, the Eiffel Tower or the Statue of Liberty, and by how many years?",
    "Capital of Australia?",
    "What river flows through Paris and which sea does it reach after passing Rouen?",
]


def turns(policy, questions=QUESTIONS, stop=()):
    """The turns of ``questions`` submitted together (one batch, rows of different lengths)."""
    segments = [[policy.render_prompt(make_prompt(q))] for q in questions]
    return run_threads(lambda i: policy.generate(segments[i], stop=stop), len(questions))


def check_same(fast, eager, tolerance):
    for f, e in zip(fast, eager):
        assert f.token_ids == e.token_ids and f.text == e.text and f.finish_reason == e.finish_reason
        assert max(abs(a - b) for a, b in zip(f.logprobs, e.logprobs)) <= tolerance


@pytest.fixture
def greedy():
    return Sampling(max_new_tokens=24, temperature=0)


def test_float32_engine_equals_model_generate(varied_model, smollm2_tokenizer, greedy):
    with TransformersPolicy(varied_model, smollm2_tokenizer, sampling=greedy, batch_wait_s=0.2) as eager, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy, batch_wait_s=0.2, weights="float32") as fast:
        expected, got = turns(eager), turns(fast)
        assert fast.stats.max_batch == len(QUESTIONS)  # batched, rows of different lengths (left padding)
        assert fast.prefixes.reused_tokens == 0
        again = turns(fast)  # the same prompts: all but their last positions come from the prefix cache
        assert fast.prefixes.reused_tokens == sum(len(fast.render_prompt(make_prompt(q))["token_ids"]) - 1
                                                  for q in QUESTIONS)
    assert all(len(e.token_ids) == greedy.max_new_tokens for e in expected)
    assert all(len(set(e.token_ids)) > 8 for e in expected)  # varied turns, not one token repeated
    check_same(got, expected, 1e-4)
    check_same(again, expected, 1e-4)


def test_prefix_cache_sequences_sizes_or_turns_off_the_cache(varied_model, smollm2_tokenizer, greedy):
    with FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy, batch_wait_s=0.2, weights="float32",
                    prefix_cache_sequences=0) as off, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy, batch_wait_s=0.2, weights="float32",
                       prefix_cache_sequences=2) as two:
        first, again = turns(off), turns(off)
        assert off.prefixes.reused_tokens == 0 and len(off.prefixes) == 0  # every prompt prefilled whole
        turns(two)
        assert len(two.prefixes) == 2  # the last 2 of the batch's sequences
    check_same(again, first, 1e-4)
    with pytest.raises(ConfigError, match=r"prefix_cache_sequences=-1 must be an integer >= 0 \(0: off\)"):
        FastPolicy.check_kwargs({"prefix_cache_sequences": -1})
    with pytest.raises(ConfigError, match=r"prefix_cache_sequences=4 is a setting of backend='fast'"):
        check_policy_settings(backend="transformers", prefix_cache_sequences=4)


def test_stop_strings_cut_the_same(varied_model, smollm2_tokenizer, greedy):
    with TransformersPolicy(varied_model, smollm2_tokenizer, sampling=greedy) as eager:
        text = turns(eager, QUESTIONS[:1])[0].text
    stop = (text[len(text) // 3: len(text) // 3 + 4],)  # a piece of the middle of the turn
    with TransformersPolicy(varied_model, smollm2_tokenizer, sampling=greedy) as eager, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy, weights="float32") as fast:
        expected, got = turns(eager, QUESTIONS[:1], stop), turns(fast, QUESTIONS[:1], stop)
    assert expected[0].finish_reason == "stop" and stop[0] in expected[0].text
    assert len(expected[0].token_ids) < greedy.max_new_tokens
    check_same(got, expected, 1e-4)


def test_end_token_ends_a_row_and_the_others_go_on(varied_model, smollm2_tokenizer):
    decoder = LlamaDecoder(varied_model, weights="float32")
    prompts = [[1, 2, 3, 4, 5], [7, 8, 9]]
    free = decoder.generate(prompts, 12)
    end = free[0].token_ids[3]  # the 4th token of row 0 becomes an end id
    cut = decoder.generate(prompts, 12, end_ids=[end])
    first = free[0].token_ids.index(end)
    assert cut[0].token_ids == free[0].token_ids[: first + 1] and cut[0].finish_reason == "eos"
    assert cut[1].token_ids[: len(cut[1].token_ids)] == free[1].token_ids[: len(cut[1].token_ids)]
    assert len(cut[1].token_ids) == 12 or cut[1].finish_reason == "eos"


def nan_cache(monkeypatch):
    """Make the engine's caches start as NaN (``torch.empty`` may hand back anything): a padding column that
    the prefill leaves unwritten then poisons attention and the test sees it."""
    from langchain_ragr1.policies import decoder as engine

    empty = engine._Cache.empty

    def poisoned(*args, **kwargs):
        cache = empty(*args, **kwargs)
        for t in (*cache.keys, *cache.values):
            t.fill_(float("nan"))
        return cache

    monkeypatch.setattr(engine._Cache, "empty", staticmethod(poisoned))


MIXED = [list(range(3, 40)), [7, 8], list(range(100, 111)), [5]]  # 37, 2, 11 and 1 tokens


def test_prefill_row_by_row_equals_the_padded_prefill(varied_model, monkeypatch):
    """Each row prefilled on its own tokens (in chunks: 37 > 8 = the chunk here) leaves the same keys and values in
    its real columns and the same last hidden state (so first logits) as the prefill of the left-padded batch;
    its padding columns are zeros, not the NaN the cache started with. Equal up to fp32 rounding: 1e-5 of the
    numbers' scale (the varied model's logits reach about 13; the padded batch differs from a prompt prefilled
    alone by as much)."""
    from langchain_ragr1.policies import decoder as engine

    monkeypatch.setattr(engine, "PREFILL_CHUNK", 8)
    nan_cache(monkeypatch)
    decoder = LlamaDecoder(varied_model, weights="float32")
    width = max(map(len, MIXED))

    def prefill(method):
        cache = engine._Cache.empty(len(decoder.layers), len(MIXED), decoder.kv_heads, width + 4, decoder.head_dim,
                                    decoder.dtype)
        return decoder._logits(method(MIXED, cache)), cache

    padded_logits, padded = prefill(decoder._prefill_padded)
    rows_logits, rows = prefill(decoder._prefill_rows)
    def close(got, want):
        return float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())

    assert close(rows_logits, padded_logits)
    for r, prompt in enumerate(MIXED):
        pad = width - len(prompt)
        for want, got in zip(padded.keys + padded.values, rows.keys + rows.values):
            assert close(got[r, :, pad:width], want[r, :, pad:width])
            assert torch.equal(got[r, :, :pad], torch.zeros_like(got[r, :, :pad]))


def test_a_mixed_length_batch_decodes_each_prompt_as_alone(varied_model, monkeypatch):
    """Greedy, fp32: each row of a batch of very different lengths (prefilled row by row, then decoded over the
    shared padded cache) gives the tokens of its prompt decoded alone, and log-probs within fp32 rounding."""
    from langchain_ragr1.policies import decoder as engine

    monkeypatch.setattr(engine, "PREFILL_CHUNK", 8)
    nan_cache(monkeypatch)
    decoder = LlamaDecoder(varied_model, weights="float32")
    batch = decoder.generate(MIXED, 12)
    for prompt, got in zip(MIXED, batch):
        alone = decoder.generate([prompt], 12)[0]
        assert got.token_ids == alone.token_ids and len(set(got.token_ids)) > 3
        assert max(abs(a - b) for a, b in zip(got.logprobs, alone.logprobs)) <= 1e-4


@pytest.mark.parametrize("lookup", [0, 4])
def test_next_turns_reuse_the_stored_prefixes(varied_model, monkeypatch, lookup):
    """With a PrefixCache, a next turn (prompt + turn + new tokens) is prefilled from the end of the stored
    sequence (prompt + turn but its last token) and gives the tokens of a prefill from scratch; a prompt that
    leaves a stored sequence midway reuses their common prefix only. Batch 1 with prompt lookup stores too."""
    from langchain_ragr1.policies import decoder as engine

    monkeypatch.setattr(engine, "PREFILL_CHUNK", 8)
    nan_cache(monkeypatch)
    decoder = LlamaDecoder(varied_model, weights="float32")
    prefixes = engine.PrefixCache(8)
    prompts = MIXED[:1] if lookup else MIXED
    first = decoder.generate(prompts, 10, prefixes=prefixes, prompt_lookup_num_tokens=lookup)
    assert prefixes.reused_tokens == 0 and len(prefixes) == len(prompts)
    follow = [p + r.token_ids + [200 + i, 201, 202] for i, (p, r) in enumerate(zip(prompts, first))]
    if not lookup:
        follow.append(MIXED[0][:20] + [300, 301])  # leaves MIXED[0] after 20 tokens
    got = decoder.generate(follow, 10, prefixes=prefixes, prompt_lookup_num_tokens=lookup)
    want = [decoder.generate([p], 10)[0] for p in follow]
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids and max(abs(a - b) for a, b in zip(g.logprobs, w.logprobs)) <= 1e-4
    turns = sum(len(p) + len(r.token_ids) - 1 for p, r in zip(prompts, first))
    assert prefixes.reused_tokens == turns + (0 if lookup else 20)
    # the next turns replaced the sequences they extend (the capacity, 8, is not what dropped them)
    assert len(prefixes) == len(follow)


def test_rows_of_about_the_same_length_stay_one_padded_pass(varied_model, monkeypatch):
    """Row by row only where padding would add more than ROW_PREFILL_ABOVE x the rows' positions (a padded pass is
    faster per position), or where a stored prefix leaves that little to compute."""
    from langchain_ragr1.policies import decoder as engine

    decoder = LlamaDecoder(varied_model, weights="float32")
    taken = []
    for name in ("_prefill_rows", "_prefill_padded"):
        real = getattr(decoder, name)
        monkeypatch.setattr(decoder, name, lambda *a, _real=real, _name=name: taken.append(_name) or _real(*a))
    near, far = [list(range(1, 21)), list(range(1, 18))], [list(range(1, 21)), [5, 6]]  # 40/37 and 40/22 positions
    decoder.generate(near, 2)
    decoder.generate(far, 2)
    prefixes = engine.PrefixCache(4)
    decoder.generate(near[:1], 2, prefixes=prefixes)  # nothing stored yet: padded (batch 1)
    decoder.generate([near[0] + [30]], 2, prefixes=prefixes)  # 20 of 21 positions stored
    assert taken == ["_prefill_padded", "_prefill_rows", "_prefill_padded", "_prefill_rows"]


def test_prefix_cache_drops_the_least_recently_used():
    from langchain_ragr1.policies.decoder import PrefixCache

    kv = [torch.zeros(1, 4, 2)]
    cache = PrefixCache(2)
    cache.store([1, 2, 3], kv, kv)
    cache.store([5, 6, 7], kv, kv)
    assert cache.match([1, 2, 3, 4])[0] == 3  # [1, 2, 3] used last
    assert cache.match([1, 2, 3])[0] == 2  # the last prompt position is always computed
    cache.store([8, 9], kv, kv)  # drops [5, 6, 7]
    assert cache.match([5, 6, 7, 8]) == (0, None) and cache.match([1, 2, 9])[0] == 2
    cache.store([1, 2, 3, 4], kv, kv)  # extends [1, 2, 3]: replaces it
    assert len(cache) == 2 and cache.match([8, 9, 9])[0] == 2


@pytest.mark.parametrize("weights, tolerance", [("bfloat16", 0.1), ("int8", 0.1), ("int4", 0.3)])
def test_reduced_weights_stay_close(tiny_model, smollm2_tokenizer, greedy, weights, tolerance):
    """Fewer bytes per weight: the log-probs of the tokens both paths chose move by rounding only."""
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=greedy) as eager, \
            FastPolicy(tiny_model, smollm2_tokenizer, sampling=greedy, weights=weights) as fast:
        expected, got = turns(eager), turns(fast)
    for f, e in zip(got, expected):
        same = next((i for i, (a, b) in enumerate(zip(f.token_ids, e.token_ids)) if a != b), len(f.token_ids))
        assert same >= 1
        assert max(abs(a - b) for a, b in zip(f.logprobs[:same], e.logprobs[:same])) <= tolerance


def test_bfloat16_weights_are_prepacked(tiny_model):
    decoder = LlamaDecoder(tiny_model)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    assert decoder.layers[0].qkv.packed is not None and decoder.head.packed is not None
    assert decoder.weight_bytes < sum(p.numel() * 4 for p in tiny_model.parameters()) / 1.9


@pytest.mark.parametrize("weights", ["float32", "bfloat16"])
def test_attention_bias_gives_sdpas_boolean_mask_result(tiny_model, weights, monkeypatch):
    """The engine builds the mask as SDPA's additive bias (0 / -inf) once per forward pass, in the engine's dtype:
    each layer's attention equals SDPA given the boolean mask itself, bit for bit, in the prefill and the decode
    steps of a padded batch (rows of different lengths, each prefilled on its own tokens; query heads folded by
    group)."""
    from langchain_ragr1.policies import decoder as engine

    real = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(q, k, v, attn_mask=None, scale=None):
        out = real(q, k, v, attn_mask=attn_mask, scale=scale)
        assert attn_mask.dtype == q.dtype and set(attn_mask.unique().tolist()) <= {0.0, float("-inf")}
        assert torch.equal(out, real(q, k, v, attn_mask=attn_mask == 0, scale=scale))
        calls.append(q.shape[2])
        return out

    monkeypatch.setattr(engine.F, "scaled_dot_product_attention", spy)
    LlamaDecoder(tiny_model, weights=weights).generate([[5, 6, 7, 8, 9], [11, 12]], 3)
    layers = tiny_model.config.num_hidden_layers
    group = tiny_model.config.num_attention_heads // tiny_model.config.num_key_value_heads
    assert calls == [5 * group] * layers + [2 * group] * layers + [group] * 2 * layers


def test_the_packed_product_is_checked_once_per_weight_shape(tiny_model, monkeypatch):
    """One check per shape serves every matrix of it (and later decoders in the process); a shape whose check
    fails stays plain bf16 in every layer while the others are packed."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    from langchain_ragr1.policies import decoder as engine

    monkeypatch.setattr(engine, "_PACKED_SHAPE_AGREES", {})
    checked: list[tuple[int, ...]] = []
    real_check = engine._packed_agrees

    def check(weight, packed):
        checked.append(tuple(weight.shape))
        return real_check(weight, packed) and tuple(weight.shape) != (32, 32)  # o_proj's shape: as if it disagreed

    monkeypatch.setattr(engine, "_packed_agrees", check)
    decoder = LlamaDecoder(tiny_model)
    assert len(checked) == len(set(checked)) == 5  # qkv, o, gate_up, down, head: 9 matrices
    for layer in decoder.layers:
        assert layer.o.packed is None and layer.o.weight.device.type == "cpu" and layer.o.weight.dtype == torch.bfloat16
        assert layer.qkv.packed is not None and layer.gate_up.packed is not None and layer.down.packed is not None
    LlamaDecoder(tiny_model)
    assert len(checked) == 5


def test_sampling_is_seeded_and_top_p_keeps_the_nucleus(varied_model, smollm2_tokenizer):
    sampled = Sampling(max_new_tokens=16, temperature=1.0, top_p=1.0)
    runs = []
    for _ in range(2):
        with FastPolicy(varied_model, smollm2_tokenizer, sampling=sampled, seed=5, weights="float32") as fast:
            runs.append([g.token_ids for g in turns(fast, QUESTIONS[:1])])
    assert runs[0] == runs[1]
    narrow = Sampling(max_new_tokens=16, temperature=1.0, top_p=1e-6)  # the nucleus is the top token
    with FastPolicy(varied_model, smollm2_tokenizer, sampling=narrow, seed=5, weights="float32") as fast, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=16, temperature=0),
                       weights="float32") as argmax:
        assert turns(fast, QUESTIONS[:2]) == turns(argmax, QUESTIONS[:2])
    with FastPolicy(varied_model, smollm2_tokenizer, sampling=sampled, seed=5, weights="float32") as fast, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=16, temperature=0),
                       weights="float32") as argmax:
        assert [g.token_ids for g in turns(fast, QUESTIONS[:2])] != [g.token_ids for g in turns(argmax, QUESTIONS[:2])]


def test_lora_adapters_are_applied(varied_model, smollm2_tokenizer, greedy):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                             init_lora_weights=False)
    lora = peft.get_peft_model(varied_model, config)
    with FastPolicy(lora, smollm2_tokenizer, sampling=greedy, weights="float32") as fast:
        got = turns(fast)
    merged = lora.merge_and_unload()
    with TransformersPolicy(merged, smollm2_tokenizer, sampling=greedy) as eager:
        expected = turns(eager)
    check_same(got, expected, 1e-4)


def test_other_models_fall_back_to_model_generate(smollm2_tokenizer, greedy, caplog):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(smollm2_tokenizer), n_layer=1, n_embd=32, n_head=2,
                                       n_positions=256, eos_token_id=smollm2_tokenizer.eos_token_id))
    with caplog.at_level(logging.WARNING, "langchain_ragr1.policies.fast"):
        with FastPolicy(model, smollm2_tokenizer, sampling=greedy) as fast:
            got = turns(fast, QUESTIONS[:2])
    assert fast.decoder is None and sum("gpt2" in r.getMessage() for r in caplog.records) == 1
    with TransformersPolicy(model, smollm2_tokenizer, sampling=greedy) as eager:
        check_same(got, turns(eager, QUESTIONS[:2]), 0.0)


@pytest.mark.parametrize("setting", [{"repetition_penalty": 50.0, "temperature": 0},
                                     {"top_k": 3, "temperature": 1.0}, {"min_p": 0.5, "temperature": 1.0}])
def test_settings_the_engine_lacks_go_through_model_generate(tiny_model, varied_model, smollm2_tokenizer, setting,
                                                             caplog):
    # RL rollouts take GRPOConfig's top_k, min_p and repetition_penalty: never silently dropped. Greedy with a
    # penalty runs on conftest's tiny model, whose plain greedy turn repeats one token (the penalty changes it)
    model = tiny_model if "repetition_penalty" in setting else varied_model
    sampling = Sampling(max_new_tokens=16, **setting)
    torch.manual_seed(1)
    with caplog.at_level(logging.WARNING, "langchain_ragr1.policies.fast"):
        with FastPolicy(model, smollm2_tokenizer, sampling=sampling, weights="float32") as fast:
            got = turns(fast, QUESTIONS[:1])
            turns(fast, QUESTIONS[1:2])
    assert fast.decoder is not None and sum("model.generate" in r.getMessage() for r in caplog.records) == 1
    if sampling.greedy:  # deterministic: model.generate's own tokens, the penalty applied
        with TransformersPolicy(model, smollm2_tokenizer, sampling=sampling) as eager:
            check_same(got, turns(eager, QUESTIONS[:1]), 0.0)
        plain = FastPolicy(model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=16, temperature=0),
                           weights="float32")
        with plain:
            assert turns(plain, QUESTIONS[:1])[0].token_ids != got[0].token_ids


def test_weights_setting_is_checked_before_loading():
    with pytest.raises(ConfigError, match="weights='int3' is unknown"):
        check_policy_settings(None, backend="fast", weights="int3")
    with pytest.raises(ConfigError, match="setting of backend='fast'"):
        check_policy_settings(None, backend="transformers", weights="int8")
    with pytest.raises(ConfigError, match="weights='fp8' is unknown"):
        FastPolicy.from_pretrained("/nonexistent", weights="fp8")


@pytest.mark.slow
def test_shipped_default_fast_float32_equals_eager(default_model_dir):
    """The trained default, greedy: the engine at fp32 gives model.generate's tokens; bf16 keeps log-probs close."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.models import default_model_path

    path = default_model_path(show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    greedy = Sampling(max_new_tokens=48, temperature=0)
    with TransformersPolicy(model, tokenizer, sampling=greedy, batch_wait_s=0.2) as eager, \
            FastPolicy(model, tokenizer, sampling=greedy, weights="float32", batch_wait_s=0.2) as fast:
        expected, got = turns(eager, QUESTIONS[:2]), turns(fast, QUESTIONS[:2])
    check_same(got, expected, 1e-4)
