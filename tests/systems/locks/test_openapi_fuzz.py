"""Fuzz every operation of ``/locks/openapi.json`` against the app, in process
(``tests/fuzzing.py`` says how)."""

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

# 409 (busy, or a name used as another kind of lock) and 410 (a lease that is
# not there) depend on what earlier cases did.
STATE_DEPENDENT = {409, 410}
# Schema-valid requests refused on purpose: a document cannot say that
# permits must be 1 unless mode is permit.
KNOWN_SCHEMA_GAPS = {("permits", "value_error")}


def _excused(response: Response, case: Case) -> bool:
    return response.status_code in STATE_DEPENDENT


# 404: a name with a line break, which no route matches (the document refuses
# control characters in names, so only the negative run sends one).
CHECKS = checks(
    problem_documents({400, 401, 404, 409, 410, 422}),
    positive_data_accepted(KNOWN_SCHEMA_GAPS, _excused),
)


def no_waiting(case: Case) -> None:
    """Ask without waiting: the manual clock never lets an earlier case's lease
    lapse, so a fuzzed long poll on a held lock would wait out its whole ``wait``."""
    wait = case.body.get("wait") if isinstance(case.body, dict) else None
    # Only a valid wait: a negative case's invalid one must still be refused.
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 60:
        case.body["wait"] = 0


@pytest.fixture
def locks_schema(tmp_path: Path, clock: ManualClock) -> Iterator[BaseSchema]:
    with signed_in_schema(tmp_path, clock, "locks") as schema:
        yield schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_locks_operation_survives_fuzzing(
    locks_schema: BaseSchema, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    labels = fuzz_every_operation(locks_schema, mode, subtests, CHECKS, prepare=no_waiting)
    assert {
        "POST /v1/locks/{name}/acquire",
        "POST /v1/locks/{name}/renew",
        "POST /v1/locks/{name}/release",
        "GET /v1/locks/{name}",
        "GET /v1/locks",
    } <= labels
