"""Stage 1 SFT data: the oracle teacher through the real graph, rejection sampling, the four
sample kinds, labels that fall only on the target model turn(s), and the proof that whole-trajectory
samples train on the same tokens with the same per-token loss as the four-kind cut."""

from __future__ import annotations

import copy
import json

import pytest

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.corpus import load_bundled_corpus
from langchain_ragr1.data import QAItem, load_qa
from langchain_ragr1.data.items import DataError
from langchain_ragr1.protocol import exact_match, information_block, parse_action
from langchain_ragr1.retrievers.bm25 import BM25Retriever
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy
from langchain_ragr1.tuning import (
    EmptySFTDataError,
    OraclePolicy,
    build_sft_dataset,
    make_sft_data,
    make_trajectories,
    sft_data,
    to_samples,
    to_sft_samples,
    to_trajectory_sample,
    token_accounting,
)
from langchain_ragr1.tuning.sft_data import (
    IGNORE_INDEX,
    PARSED_FIELDS,
    SAMPLE_FORMATS,
    read_jsonl,
    sample_ids,
    sample_kinds,
    write_jsonl,
)


@pytest.fixture(scope="module")
def dev_items() -> list[QAItem]:
    """One item of each generated kind (a 4-entity fan-out included) from the shipped dev set."""
    items = load_qa("ragr1-dev")
    picked = {}
    for item in items:
        if item.kind == "fan-out" and len(item.evidence_titles) < 4:
            continue
        picked.setdefault(item.kind, item)
    assert set(picked) == {"bridge", "comparison", "fan-out", "single-hop"}
    return list(picked.values())


@pytest.fixture(scope="module")
def retriever(dev_items) -> BM25Retriever:
    """BM25 over the evidence articles of the picked items and 400 other summaries."""
    corpus = load_bundled_corpus()
    evidence = {t for item in dev_items for t in item.evidence_titles}
    docs = [d for d in corpus if d.metadata["title"] in evidence] + [
        d for d in corpus[:400] if d.metadata["title"] not in evidence
    ]
    return BM25Retriever.from_documents(docs, k=3)


def oracle_agent(items, tokenizer, retriever, mode="multi", **kwargs):
    teacher = OraclePolicy(items, tokenizer, mode=mode, **kwargs)
    return RagR1Agent(teacher, retriever, mode=mode, k=3, max_turns=4)


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_oracle_trajectories_are_exact_matches(dev_items, smollm2_tokenizer, retriever, mode):
    agent = oracle_agent(dev_items, smollm2_tokenizer, retriever, mode, no_search_fraction=0.0)
    trajectories, counts = make_trajectories(agent, dev_items, progress=False)
    assert counts.kept == len(dev_items) and counts.rejected == counts.errors == 0
    for item, trajectory in zip(dev_items, trajectories):
        assert exact_match(trajectory["answer"], item.golden_answers)
        assert trajectory["mode"] == mode
        segments = trajectory["segments"]
        assert all(s["token_ids"] is not None for s in segments)
        for segment in segments[1:]:  # turns and observations: their own text's ids
            assert segment["token_ids"] == smollm2_tokenizer(segment["text"], add_special_tokens=False)["input_ids"]
        policy = [s["text"] for s in segments if s["role"] == "policy"]
        plan = [q for turn in item.gold_queries for q in turn]
        if mode == "single":
            searches = [parse_action(t, mode).queries for t in policy[:-1]]
            assert searches == [(q,) for q in plan]
        else:  # gold turns, at most three queries each (a 4-entity fan-out takes two turns)
            queries = [q for t in policy[:-1] for q in parse_action(t, mode).queries]
            assert queries == plan
            assert all(len(parse_action(t, mode).queries) <= 3 for t in policy[:-1])
        assert trajectory["turns"] == len(policy) - 1
        assert "<information>" in "".join(s["text"] for s in segments if s["role"] == "env")


