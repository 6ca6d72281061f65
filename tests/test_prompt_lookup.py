"""Prompt-lookup speculative decoding in LlamaDecoder (issue 22): the same greedy tokens as one token per step,
end ids / stop / length honoured inside an accepted draft, the sampling distribution kept exactly, the off
switch, FastPolicy's setting."""

from __future__ import annotations

import pytest
import torch

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies import Sampling, TransformersPolicy
from langchain_ragr1.policies.decoder import LlamaDecoder, NgramDrafter, Sampler, residual
from langchain_ragr1.policies.factory import check_policy_settings
from langchain_ragr1.policies.fast import FastPolicy
from langchain_ragr1.protocol import make_prompt

#: fp32: a forward pass over several positions rounds differently from one over a single position
LOGPROB_TOLERANCE = 1e-4


def close(a, b, tolerance=LOGPROB_TOLERANCE):
    return a.token_ids == b.token_ids and max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= tolerance


def oracle(monkeypatch, prompt, reference, wrong_every=0):
    """Drafts that are ``reference``'s next tokens (every ``wrong_every``-th drafted position changed), so drafts
    of a model whose turns do not copy their context are still accepted (and sometimes rejected)."""
    drafted = []

    def draft(self, k):
        done = len(self.tokens) - len(prompt)
        tokens = list(reference[done: done + k])
        if wrong_every:
            tokens = [t + 1 if (done + i) % wrong_every == wrong_every - 1 else t for i, t in enumerate(tokens)]
        drafted.append(tokens)
        return tokens

    monkeypatch.setattr(NgramDrafter, "draft", draft)
    return drafted


def test_ngram_drafter_takes_the_most_recent_match_longest_first():
    drafter = NgramDrafter([1, 2, 3, 9, 2, 3, 4, 5, 7, 3], max_ngram=3)
    assert drafter.draft(2) == [4, 5]  # (3,): the most recent earlier 3 is followed by 4 5
    drafter.extend([9, 2, 3])  # suffix (9, 2, 3): its only earlier occurrence is followed by 4 5 7
    assert drafter.draft(3) == [4, 5, 7]
    assert NgramDrafter([5, 6, 7]).draft(4) == []  # nothing occurred before
    assert NgramDrafter([1, 2, 1, 2]).draft(5) == [1, 2, 1, 2, 1]  # a loop goes on with its period
    assert NgramDrafter([1, 2, 1]).draft(0) == []


def test_greedy_lookup_equals_one_token_steps_on_repeats(tiny_model):
    """conftest's tiny model repeats itself, so the n-gram drafts of its own turn are accepted."""
    decoder = LlamaDecoder(tiny_model, weights="float32")
    prompts = [[1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2], [7, 8, 9, 10, 7, 8]]
    for prompt in prompts:
        plain = decoder.generate([prompt], 40)[0]
        fast = decoder.generate([prompt], 40, prompt_lookup_num_tokens=8)[0]
        assert close(fast, plain)
        assert plain.forwards == 39 and fast.forwards < len(fast.token_ids) / 3


def test_greedy_lookup_equals_one_token_steps_with_accepted_and_rejected_drafts(varied_model, monkeypatch):
    decoder = LlamaDecoder(varied_model, weights="float32")
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]
    plain = decoder.generate([prompt], 48)[0]
    assert len(set(plain.token_ids)) > 30  # a varied turn
    counted = []
    real_forward = decoder._forward
    monkeypatch.setattr(decoder, "_forward", lambda *a, **k: counted.append(a[0].shape[1]) or real_forward(*a, **k))
    drafted = oracle(monkeypatch, prompt, plain.token_ids, wrong_every=5)
    fast = decoder.generate([prompt], 48, prompt_lookup_num_tokens=6)[0]
    assert close(fast, plain) and fast.finish_reason == plain.finish_reason == "length"
    assert len(counted) - 1 == fast.forwards < len(fast.token_ids) / 2  # the prefill, then the verify passes
    assert max(counted[1:]) == 7 and any(d and d[0] != t for d, t in zip(drafted, plain.token_ids))


