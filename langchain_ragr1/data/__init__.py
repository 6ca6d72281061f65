"""QA sets: loaders of the standard formats and the offline generator over the bundled corpus."""

from langchain_ragr1.data.items import DataError, QAItem, write_jsonl
from langchain_ragr1.data.loaders import BENCHMARKS, NAMED_SETS, load_file, load_qa

__all__ = ["BENCHMARKS", "NAMED_SETS", "DataError", "QAItem", "load_file", "load_qa", "write_jsonl"]