def test_four_kinds_with_their_inputs_and_targets(dev_items, smollm2_tokenizer, retriever):
    bridge = next(i for i in dev_items if i.kind == "bridge")
    searched, _ = make_trajectories(
        oracle_agent([bridge], smollm2_tokenizer, retriever, no_search_fraction=0.0), [bridge], progress=False)
    direct, _ = make_trajectories(
        oracle_agent([bridge], smollm2_tokenizer, retriever, no_search_fraction=1.0), [bridge], progress=False)
    samples = to_sft_samples(direct[0]) + to_sft_samples(searched[0])
    assert [s["kind"] for s in samples] == [1, 2, 4, 3]  # answer; search, search again, answer
    for sample in samples:
        target = sample["target"]
        assert target["role"] == "policy"
        action = parse_action(target["text"], "multi").kind
        assert action == ("answer" if sample["kind"] in (1, 3) else "search")
        context = sample["context"]
        assert context[0]["role"] == "prompt" and bridge.question in context[0]["text"]
        if sample["kind"] in (1, 2):
            assert len(context) == 1
        else:  # every earlier turn followed by its information
            assert [s["role"] for s in context[1:]] == ["policy", "env"] * ((len(context) - 1) // 2)
            assert context[-1]["text"].startswith("\n<information>\n")
    assert samples[2]["context"] == searched[0]["segments"][:3]
    assert samples[3]["context"] == searched[0]["segments"][:5]


def test_labels_fall_only_on_the_target_turn(dev_items, smollm2_tokenizer, retriever):
    trajectories = []
    for fraction in (0.0, 1.0):  # every item searched, then every item answered at once
        agent = oracle_agent(dev_items, smollm2_tokenizer, retriever, no_search_fraction=fraction)
        trajectories += make_trajectories(agent, dev_items, progress=False)[0]
    samples = [s for t in trajectories for s in to_sft_samples(t)]
    dataset = build_sft_dataset(samples, smollm2_tokenizer, max_length=4096)
    assert len(dataset) == len(samples)
    assert set(dataset["kind"]) == {1, 2, 3, 4}
    for sample, row in zip(samples, dataset):
        # Where each segment's ids lie in the concatenation.
        spans, start = [], 0
        for segment in [*sample["context"], sample["target"]]:
            spans.append((segment["role"], start, start + len(segment["token_ids"])))
            start += len(segment["token_ids"])
        assert row["input_ids"] == [i for s in [*sample["context"], sample["target"]] for i in s["token_ids"]]
        labelled = [p for p, label in enumerate(row["labels"]) if label != IGNORE_INDEX]
        role, target_start, target_end = spans[-1]
        assert role == "policy" and labelled == list(range(target_start, target_end))
        for _role, begin, end in spans[:-1]:  # no prompt, earlier-turn or information token is labelled
            assert all(row["labels"][p] == IGNORE_INDEX for p in range(begin, end))
        assert [row["input_ids"][p] for p in labelled] == [row["labels"][p] for p in labelled]
        text = smollm2_tokenizer.decode([row["labels"][p] for p in labelled],
                                        skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert text == sample["target"]["text"]
        assert "<information>" not in text and "Doc 1:" not in text


def test_rejection_sampling_drops_wrong_answers(dev_items):
    docs_retriever = MemoryRetriever(documents=[])
    wrong = RagR1Agent(ScriptedPolicy(["<think>Guess.</think><answer> Nobody </answer>"]), docs_retriever)
    kept, counts = make_trajectories(wrong, dev_items, progress=False, allow_empty=True)
    assert kept == [] and counts.rejected == len(dev_items) and counts.kept == 0


def test_ungrounded_oracle_is_rejected(dev_items, smollm2_tokenizer):
    """Nothing useful retrieved: the grounded oracle does not claim the gold answer."""
    from langchain_core.documents import Document

    empty = MemoryRetriever(documents=[Document("Nothing relevant here.", metadata={"title": "Other"})])
    agent = oracle_agent(dev_items, smollm2_tokenizer, empty, no_search_fraction=0.0)
    with pytest.raises(EmptySFTDataError, match=rf"{len(dev_items)} questions, {len(dev_items)} rejected"):
        make_trajectories(agent, dev_items, progress=False)


def test_teacher_errors_are_retried_then_skipped(dev_items, smollm2_tokenizer, retriever):
    failing = dev_items[0].question
    oracle = OraclePolicy(dev_items, smollm2_tokenizer, no_search_fraction=0.0)
    attempts = []

    class Flaky(OraclePolicy):
        def generate(self, segments, **kwargs):
            if failing in segments[0]["text"]:
                attempts.append(1)
                raise RuntimeError("teacher backend down")
            return oracle.generate(segments, **kwargs)

    agent = RagR1Agent(Flaky(dev_items, smollm2_tokenizer), retriever, mode="multi")
    kept, counts = make_trajectories(agent, dev_items, retries=2, progress=False)
    assert len(attempts) == 3 and counts.errors == 1 and counts.retried == 2
    assert counts.kept == len(dev_items) - 1 and "teacher backend down" in counts.error_messages[0]


def test_too_long_samples_are_dropped_and_counted(dev_items, smollm2_tokenizer, retriever):
    agent = oracle_agent(dev_items, smollm2_tokenizer, retriever, no_search_fraction=0.0)
    trajectories, _ = make_trajectories(agent, dev_items, progress=False)
    samples = [s for t in trajectories for s in to_sft_samples(t)]
    lengths = sorted(len(sample_ids(s, smollm2_tokenizer)[0]) for s in samples)
    limit = lengths[len(lengths) // 2]
    report: dict = {}
    dataset = build_sft_dataset(samples, smollm2_tokenizer, max_length=limit, report=report)
    longer = sum(n > limit for n in lengths)
    assert longer > 0 and report["dropped_too_long"] == longer
    assert report["kept"] == len(dataset) == len(samples) - longer
    assert max(len(ids) for ids in dataset["input_ids"]) <= limit
    with pytest.raises(EmptySFTDataError, match=rf"{len(samples)} samples, {len(samples)} dropped"):
        build_sft_dataset(samples, smollm2_tokenizer, max_length=10)


def test_make_sft_data_script(tmp_path, dev_items, default_model_dir):
    corpus = tmp_path / "corpus.jsonl"
    docs = [d for d in load_bundled_corpus() if d.metadata["title"] in
            {t for item in dev_items for t in item.evidence_titles}]
    corpus.write_text("".join(json.dumps({"id": d.id, "title": d.metadata["title"], "text": d.page_content}) + "\n"
                              for d in docs))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(i.to_dict()) + "\n" for i in dev_items))
    out = tmp_path / "out"
    code = make_sft_data.main(["--data", str(qa), "--retriever", "bm25", "--corpus", str(corpus), "--mode", "multi",
                        "single", "--tokenizer", str(default_model_dir), "--out", str(out), "--quiet"])
    assert code == 0
    counts = json.loads((out / "counts.json").read_text())
    assert counts["trajectories"]["kept"] == 2 * len(dev_items)
    assert {m: c["kept"] for m, c in counts["trajectories_by_mode"].items()} == {"multi": len(dev_items),
                                                                              "single": len(dev_items)}
    trajectories = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert sorted(t["mode"] for t in trajectories) == ["multi"] * len(dev_items) + ["single"] * len(dev_items)
    assert all("action" in s for t in trajectories for s in t["segments"] if s["role"] == "policy")
    accounting = counts["token_accounting"]
    assert accounting["labelled_tokens_equal"] and accounting["trajectory"]["samples"] == 2 * len(dev_items)
    assert accounting["turns"]["tokens"] > accounting["trajectory"]["tokens"]
    samples = len((out / "samples.jsonl").read_text().splitlines())
    assert counts["sft"]["samples"] == samples == counts["sft"]["kept"] + counts["sft"]["dropped_too_long"]
    from datasets import load_from_disk

    assert len(load_from_disk(str(out / "dataset"))) == counts["sft"]["kept"]


def test_text_level_teacher_gives_the_same_ids(dev_items, smollm2_tokenizer, retriever):
    """Without token ids (a text-level teacher) segments are encoded one by one: same samples."""
    text_agent = oracle_agent(dev_items, None, retriever, no_search_fraction=0.0)
    token_agent = oracle_agent(dev_items, smollm2_tokenizer, retriever, no_search_fraction=0.0)
    text_runs, _ = make_trajectories(text_agent, dev_items, progress=False)
    token_runs, _ = make_trajectories(token_agent, dev_items, progress=False)
    assert all(s["token_ids"] is None for t in text_runs for s in t["segments"])
    text_samples = [s for t in text_runs for s in to_sft_samples(t)]
    token_samples = [s for t in token_runs for s in to_sft_samples(t)]
    assert len(text_samples) == len(token_samples)
    for a, b in zip(text_samples, token_samples):
        assert sample_ids(a, smollm2_tokenizer) == sample_ids(b, smollm2_tokenizer)


def fake_chat_server(items: list[QAItem], slow: str, delay: float):
    """An OpenAI-compatible /v1/chat/completions that answers each question's gold answer
    without searching, and stalls for ``delay`` seconds on the question ``slow``."""
    import asyncio

    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        prompt = body["messages"][0]["content"]
        item = next(i for i in items if i.question in prompt)
        if item.question == slow:
            await asyncio.sleep(delay)
        text = f"<think>I know this one.</think>\n<answer> {item.golden_answers[0]} </answer>"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


def test_openai_teacher_timeouts_are_retried_then_skipped(tmp_path, dev_items, default_model_dir):
    """A served teacher through the real graph: the stalled question times out on both attempts,
    is skipped and counted; the others become kind-1 samples."""
    pytest.importorskip("langchain_openai")
    from _serving import Served

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(i.to_dict()) + "\n" for i in dev_items))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "d", "title": "T", "text": "unused"}) + "\n")
    out = tmp_path / "out"
    with Served(fake_chat_server(dev_items, slow=dev_items[1].question, delay=3.0), "/v1") as server:
        code = make_sft_data.main(["--data", str(qa), "--teacher", "openai", "--teacher-model", "teacher",
                            "--base-url", server.url, "--teacher-timeout", "0.5", "--retries", "1",
                            "--retriever", "bm25", "--corpus", str(corpus),
                            "--tokenizer", str(default_model_dir), "--out", str(out), "--quiet"])
    assert code == 0
    counts = json.loads((out / "counts.json").read_text())
    assert counts["trajectories"]["errors"] == 1 and counts["trajectories"]["retried"] == 1
    assert counts["trajectories"]["kept"] == len(dev_items) - 1
    assert dev_items[1].id in counts["errors"][0] and "Timeout" in counts["errors"][0]
    assert counts["sft"]["kinds"] == {"1": len(dev_items) - 1, "2": 0, "3": 0, "4": 0}