def test_end_ids_stop_and_length_inside_an_accepted_draft(varied_model, monkeypatch):
    decoder = LlamaDecoder(varied_model, weights="float32")
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    plain = decoder.generate([prompt], 32)[0]
    oracle(monkeypatch, prompt, plain.token_ids)  # every draft is right: 8 tokens a pass
    tokens = plain.token_ids
    # an end id whose first occurrence is in the middle of a draft (the 1st pass yields tokens 1..9 of the turn)
    cut = next(i for i in range(4, 8) if tokens[i] not in tokens[:i])
    got = decoder.generate([prompt], 32, end_ids=[tokens[cut]], prompt_lookup_num_tokens=8)[0]
    assert got.token_ids == tokens[: cut + 1] and got.finish_reason == "eos" and got.forwards == 1
    assert close(got, decoder.generate([prompt], 32, end_ids=[tokens[cut]])[0])

    asked: list[int] = []
    firsts: list[int] = []

    def should_stop(row, seen):
        asked.append(len(seen))
        return len(seen) == 6

    got = decoder.generate([prompt], 32, should_stop=should_stop, prompt_lookup_num_tokens=8,
                           on_first_token=lambda: firsts.append(1))[0]
    assert got.token_ids == tokens[:6] and got.finish_reason == "stop" and asked == [1, 2, 3, 4, 5, 6]
    assert firsts == [1]
    for limit in (1, 2, 7, 11):
        got = decoder.generate([prompt], limit, prompt_lookup_num_tokens=8)[0]
        assert got.token_ids == tokens[:limit] and got.finish_reason == "length"


def test_sampler_verify_keeps_the_distribution_exactly():
    """p(d) x [d] + (1 - p(d)) x residual = p, for each draft token of a small vocabulary (analytically), and the
    frequencies of verify's tokens match p (empirically)."""
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 0.0]])
    for sampler in (Sampler(1.0), Sampler(0.7, 0.8)):
        p = sampler.probs(logits)[0].double()
        p = p / p.sum()  # a distribution in float64 (float32's sum is 1 up to its rounding)
        for d in range(5):
            rest = residual(p, d)
            if rest is None:
                assert p[d] == 1
                continue
            out = (1 - p[d]) * rest
            out[d] += p[d]
            assert torch.allclose(out, p, rtol=0, atol=1e-12)  # float64 rounding
    sampler = Sampler(1.0, 0.9, torch.Generator().manual_seed(0))
    p = sampler.probs(logits)[0]
    assert p[2] == 0  # outside the nucleus: never drawn, not even as a draft
    draws = 20000
    for d in (0, 2, 4):
        counts = torch.bincount(torch.tensor([sampler.verify(p, d) for _ in range(draws)]), minlength=5).double()
        if d == 2:
            assert counts[2] == 0
        spread = (p.double() * (1 - p.double()) / draws).sqrt()
        assert ((counts / draws - p.double()).abs() <= 5 * spread + 1e-9).all()


def test_sampling_with_lookup_keeps_the_next_token_distribution(varied_model, monkeypatch):
    """Through generate: given the 1st token, the frequencies of the 2nd (verified against a draft) match
    p(2nd | prompt, 1st) computed from the plain path's logits."""
    decoder = LlamaDecoder(varied_model, weights="float32")
    sampler = Sampler(0.7, 0.95, torch.Generator().manual_seed(1))

    def probs(ids):
        seen: list[torch.Tensor] = []
        decoder.generate([ids], 1, pick=lambda logits: seen.append(logits) or logits.argmax(-1))
        return sampler.probs(seen[0])[0].double()

    for start in range(1, 400):  # a prompt whose 1st token is likely and whose 2nd is not sure
        prompt = [start, start + 1, start + 2]
        first = int(probs(prompt).argmax())
        p = probs(prompt + [first])
        if probs(prompt)[first] > 0.5 and 0.2 < p.max() < 0.8:
            break
    draft = int(p.argmax())
    monkeypatch.setattr(NgramDrafter, "draft", lambda self, k: [draft][:k])
    seconds = []
    for _ in range(1500):
        got = decoder.generate([prompt], 3, pick=sampler, prompt_lookup_num_tokens=4)[0]
        assert len(got.token_ids) == 3
        if got.token_ids[0] == first:
            seconds.append(got.token_ids[1])
    n = len(seconds)
    assert n > 500  # (the draft is rejected in 20-80% of them: the resampling is tested too)
    counts = torch.bincount(torch.tensor(seconds), minlength=p.numel()).double()
    top = p.argsort(descending=True)[:4]  # the 4 likeliest tokens and the rest as one outcome
    freq = torch.cat([counts[top], (n - counts[top].sum())[None]]) / n
    want = torch.cat([p[top], (1 - p[top].sum())[None]])
    spread = (want * (1 - want) / n).sqrt()
    assert ((freq - want).abs() <= 5 * spread + 1e-9).all(), (freq, want)


