"""The repetition stop: the detector on token ids, each policy ending a looping turn with
``finish_reason="repetition"`` (inside the decode loop where it has one), the graph counting that turn
as invalid, and the kept ids and log-probs being exactly the prefix that was sampled."""

from __future__ import annotations

import copy
import random

import pytest
from _threads import run_threads
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeListLLM

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.config import RagR1Config
from langchain_ragr1.data.items import QAItem
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.evaluation import aggregate, prediction_record
from langchain_ragr1.policies import Generation, LangChainPolicy, Sampling, TransformersPolicy
from langchain_ragr1.policies.base import cut_repetition
from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy
from langchain_ragr1.policies.fast import FastPolicy
from langchain_ragr1.policies.repetition import RepeatTracker, repetition_end, text_repetition_end
from langchain_ragr1.protocol import INVALID_ACTION_TEXT, make_prompt
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy
from langchain_ragr1.tuning.rl_rollout import GraphRollout, RolloutSettings

DOCS = [Document("Marie Curie physicist born 1867", metadata={"title": "Marie Curie"})]
QUESTION = "Who was born first, Marie Curie or Albert Einstein?"
ANSWER = "<think>1867 is before 1879.</think><answer> Marie Curie </answer>"
#: The answer turn of the README's `ragr1 ask` example: it restates the two birth years three times and
#: answers right. The default repetition stop must leave it alone.
README_TURN = ("<think>Marie Curie was born in 1867. Albert Einstein was born in 1879. The results say: Marie Curie "
               "was born in 1867, Albert Einstein was born in 1879. The article says: Marie Curie was born in 1867. "
               "Albert Einstein was born in 1879. The answer is Marie Curie.</think><answer> Marie Curie </answer>")
#: Small settings, so that a tiny model's loop (one id repeated) is stopped within its short turn.
SMALL = {"repeat_stop_tokens": 4, "repeat_stop_count": 3}


# --- the detector ------------------------------------------------------------------------------------


def fired_at(ids, span, count):
    """The 1-based position at which a fresh tracker fires when fed ``ids`` one by one (or None)."""
    tracker = RepeatTracker(span, count)
    return next((i + 1 for i, token in enumerate(ids) if tracker.push(token)), None)


def test_it_fires_on_the_token_that_completes_the_last_copy():
    loop = [10, 11, 12, 13, 14]
    ids = [1, 2, 3] + loop * 4
    assert fired_at(ids, 5, 3) == repetition_end(ids, 5, 3) == 3 + 3 * 5  # the third copy's last token
    assert fired_at(ids, 5, 4) == 3 + 4 * 5
    assert fired_at(ids, 5, 5) is None


def test_copies_need_not_be_consecutive_but_must_not_overlap():
    a, x, y = [5, 6, 7, 8], [20, 21], [30]
    ids = a + x + a + y + a + [99]
    assert fired_at(ids, 4, 3) == len(a + x + a + y + a)
    assert fired_at([7] * 30, 4, 3) == 12  # one id repeated: [7]*4 three times without overlap, not at 6
    assert fired_at([7, 8] * 20, 4, 3) == 12  # a period shorter than the span


def test_text_that_does_not_repeat_is_never_stopped():
    random.seed(0)
    ids = random.sample(range(50_000), 500)
    assert repetition_end(ids, 4, 2) is None
    tracker = RepeatTracker(4, 2)
    assert not any(tracker.push(t) for t in ids) and tracker.fired_at is None


def test_off_at_zero_and_settings_are_checked_with_what_to_use():
    assert repetition_end([7] * 100, 0, 2) is None and text_repetition_end("a " * 100, 0, 2) is None
    assert Sampling(repeat_stop_tokens=0).repeat_tracker() is None
    assert Sampling().repeat_tracker() is not None
    with pytest.raises(ConfigError, match=r"Sampling.repeat_stop_tokens must be 0 \(off\) or an integer >= 4"):
        Sampling(repeat_stop_tokens=2)
    with pytest.raises(ConfigError, match=r"Sampling.repeat_stop_count must be an integer >= 2"):
        Sampling(repeat_stop_count=1)
    with pytest.raises(ConfigError, match="LangChainPolicy.repeat_stop_tokens"):
        LangChainPolicy(FakeListLLM(responses=["x"]), repeat_stop_tokens=-1)
    with pytest.raises(ConfigError, match="inside sampling=Sampling"):
        TransformersPolicy.check_kwargs({"repeat_stop_tokens": 8})


def test_update_reads_only_the_new_ids_of_a_growing_turn():
    ids = [1, 2, 3] + [4, 5, 6, 7] * 3 + [8]
    tracker = RepeatTracker(4, 3)
    fired = [tracker.update(ids[:n]) for n in range(1, len(ids) + 1)]
    assert fired.index(True) + 1 == repetition_end(ids, 4, 3) == 15 and len(tracker) == len(ids)


