"""CLI errors come back as one clear line and exit code 2, before anything heavy loads."""

import pytest

from langchain_ragr1.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_empty_question(capsys):
    code, out = run(capsys, "ask", "   ")
    assert code == 2 and "question is empty" in out


def test_bad_setting_fails_before_model_load(capsys):
    code, out = run(capsys, "ask", "Who?", "--k", "0")
    assert code == 2 and "k must be a positive integer" in out


def test_missing_store_names_the_index_command(capsys, tmp_path):
    code, out = run(capsys, "ask", "Who?", "--store", str(tmp_path / "nowhere"))
    assert code == 2 and "ragr1 index" in out


def test_http_retriever_needs_url(capsys):
    code, out = run(capsys, "ask", "Who?", "--retriever", "http")
    assert code == 2 and "--url" in out


def test_index_needs_input(capsys, tmp_path):
    code, out = run(capsys, "index", "--store", str(tmp_path / "s"))
    assert code == 2 and "--bundled" in out


def test_unknown_mode_is_rejected_by_argparse():
    with pytest.raises(SystemExit):
        main(["ask", "Who?", "--mode", "parallel"])


def test_missing_model_folder_says_what_to_do(capsys, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "title": "Paris", "text": "Paris is the capital of France."}\n')
    code, out = run(capsys, "ask", "Who?", "--retriever", "bm25", "--corpus", str(corpus),
                    "--model", str(tmp_path / "no-model"))
    assert code == 2 and "no-model" in out


def test_bad_corpus_line_is_named(capsys, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "title": "A", "text": "a"}\n{"id": "2", "title": "B"}\n')
    code, out = run(capsys, "ask", "Who?", "--retriever", "bm25", "--corpus", str(corpus))
    assert code == 2 and "line 2" in out
