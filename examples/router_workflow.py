"""A router workflow: knowledge questions go to RAG-R1, arithmetic to a calculator, the rest
to a canned reply.

The parent graph's state has no ``messages``: RAG-R1 joins it as ``agent.as_node(...)``,
reading ``question`` and writing ``answer`` and ``sources``. ``classify`` is a rule here;
a chat model with structured output can take its place.

    python examples/router_workflow.py "Who was born first, Marie Curie or Albert Einstein?"
"""

import ast
import operator
import re
import sys
from typing import Literal, TypedDict

from langchain_core.documents import Document
from langgraph.graph import END, START, StateGraph

from langchain_ragr1 import RagR1Agent

Route = Literal["knowledge", "math", "chat"]
GREETING = re.compile(r"^\s*(hi|hello|hey|thanks|thank you|bye)\b", re.IGNORECASE)
ARITHMETIC = re.compile(r"^[\d\s.+\-*/()]+[=?]?\s*$")
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
             ast.Div: operator.truediv, ast.USub: operator.neg}


class WorkflowState(TypedDict, total=False):
    question: str
    route: Route
    answer: str | None
    sources: list[Document]


def classify(question: str) -> Route:
    """``math`` for arithmetic, ``chat`` for greetings, ``knowledge`` for everything else."""
    if ARITHMETIC.match(question):
        return "math"
    return "chat" if GREETING.match(question) else "knowledge"


def evaluate(node: ast.AST) -> float:
    """An arithmetic expression's value (numbers and + - * / only)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](evaluate(node.operand))
    raise ValueError(f"not arithmetic: {ast.dump(node)}")


def calculator(state: WorkflowState) -> dict:
    expression = state["question"].strip().rstrip("=?")
    try:
        value = evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return {"answer": f"I cannot compute {expression!r}: {exc}"}
    return {"answer": f"{value:g}"}


def small_talk(state: WorkflowState) -> dict:
    return {"answer": "Hello! Ask me a factual question or some arithmetic."}


def build_workflow(agent: RagR1Agent):
    """The compiled router graph with ``agent`` answering knowledge questions."""
    builder = StateGraph(WorkflowState)
    builder.add_node("router", lambda state: {"route": classify(state["question"])})
    builder.add_node("ragr1", agent.as_node(input_key="question", output_key="answer",
                                            documents_key="sources"))
    builder.add_node("calculator", calculator)
    builder.add_node("small_talk", small_talk)
    builder.add_edge(START, "router")
    builder.add_conditional_edges(
        "router", lambda state: state["route"],
        {"knowledge": "ragr1", "math": "calculator", "chat": "small_talk"},
    )
    for node in ("ragr1", "calculator", "small_talk"):
        builder.add_edge(node, END)
    return builder.compile()


if __name__ == "__main__":
    question = " ".join(sys.argv[1:]) or "Who was born first, Marie Curie or Albert Einstein?"
    # The bundled offline default with BM25 (starts in seconds); any RagR1Agent works.
    workflow = build_workflow(RagR1Agent.from_default(retriever="bm25", max_new_tokens=200))
    out = workflow.invoke({"question": question})
    print(f"route: {out['route']} | answer: {out['answer']}")
    for doc in out.get("sources", []):
        print("  source:", doc.metadata.get("title"))
