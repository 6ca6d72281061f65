"""FastPolicy.from_pretrained's direct load (policies.direct) and the embedder's DirectBert: the same bits as the
transformers-built path they replace, the fallback for folders they cannot read, and no transformers modeling code
imported (issue 22: the time to the first answer)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from langchain_ragr1.json_tokenizer import JsonTokenizer
from langchain_ragr1.policies import Sampling
from langchain_ragr1.policies.decoder import LlamaDecoder
from langchain_ragr1.policies.direct import DeferredModel, direct_unsupported
from langchain_ragr1.policies.fast import FastPolicy
from langchain_ragr1.protocol import make_prompt

QUESTIONS = ["Who wrote Hamlet", "Which is older, the Eiffel Tower or the Statue of Liberty?"]


def _dense(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.to_dense() if t is not None and t.is_mkldnn else t


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Bitwise: same dtype, shape and bits (a meta tensor: same dtype and shape)."""
    a, b = _dense(a), _dense(b)
    if a is None or b is None:
        return a is b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_meta or b.is_meta:
        return a.is_meta and b.is_meta
    return torch.equal(a.view(torch.uint8) if a.dim() else a, b.view(torch.uint8) if b.dim() else b)


def assert_same_decoder(got: LlamaDecoder, want: LlamaDecoder) -> None:
    assert (got.weights, got.dtype, got.heads, got.kv_heads, got.head_dim, got.eps, got.scaling, got.rope_scale,
            got.max_positions) == (want.weights, want.dtype, want.heads, want.kv_heads, want.head_dim, want.eps,
                                   want.scaling, want.rope_scale, want.max_positions)
    assert len(got.layers) == len(want.layers)
    for g, w in zip(got.layers, want.layers):
        assert _same(g.norm1, w.norm1) and _same(g.norm2, w.norm2)
        for name in ("qkv", "o", "gate_up", "down"):
            gl, wl = getattr(g, name), getattr(w, name)
            for field in ("weight", "scale", "bias", "packed"):
                assert _same(getattr(gl, field), getattr(wl, field)), (name, field)
            assert (gl.int4 is None) == (wl.int4 is None)
            if gl.int4 is not None:
                assert all(_same(x, y) for x, y in zip(gl.int4, wl.int4))
    for field in ("embed", "norm", "inv_freq", "_cos", "_sin"):
        assert _same(getattr(got, field), getattr(want, field)), field
    for field in ("weight", "scale", "bias", "packed"):
        assert _same(getattr(got.head, field), getattr(want.head, field)), ("head", field)


