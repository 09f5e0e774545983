"""A small MaxMind DB (``.mmdb``) writer, enough to make GeoIP test databases.

Written from the MaxMind DB File Format Specification 2.0: a binary search
tree over the address bits (24-bit records, two per node), 16 zero bytes, a
data section of typed values, then ``\\xab\\xcd\\xefMaxMind.com`` and the
metadata map. Supports what the tests need: IPv6 trees with IPv4 networks
under ``::/96`` (as GeoLite2 databases have them), or IPv4-only trees; maps,
UTF-8 strings and unsigned integers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
RECORD_BITS = 24
_UTF8, _UINT16, _UINT32, _MAP = 2, 5, 6, 7
_UINT64, _ARRAY = 9, 11  # extended types

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _control(kind: int, size: int) -> bytes:
    if size < 29:
        head, tail = size, b""
    elif size < 29 + 256:
        head, tail = 29, bytes([size - 29])
    elif size < 285 + 65536:
        head, tail = 30, (size - 285).to_bytes(2, "big")
    else:
        head, tail = 31, (size - 65821).to_bytes(3, "big")
    if kind <= 7:
        return bytes([(kind << 5) | head]) + tail
    return bytes([head, kind - 7]) + tail  # extended: type 0, then the type less 7


def _uint(kind: int, value: int, width: int) -> bytes:
    raw = value.to_bytes(width, "big").lstrip(b"\x00")
    return _control(kind, len(raw)) + raw


class Uint16(int):
    """An int written as uint16 (the metadata types some fields so, and readers check)."""


class Uint64(int):
    """An int written as uint64."""


def encode(value: Any) -> bytes:
    """One value of the data section: str, non-negative int (uint32 unless wrapped
    in ``Uint16`` or ``Uint64``), list, or dict with str keys."""
    if isinstance(value, Uint16):
        return _uint(_UINT16, value, 2)
    if isinstance(value, Uint64):
        return _uint(_UINT64, value, 8)
    if isinstance(value, str):
        raw = value.encode()
        return _control(_UTF8, len(raw)) + raw
    if isinstance(value, bool):
        raise TypeError("booleans are not needed here")
    if isinstance(value, int):
        return _uint(_UINT32, value, 4)
    if isinstance(value, list):
        return _control(_ARRAY, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, Mapping):
        body = b"".join(encode(str(k)) + encode(v) for k, v in value.items())
        return _control(_MAP, len(value)) + body
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Node:
    __slots__ = ("children", "data")

    def __init__(self) -> None:
        self.children: list[_Node | None] = [None, None]
        self.data: int | None = None  # an offset into the data section, at a leaf


def _bits(network: Network, ip_version: int) -> list[int]:
    address = int(network.network_address)
    length = network.prefixlen
    if ip_version == 6 and network.version == 4:
        length += 96  # ::a.b.c.d/96+n
    total = 128 if ip_version == 6 else 32
    return [(address >> (total - 1 - i)) & 1 for i in range(length)]


def write_mmdb(
    path: Path,
    records: Mapping[str, Mapping[str, Any]],
    *,
    ip_version: int = 6,
    database_type: str = "Test-Country",
) -> Path:
    """Write ``{network: record}`` (``"81.2.69.0/24": {"country": {"iso_code": "GB"}}``)
    to ``path``. Networks must not nest."""
    data = bytearray()
    root = _Node()
    for text, record in records.items():
        network = ipaddress.ip_network(text)
        if ip_version == 4 and network.version == 6:
            raise ValueError("an IPv4 database cannot hold IPv6 networks")
        offset = len(data)
        data += encode(dict(record))
        node = root
        bits = _bits(network, ip_version)
        for bit in bits[:-1]:
            child = node.children[bit]
            if child is None:
                child = node.children[bit] = _Node()
            node = child
        leaf = _Node()
        leaf.data = offset
        node.children[bits[-1]] = leaf

    # Number the inner nodes breadth first; the root is node 0.
    order: list[_Node] = []
    queue = [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        queue += [c for c in node.children if c is not None and c.data is None]
    number = {id(node): i for i, node in enumerate(order)}
    node_count = len(order)

    def record_of(child: _Node | None) -> int:
        if child is None:
            return node_count  # no data
        if child.data is not None:
            return node_count + 16 + child.data
        return number[id(child)]

    tree = bytearray()
    for node in order:
        for child in node.children:
            tree += record_of(child).to_bytes(RECORD_BITS // 8, "big")
    metadata = {
        "binary_format_major_version": Uint16(2),
        "binary_format_minor_version": Uint16(0),
        "build_epoch": Uint64(1_700_000_000),
        "database_type": database_type,
        "description": {"en": "sysdesign test database"},
        "ip_version": Uint16(ip_version),
        "languages": ["en"],
        "node_count": node_count,
        "record_size": Uint16(RECORD_BITS),
    }
    path.write_bytes(bytes(tree) + bytes(16) + bytes(data) + METADATA_MARKER + encode(metadata))
    return path
