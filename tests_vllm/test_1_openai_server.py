"""The agent through vLLM's OpenAI-compatible server (a subprocess), both LangChain flavours."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import QUESTIONS, check_policy_turns

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.policies.openai_server import openai_server_policy

READY_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory) -> str:
    """``python -m vllm.entrypoints.openai.api_server`` on a free port; always stopped (whole group)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager"]
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - start > READY_TIMEOUT_S:
                pytest.fail(f"vLLM server not ready in {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        print(f"\n[timing] vLLM OpenAI server ready in {time.monotonic() - start:.1f} s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_raw_completion_keeps_stop_string(server: str) -> None:
    """vLLM strips the stop string unless include_stop_str_in_output (what VLLMOpenAI must send)."""
    body = {"model": "smollm2", "prompt": "<search> capital of France </search>\n" * 3 + "<search>",
            "max_tokens": 40, "temperature": 0, "stop": ["</search>"]}
    kept, stripped = (
        httpx.post(f"{server}/completions", json={**body, "include_stop_str_in_output": flag}, timeout=120)
        .json()["choices"][0]
        for flag in (True, False)
    )
    assert kept["finish_reason"] == stripped["finish_reason"] == "stop"
    assert kept["text"] == stripped["text"] + "</search>"


@pytest.mark.parametrize("flavour", ["completions", "chat"])
def test_agent_through_openai_server(server: str, bm25, flavour: str) -> None:
    policy = openai_server_policy(server, "smollm2", flavour=flavour, max_tokens=96, temperature=0.7)
    agent = RagR1Agent(llm=policy, retriever=bm25, k=2, max_turns=2, on_retrieval_error="empty")
    start = time.monotonic()
    results = agent.batch(QUESTIONS)
    print(f"\n[timing] {flavour}: {len(QUESTIONS)} questions in {time.monotonic() - start:.1f} s")
    assert len(results) == len(QUESTIONS)
    for question, result in zip(QUESTIONS, results):
        assert result["question"].rstrip("?") == question.rstrip("?")
        check_policy_turns(result)
        assert all(s["token_ids"] is None for s in result["segments"])  # text-level policy
        assert result["stop_reason"]
