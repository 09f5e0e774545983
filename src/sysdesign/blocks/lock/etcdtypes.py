"""Requests, results and errors of the etcd gateway client (``etcdapi.py``).

The JSON gateway carries keys and values as base64 and int64 fields as
strings, and omits fields that hold their zero value: these types turn that
into bytes and ints and back. ``_error`` turns an error answer into the
``EtcdError`` the client raises.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

UNAVAILABLE = 14  # gRPC status code: retry elsewhere may help
NOT_FOUND = 5

Bytes = bytes | str
Target = Literal["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


class EtcdError(Exception):
    """etcd refused a request; ``code`` is the gRPC status code (0 if unknown)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class EtcdLeaseNotFound(EtcdError):
    """The lease does not exist: never granted, revoked, or expired."""


class EtcdCompacted(EtcdError):
    """A watch asked for revisions older than the compacted one."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message, 11)
        self.compact_revision = compact_revision


class EtcdUnavailable(EtcdError):
    """No endpoint answered: every one refused, timed out or had no leader."""


class EtcdOutcomeUnknown(EtcdUnavailable):
    """A write was sent but no answer came back: it may or may not have applied."""


def _b64(data: Bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: Bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, end)`` every key starting with ``prefix``."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # etcd reads range_end "\0" as "to the end of the keyspace"
    raw[-1] += 1
    return bytes(raw)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyValue:
        # The gateway omits fields that hold their zero value.
        return cls(
            key=_unb64(data.get("key")),
            value=_unb64(data.get("value")),
            create_revision=int(data.get("create_revision", 0)),
            mod_revision=int(data.get("mod_revision", 0)),
            version=int(data.get("version", 0)),
            lease=int(data.get("lease", 0)),
        )


def _kvs(data: dict[str, Any], name: str = "kvs") -> list[KeyValue]:
    return [KeyValue.from_json(item) for item in data.get(name, ())]


def _revision(data: dict[str, Any]) -> int:
    return int(data.get("header", {}).get("revision", 0))


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction, e.g. ``Compare.create_revision(key, "==", 0)``
    (the key does not exist). ``op`` is one of ``== != > <``."""

    key: bytes
    target: Target
    op: str
    operand: int | bytes

    @classmethod
    def create_revision(cls, key: Bytes, op: str, revision: int) -> Compare:
        return cls(_raw(key), "CREATE", op, revision)

    @classmethod
    def mod_revision(cls, key: Bytes, op: str, revision: int) -> Compare:
        return cls(_raw(key), "MOD", op, revision)

    @classmethod
    def version(cls, key: Bytes, op: str, version: int) -> Compare:
        return cls(_raw(key), "VERSION", op, version)

    @classmethod
    def value(cls, key: Bytes, op: str, value: Bytes) -> Compare:
        return cls(_raw(key), "VALUE", op, _raw(value))

    def to_json(self) -> dict[str, Any]:
        if self.op not in _RESULTS:
            raise ValueError(f"compare op must be one of {sorted(_RESULTS)}, not {self.op!r}")
        field_name = {"CREATE": "create_revision", "MOD": "mod_revision"}.get(
            self.target, self.target.lower()
        )
        operand = self.operand
        encoded = _b64(operand) if isinstance(operand, bytes) else str(operand)
        return {
            "key": _b64(self.key),
            "target": self.target,
            "result": _RESULTS[self.op],
            field_name: encoded,
        }


def _raw(data: Bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


@dataclass(frozen=True, slots=True)
class Put:
    key: Bytes
    value: Bytes
    lease: int = 0
    prev_kv: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(self.key), "value": _b64(self.value)}
        if self.lease:
            body["lease"] = str(self.lease)
        if self.prev_kv:
            body["prev_kv"] = True
        return {"request_put": body}


@dataclass(frozen=True, slots=True)
class Delete:
    key: Bytes
    prefix: bool = False
    prev_kv: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(self.key), "prev_kv": self.prev_kv}
        if self.prefix:
            body["range_end"] = _b64(prefix_end(self.key))
        return {"request_delete_range": body}


@dataclass(frozen=True, slots=True)
class Range:
    """Read ``key``, or every key under it with ``prefix``; ``limit`` 0 is no limit.
    ``sort_by_create`` orders by creation revision, oldest first (a queue)."""

    key: Bytes
    prefix: bool = False
    limit: int = 0
    sort_by_create: bool = False
    keys_only: bool = False

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(self.key)}
        if self.prefix:
            body["range_end"] = _b64(prefix_end(self.key))
        if self.limit:
            body["limit"] = str(self.limit)
        if self.sort_by_create:
            body["sort_order"] = "ASCEND"
            body["sort_target"] = "CREATE"
        if self.keys_only:
            body["keys_only"] = True
        return body

    def to_json(self) -> dict[str, Any]:
        return {"request_range": self.body()}


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int  # keys in the range, even beyond ``limit``
    more: bool
    revision: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RangeResult:
        return cls(_kvs(data), int(data.get("count", 0)), bool(data.get("more")), _revision(data))


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PutResult:
        prev = data.get("prev_kv")
        return cls(_revision(data), KeyValue.from_json(prev) if prev else None)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    prev_kvs: list[KeyValue]
    revision: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeleteResult:
        return cls(int(data.get("deleted", 0)), _kvs(data, "prev_kvs"), _revision(data))


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``succeeded``: every compare held and the success branch ran; ``responses``
    are that branch's results, in order. ``revision`` is the store's after the txn."""

    succeeded: bool
    responses: list[RangeResult | PutResult | DeleteResult]
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int  # seconds left
    granted_ttl: int
    keys: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EtcdStatus:
    endpoint: str
    version: str
    member_id: int
    leader: int  # 0: this member knows no leader
    raft_term: int
    revision: int


def _error(status: int, text: str) -> EtcdError:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return EtcdError(f"etcd gateway answered HTTP {status}: {text.strip()[:200]}")
    if isinstance(data.get("error"), dict):  # a streaming call's error line
        data = data["error"]
        code = int(data.get("grpc_code", 0))
    else:
        code = int(data.get("code", 0))
    message = str(data.get("message") or data.get("error") or f"HTTP {status}")
    if code == NOT_FOUND and "lease not found" in message:
        return EtcdLeaseNotFound(message, code)
    return EtcdError(message, code)
