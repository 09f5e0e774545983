"""Fuzz every operation of ``/shortener/openapi.json`` against the app, in
process (``tests/fuzzing.py`` says how)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from schemathesis import Case, GenerationMode, Response
from schemathesis.schemas import BaseSchema

from sysdesign.platform.clock import ManualClock
from tests.fuzzing import (
    checks,
    fuzz_every_operation,
    positive_data_accepted,
    problem_documents,
    signed_in_schema,
)

# 404 (a code that no link has, or not the caller's) and 409 (an alias taken
# by an earlier case) depend on what earlier cases did.
STATE_DEPENDENT = {404, 409}
# Schema-valid requests the domain refuses on purpose: targets that are not
# absolute http(s) URLs or point back here, reserved aliases, tags and titles
# with characters the schema cannot exclude, expiries in the past, nulls for
# fields that cannot be cleared.
KNOWN_SCHEMA_GAPS = {
    ("target", "value_error"),
    ("target", "url_scheme"),
    ("target", "loop"),
    ("alias", "reserved"),
    ("alias", "value_error"),
    ("title", "value_error"),
    ("tags", "value_error"),
    ("expires_at", "value_error"),
    ("redirect_status", "value_error"),
    ("forward_query", "value_error"),
    ("enabled", "value_error"),
    ("name", "value_error"),  # an API key's name with control characters
    ("csv", "value_error"),  # an import body: any text, most of it not our CSV
}


def _excused(response: Response, case: Case) -> bool:
    if response.status_code == 400:
        # A cursor must be one the server issued; the document cannot say which.
        return str(response.json().get("type", "")).endswith("/invalid-cursor")
    return response.status_code in STATE_DEPENDENT


CHECKS = checks(
    # 403: the admin operations, for a caller who is not one; 415: an import that
    # is not text/csv; 429: creation limits, which bulk requests reach quickly.
    problem_documents({400, 401, 403, 404, 409, 415, 422, 429}),
    positive_data_accepted(KNOWN_SCHEMA_GAPS, _excused),
)


@pytest.fixture
def shortener_schema(tmp_path: Path, clock: ManualClock) -> Iterator[BaseSchema]:
    with signed_in_schema(tmp_path, clock, "shortener") as schema:
        yield schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_shortener_operation_survives_fuzzing(
    shortener_schema: BaseSchema, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    labels = fuzz_every_operation(shortener_schema, mode, subtests, CHECKS)
    assert {
        "POST /v1/links",
        "GET /v1/links",
        "GET /v1/links/{code}",
        "PATCH /v1/links/{code}",
        "DELETE /v1/links/{code}",
        "POST /v1/links/bulk",
        "POST /v1/links/import",
        "GET /v1/links.csv",
        "GET /v1/links/{code}/qr.{kind}",
        "POST /v1/api-keys",
        "DELETE /v1/api-keys/{key_id}",
        "PUT /v1/admin/links/{code}/block",
    } <= labels
