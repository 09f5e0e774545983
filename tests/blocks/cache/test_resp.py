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


def _outcome_of(parser: RespParser, chunks: list[bytes]) -> tuple[list[list[bytes]], bool]:
    out: list[list[bytes]] = []
    try:
        for chunk in chunks:
            out.extend(parser.parse(chunk))
            if parser.error is not None:
                return out, True
    except ProtocolError:
        return out, True
    return out, False


def _general_reader_only() -> RespParser:
    """A parser without the fast path: it is off when a command it accepts could
    exceed the query limit; no input here comes near this one."""
    return RespParser(max_query=resp.FAST_ARGS * (resp.FAST_BULK - 1) - 1)


# Arguments that trip the fast path: CRLF inside values, header-like bytes,
# lengths at its bounds, and plain short values.
tricky = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"", b"\r\n", b"$3\r\nabc", b"*2\r\n", b"a\r\nb", b"\r", b"\n"]),
    st.just(b"x" * (resp.FAST_BULK - 1)),
    st.just(b"x" * resp.FAST_BULK),
)
tricky_commands = st.lists(st.lists(tricky, min_size=1, max_size=5), max_size=8)


def test_the_general_reader_only_parser_has_no_fast_path() -> None:
    assert _general_reader_only()._fast_headers is None
    assert RespParser()._fast_headers is not None


@settings(max_examples=300, deadline=None)
@given(
    tricky_commands,
    st.lists(st.sampled_from([b"PING\r\n", b"*0\r\n", b"*x\r\n", b"*1\r\n$03\r\nabc\r\n"])),
    st.lists(st.integers(min_value=0, max_value=9000), max_size=8),
)
def test_the_fast_path_reads_as_the_general_reader(
    cmds: list[list[bytes]], extra: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(resp.encode_command(*cmd) for cmd in cmds) + b"".join(extra)
    for chunks in ([data], _split(data, cuts)):
        assert _outcome_of(RespParser(), chunks) == _outcome_of(_general_reader_only(), chunks)
    if not extra:
        assert _outcome_of(RespParser(), [data]) == (cmds, False)


def test_a_long_pipeline_crosses_fast_windows() -> None:
    cmds = [[b"SET", b"k%d" % i, b"v" * (i % 300)] for i in range(2000)]
    data = b"".join(resp.encode_command(*cmd) for cmd in cmds)
    assert len(data) > 3 * resp.FAST_WINDOW
    assert _outcome_of(RespParser(), [data]) == (cmds, False)
    assert _outcome_of(RespParser(), _split(data, list(range(0, len(data), 5000)))) == (cmds, False)
