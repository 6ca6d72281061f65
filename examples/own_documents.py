"""RAG-R1 over your own documents in an ordinary LangChain vector store.

Any LangChain retriever works; here an ``InMemoryVectorStore`` with the bundled offline
MiniLM embedder. Any LangChain LLM or chat model works as ``llm`` too, e.g.
``ChatOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY", model=...)`` for a vLLM
server; by default this uses the bundled SmolLM2 (untrained: expect a weak answer).

    python examples/own_documents.py
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_ragr1 import MiniLMEmbeddings, RagR1Agent, Sampling, TransformersPolicy

DOCUMENTS = [
    Document("Arthur's Magazine (1844-1846) was an American literary periodical.",
             metadata={"title": "Arthur's Magazine"}),
    Document("First for Women is a woman's magazine published in the USA, started in 1989.",
             metadata={"title": "First for Women"}),
    Document("The Oberoi family is an Indian family famous for its hotels.",
             metadata={"title": "Oberoi family"}),
]


def build_agent(llm=None) -> RagR1Agent:
    """An agent over ``DOCUMENTS``; ``llm`` defaults to the bundled SmolLM2 (greedy)."""
    store = InMemoryVectorStore.from_documents(DOCUMENTS, MiniLMEmbeddings())
    llm = llm or TransformersPolicy.from_pretrained(sampling=Sampling(max_new_tokens=200, temperature=0))
    return RagR1Agent(llm=llm, retriever=store.as_retriever(), mode="multi", k=1, max_turns=2)


if __name__ == "__main__":
    result = build_agent().invoke("Which magazine was started first, Arthur's Magazine or First for Women?")
    print(result["trace"])
    print("answer:", result["answer"], "| retrieval turns:", result["turns"], "| queries:", result["queries"])