def test_the_readme_answer_turn_is_not_stopped_by_the_defaults(smollm2_tokenizer):
    ids = smollm2_tokenizer(README_TURN, add_special_tokens=False)["input_ids"]
    defaults = Sampling()
    assert repetition_end(ids, defaults.repeat_stop_tokens, defaults.repeat_stop_count) is None
    assert repetition_end(ids, 8, 3) is not None  # a shorter span would stop it: the facts do repeat


def test_text_units_for_text_level_turns():
    loop = "The article says: Paris. "
    text = "<think>" + loop * 6
    end = text_repetition_end(text, 4, 3)
    assert end is not None and text[:end] == "<think>" + loop * 2 + "The article says:"  # 6 units a copy
    assert text_repetition_end(README_TURN, Sampling().repeat_stop_tokens, Sampling().repeat_stop_count) is None


# --- the cut --------------------------------------------------------------------------------------------


def decode(ids):
    return "".join(chr(64 + i) for i in ids)


def test_a_cut_turn_keeps_exactly_its_first_ids_and_logprobs():
    ids = [1, 2] + [3, 4, 5, 6] * 5
    logprobs = [-0.1 * i for i in range(len(ids))]
    turn = Generation(text=decode(ids), token_ids=ids, logprobs=logprobs, finish_reason="length", metadata={"a": 1})
    cut = cut_repetition(turn, 4, 3, decode)
    assert cut.finish_reason == "repetition" and cut.metadata == {"a": 1, "repeat_stop": {"tokens": 4, "count": 3}}
    assert cut.token_ids == ids[:14] and cut.logprobs == logprobs[:14] and cut.text == decode(ids[:14])
    assert cut_repetition(turn, 0, 3, decode) is turn
    closed = Generation(text=decode(ids[:14]), token_ids=ids[:14], logprobs=logprobs[:14], finish_reason="stop")
    assert cut_repetition(closed, 4, 3, decode) is closed  # its stop string ended on that token: it closed its tag


def test_a_backend_that_cannot_stop_gets_the_turn_cut_and_a_stop_string_before_the_loop_wins(
        tiny_model, smollm2_tokenizer, monkeypatch):
    from test_transformers_policy import script  # model.generate replaced: it ignores the stopping criteria

    looping = smollm2_tokenizer("<search> a </search>" + " again and again" * 30, add_special_tokens=False)["input_ids"]
    with TransformersPolicy(tiny_model, smollm2_tokenizer,
                            sampling=Sampling(max_new_tokens=80, temperature=0, **SMALL)) as policy:
        fake = script(policy, monkeypatch, lambda p: looping)
        closed = policy.generate(prompt(policy))
        turn = policy.generate(prompt(policy), stop=())
    assert closed.finish_reason == "stop" and closed.text == "<search> a </search>"
    assert turn.finish_reason == "repetition" and len(turn.token_ids) < 30
    assert turn.token_ids == looping[:len(turn.token_ids)] and turn.text == policy.decode(turn.token_ids)
    assert turn.logprobs == fake_logprobs(fake, looping)[:len(turn.token_ids)]


def fake_logprobs(fake, ids):
    """The log-probs of ``ids`` under the scripted ``generate``'s last logits (one row)."""
    import torch

    return [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(fake.logits, ids)]


# --- the policies stop inside their decode loop ----------------------------------------------------------


def prompt(policy, question="Who wrote Hamlet"):
    return [policy.render_prompt(make_prompt(question))]


@pytest.fixture
def stop_on():
    return Sampling(max_new_tokens=40, temperature=0, **SMALL)


def test_transformers_policy_stops_inside_generate_and_keeps_the_sampled_prefix(tiny_model, smollm2_tokenizer,
                                                                               stop_on):
    off = Sampling(max_new_tokens=40, temperature=0, repeat_stop_tokens=0)
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=off) as policy:
        free = policy.generate(prompt(policy), stop=())
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on) as policy, policy.record_calls() as calls:
        cut = policy.generate(prompt(policy), stop=())
    assert free.finish_reason == "length" and len(free.token_ids) == 40 and len(set(free.token_ids)) == 1
    assert cut.finish_reason == "repetition" and len(cut.token_ids) == 12  # [t]*4 three times
    assert cut.token_ids == free.token_ids[:12] and cut.logprobs == free.logprobs[:12]
    assert cut.text == policy.decode(cut.token_ids)
    assert calls[0].steps == 12  # model.generate stopped there: the other 28 tokens were never generated