def test_off_switch_and_batches_decode_as_before(varied_model):
    decoder = LlamaDecoder(varied_model, weights="float32")
    prompts = [[1, 2, 3, 4, 5, 1, 2, 3], [7, 8, 9]]
    plain = decoder.generate(prompts, 16)
    assert decoder.generate(prompts, 16, prompt_lookup_num_tokens=0) == plain
    assert decoder.generate(prompts, 16, prompt_lookup_num_tokens=8) == plain  # batch > 1: the plain loop
    single = decoder.generate(prompts[:1], 16)
    assert decoder.generate(prompts[:1], 16, prompt_lookup_num_tokens=0) == single
    custom = decoder.generate(prompts[:1], 16, pick=lambda logits: logits.argmax(-1), prompt_lookup_num_tokens=8)
    assert custom == single and custom[0].forwards == 15  # a pick that is not a Sampler: one token a step
    assert decoder.generate(prompts[:1], 0, prompt_lookup_num_tokens=8)[0].token_ids == []


def test_fast_policy_setting(varied_model, smollm2_tokenizer):
    greedy = Sampling(max_new_tokens=24, temperature=0)
    question = make_prompt("Which is older, the Eiffel Tower or the Statue of Liberty?")
    with TransformersPolicy(varied_model, smollm2_tokenizer, sampling=greedy) as eager, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy, weights="float32",
                       prompt_lookup_num_tokens=8) as fast:
        assert fast.prompt_lookup_num_tokens == 8
        want = eager.generate([eager.render_prompt(question)])
        got = fast.generate([fast.render_prompt(question)])
    assert got.token_ids == want.token_ids and got.text == want.text
    assert max(abs(a - b) for a, b in zip(got.logprobs, want.logprobs)) <= LOGPROB_TOLERANCE
    with FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy) as bf16, \
            FastPolicy(varied_model, smollm2_tokenizer, sampling=greedy, weights="float32") as fp32:
        assert bf16.prompt_lookup_num_tokens == 8 and fp32.prompt_lookup_num_tokens == 0  # the defaults
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(ConfigError, match="prompt_lookup_num_tokens"):
            FastPolicy.check_kwargs({"prompt_lookup_num_tokens": bad})
    check_policy_settings(None, backend="fast", prompt_lookup_num_tokens=8)
    with pytest.raises(ConfigError, match="setting of backend='fast'"):
        check_policy_settings(None, backend="transformers", prompt_lookup_num_tokens=8)


@pytest.mark.slow
def test_shipped_default_greedy_float32_tokens_equal_with_lookup(default_model_dir):
    """The trained default on a RAG-R1 second turn (retrieved passages in the context), fp32 greedy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.models import default_model_path
    from langchain_ragr1.policies.token import render_user_message

    path = default_model_path(show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    decoder = LlamaDecoder(model, weights="float32")
    prompt = render_user_message(tokenizer, make_prompt("Who was born first, Marie Curie or Albert Einstein?"))[1]
    first = decoder.generate([prompt], 64, end_ids=[tokenizer.eos_token_id])[0]
    info = ("\n<information>Doc 1 (Title: Marie Curie) Marie Curie (born Maria Sklodowska; 7 November 1867 - 4 July "
            "1934) was a Polish and naturalised-French physicist and chemist.\nDoc 2 (Title: Albert Einstein) Albert "
            "Einstein (14 March 1879 - 18 April 1955) was a German-born theoretical physicist.</information>\n")
    second = prompt + first.token_ids + tokenizer(info, add_special_tokens=False).input_ids
    for ids in (prompt, second):
        plain = decoder.generate([ids], 64, end_ids=[tokenizer.eos_token_id])[0]
        fast = decoder.generate([ids], 64, end_ids=[tokenizer.eos_token_id], prompt_lookup_num_tokens=8)[0]
        assert close(fast, plain)
    assert fast.forwards < len(fast.token_ids) - 1  # drafts copied from the passages were accepted


def test_fast_policy_repetition_stop_inside_a_draft(tiny_model, smollm2_tokenizer):
    """A looping turn (conftest's tiny model repeats one token) is drafted 8 tokens a pass and still ends at the
    repetition stop's token, as model.generate's turn does."""
    stop_on = Sampling(max_new_tokens=40, temperature=0, repeat_stop_tokens=4, repeat_stop_count=3)
    question = [make_prompt("Who wrote Hamlet")]
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on) as eager, \
            FastPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on, weights="float32",
                       prompt_lookup_num_tokens=8) as fast, fast.record_calls() as calls:
        want = eager.generate([eager.render_prompt(question[0])], stop=())
        have = fast.generate([fast.render_prompt(question[0])], stop=())
    assert (have.token_ids, have.text, have.finish_reason) == (want.token_ids, want.text, "repetition")
    assert max(abs(a - b) for a, b in zip(have.logprobs, want.logprobs)) <= LOGPROB_TOLERANCE
    assert len(have.token_ids) == 12 and calls[0].steps == 12 and calls[0].forwards < 11
