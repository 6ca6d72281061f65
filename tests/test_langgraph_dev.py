"""``langgraph dev`` from the repository root, as the docs say, answers a real run.

Starts the real server (no ``--allow-blocking``: a blocking call on its event loop fails the
run) with the root ``langgraph.json``, the bundled default model and the BM25 retriever, and
talks to it with ``langgraph_sdk``. The first run converts the model into ``$RAGR1_HOME``
(about a minute once; seconds afterwards), then writes two or three turns.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langchain_ragr1.paths import CACHE_ENV

pytest.importorskip("langgraph_api")  # langgraph-cli[inmem]: the `langgraph` extra
pytest.importorskip("langgraph_sdk")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).with_name("langgraph")
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300
QUESTION = "Who wrote Hamlet?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the CLI and uvicorn), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of ``langgraph dev`` started in the repo root; stopped (and its files removed)."""
    if not LANGGRAPH.exists():
        pytest.skip(f"no langgraph CLI next to {sys.executable}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("langgraph-dev") / "server.log"
    env = {
        **os.environ,
        "RAGR1_RETRIEVER": "bm25",
        CACHE_ENV: os.environ.get(CACHE_ENV) or str(ROOT / ".ragr1-cache"),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGSMITH_TRACING": "false",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAGR1_MODEL", None)  # the bundled default model
    state_dir = ROOT / ".langgraph_api"  # the dev server's own persistence, in its cwd
    had_state_dir = state_dir.exists()
    command = [str(LANGGRAPH), "dev", "--port", str(port), "--host", "127.0.0.1",
               "--no-browser", "--no-reload"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(url, process, log_path)
        yield url, log_path
    finally:
        stop(process)
        if not had_state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)


def log_tail(log_path: Path, chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-chars:]


def wait_until_up(url: str, process: subprocess.Popen, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"langgraph dev exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"langgraph dev not up after {START_TIMEOUT_S} s:\n{log_tail(log_path)}")


@pytest.fixture(scope="module")
def client(server):
    from langgraph_sdk import get_sync_client

    url, _ = server
    return get_sync_client(url=url, timeout=RUN_TIMEOUT_S)


@pytest.mark.parametrize("graph_id", ["ragr1", "ragr1_single"])
def test_server_serves_the_input_and_output_schemas(client, graph_id):
    (assistant,) = client.assistants.search(graph_id=graph_id)
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert schemas["input_schema"] is not None and schemas["output_schema"] is not None
    assert {"messages", "question"} <= set(schemas["input_schema"]["properties"])
    assert {"messages", "segments", "answer"} <= set(schemas["output_schema"]["properties"])


def test_a_run_of_ragr1_answers_through_the_server(client, server):
    _, log_path = server
    thread = client.threads.create()
    events = []
    for part in client.runs.stream(
        thread["thread_id"],
        "ragr1",
        input={"messages": [{"role": "user", "content": QUESTION}]},
        stream_mode="updates",
    ):
        events.append(part)
    errors = [part.data for part in events if part.event == "error"]
    assert not errors, f"{errors}\n{log_tail(log_path)}"
    nodes = [node for part in events if part.event == "updates" for node in part.data]
    assert "think" in nodes and nodes[-1] == "finish", [part.event for part in events]

    state = client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert not state["next"]  # the episode finished
    assert values["question"] == QUESTION
    assert [m["type"] for m in values["messages"]] == ["human", "ai"]
    assert isinstance(values["messages"][-1]["content"], str)
    roles = [segment["role"] for segment in values["segments"]]
    assert roles[0] == "prompt" and "policy" in roles
    assert values["stop_reason"] is not None
    (run,) = client.runs.list(thread["thread_id"])
    assert run["status"] == "success"
    assert "BlockingError" not in log_path.read_text(errors="replace")
