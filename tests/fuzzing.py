"""Fuzzing a service's OpenAPI document against the app, in process, with schemathesis.

Schemathesis generates requests from ``/<service>/openapi.json`` (schema-valid
ones in the positive run, schema-invalid ones in the negative run) and sends
them through its ASGI transport, so no server or socket is involved.

Why not ``schemathesis.pytest.from_fixture`` + ``@schema.parametrize()``: with
schemathesis 4.32.5 and pytest 9.2 it fails before running anything
(``'Function' object has no attribute '_nodeid'``: pytest 9 dropped that
attribute). Hypothesis driven directly over ``operation.as_strategy()`` does
the same work and lets the app come from an ordinary fixture on ``tmp_path``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
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

# Per operation and per mode: 7 operations x 2 modes x 50 runs in about 6 s.
MAX_EXAMPLES = 50

Check = Callable[[CheckContext, Response, Case], "bool | None"]


def problem_documents(expected_client_errors: Collection[int]) -> Check:
    """A check: every error is RFC 9457 problem+json with the status in the
    body, and a client error is one the service answers on purpose (anything
    else, such as 404 or 405, would mean a request fell through to somewhere
    it should not)."""

    def error_is_a_problem_document(
        ctx: CheckContext, response: Response, case: Case
    ) -> bool | None:
        if response.status_code < 400:
            return None
        # 5xx are ``not_a_server_error``'s to report; they must still be problem documents.
        # 413 is the platform's body limit, which a negative case over a long
        # string's maxLength may pass on any operation.
        expected = response.status_code in expected_client_errors or response.status_code == 413
        assert response.status_code >= 500 or expected, (
            f"unexpected status {response.status_code}: {response.text}"
        )
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type == PROBLEM_MEDIA_TYPE, f"content type {content_type!r}"
        body = response.json()
        assert isinstance(body, dict), body
        assert str(body.get("type", "")).startswith(PROBLEM_BASE), body
        assert body.get("title"), body
        assert body.get("status") == response.status_code, body
        if response.status_code == 422:
            assert body.get("errors"), body
        return None

    return error_is_a_problem_document


def positive_data_accepted(
    known_schema_gaps: Collection[tuple[str, str]],
    excused: Callable[[Response, Case], bool] = lambda response, case: False,
) -> Check:
    """``positive_data_acceptance``, minus 422s whose every error is one of
    ``known_schema_gaps`` (field, error type) and responses ``excused`` says
    depend on something else (state left by earlier cases)."""

    def accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
        if excused(response, case):
            return None
        if response.status_code == 422:
            errors = response.json().get("errors", [])
            if errors and all((e["field"], e["type"]) in known_schema_gaps for e in errors):
                return None
        return st.positive_data_acceptance(ctx, response, case)

    return accepted


def negative_data_rejected(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """``negative_data_rejection``, counting a 413 (the platform's body limit,
    which a value far past its maxLength may hit first) as a rejection."""
    if response.status_code == 413:
        return None
    return st.negative_data_rejection(ctx, response, case)


def checks(error_check: Check, acceptance: Check) -> list[Check]:
    return [
        st.not_a_server_error,
        # Errors are documented as problem+json (4XX, 422, 5XX) on every operation.
        st.status_code_conformance,
        st.content_type_conformance,
        st.response_schema_conformance,
        error_check,
        acceptance,
        negative_data_rejected,
        # Secured operations that answered 2xx are replayed without and with a garbled token.
        st.ignored_auth,
    ]
    # Left out on purpose:
    # - response_headers_conformance, missing_required_header: headers are not all declared.
    # - use_after_free, ensure_resource_availability, object_level_authorization,
    #   unsupported_method, allow_header_conformance: need stateful runs or the coverage
    #   phase, which these tests do not run.


def bearer(token: Callable[[Case], str]) -> type:
    """An auth provider sending ``Authorization: Bearer <token(case)>``;
    schemathesis caches what ``get`` returns, so ``token`` runs once per run."""

    class Bearer:
        def get(self, case: Case, ctx: AuthContext) -> str:
            return token(case)

        def set(self, case: Case, data: str, ctx: AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return Bearer


@contextlib.contextmanager
def signed_in_schema(tmp_path: Path, clock: ManualClock, service: str) -> Iterator[BaseSchema]:
    """The OpenAPI document of ``/<service>`` on a fresh app, every operation
    sent with a valid access token (services check a token's signature and
    expiry, not the database), and no gateway limits: one fuzzing user sends
    far more than a person would."""
    app = create_app(make_settings(tmp_path, ratelimit_enabled=False), clock=clock)
    schema = schemathesis.openapi.from_asgi(f"/{service}/openapi.json", app)
    token = app.state.platform.tokens.issue(user_id=1, session_id=1)
    schema.auth()(bearer(lambda case: token))
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()


def _fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    checks: list[Check],
    prepare: Callable[[Case], None] | None,
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same cases on every run: CI is deterministic
        database=None,
        deadline=None,  # the first request pays for the app's warm-up
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        if prepare is not None:
            prepare(case)
        case.call_and_validate(checks=checks)

    run()


def fuzz_every_operation(
    schema: BaseSchema,
    mode: GenerationMode,
    subtests: pytest.Subtests,
    checks: list[Check],
    *,
    negative_needs_input: bool = True,
    prepare: Callable[[Case], None] | None = None,
) -> set[str]:
    """Fuzz each operation of ``schema`` as a subtest; the labels fuzzed. With
    ``negative_needs_input``, an operation that takes no parameters and no
    body is left out of the negative run: there is nothing to send that the
    document does not allow. ``prepare`` may change each case before it is
    sent (say, to keep a long poll from waiting)."""
    labels = set()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation the document has but schemathesis cannot read
        operation = result.ok()
        labels.add(operation.label)
        takes_input = bool(list(operation.iter_parameters())) or bool(list(operation.body))
        if mode is GenerationMode.NEGATIVE and negative_needs_input and not takes_input:
            continue
        with subtests.test(operation=operation.label):
            _fuzz(operation, mode, checks, prepare)
    return labels