def _through_transformers(folder, weights, sampling):
    """FastPolicy as from_pretrained built it before the direct load: AutoTokenizer + AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = "bfloat16" if weights == "bfloat16" else "float32"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return FastPolicy(model, AutoTokenizer.from_pretrained(folder), sampling=sampling, weights=weights)


def _turns(policy):
    return [policy.generate([policy.render_prompt(make_prompt(q))]) for q in QUESTIONS]


def assert_same_tokenizer(got, want) -> None:
    """The direct load's JsonTokenizer holds transformers' tokenizer.json, template and special tokens
    (tests/test_json_tokenizer.py compares their ids)."""
    assert isinstance(got, JsonTokenizer) and len(got) == len(want)
    assert got.backend_tokenizer.to_str() == want.backend_tokenizer.to_str()
    assert got.chat_template == want.chat_template and got.all_special_ids == want.all_special_ids
    assert str(got.added_tokens_decoder) == str(want.added_tokens_decoder)
    assert (got.eos_token_id, got.pad_token_id, got.bos_token_id) == (want.eos_token_id, want.pad_token_id,
                                                                     want.bos_token_id)


@pytest.mark.parametrize("weights", ["bfloat16", "float32", "int8"])
def test_the_direct_load_equals_the_transformers_built_policy(tiny_folder, weights):
    greedy = Sampling(max_new_tokens=24, temperature=0)
    assert direct_unsupported(tiny_folder) is None
    with FastPolicy.from_pretrained(tiny_folder, sampling=greedy, weights=weights) as direct, \
            _through_transformers(tiny_folder, weights, greedy) as built:
        assert isinstance(direct.model, DeferredModel) and not direct.model.loaded
        assert direct.decoder is not None and built.decoder is not None
        assert_same_decoder(direct.decoder, built.decoder)
        assert_same_tokenizer(direct.tokenizer, built.tokenizer)
        assert direct._end_ids == built._end_ids and direct.max_len == built.max_len
        got, want = _turns(direct), _turns(built)
        assert [g.token_ids for g in got] == [w.token_ids for w in want] and [g.text for g in got] == [w.text for w in want]
        assert not direct.model.loaded  # the engine did it all


def test_settings_the_engine_lacks_load_the_transformers_model_then(tiny_folder):
    """A repetition penalty goes through model.generate: the deferred model loads on that first use and gives its tokens."""
    sampling = Sampling(max_new_tokens=16, temperature=0, repetition_penalty=1.3)
    with FastPolicy.from_pretrained(tiny_folder, sampling=sampling, weights="float32") as direct, \
            _through_transformers(tiny_folder, "float32", sampling) as built:
        got, want = _turns(direct), _turns(built)
        assert direct.model.loaded and type(direct.model.load()).__name__ == "LlamaForCausalLM"
    assert [g.token_ids for g in got] == [w.token_ids for w in want]


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, reason", [
    ({"model_type": "mistral"}, "model type 'mistral' is not llama"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "not the default RoPE"),
    ({"quantization_config": {"quant_method": "gptq"}}, "a quantised checkpoint"),
    ({"tie_word_embeddings": False}, "tensor names differ"),
])
def test_folders_the_direct_load_cannot_read_say_why(tiny_folder, changes, reason):
    _edit_config(tiny_folder, **changes)
    assert reason in direct_unsupported(tiny_folder)


def test_other_folders_load_through_transformers_with_the_reason_logged_once(tiny_folder, tmp_path, caplog):
    """A linear-scaled RoPE: transformers loads it, the engine cannot run it (model.generate instead)."""
    import langchain_ragr1.policies.fast as fast

    _edit_config(tiny_folder, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    copy = shutil.copytree(tiny_folder, tmp_path / "copy")
    fast._TRANSFORMERS_NOTED.clear()
    greedy = Sampling(max_new_tokens=8, temperature=0)
    with caplog.at_level(logging.INFO, logger="langchain_ragr1.policies.fast"):
        for folder in (tiny_folder, copy):
            with FastPolicy.from_pretrained(folder, sampling=greedy) as policy:
                assert type(policy.model).__name__ == "LlamaForCausalLM" and policy.decoder is None
    notes = [r.getMessage() for r in caplog.records if "through transformers' AutoModelForCausalLM" in r.getMessage()]
    assert len(notes) == 1 and "not the default RoPE" in notes[0]


def test_direct_bert_gives_bert_models_numbers_and_pads_through_transformers():
    """The shipped MiniLM: DirectBert's query embeddings equal transformers' BertModel's bit for bit; a padded
    batch (passages) goes through BertModel itself."""
    from transformers import AutoModel, AutoTokenizer

    from langchain_ragr1.retrievers.bert import DirectBert, bert_unsupported, load_bert_tokenizer
    from langchain_ragr1.retrievers.embeddings import default_model_path, encoder_embeddings

    path = default_model_path()
    assert bert_unsupported(path) is None
    tokenizer, reference_tokenizer = load_bert_tokenizer(path), AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    direct = DirectBert(path)
    texts = ["Marie Curie birth year", "Ünïcödé Café 北京 [SEP] [MASK]", "x", "word " * 400, ""]
    for batch in [[t] for t in texts] + [texts]:
        got = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        want = reference_tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        assert isinstance(tokenizer, JsonTokenizer)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        with torch.inference_mode():
            out = direct(**got)
            if len(batch) == 1:
                assert torch.equal(out.last_hidden_state, model(**want).last_hidden_state)
            else:
                assert out is None
    embeddings = encoder_embeddings("minilm")
    vectors = embeddings.embed_documents(texts[:3])
    assert isinstance(embeddings._model, DirectBert) and embeddings._full is not None  # the padded batch
    reference = encoder_embeddings("minilm")
    reference.warm()
    reference._model = reference._transformers_model()  # BertModel for every batch, as before DirectBert
    assert reference.embed_documents(texts[:3]) == vectors
    assert reference.embed_query(texts[0]) == embeddings.embed_query(texts[0])


@pytest.mark.slow
def test_shipped_default_direct_load_equals_the_transformers_built_one(default_model_dir):
    """The trained default (SmolLM2 + the shipped SFT adapter, merged): the direct load's bf16 engine holds the bits
    the transformers-built one does, and their greedy turns are the same tokens."""
    from langchain_ragr1.models import default_model_path

    path = default_model_path(show_progress=False)
    greedy = Sampling(max_new_tokens=48, temperature=0)
    with FastPolicy.from_pretrained(path, sampling=greedy) as direct, \
            _through_transformers(path, "bfloat16", greedy) as built:
        assert isinstance(direct.model, DeferredModel)
        assert_same_decoder(direct.decoder, built.decoder)
        assert_same_tokenizer(direct.tokenizer, built.tokenizer)
        assert [g.token_ids for g in _turns(direct)] == [w.token_ids for w in _turns(built)]
