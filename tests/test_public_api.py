import langchain_ragr1
import langchain_ragr1.policies
import langchain_ragr1.retrievers

EXPECTED = {
    "RagR1Agent", "RagR1Config", "RagR1Context", "RagR1State", "build_graph", "episode_result", "episode_json", "Policy",
    "Generation", "LangChainPolicy", "TransformersPolicy", "ContinuousTransformersPolicy", "Action", "make_prompt",
    "parse_action", "Sampling",
    "render_information", "normalize_answer", "exact_match", "f1_score", "RagR1Error",
    "ConfigError", "MissingResourceError", "RetrievalError", "ProtocolError", "MiniLMEmbeddings", "BM25Retriever",
    "SearchR1HTTPRetriever", "build_chroma_store", "open_chroma_store", "load_bundled_corpus",
    "load_corpus_file", "default_agent", "make_retriever", "default_model_path", "base_model_path", "RagR1Retriever",
    "VLLMPolicy", "openai_server_policy", "create_retrieval_app",
}


def test_all_is_explicit_and_every_name_resolves():
    assert set(langchain_ragr1.__all__) == EXPECTED
    for module in (langchain_ragr1, langchain_ragr1.policies, langchain_ragr1.retrievers):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError):
        langchain_ragr1.NoSuchThing  # noqa: B018


def test_lazy_names_are_visible_to_type_checkers():
    import ast
    from pathlib import Path

    for module in (langchain_ragr1, langchain_ragr1.policies):
        tree = ast.parse(Path(module.__file__).read_text())
        checked = {alias.asname or alias.name
                   for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                   for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
        assert set(module._LAZY) == checked, module.__name__
