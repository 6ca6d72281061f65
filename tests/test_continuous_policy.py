"""ContinuousTransformersPolicy: the same turns as TransformersPolicy, through continuous batching."""

from __future__ import annotations

import copy

import pytest
from _threads import run_threads
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies import Sampling, TransformersPolicy
from langchain_ragr1.policies.base import cut_generation
from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy
from langchain_ragr1.protocol import make_prompt
from langchain_ragr1.testing import MemoryRetriever
from langchain_ragr1.transcript import make_segment


@pytest.fixture
def pair(tiny_model, smollm2_tokenizer):
    """A static-batch and a continuous policy on two copies of one tiny model, greedy, 16 tokens."""
    greedy = Sampling(max_new_tokens=16, temperature=0)  # one object, both policies
    static = TransformersPolicy(copy.deepcopy(tiny_model), smollm2_tokenizer, sampling=greedy, batch_wait_s=0.05)
    continuous = ContinuousTransformersPolicy(tiny_model, smollm2_tokenizer, sampling=greedy, max_context=256, seed=0)
    yield static, continuous
    static.close()
    continuous.close()


def _transcripts(policy, n):
    base = [policy.render_prompt(make_prompt("Who wrote Hamlet"))]
    return [base + [make_segment("env", "x", [100 + i] * (3 * i + 1))] for i in range(n)]


def test_same_tokens_and_logprobs_as_the_static_batch(pair):
    static, continuous = pair
    assert continuous.sampling is static.sampling and continuous.temperature == 0  # one Sampling, both policies
    transcripts = _transcripts(static, 4)
    expected = run_threads(lambda i: static.generate(transcripts[i], stop=()), 4)
    with continuous.record_calls() as calls:
        got = run_threads(lambda i: continuous.generate(transcripts[i], stop=()), 4)
    for want, have in zip(expected, got):
        assert have.token_ids == want.token_ids and have.text == want.text
        assert have.finish_reason == want.finish_reason
        assert have.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    assert len(calls) == 4 and all(len(c.prompts) == 1 and c.kept[0] <= c.steps for c in calls)
    assert continuous.stats.requests == 4 and continuous.stats.generated_tokens == sum(len(g.token_ids) for g in got)


def test_turn_is_cut_after_the_first_stop_string(pair):
    static, continuous = pair
    transcript = _transcripts(static, 1)[0]
    free = static.generate(transcript, stop=())
    assert len(free.token_ids) >= 6
    middle = len(free.text) // 2
    stop = free.text[middle:middle + 3]  # a string the model writes mid-turn
    assert stop.strip() and stop in free.text
    want = cut_generation(free, (stop,), static.decode)  # the free turn, cut after the first stop
    have = continuous.generate(transcript, stop=(stop,))
    assert have.finish_reason == want.finish_reason == "stop"
    assert have.token_ids == want.token_ids and have.text == want.text and stop in have.text
    assert have.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_context_overflow_and_close(pair, smollm2_tokenizer):
    _, continuous = pair
    long = [make_segment("env", "x", [100] * 300)]
    assert continuous.generate(long).finish_reason == "context_overflow"
    continuous.close()
    with pytest.raises(RuntimeError, match="closed"):
        continuous.generate(_transcripts(continuous, 1)[0])


def test_agent_batch_through_continuous_batching(pair):
    _, continuous = pair
    retriever = MemoryRetriever(documents=[Document(page_content="Hamlet was written by William Shakespeare.",
                                                    metadata={"title": "Hamlet"})])
    agent = RagR1Agent(continuous, retriever, max_turns=2, k=1)
    results = agent.batch(["Who wrote Hamlet?", "Who wrote Macbeth?", "Who painted the Mona Lisa?"])
    for result in results:
        segments = result["segments"]
        assert segments[0]["role"] == "prompt" and segments[0]["question"].endswith("?")
        for segment in segments:
            assert continuous.decode(segment["token_ids"]) == segment["text"]
    assert continuous.stats.requests >= 3
    # every episode's prompt starts with the same instruction: its complete pages are shared
    assert continuous.stats.reused_prompt_tokens >= 16 * 2


@pytest.mark.parametrize("narrow", [Sampling(max_new_tokens=16, temperature=1.0, top_k=1),
                                    Sampling(max_new_tokens=16, temperature=1.0, min_p=1.0)])
def test_top_k_and_min_p_reach_the_manager(pair, tiny_model, smollm2_tokenizer, narrow):
    static, _ = pair  # greedy: what sampling from only the top token gives
    transcript = _transcripts(static, 1)[0]
    policy = ContinuousTransformersPolicy(copy.deepcopy(tiny_model), smollm2_tokenizer, sampling=narrow,
                                          max_context=256, seed=0)
    try:
        assert policy.generate(transcript, stop=()).token_ids == static.generate(transcript, stop=()).token_ids
    finally:
        policy.close()


def test_a_repetition_penalty_is_refused_before_anything_loads(tiny_model, smollm2_tokenizer, tmp_path):
    penalised = Sampling(temperature=0, repetition_penalty=1.2)
    match = r"repetition_penalty=1.2 is not supported by ContinuousTransformersPolicy.*use TransformersPolicy or vLLM"
    with pytest.raises(ConfigError, match=match):
        ContinuousTransformersPolicy.from_pretrained(tmp_path / "no-model-here", sampling=penalised)
    with pytest.raises(ConfigError, match=match):
        ContinuousTransformersPolicy(tiny_model, smollm2_tokenizer, sampling=penalised)


def test_sampling_turns_carry_logprobs(tiny_model, smollm2_tokenizer):
    policy = ContinuousTransformersPolicy(tiny_model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=8),
                                          max_context=256, seed=0)
    try:
        transcript = _transcripts(policy, 2)
        turns = run_threads(lambda i: policy.generate(transcript[i]), 2)
        for turn in turns:
            assert 0 < len(turn.token_ids) <= 8 and len(turn.logprobs) == len(turn.token_ids)
            assert all(lp <= 1e-6 for lp in turn.logprobs)
            assert policy.decode(turn.token_ids) == turn.text
    finally:
        policy.close()


def test_an_end_token_ends_a_streamed_turn_like_the_static_batch(tiny_model, smollm2_tokenizer):
    # the tiny model echoes token 100 of the transcript below: make it an end token
    tiny_model.generation_config.eos_token_id = [smollm2_tokenizer.eos_token_id, 100]
    greedy = Sampling(max_new_tokens=16, temperature=0)
    static = TransformersPolicy(copy.deepcopy(tiny_model), smollm2_tokenizer, sampling=greedy)
    continuous = ContinuousTransformersPolicy(tiny_model, smollm2_tokenizer, sampling=greedy, max_context=256, seed=0)
    try:
        transcript = _transcripts(static, 1)[0]  # ends with env token 100
        want, have = static.generate(transcript), continuous.generate(transcript)  # stop strings: streamed
        assert have.finish_reason == want.finish_reason == "eos"
        assert have.token_ids == want.token_ids and have.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    finally:
        static.close()
        continuous.close()
