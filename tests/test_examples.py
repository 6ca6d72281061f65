"""The examples run (with a scripted policy in place of the bundled model)."""

import importlib.util
from pathlib import Path

from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_documents_example_retrieves_from_the_users_store():
    example = load("own_documents")
    policy = ScriptedPolicy(["<search> Arthur's Magazine, First for Women </search>",
                             "<answer> Arthur's Magazine </answer>"])
    result = example.build_agent(llm=policy).invoke("Which magazine was started first?")
    assert result["answer"] == "Arthur's Magazine"
    assert [d.metadata["title"] for d in result["documents"]] == ["Arthur's Magazine", "First for Women"]


def test_router_workflow_sends_knowledge_questions_to_ragr1_only():
    example = load("router_workflow")
    policy = ScriptedPolicy(["<search> Marie Curie born, Albert Einstein born </search>",
                             "<answer> Marie Curie </answer>"])
    docs = [Document("Marie Curie was born in 1867.", metadata={"title": "Marie Curie"}),
            Document("Albert Einstein was born in 1879.", metadata={"title": "Albert Einstein"})]
    workflow = example.build_workflow(RagR1Agent(policy, MemoryRetriever(documents=docs), k=1))
    out = workflow.invoke({"question": "Who was born first, Marie Curie or Albert Einstein?"})
    assert out["route"] == "knowledge" and out["answer"] == "Marie Curie"
    assert [d.metadata["title"] for d in out["sources"]] == ["Marie Curie", "Albert Einstein"]
    assert workflow.invoke({"question": "(2 + 3) * 4 ="}) == {
        "question": "(2 + 3) * 4 =", "route": "math", "answer": "20"}
    assert workflow.invoke({"question": "Hello there"})["route"] == "chat"
    assert "cannot compute" in workflow.invoke({"question": "1 / 0"})["answer"]
    assert len(policy.calls) == 2  # only the knowledge question reached the model
