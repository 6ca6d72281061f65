"""Several processes (issue 24): the SFT and GRPO scripts under ``accelerate launch --num_processes 2``
on CPU (gloo), every rank's rollouts served by one ``ragr1 serve``, and the embedded Chroma
store read by several processes at once.

The launches run ``tests/_dist_train.py``: the scripts' own ``main`` with a callback that writes
each rank's rank, backend and a digest of its trainable parameters before training and after
the first optimizer step. Each rank trains on other samples (SFT) or other questions (GRPO), so
equal digests after the step mean the gradients were averaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _recipe import make_sft_dir, make_tiny_model_dir
from _serving import free_port
from conftest import REPO_CACHE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAGR1_HOME", str(REPO_CACHE))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    return env


def launch(kind: str, probe: Path, args: list[str], processes: int = 2, **env: str) -> list[dict]:
    """``accelerate launch`` of tests/_dist_train.py (``env``: more environment); each rank's probe record."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(ROOT / "tests" / "_dist_train.py"), kind, str(probe),
               *args, "--quiet"]
    done = subprocess.run(command, cwd=ROOT, env=_env() | env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((probe / f"rank{rank}.json").read_text(encoding="utf-8")) for rank in range(processes)]


def assert_averaged(ranks: list[dict]) -> None:
    assert [(r["rank"], r["world_size"], r["backend"]) for r in ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]
    assert ranks[0]["initial"] == ranks[1]["initial"]  # DDP broadcasts rank 0's weights at the start
    assert ranks[0]["step1"][0] != ranks[0]["initial"][0]  # the step changed the weights
    assert ranks[0]["step1"] == ranks[1]["step1"]  # ... in the same way on both ranks


def assert_one_checkpoint(output: Path, step: int) -> None:
    assert sorted(p.name for p in output.glob("checkpoint-*")) == [f"checkpoint-{step}"]
    assert (output / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert (output / "final" / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("dist") / "tiny", smollm2_tokenizer)


def sft_args(tiny_dir: Path, data: Path, out: Path, steps: int) -> list[str]:
    return ["--config", "sft_default", "--model_name_or_path", str(tiny_dir), "--dataset", str(data),
            "--output_dir", str(out), "--max_steps", str(steps), "--gradient_accumulation_steps", "2",
            "--save_steps", "2", "--warmup_steps", "0", "--max_train_seconds", "600"]


def test_sft_on_two_processes_averages_gradients(tiny_dir, smollm2_tokenizer, tmp_path):
    data = make_sft_dir(tmp_path / "data", smollm2_tokenizer)
    out = tmp_path / "sft"
    ranks = launch("sft", tmp_path / "probe", sft_args(tiny_dir, data, out, 2))
    assert_averaged(ranks)
    assert [r["global_step"] for r in ranks] == [2, 2]
    assert_one_checkpoint(out, 2)
    rows = (out / "loss.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3  # header + one row per step, written once (by the main process)


def test_without_gradient_averaging_the_ranks_weights_differ(tiny_dir, smollm2_tokenizer, tmp_path):
    """The check above can fail: with DDP's all-reduce off, each rank's step follows its own samples."""
    data = make_sft_dir(tmp_path / "data", smollm2_tokenizer)
    ranks = launch("sft", tmp_path / "probe", sft_args(tiny_dir, data, tmp_path / "sft", 1),
                   RAGR1_TEST_NO_GRADIENT_AVERAGING="1")
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["step1"][0] != ranks[1]["step1"][0]


@pytest.fixture
def served_corpus(tmp_path):
    """``ragr1 serve --retriever bm25`` over one passage per case word, started once; yields (url, its stdout)."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "contents": f"Case {w}\nIn case {w} the capital of France "
                                          "is Paris."}) + "\n" for i, w in enumerate(WORDS)), encoding="utf-8")
    port = free_port()
    ragr1 = Path(sys.executable).with_name("ragr1")
    command = [str(ragr1), "serve"] if ragr1.is_file() else [sys.executable, "-m", "langchain_ragr1.server"]
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        server = subprocess.Popen([*command, "--retriever", "bm25", "--corpus", str(corpus), "--port", str(port)],
                                  cwd=ROOT, env=_env(), stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/retrieve"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(url, data=b'{"queries": ["case alpha"], "topk": 1}',
                                                 headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "ragr1 serve did not answer within 120 s"
                time.sleep(0.5)
        yield url, log
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_grpo_on_two_processes_shares_one_retrieval_service(tiny_dir, served_corpus, tmp_path):
    url, log = served_corpus
    before = log.read_text().count("POST /retrieve")  # the readiness probe
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is the capital of France? (case {w})",
                                             "golden_answers": ["Paris"]}) + "\n" for i, w in enumerate(WORDS)),
                         encoding="utf-8")
    out = tmp_path / "rl"
    ranks = launch("rl", tmp_path / "probe", [
        "--config", "rl_cpu", "--model_name_or_path", str(tiny_dir), "--data", str(questions),
        "--retriever", "http", "--retriever_url", url, "--k", "1", "--max_turns", "1", "--num_generations", "2",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_steps", "2",
        "--save_steps", "2", "--output_dir", str(out)])
    assert_averaged(ranks)
    assert_one_checkpoint(out, 2)
    # each rank rolled out its own questions: 2 steps x 1 question x 2 episodes, none shared
    searched = [r["searched"] for r in ranks]
    assert [len(s) for s in searched] == [4, 4]
    assert not set(searched[0]) & set(searched[1])
    # ... through the one service, which answered every search with that question's passage
    for rank in ranks:
        assert [f"Case {w}" in text for w, text in zip(rank["searched"], rank["retrieved"])] == [True] * 4
    assert log.read_text().count("POST /retrieve") - before == 8
    metrics = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(metrics) == 3 and metrics[1].split(",")[3] == "0.5"  # exact_match over both ranks' episodes


def test_embedded_chroma_store_reads_the_same_from_concurrent_processes(tmp_path):
    """Two processes query one embedded Chroma folder at the same time and get what one process gets."""
    from _chroma_reader import embeddings
    from langchain_core.documents import Document

    from langchain_ragr1.retrievers.chroma import build_chroma_store

    docs = [Document(page_content=f"passage {i} about topic {i % 7}", metadata={"id": f"d{i}"})
            for i in range(300)]
    store = tmp_path / "store"
    build_chroma_store(docs, store, embeddings=embeddings(), show_progress=False)
    reader = str(ROOT / "tests" / "_chroma_reader.py")

    def run(names: list[str]) -> list[dict]:
        go = tmp_path / f"go-{len(names)}"
        procs = [subprocess.Popen([sys.executable, reader, str(store), str(tmp_path / n), str(go)], cwd=ROOT,
                                  env=_env(), stderr=subprocess.PIPE, text=True) for n in names]
        deadline = time.monotonic() + 120  # every reader has opened the store: then all start at once
        while not all((tmp_path / f"{n}.ready").exists() for n in names):
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "a reader did not open the store"
            time.sleep(0.05)
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
        return [json.loads((tmp_path / n).read_text(encoding="utf-8")) for n in names]

    alone = run(["alone.json"])[0]
    first, second = run(["a.json", "b.json"])
    assert len(alone["results"]) == 120 and all(len(r) == 5 for r in alone["results"])
    assert alone["results"][0][0][0] == "d0"  # a query equal to a passage finds it first
    assert first["results"] == alone["results"] and second["results"] == alone["results"]
    assert first["started"] < second["ended"] and second["started"] < first["ended"]  # they overlapped
