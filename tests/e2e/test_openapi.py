"""The HTTP door against its own OpenAPI, fuzzed by schemathesis in-process: every operation,
with an admin token (so auth passes and the handlers run), on a throwaway china-2020 SQLite
store. No answer may be a 5xx, and every answer must be one the schema declares, shaped as
declared (random valid commands land on the store: that is fine, it is thrown away)."""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Err, Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from entitlements import open_engine
from entitlements.application.access import open_tokens
from entitlements.application.queries import Queries
from entitlements.http.app import create_app
from tests.conftest import read_jsonl, scenario_file

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]

# The schema is loaded at collection (schemathesis parametrizes from it), so the app exists
# then; its store is only opened by the lifespan, in the fixture below. (Not
# schemathesis.pytest.from_fixture: its lazy loading breaks on pytest 9.)
STORE = Path(tempfile.mkdtemp(prefix="entitlements-openapi-"))
atexit.register(shutil.rmtree, STORE, ignore_errors=True)  # also where no test here ran (xdist)
APP = create_app(f"sqlite:///{STORE / 'entitlements.db'}", follow=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def admin_headers() -> Iterator[dict[str, str]]:
    """The china-2020 store behind the app, and an admin's bearer header. schemathesis runs
    the app's lifespan itself, from a test's first request to its end: the worker opens
    its engine then, so the short wait is set on every engine's queries."""
    url = f"sqlite:///{STORE / 'entitlements.db'}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ENTITLEMENTS_CACHE", str(STORE / "cache"))
            with open_engine(url) as engine:
                engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
            secret = open_tokens(url).create("fuzzer", "admin")
            mp.setattr(Queries, "wait_timeout", 0.05)  # an unreachable min_position: a quick 409
            mp.setattr(APP.state.records, "lifetime", 0.05)  # a stream ends at once (it resumes)
            yield {"Authorization": f"Bearer {secret}"}
    finally:
        shutil.rmtree(STORE, ignore_errors=True)


def _test_of(method: str, path: str) -> Any:
    """The fuzz test of one operation, under a name of its own. `schema.parametrize()` over
    the whole schema gives every operation the same test id, and pytest-xdist runs only one
    test of an id: so one test per operation, each parametrized by schemathesis alone."""

    def test(case: schemathesis.Case[Any], admin_headers: dict[str, str]) -> None:
        if case.query and "wait" in case.query:  # long polling: up to 30 s an example is too slow
            case.query["wait"] = 0
        case.call_and_validate(headers=admin_headers, checks=CHECKS)

    fuzzed = settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(test)
    return schema.include(method=method, path=path).parametrize()(fuzzed)


def _operation(
    result: Ok[APIOperation[Any, Any, Any, Any]] | Err[InvalidSchema],
) -> APIOperation[Any, Any, Any, Any]:
    if isinstance(result, Err):  # a schema we cannot fuzz must fail the run, not shrink it
        raise result.err()
    return result.ok()


OPERATIONS = [_operation(result) for result in schema.get_all_operations()]
for _op in OPERATIONS:
    _name = "test_no_5xx_and_answers_as_declared_" + re.sub(r"\W+", "_", _op.label).strip("_")
    globals()[_name.lower()] = _test_of(_op.method.upper(), _op.path)


def test_every_operation_is_fuzzed() -> None:
    """The schema's operations, each with a fuzz test of its own (none lost to a shared id)."""
    names = {n for n in globals() if n.startswith("test_no_5xx_and_answers_as_declared_")}
    assert len(names) == len(OPERATIONS) >= 10