def test_fast_policy_stops_in_its_loop_with_the_same_kept_tokens(tiny_model, smollm2_tokenizer, stop_on):
    questions = ["Who wrote Hamlet", "Capital of Australia?"]
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on, batch_wait_s=0.2) as eager, \
            FastPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on, batch_wait_s=0.2,
                       weights="float32") as fast, fast.record_calls() as calls:
        expected = run_threads(lambda i: eager.generate(prompt(eager, questions[i]), stop=()), 2)
        got = run_threads(lambda i: fast.generate(prompt(fast, questions[i]), stop=()), 2)
    assert fast.decoder is not None and calls[0].steps == 12 and len(calls[0].prompts) == 2  # one batch, stopped
    for have, want in zip(got, expected):
        assert (have.token_ids, have.text, have.finish_reason) == (want.token_ids, want.text, "repetition")
        assert have.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_continuous_policy_cancels_a_looping_turn(tiny_model, smollm2_tokenizer, stop_on):
    with TransformersPolicy(copy.deepcopy(tiny_model), smollm2_tokenizer, sampling=stop_on) as static:
        want = static.generate(prompt(static), stop=())
    continuous = ContinuousTransformersPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on, max_context=256, seed=0)
    try:
        with continuous.record_calls() as calls:
            have = continuous.generate(prompt(continuous), stop=())
    finally:
        continuous.close()
    assert calls[0].steps < stop_on.max_new_tokens  # cancelled in the stream, not cut after 40 tokens
    assert have.finish_reason == want.finish_reason == "repetition"
    assert have.token_ids == want.token_ids and have.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_a_langchain_model_turn_is_cut_after_it_is_written():
    loop = "<think>The article says: Paris. The article says: Paris. " + "The article says: Paris. " * 10
    llm = FakeListLLM(responses=[loop, ANSWER + " " + "after the answer " * 20])
    policy = LangChainPolicy(llm, repeat_stop_tokens=4, repeat_stop_count=3)
    turn = policy.generate(prompt(policy))
    assert turn.finish_reason == "repetition" and loop.startswith(turn.text) and len(turn.text) < len(loop) // 3
    kept = policy.generate(prompt(policy))  # repeats only after its stop string: the graph cuts it there
    assert kept.finish_reason != "repetition" and kept.text.startswith(ANSWER)


# --- the graph counts it invalid; the trajectory stays exact ------------------------------------------


class LoopingOnce(ScriptedPolicy):
    """A token-level scripted policy whose first turn is reported stopped by the repetition stop."""

    def generate(self, segments, *, stop=(), config=None):
        generation = super().generate(segments, stop=stop, config=config)
        if generation.text.startswith("<think>loop"):
            return cut_repetition(generation, 4, 3, self.decode)
        return generation


def test_the_graph_counts_a_stopped_turn_as_invalid_and_asks_again():
    policy = LoopingOnce(["<think>loop loop loop loop loop <answer> wrong </answer>", ANSWER], token_level=True)
    result = RagR1Agent(policy, MemoryRetriever(documents=DOCS)).invoke(QUESTION)
    stopped, invalid_text, answer = result["segments"][1:]
    assert stopped["finish_reason"] == "repetition" and stopped["text"] == "<think>loop loop loop"
    assert stopped["action"]["kind"] == "invalid" and "repetition stop" in stopped["action"]["reason"]
    assert invalid_text["text"] == INVALID_ACTION_TEXT and answer["finish_reason"] == "stop"
    assert result["invalid_turns"] == 1 and result["answer"] == "Marie Curie"
    item = QAItem(id="q1", question=QUESTION, golden_answers=["Marie Curie"])
    record = prediction_record(item, "multi", result, 1.0)
    assert record["repetition_stops"] == 1 and record["invalid_turns"] == 1
    metrics = aggregate([record])
    assert metrics["repetition_stops"] == 1 and metrics["format_ok"] == 0.5


def test_a_langchain_model_that_loops_gets_the_invalid_action_text():
    llm = FakeListLLM(responses=["<think>" + "I will search now. " * 40, ANSWER])
    result = RagR1Agent(llm=llm, retriever=MemoryRetriever(documents=DOCS)).invoke(QUESTION)
    assert result["segments"][1]["finish_reason"] == "repetition" and result["invalid_turns"] == 1
    assert result["segments"][2]["text"] == INVALID_ACTION_TEXT and result["answer"] == "Marie Curie"


def test_rollout_of_a_stopped_turn_keeps_the_sampled_ids_and_logprobs(tiny_model, smollm2_tokenizer, stop_on):
    off = Sampling(max_new_tokens=40, temperature=0, repeat_stop_tokens=0)
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=off) as policy:
        free = policy.generate(prompt(policy, QUESTION), stop=())
    with TransformersPolicy(tiny_model, smollm2_tokenizer, sampling=stop_on) as policy:
        rollout = GraphRollout(MemoryRetriever(documents=DOCS), RolloutSettings(agent=RagR1Config(max_turns=0)),
                               policy=policy)
        out = rollout([QUESTION], None)
    ids, mask, logprobs = out["completion_ids"][0], out["env_mask"][0], out["logprobs"][0]
    kept = [(t, lp) for t, m, lp in zip(ids, mask, logprobs) if m]
    assert [t for t, _ in kept] == free.token_ids[:12] and [lp for _, lp in kept] == free.logprobs[:12]
    assert out["repetition_stops"] == [1] and out["invalid_turns"] == [1] and out["format_ok"] == [False]
    assert rollout.last["ragr1/repetition_stops"] == 1.0
