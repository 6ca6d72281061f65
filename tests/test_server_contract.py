"""Schemathesis against the /retrieve server's own OpenAPI schema: the schema matches behaviour."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from langchain_ragr1.server import DEFAULT_MAX_QUERIES, DEFAULT_MAX_RESULTS, DEFAULT_MAX_TOPK, create_retrieval_app  # noqa: E402, E501
from langchain_ragr1.testing import MemoryRetriever  # noqa: E402


def _adapt_hypothesis_jsonschema() -> None:
    """schemathesis 4.15.2 is the newest that installs beside langgraph-api (jsonschema-rs<0.45);
    it generates objects with hypothesis-jsonschema 0.23.1, which drives hypothesis's private
    ``many`` with ``more()``/``reject()``, an API that hypothesis 6.170 replaced by ``with
    many(...) as m: for _ in m``. Give it the old API on top of the new one."""
    from hypothesis.internal.conjecture import utils as cu
    from hypothesis_jsonschema import _from_schema

    if hasattr(cu.many, "more"):
        return
    stop = object()

    class LegacyMany:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._many = cu.many(*args, **kwargs)
            self._many.__enter__()
            self._elements = iter(self._many)

        def more(self) -> bool:
            if next(self._elements, stop) is stop:
                self._many.__exit__(None, None, None)
                return False
            return True

        def reject(self, why: str | None = None) -> None:
            self._many.reject(why)

    class CompatUtils:
        many = LegacyMany

        def __getattr__(self, name: str) -> object:
            return getattr(cu, name)

    _from_schema.cu = CompatUtils()


_adapt_hypothesis_jsonschema()

DOCS = [Document(id=f"d{i}", page_content=f"passage {i} about topic {i % 7}", metadata={"title": f"T{i}"})
        for i in range(120)]

app = create_retrieval_app(MemoryRetriever(documents=DOCS))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def _over_results_limit(case) -> bool:
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("queries"), list):
        return False
    topk = body.get("topk", 3)
    return isinstance(topk, int) and not isinstance(topk, bool) and len(body["queries"]) * topk > DEFAULT_MAX_RESULTS


def _otherwise_valid(body: dict) -> bool:
    """The body breaks no limit but queries x topk (so that is the one the 422 must name)."""
    topk = body.get("topk", 3)
    return (len(body["queries"]) <= DEFAULT_MAX_QUERIES and 1 <= topk <= DEFAULT_MAX_TOPK
            and all(isinstance(q, str) for q in body["queries"])
            and isinstance(body.get("return_scores", False), bool) and set(body) <= {"queries", "topk", "return_scores"})


@schema.parametrize()
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schema_matches_behaviour(case) -> None:
    if _over_results_limit(case):
        # The one limit JSON Schema cannot say (queries x topk, in the description): a 422
        # naming it, checked here, instead of the 2xx that positive_data_acceptance expects.
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        assert response.status_code == 422
        if _otherwise_valid(case.body):  # else another limit (topk, queries) may be reported first
            assert response.json()["detail"][0]["type"] == "too_many_results"
    else:
        case.call_and_validate()