def test_teacher_options_are_checked_before_anything_loads(tmp_path, capsys):
    assert make_sft_data.main(["--teacher", "openai", "--teacher-model", "m", "--out", str(tmp_path)]) == 2
    assert "--base-url" in capsys.readouterr().err
    assert make_sft_data.main(["--teacher", "transformers", "--out", str(tmp_path)]) == 2
    assert "--teacher-model" in capsys.readouterr().err


# -- saved trajectories keep what the graph parsed ----------------------------------------------

def strip_parsed(record: dict) -> dict:
    """A trajectory or sample as files held it before the parsed fields: segments of role, text, ids."""
    def plain(segment: dict) -> dict:
        return {k: v for k, v in segment.items() if k not in PARSED_FIELDS}

    out = dict(record)
    for key in ("segments", "context"):
        if key in out:
            out[key] = [plain(s) for s in out[key]]
    if "target" in out:
        out["target"] = plain(out["target"])
    return out


@pytest.fixture(scope="module")
def saved(dev_items, smollm2_tokenizer, retriever, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """``(made, read back)``: oracle trajectories through the graph (both modes, searched and
    answered at once) and a scripted one with an invalid turn, written and read as trajectories.jsonl."""
    made = []
    for mode, fraction in (("multi", 0.0), ("single", 0.0), ("multi", 1.0)):
        agent = oracle_agent(dev_items, smollm2_tokenizer, retriever, mode, no_search_fraction=fraction)
        made += make_trajectories(agent, dev_items, progress=False)[0]
    scripted = ScriptedPolicy(["<think>Hmm.</think>", "<search> Curie, Pasteur </search>",
                               "<think>Curie.</think><answer> Marie Curie </answer>"], token_level=True)
    item = QAItem(id="scripted", question="Who was born first?", golden_answers=["Marie Curie"])
    from langchain_core.documents import Document

    memory = MemoryRetriever(documents=[Document("Marie Curie was born in 1867.", metadata={"title": "Curie"})])
    made += make_trajectories(RagR1Agent(scripted, memory), [item], progress=False)[0]
    path = tmp_path_factory.mktemp("saved") / "trajectories.jsonl"
    write_jsonl(made, path)
    return made, read_jsonl(path)


def test_saved_trajectories_keep_each_turns_action_and_each_retrieval(saved):
    made, read = saved
    assert read == made  # what the graph parsed survives the file
    kinds = set()
    for trajectory in read:
        mode, turn = trajectory["mode"], 0
        assert trajectory["segments"][0]["question"] == trajectory["question"]
        for segment in trajectory["segments"]:
            if segment["role"] == "policy":
                action = segment["action"]
                assert {k: v for k, v in action.items() if k != "final"} == parse_action(segment["text"], mode).to_dict()
                kinds.add(action["kind"])
                last = action
            elif segment["role"] == "env" and "<information>" in segment["text"]:
                turn += 1
                retrieval = segment["retrieval"]
                assert retrieval["turn"] == turn and retrieval["queries"] == last["queries"]
                assert segment["text"] == information_block(retrieval["queries"], retrieval["documents"], mode)
        assert turn == trajectory["turns"] and last["kind"] == "answer"
    assert kinds == {"search", "answer", "invalid"}


@pytest.mark.parametrize("sample_format", SAMPLE_FORMATS)
def test_an_old_file_without_the_fields_gives_the_same_samples(saved, sample_format):
    _, read = saved
    new = to_samples(read, sample_format)
    old = to_samples([strip_parsed(t) for t in read], sample_format)
    assert [sample_kinds(s) for s in new] == [sample_kinds(s) for s in old]
    assert {1, 2, 3, 4} <= {k for s in new for k in sample_kinds(s)}
    assert [strip_parsed(s) for s in new] == old
    assert [sample_ids(s, None) for s in new] == [sample_ids(s, None) for s in old]
    segments = [segment for s in new for segment in s.get("segments") or [*s["context"], s["target"]]]
    assert all("action" in segment for segment in segments if segment["role"] == "policy")  # carried on


def test_cutting_reads_the_fields_and_parses_only_turns_without_them(saved, monkeypatch):
    _, read = saved

    def refuse(*args, **kwargs):
        raise AssertionError("parse_action called")

    monkeypatch.setattr(sft_data, "parse_action", refuse)
    for sample_format in SAMPLE_FORMATS:
        assert to_samples(read, sample_format)
    assert token_accounting(read)["labelled_tokens_equal"]
    with pytest.raises(AssertionError, match="parse_action called"):  # an old file's turns are parsed
        to_sft_samples(strip_parsed(read[0]))
    # the field decides, not the text: a turn the graph did not act on (e.g. a runaway turn cut
    # at its cap) is no target, whatever its text holds
    trajectory = copy.deepcopy(read[0])
    first = next(s for s in trajectory["segments"] if s["role"] == "policy")
    first["action"] = {**first["action"], "kind": "invalid"}
    assert len(to_sft_samples(trajectory)) == len(to_sft_samples(read[0])) - 1


def test_a_broken_action_field_names_the_trajectory_and_the_segment(saved):
    trajectory = copy.deepcopy(saved[1][0])
    trajectory["segments"][1]["action"] = {"kind": "jump"}
    with pytest.raises(DataError, match=rf"trajectory '{trajectory['id']}@multi', segment 1: 'action' is "
                                        r"\{'kind': 'jump'\}.*Remove the 'action' key"):
        to_trajectory_sample(trajectory)


# -- whole trajectories vs the four-kind cut ---------------------------------------------------

def synthetic_trajectory() -> dict:
    """A hand-built multi-mode trajectory with token ids below 300: prompt, a valid search, its
    information, an invalid turn (no action), the format reminder, a valid answer."""
    def seg(role, text, start, n):
        return {"role": role, "text": text, "token_ids": [(start + 7 * i) % 297 + 3 for i in range(n)]}

    return {
        "id": "syn", "question": "Who wrote Hamlet?", "mode": "multi",
        "segments": [
            seg("prompt", "Answer the question. Question: Who wrote Hamlet?", 1, 20),
            seg("policy", "<think>I need the author.</think>\n<search> Hamlet author, Hamlet play </search>", 50, 12),
            seg("env", "\n<information>\nDoc 1: Hamlet is a tragedy by William Shakespeare.\n</information>\n", 90, 15),
            seg("policy", "<think>Let me think about it some more.</think>", 140, 8),
            seg("env", "\nMy previous action is invalid.\n", 180, 6),
            seg("policy", "<think>The passage says Shakespeare.</think>\n<answer> William Shakespeare </answer>", 220, 10),
        ],
    }


SEGMENT_LENGTHS = (20, 12, 15, 8, 6, 10)  # prompt, search, env, invalid, env, answer


def test_trajectory_sample_labels_every_valid_turn_and_nothing_else():
    trajectory = synthetic_trajectory()
    assert parse_action(trajectory["segments"][3]["text"], "multi").kind == "invalid"
    sample = to_trajectory_sample(trajectory)
    assert sample["kinds"] == [2, 3] and sample["targets"] == [1, 5]
    assert (sample["id"], sample["mode"]) == ("syn@multi", "multi")
    # one question has a trajectory per mode: their samples keep distinct ids
    assert to_trajectory_sample({**trajectory, "mode": "single"})["id"] == "syn@single"
    assert [s["kind"] for s in to_sft_samples(trajectory)] == [2, 3]
    input_ids, labels = sample_ids(sample, None)  # ids only: no tokenizer needed
    segments = trajectory["segments"]
    assert input_ids == [i for s in segments for i in s["token_ids"]]
    start = 0
    for index, segment in enumerate(segments):
        span = labels[start:start + len(segment["token_ids"])]
        assert span == (segment["token_ids"] if index in (1, 5) else [IGNORE_INDEX] * len(span))
        start += len(segment["token_ids"])
    assert to_trajectory_sample({**trajectory, "segments": segments[:1] + segments[3:5]}) is None
    assert to_samples([trajectory], "turns") == to_sft_samples(trajectory)
    assert to_samples([trajectory], "trajectory") == [sample]
    with pytest.raises(ValueError, match="sample_format"):
        to_samples([trajectory], "sequences")


def _labelled_losses(model, input_ids, labels, attention_mask=None):
    """Per-token cross-entropy of a causal LM on labelled positions: {position: (token, loss)}.

    Rows of ``input_ids`` may be right-padded (``attention_mask``)."""
    import torch
    import torch.nn.functional as F

    ids, labels = torch.tensor(input_ids), torch.tensor(labels)
    mask = torch.ones_like(ids) if attention_mask is None else torch.tensor(attention_mask)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    out = []
    for row in range(ids.shape[0]):
        ce = F.cross_entropy(logits[row, :-1], labels[row, 1:], ignore_index=IGNORE_INDEX, reduction="none")
        out.append({p + 1: (labels[row, p + 1].item(), ce[p].item())
                    for p in range(ids.shape[1] - 1) if labels[row, p + 1] != IGNORE_INDEX})
    return out


def test_whole_trajectory_loss_equals_the_four_kind_cut_per_token():
    """(a) the whole-trajectory sample and (b) its turn samples (one at a time and as one
    right-padded batch) give the same cross-entropy on every labelled token, and label the
    same tokens: each turn sample's input is a prefix of the trajectory, and a causal LM's
    prediction at a position depends only on the tokens before it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )).eval().float()
    trajectory = synthetic_trajectory()
    whole_ids, whole_labels = sample_ids(to_trajectory_sample(trajectory), None)
    (whole,) = _labelled_losses(model, [whole_ids], [whole_labels])

    turns = [sample_ids(s, None) for s in to_sft_samples(trajectory)]
    single: dict = {}
    for ids, labels in turns:
        (losses,) = _labelled_losses(model, [ids], [labels])
        assert not set(losses) & set(single)  # every labelled token belongs to one turn sample
        single.update(losses)
    width = max(len(ids) for ids, _ in turns)
    batched: dict = {}
    for losses in _labelled_losses(model, [ids + [0] * (width - len(ids)) for ids, _ in turns],
                                   [labels + [IGNORE_INDEX] * (width - len(labels)) for _, labels in turns],
                                   [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in turns]):
        batched.update(losses)

    assert len(whole) == 12 + 10  # the search and the answer; not the invalid turn
    for other in (single, batched):
        assert set(other) == set(whole)
        for position, (token, loss) in whole.items():
            assert other[position][0] == token
            assert other[position][1] == pytest.approx(loss, abs=1e-5)
    assert sum(loss for _, loss in whole.values()) == pytest.approx(sum(value for _, value in single.values()), abs=1e-4)


def test_token_accounting_on_the_synthetic_trajectory():
    P, S, E1, I, E2, A = SEGMENT_LENGTHS  # noqa: E741 - the segment names of the docstring
    counts = token_accounting([synthetic_trajectory()])
    assert counts["trajectories"] == 1 and counts["max_length"] is None
    assert counts["turns"] == {"samples": 2, "tokens": (P + S) + (P + S + E1 + I + E2 + A),  # 32 + 71
                               "labelled_tokens": S + A}
    assert counts["trajectory"] == {"samples": 1, "tokens": P + S + E1 + I + E2 + A, "labelled_tokens": S + A}
    assert counts["labelled_tokens_equal"] is True
    assert counts["tokens_ratio"] == round(103 / 71, 4)
    # max_length 50: the search sample (32 tokens) fits, the answer sample and the trajectory (71) do not
    cut = token_accounting([synthetic_trajectory(), synthetic_trajectory()], max_length=50)
    assert cut["turns"] == {"samples": 4, "tokens": 206, "labelled_tokens": 44, "kept": 2, "dropped_too_long": 2,
                            "kept_tokens": 64, "kept_labelled_tokens": 24}
    assert cut["trajectory"] == {"samples": 2, "tokens": 142, "labelled_tokens": 44, "kept": 0,
                                 "dropped_too_long": 2, "kept_tokens": 0, "kept_labelled_tokens": 0}


def test_trajectory_dataset_drops_too_long_trajectories_whole():
    short = synthetic_trajectory()
    short["segments"] = short["segments"][:2]  # prompt + search: 32 tokens
    samples = to_samples([synthetic_trajectory(), short], "trajectory")
    report: dict = {}
    dataset = build_sft_dataset(samples, None, max_length=50, report=report)
    assert report == {"format": "trajectory", "samples": 2, "kept": 1, "dropped_too_long": 1, "max_length": 50,
                      "kinds": {1: 0, 2: 1, 3: 0, 4: 0}, "max_tokens": 32, "mean_tokens": 32.0,
                      "tokens": 32, "labelled_tokens": 12}
    assert dataset["kinds"] == [[2]] and "kind" not in dataset.column_names
    assert dataset[0]["input_ids"] == sample_ids(samples[1], None)[0]
    with pytest.raises(EmptySFTDataError, match="2 samples, 2 dropped"):
        build_sft_dataset(samples, None, max_length=20)
    with pytest.raises(ValueError, match="both formats"):
        build_sft_dataset(samples + to_sft_samples(short), None, max_length=50)


def test_oracle_trajectory_samples_label_the_union_of_their_turn_samples(dev_items, smollm2_tokenizer, retriever):
    agent = oracle_agent(dev_items, smollm2_tokenizer, retriever, no_search_fraction=0.0)
    trajectories, _ = make_trajectories(agent, dev_items, progress=False)
    report: dict = {}
    dataset = build_sft_dataset(to_samples(trajectories, "trajectory"), smollm2_tokenizer, 4096, report=report)
    turns_report: dict = {}
    build_sft_dataset(to_samples(trajectories, "turns"), smollm2_tokenizer, 4096, report=turns_report)
    assert report["kinds"] == turns_report["kinds"] and report["labelled_tokens"] == turns_report["labelled_tokens"]
    assert report["tokens"] < turns_report["tokens"]
    accounting = token_accounting(trajectories, smollm2_tokenizer, 4096)
    assert accounting["turns"]["tokens"] == turns_report["tokens"]
    assert accounting["trajectory"]["tokens"] == report["tokens"]
    assert accounting["labelled_tokens_equal"]
    for trajectory, row in zip(trajectories, dataset):
        assert row["input_ids"] == [i for s in trajectory["segments"] for i in s["token_ids"]]
        union = {}
        for sample in to_sft_samples(trajectory):
            ids, labels = sample_ids(sample, smollm2_tokenizer)
            assert ids == row["input_ids"][: len(ids)]  # a prefix of the trajectory
            union.update({p: label for p, label in enumerate(labels) if label != IGNORE_INDEX})
        assert {p: label for p, label in enumerate(row["labels"]) if label != IGNORE_INDEX} == union
        assert row["kinds"] == [s["kind"] for s in to_sft_samples(trajectory)]
