"""Fuzz every operation of ``/cache/openapi.json`` against the app, in process,
as ``tests/platform/test_openapi_schemathesis.py`` does for the other services:
schema-valid requests must be accepted, schema-invalid ones refused, and
every error must be a documented problem document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import given, settings
from schemathesis import AuthContext, Case, CheckContext, GenerationMode, Response
from schemathesis import checks as st
from schemathesis.core.result import Err
from schemathesis.python import asgi
from schemathesis.schemas import APIOperation, BaseSchema

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.http import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from tests.conftest import make_settings

MAX_EXAMPLES = 50

# 404 (no such key), 409 (incr on a value another case left that is not an
# integer) and 412 (a write condition) depend on what earlier cases stored.
EXPECTED_CLIENT_ERRORS = {400, 401, 404, 409, 412, 413, 422}
STATE_DEPENDENT = {404, 409, 412}

# Schema-valid requests refused on purpose, as (field, error type): a document
# cannot say that the nx and xx flags exclude each other.
KNOWN_SCHEMA_GAPS = {("xx", "conflict")}


def bearer_of(token: str) -> type:
    """An auth provider sending ``token``: a valid access token, since the
    service checks a token's signature and expiry, not the database."""

    class Bearer:
        def get(self, case: Case, ctx: AuthContext) -> str:
            return token

        def set(self, case: Case, data: str, ctx: AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return Bearer


@pytest.fixture
def cache_schema(tmp_path: Path, clock: ManualClock) -> Iterator[BaseSchema]:
    # No gateway limits: one fuzzing user sends far more than a person would.
    app = create_app(make_settings(tmp_path, ratelimit_enabled=False), clock=clock)
    schema = schemathesis.openapi.from_asgi("/cache/openapi.json", app)
    token = app.state.platform.tokens.issue(user_id=1, session_id=1)
    schema.auth()(bearer_of(token))
    yield schema
    asgi.shutdown_lifespans()


def error_is_a_problem_document(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if response.status_code < 400:
        return None
    assert response.status_code >= 500 or response.status_code in EXPECTED_CLIENT_ERRORS, (
        f"unexpected status {response.status_code}: {response.text}"
    )
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM_MEDIA_TYPE, f"content type {content_type!r}"
    body = response.json()
    assert str(body.get("type", "")).startswith(PROBLEM_BASE), body
    assert body.get("title"), body
    assert body.get("status") == response.status_code, body
    if response.status_code == 422:
        assert body.get("errors"), body
    return None


def _past_int64(case: Case) -> bool:
    """The generator aims at 2**63 - 1 through a float, which rounds to 2**63:
    a value past the documented maximum, rightly refused."""
    amount = case.body.get("amount") if isinstance(case.body, dict) else None
    number = isinstance(amount, int | float) and not isinstance(amount, bool)
    return number and not -(2**63) <= amount <= 2**63 - 1  # type: ignore[operator]


def positive_data_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if response.status_code in STATE_DEPENDENT:
        return None
    if response.status_code == 422 and _past_int64(case):
        return None
    if response.status_code == 422:
        errors = response.json().get("errors", [])
        if errors and all((e["field"], e["type"]) in KNOWN_SCHEMA_GAPS for e in errors):
            return None
    return st.positive_data_acceptance(ctx, response, case)


CHECKS = [
    st.not_a_server_error,
    st.status_code_conformance,
    st.content_type_conformance,
    st.response_schema_conformance,
    error_is_a_problem_document,
    positive_data_accepted,
    st.negative_data_rejection,
    st.ignored_auth,
]


def _fuzz(operation: APIOperation, mode: GenerationMode) -> None:
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        case.call_and_validate(checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_cache_operation_survives_fuzzing(
    cache_schema: BaseSchema, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    labels = []
    for result in cache_schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        labels.append(operation.label)
        takes_input = bool(list(operation.iter_parameters())) or bool(list(operation.body))
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue
        with subtests.test(operation=operation.label):
            _fuzz(operation, mode)
    assert {
        "PUT /v1/keys/{key}",
        "GET /v1/keys/{key}",
        "DELETE /v1/keys/{key}",
        "POST /v1/keys/{key}/incr",
        "POST /v1/mget",
        "POST /v1/mset",
        "GET /v1/stats",
    } <= set(labels)
