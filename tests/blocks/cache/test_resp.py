"""The RESP2 request parser and reply encoders."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdesign.blocks.cache import resp
from sysdesign.blocks.cache.resp import ProtocolError, RespParser


def parse(data: bytes) -> list[list[bytes]]:
    parser = RespParser()
    parser.feed(data)
    return parser.commands()


def test_array_of_bulk_strings() -> None:
    assert parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") == [[b"GET", b"k"]]


def test_binary_safe_bulk() -> None:
    value = bytes(range(256)) + b"\r\n\r\n"
    assert parse(resp.encode_command(b"SET", b"k", value)) == [[b"SET", b"k", value]]


def test_pipeline_and_partial_rest() -> None:
    parser = RespParser()
    data = resp.encode_command(b"PING") * 3 + b"*2\r\n$3\r\nGET"
    parser.feed(data)
    assert parser.commands() == [[b"PING"]] * 3
    assert parser.pending == len(b"*2\r\n$3\r\nGET") - len(b"*2\r\n")
    parser.feed(b"\r\n$1\r\nk\r\n")
    assert parser.commands() == [[b"GET", b"k"]]
    assert parser.pending == 0


def test_long_array_in_many_chunks() -> None:
    args = [b"MSET"] + [b"v%d" % i for i in range(10_000)]
    data = resp.encode_command(*args)
    parser = RespParser()
    out = []
    for i in range(0, len(data), 7):
        parser.feed(data[i : i + 7])
        out.extend(parser.commands())
    assert out == [args]


def test_query_limit() -> None:
    parser = RespParser(max_query=10)
    parser.feed(resp.encode_command(b"SET", b"k", b"x" * 8))
    with pytest.raises(ProtocolError, match="query buffer limit"):
        parser.commands()


def test_inline_commands() -> None:
    assert parse(b"SET k v\r\nGET k\n\r\n") == [[b"SET", b"k", b"v"], [b"GET", b"k"]]
    assert parse(b'SET "a b" "x\\n\\x41"\r\n') == [[b"SET", b"a b", b"x\nA"]]
    assert parse(b"SET 'it\\'s' v\n") == [[b"SET", b"it's", b"v"]]
    assert parse(b"GET k") == []  # no newline yet


def test_empty_multibulk_is_skipped() -> None:
    assert parse(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$1\r\nab\r\n", "expected CRLF after bulk string"),
        (b"*%d\r\n" % (resp.MAX_ARRAY + 1), "invalid multibulk length"),
        (b"*1\r\n$%d\r\n" % (resp.MAX_BULK + 1), "invalid bulk length"),
        (b"GET " + b"k" * resp.MAX_INLINE, "too big inline request"),
        (b"*" + b"1" * resp.MAX_INLINE, "too big mbulk count string"),
        (b'GET "k\n', "unbalanced quotes in request"),
        (b'GET "k"x\n', "unbalanced quotes in request"),
    ],
)
def test_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)):
        parse(data)


def test_commands_before_an_error_are_returned_first() -> None:
    parser = RespParser()
    parser.feed(b"PING\r\n*x\r\n")
    assert parser.commands() == [[b"PING"]]
    assert parser.error is not None
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        parser.commands()


def test_encoders() -> None:
    assert resp.simple("OK") == b"+OK\r\n"
    assert resp.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert resp.integer(-3) == b":-3\r\n"
    assert resp.bulk(b"ab") == b"$2\r\nab\r\n"
    assert resp.bulk(None) == b"$-1\r\n"
    assert resp.bulk_array([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert resp.array([resp.integer(1), resp.OK]) == b"*2\r\n:1\r\n+OK\r\n"


def _outcome(chunks: list[bytes]) -> tuple[list[list[bytes]], bool]:
    """Commands parsed from ``chunks`` fed one by one, and whether it failed."""
    parser = RespParser(max_bulk=1000, max_array=100)
    out: list[list[bytes]] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            out.extend(parser.commands())
            if parser.error is not None:
                return out, True
    except ProtocolError:
        return out, True
    return out, False


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), max_size=8)


@settings(max_examples=300, deadline=None)
@given(commands, st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_valid_commands_split_anywhere_parse_the_same(
    cmds: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(resp.encode_command(*cmd) for cmd in cmds)
    assert _outcome([data]) == (cmds, False)
    assert _outcome(_split(data, cuts)) == (cmds, False)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_random_bytes_split_anywhere_parse_the_same(data: bytes, cuts: list[int]) -> None:
    whole = _outcome([data])
    split = _outcome(_split(data, cuts))
    assert split == whole
