"""RESP2: an incremental request parser and the reply encoders.

Requests arrive either as arrays of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``,
what client libraries send) or as inline commands (``GET k\\n``, what a person
types into telnet), told apart by the first byte as Redis does.

``RespParser`` keeps one ``bytearray`` per connection. ``feed`` appends a
chunk; ``commands`` returns every complete command in the buffer, each a
list of ``bytes`` arguments, and keeps the unparsed rest for the next chunk.
A command split at any byte parses the same as if it came whole. Input that
is not RESP, or exceeds a limit, is a ``ProtocolError``: ``commands`` raises
it, or, when complete commands came before it, returns those and keeps the
error in ``error`` (raised by the next call). Either way the stream cannot be
resynchronised: the connection must be closed, as Redis closes it.

Limits (Redis's defaults scaled down, since the store is one Python process):
a bulk string at most ``max_bulk`` bytes (Redis: 512 MB), an array at most
``max_array`` elements (Redis: 2^31), an inline command or header line at
most ``MAX_INLINE`` bytes (Redis: 64 KB, the same here), and one command's
arguments at most ``max_query`` bytes together (Redis: 1 GB).

Most requests are short arrays of short bulk strings (``GET k``, ``SET k v``)
in canonical form. Those are read by a fast path that splits the buffered
bytes on CRLF in one C call and checks each ``$n`` header against the length
of the token after it, instead of finding every header and parsing its number
one by one. It accepts only what the general reader would accept the same way
(headers spelled canonically, sizes under every limit); at anything else (a
value holding CRLF, a long array, an inline command, bad input) it stops, the
general reader reads the next command, and the fast path resumes after it.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_BULK = 64 * 1024 * 1024
MAX_ARRAY = 1024 * 1024
MAX_INLINE = 64 * 1024
MAX_QUERY = 256 * 1024 * 1024
CRLF = b"\r\n"
# The fast path's reach: arrays of up to FAST_ARGS bulk strings of under
# FAST_BULK bytes each, found in the next FAST_WINDOW bytes of the buffer.
FAST_ARGS = 64
FAST_BULK = 4096
FAST_WINDOW = 64 * 1024
# Canonical headers, mapped to their numbers: one dict lookup both checks the
# spelling ("$03", "$+3", "$ 3" are not here) and reads the number.
_ARRAY_HEADERS = {b"*%d" % n: n for n in range(1, FAST_ARGS + 1)}
_BULK_HEADERS = {b"$%d" % n: n for n in range(FAST_BULK)}


class ProtocolError(Exception):
    """The client broke the protocol; the message follows ``Protocol error: ``."""


class RespParser:
    """Requests from one client's byte stream; see the module docstring."""

    __slots__ = (
        "_args", "_buffer", "_fast_headers", "_left", "_size", "error", "max_array", "max_bulk",
        "max_query",
    )  # fmt: skip

    def __init__(
        self, max_bulk: int = MAX_BULK, max_array: int = MAX_ARRAY, max_query: int = MAX_QUERY
    ) -> None:
        self._buffer = bytearray()
        self.max_bulk = max_bulk
        self.max_array = max_array
        self.max_query = max_query
        # The array being received: its arguments so far, how many are still
        # to come, and their bytes. Kept across chunks so that a long array
        # arriving in many chunks is parsed once, not once per chunk.
        self.error: ProtocolError | None = None
        self._args: list[bytes] | None = None
        self._left = 0
        self._size = 0
        self._fast_headers = _fast_headers(max_bulk, max_array, max_query)

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned in a command."""
        return len(self._buffer) + self._size

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def parse(self, data: bytes) -> list[list[bytes]]:
        """``feed(data)`` then ``commands()``. When nothing is pending, the fast
        path reads ``data`` itself, not a copy in the buffer: the usual case,
        where a read holds whole commands, copies nothing."""
        if (
            self._buffer
            or self._args is not None
            or self.error is not None
            or self._fast_headers is None
            or not data.startswith(b"*")
        ):
            self.feed(data)
            return self.commands()
        out: list[list[bytes]] = []
        used = self._fast(data if len(data) <= FAST_WINDOW else data[:FAST_WINDOW], out)
        if used == len(data):
            return out
        self._buffer += memoryview(data)[used:]
        try:
            out.extend(self.commands())
        except ProtocolError as exc:
            if not out:
                raise
            self.error = exc  # as commands() does: what came before the error is served
        return out

    def commands(self) -> list[list[bytes]]:
        """Every complete command buffered, in order; empty commands (a blank
        inline line, ``*0``) are skipped as Redis skips them."""
        if self.error is not None:
            raise self.error
        buf = self._buffer
        out: list[list[bytes]] = []
        pos = 0
        fast = self._fast_headers is not None
        try:
            while True:
                if self._args is None:
                    if fast and pos < len(buf) and buf[pos] == 0x2A:  # '*'
                        with memoryview(buf) as view:
                            window = bytes(view[pos : pos + FAST_WINDOW])
                        pos += self._fast(window, out)
                        # The reader below takes the next command, which the fast
                        # path left (unusual, or not whole yet), if there is one.
                    if pos >= len(buf):
                        break
                    if buf[pos] != 0x2A:  # not '*': an inline command
                        parsed = self._inline(buf, pos)
                        if parsed is None:
                            break
                        command, pos = parsed
                        if command:
                            out.append(command)
                        continue
                    started = self._header(buf, pos)
                    if started is None:
                        break
                    pos = started
                    if self._args is None:  # an empty array
                        continue
                pos = self._elements(buf, pos)
                if self._left:
                    break
                assert self._args is not None
                out.append(self._args)
                self._args, self._size = None, 0
        except ProtocolError as exc:
            if not out:
                raise
            # The commands before the error are still served, as Redis serves them.
            self.error = exc
        finally:
            # One deletion per call, not per command: pipelines stay linear.
            if pos:
                del buf[:pos]
        return out

    def _fast(self, data: bytes, out: list[list[bytes]]) -> int:
        """Append the short canonical arrays at the start of ``data`` to ``out``;
        the bytes they took. See the module docstring."""
        assert self._fast_headers is not None
        arrays, bulks = self._fast_headers
        size_of = bulks.get
        parts = data.split(CRLF)
        last = len(parts) - 1  # the one part not followed by CRLF: never whole
        i = used = 0
        # Each header must give the length of the part after it: a value that
        # holds CRLF was cut short by the split, so its header disagrees.
        # Two and three arguments (GET k, SET k v) are written out: a loop
        # costs a quarter more per command.
        while i < last:
            head = parts[i]
            count = arrays.get(head)
            if count is None:
                break
            end = i + 1 + 2 * count
            if end > last:
                break
            if count == 2:
                h1, a1, h2, a2 = parts[i + 1 : end]
                if size_of(h1) != len(a1) or size_of(h2) != len(a2):
                    break
                out.append([a1, a2])
                used += len(head) + len(h1) + len(a1) + len(h2) + len(a2) + 10
            elif count == 3:
                h1, a1, h2, a2, h3, a3 = parts[i + 1 : end]
                if size_of(h1) != len(a1) or size_of(h2) != len(a2) or size_of(h3) != len(a3):
                    break
                out.append([a1, a2, a3])
                used += len(head) + len(h1) + len(a1) + len(h2) + len(a2) + len(h3) + len(a3)
                used += 14
            else:
                args = parts[i + 2 : end : 2]
                if list(map(size_of, parts[i + 1 : end : 2])) != list(map(len, args)):
                    break
                out.append(args)
                used += sum(map(len, parts[i:end])) + 2 * (end - i)
            i = end
        return used

    def _line(self, buf: bytearray, pos: int, what: str) -> tuple[bytes, int] | None:
        """The header line at ``pos`` without its CRLF, and the position after it."""
        end = buf.find(CRLF, pos, pos + MAX_INLINE + 2)
        if end < 0:
            if len(buf) - pos > MAX_INLINE:
                raise ProtocolError(f"too big {what} string")
            return None
        return bytes(buf[pos:end]), end + 2

    def _header(self, buf: bytearray, pos: int) -> int | None:
        """Read ``*count``: start an array unless it is empty; the position after it."""
        line = self._line(buf, pos, "mbulk count")
        if line is None:
            return None
        header, pos = line
        count = _number(header[1:])
        if count is None or count > self.max_array:
            raise ProtocolError("invalid multibulk length")
        if count > 0:
            self._args, self._left, self._size = [], count, 0
        return pos

    def _elements(self, buf: bytearray, pos: int) -> int:
        """Read the current array's bulk strings while whole ones are buffered."""
        args = self._args
        assert args is not None
        while self._left:
            if pos >= len(buf):
                break
            if buf[pos] != 0x24:  # '$'
                raise ProtocolError(f"expected '$', got '{chr(buf[pos])}'")
            line = self._line(buf, pos, "bulk count")
            if line is None:
                break
            header, start = line
            size = _number(header[1:])
            if size is None or size < 0 or size > self.max_bulk:
                raise ProtocolError("invalid bulk length")
            if self._size + size > self.max_query:
                raise ProtocolError("command larger than the query buffer limit")
            end = start + size
            if len(buf) < end + 2:
                break
            if buf[end : end + 2] != CRLF:
                raise ProtocolError("expected CRLF after bulk string")
            args.append(bytes(buf[start:end]))
            self._size += size
            self._left -= 1
            pos = end + 2
        return pos

    def _inline(self, buf: bytearray, pos: int) -> tuple[list[bytes], int] | None:
        end = buf.find(b"\n", pos, pos + MAX_INLINE + 1)
        if end < 0:
            if len(buf) - pos > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return None
        line = bytes(buf[pos:end])
        if line.endswith(b"\r"):
            line = line[:-1]
        return split_inline(line), end + 1


