from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.platform.http import CursorCodec, Problem

positions = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=20)),
    max_size=4,
)


@given(positions)
def test_cursor_round_trip(position: dict) -> None:
    codec = CursorCodec("secret-one")
    cursor = codec.encode(position)
    assert cursor.isascii() and "=" not in cursor
    assert codec.decode(cursor) == position


@given(st.text(max_size=200))
def test_any_string_decodes_or_is_a_400_problem(garbage: str) -> None:
    codec = CursorCodec("secret-one")
    try:
        codec.decode(garbage)
    except Problem as problem:
        assert problem.status == 400
        assert problem.slug == "invalid-cursor"
        assert problem.extra["field"] == "cursor"


def test_tampered_cursor_is_refused() -> None:
    codec = CursorCodec("secret-one")
    cursor = codec.encode({"id": 10})
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-2] ^= 1  # flip a bit in the payload
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(Problem):
        codec.decode(forged)
    with pytest.raises(Problem):  # another server's cursor
        CursorCodec("secret-two").decode(cursor)


def test_problem_body_shape() -> None:
    problem = Problem(429, "slow down", headers={"Retry-After": "3"}, limit=10)
    assert problem.body("/x") == {
        "type": "https://sysdesign.dev/problems/rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": "slow down",
        "instance": "/x",
        "limit": 10,
    }
    response = problem.response("/x")
    assert response.headers["retry-after"] == "3"
    assert response.media_type == "application/problem+json"
