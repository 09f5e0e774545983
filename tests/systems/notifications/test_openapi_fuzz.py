"""Fuzz every operation of ``/notifications/openapi.json`` against the app, in
process (``tests/fuzzing.py`` says how). The fuzzing user is not an admin, so
admin operations answer 403; the live stream is left out (it never ends)."""

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

# Schema-valid values the domain refuses: phone numbers and webhook URLs of the
# wrong shape, unknown time zones, quiet hours that start when they end.
KNOWN_SCHEMA_GAPS = {
    ("phone", "value_error"),
    ("webhook_url", "value_error"),
    ("timezone", "value_error"),
    ("quiet_hours.timezone", "value_error"),
    ("quiet_hours", "value_error"),
}


def _excused(response: Response, case: Case) -> bool:
    if response.status_code == 400:
        return str(response.json().get("type", "")).endswith("/invalid-cursor")
    return response.status_code == 404  # a topic or item earlier cases did not make


CHECKS = checks(
    problem_documents({400, 401, 403, 404, 422}),
    positive_data_accepted(KNOWN_SCHEMA_GAPS, _excused),
)


@pytest.fixture
def notifications_schema(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BaseSchema]:
    monkeypatch.setenv("SYSDESIGN_NOTIFY_WORKERS", "0")
    with signed_in_schema(tmp_path, clock, "notifications") as schema:
        yield schema.exclude(path_regex=r"/stream$")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_notifications_operation_survives_fuzzing(
    notifications_schema: BaseSchema, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    labels = fuzz_every_operation(notifications_schema, mode, subtests, CHECKS)
    assert {
        "POST /v1/events",
        "GET /v1/events/{event_id}",
        "PUT /v1/templates/{key}",
        "PUT /v1/me",
        "PUT /v1/me/preferences",
        "GET /v1/inbox",
        "POST /v1/inbox/{item_id}/read",
        "PUT /v1/topics/{key}/subscribers/me",
    } <= labels