def _fast_headers(
    max_bulk: int, max_array: int, max_query: int
) -> tuple[dict[bytes, int], dict[bytes, int]] | None:
    """The headers the fast path may accept under these limits; ``None``
    (no fast path) when a command it accepts could exceed ``max_query``."""
    arrays, bulks = _ARRAY_HEADERS, _BULK_HEADERS
    if max_array < FAST_ARGS:
        arrays = {h: n for h, n in arrays.items() if n <= max_array}
    if max_bulk < FAST_BULK - 1:
        bulks = {h: n for h, n in bulks.items() if n <= max_bulk}
    if max(arrays.values(), default=0) * max(bulks.values(), default=0) > max_query:
        return None
    return arrays, bulks


def _number(digits: bytes) -> int | None:
    """A header's decimal count (``-1`` allowed), or ``None`` if it is not one."""
    if not digits or len(digits) > 20:
        return None
    body = digits[1:] if digits[:1] == b"-" else digits
    if not body.isdigit():
        return None
    return int(digits)


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:
    """An inline command's arguments: split on spaces and tabs, with double
    quotes (escapes ``\\n \\r \\t \\b \\a \\xHH``, any other ``\\c`` is ``c``)
    and single quotes (only ``\\'``), as Redis's inline parser reads them. A
    closing quote must be followed by a space or the end of the line."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while i < n:
            c = line[i]
            if quote == 0x22:  # inside "..."
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and _is_hex(line, i + 2):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    quote = -1
                else:
                    current.append(c)
            elif quote == 0x27:  # inside '...'
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    current.append(0x27)
                    i += 1
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    quote = -1
                else:
                    current.append(c)
            elif c in b" \t\r\n\v\f":
                break
            elif c in (0x22, 0x27) and not current:
                quote = c
            else:
                current.append(c)
            i += 1
            if quote == -1:
                break
        if quote > 0:
            raise ProtocolError("unbalanced quotes in request")
        args.append(bytes(current))


def _is_hex(line: bytes, i: int) -> bool:
    return line[i] in _HEX and line[i + 1] in _HEX


# --- replies -----------------------------------------------------------------

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"


def simple(text: str) -> bytes:
    """``+text``; ``text`` must hold no CR or LF."""
    return b"+%s\r\n" % text.encode()


def error(message: str) -> bytes:
    """``-message``: the message starts with its code (``ERR``, ``OOM``...);
    line breaks in it are replaced so the reply stays one line."""
    safe = message.replace("\r", " ").replace("\n", " ")
    return b"-%s\r\n" % safe.encode("utf-8", "replace")


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(value: bytes | None) -> bytes:
    """A bulk string, or the null bulk string for ``None``."""
    if value is None:
        return NULL
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(items: Iterable[bytes]) -> bytes:
    """An array of already encoded replies."""
    encoded = list(items)
    return b"*%d\r\n%s" % (len(encoded), b"".join(encoded))


def mapping(pairs: Iterable[tuple[bytes, bytes]], resp3: bool) -> bytes:
    """Encoded key/value replies: a RESP3 map, or for RESP2 the flat array
    of keys and values that Redis sends in its place."""
    flat = [item for pair in pairs for item in pair]
    if not resp3:
        return array(flat)
    return b"%%%d\r\n%s" % (len(flat) // 2, b"".join(flat))


def bulk_array(values: Iterable[bytes | None]) -> bytes:
    """An array of bulk strings (``None``: a null bulk string)."""
    return array(bulk(value) for value in values)


def encode_command(*args: bytes) -> bytes:
    """A request as clients send it: an array of bulk strings."""
    return bulk_array(args)
