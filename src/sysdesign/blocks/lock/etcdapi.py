"""A small async client for etcd's v3 JSON gateway (``POST /v3/...``, etcd 3.4+).

We speak the gateway rather than gRPC so the lock block needs no generated
code: every call is one HTTP POST of JSON, keys and values are base64, int64
fields travel as strings. ``EtcdClient.from_url("etcd://h1:2379,h2:2379")``
talks to a cluster: a call goes to the endpoint that last answered and moves
to the next one when the request certainly did not take effect (connection
refused or timed out on connect, "no leader": every request asks for a
member that follows a leader); reads also move on after a timeout. Right
after a member loses its leader, and before it notices (one election
timeout), a request to it can still wait out ``timeout_seconds``. A write
whose outcome is unknown (sent, then the connection broke or timed out)
raises ``EtcdOutcomeUnknown`` instead of being retried, because a retried
compare-and-swap could report failure for a swap that happened.

Errors: ``EtcdError`` for what the server refused (with its message and gRPC
code), ``EtcdLeaseNotFound`` for an unknown or expired lease,
``EtcdCompacted`` for a watch that starts before the compacted revision, and
``EtcdUnavailable`` when no endpoint answered within ``timeout_seconds`` each.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

# The request, result and error types live in etcdtypes.py and the watch in
# etcdwatch.py; importers keep taking them from here.
from sysdesign.blocks.lock.etcdtypes import (
    NOT_FOUND,
    UNAVAILABLE,
    Bytes,
    Compare,
    Delete,
    DeleteResult,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdOutcomeUnknown,
    EtcdStatus,
    EtcdUnavailable,
    KeyValue,
    LeaseInfo,
    Put,
    PutResult,
    Range,
    RangeResult,
    Target,
    TxnResult,
    _error,
    _revision,
    _unb64,
    prefix_end,
)
from sysdesign.blocks.lock.etcdwatch import EtcdWatch, WatchEvent

__all__ = [
    "NOT_FOUND",
    "UNAVAILABLE",
    "Bytes",
    "Compare",
    "Delete",
    "DeleteResult",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdLeaseNotFound",
    "EtcdOutcomeUnknown",
    "EtcdStatus",
    "EtcdUnavailable",
    "EtcdWatch",
    "KeyValue",
    "LeaseInfo",
    "Put",
    "PutResult",
    "Range",
    "RangeResult",
    "Target",
    "TxnResult",
    "WatchEvent",
    "parse_endpoints",
    "prefix_end",
]


def parse_endpoints(url: str) -> list[str]:
    """``etcd://h1:2379,h2:2379`` (or ``etcds://`` for TLS) as HTTP base URLs."""
    parts = urlsplit(url)
    if parts.scheme not in ("etcd", "etcds"):
        raise ValueError(f"an etcd URL starts with etcd:// or etcds://, not {url!r}")
    scheme = "https" if parts.scheme == "etcds" else "http"
    hosts = [host.strip() for host in parts.netloc.split(",") if host.strip()]
    if not hosts:
        raise ValueError(f"no etcd endpoint in {url!r}")
    return [f"{scheme}://{host if ':' in host else host + ':2379'}" for host in hosts]


class EtcdClient:
    """One connection pool to the endpoints of one etcd cluster. Close it
    (``await client.aclose()`` or ``async with``)."""

    def __init__(self, endpoints: Sequence[str], *, timeout_seconds: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("an EtcdClient needs at least one endpoint")
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self.timeout_seconds = timeout_seconds
        self._current = 0
        # trust_env=False: a proxy from the environment must not sit between us and etcd.
        # The gateway passes Grpc-Metadata-* headers to etcd as gRPC metadata, and
        # "hasleader" makes a member that knows no leader refuse at once ("no
        # leader": not applied, safe to retry elsewhere) instead of holding the
        # request until it times out with an unknown outcome.
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds, trust_env=False, headers={"Grpc-Metadata-hasleader": "true"}
        )

    @classmethod
    def from_url(cls, url: str, *, timeout_seconds: float = 5.0) -> EtcdClient:
        return cls(parse_endpoints(url), timeout_seconds=timeout_seconds)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, path: str, body: dict[str, Any], *, idempotent: bool) -> str:
        """POST to the first endpoint that answers; the response text on 200."""
        failures: list[str] = []
        count = len(self.endpoints)
        start = self._current
        for attempt in range(count):
            index = (start + attempt) % count
            endpoint = self.endpoints[index]
            try:
                response = await self._http.post(endpoint + path, content=orjson.dumps(body))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failures.append(f"{endpoint}: {exc!r}")  # never reached etcd: safe anywhere
                continue
            except httpx.TransportError as exc:
                if not idempotent:
                    raise EtcdOutcomeUnknown(
                        f"{path} sent to {endpoint} got no answer ({exc!r}); it may have applied",
                        UNAVAILABLE,
                    ) from exc
                failures.append(f"{endpoint}: {exc!r}")
                continue
            if response.status_code == 200:
                self._current = index
                return response.text
            error = _error(response.status_code, response.text)
            # "no leader" means the member refused before proposing; a server-side
            # timeout of a write may have applied, so only reads move on after it.
            if error.code == UNAVAILABLE and (idempotent or "no leader" in error.message):
                failures.append(f"{endpoint}: {error.message}")
                continue
            if error.code == UNAVAILABLE:
                raise EtcdOutcomeUnknown(f"{path} on {endpoint}: {error.message}", UNAVAILABLE)
            raise error
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: " + "; ".join(failures))

    async def _json(self, path: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        text = await self._call(path, body, idempotent=idempotent)
        # Streaming calls (lease keepalive) answer one JSON object per line.
        data: dict[str, Any] = orjson.loads(text.split("\n", 1)[0])
        if "error" in data:
            raise _error(200, text)
        return data.get("result", data)

    async def range(self, request: Range) -> RangeResult:
        """A linearizable read: it needs a quorum, and sees every write acknowledged before it."""
        data = await self._json("/v3/kv/range", request.body(), idempotent=True)
        return RangeResult.from_json(data)

    async def get(self, key: Bytes) -> KeyValue | None:
        result = await self.range(Range(key))
        return result.kvs[0] if result.kvs else None

    async def put(
        self, key: Bytes, value: Bytes, *, lease: int = 0, prev_kv: bool = False
    ) -> PutResult:
        """Raises ``EtcdLeaseNotFound`` if ``lease`` does not exist."""
        body = Put(key, value, lease, prev_kv).to_json()["request_put"]
        return PutResult.from_json(await self._json("/v3/kv/put", body, idempotent=False))

    async def delete(
        self, key: Bytes, *, prefix: bool = False, prev_kv: bool = False
    ) -> DeleteResult:
        body = Delete(key, prefix, prev_kv).to_json()["request_delete_range"]
        data = await self._json("/v3/kv/deleterange", body, idempotent=False)
        return DeleteResult.from_json(data)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Delete | Range] = (),
        failure: Sequence[Put | Delete | Range] = (),
    ) -> TxnResult:
        """Atomically: if every ``compare`` holds run ``success``, else ``failure``."""
        body = {
            "compare": [item.to_json() for item in compare],
            "success": [item.to_json() for item in success],
            "failure": [item.to_json() for item in failure],
        }
        data = await self._json("/v3/kv/txn", body, idempotent=False)
        responses: list[RangeResult | PutResult | DeleteResult] = []
        for item in data.get("responses", ()):
            if "response_range" in item:
                responses.append(RangeResult.from_json(item["response_range"]))
            elif "response_put" in item:
                responses.append(PutResult.from_json(item["response_put"]))
            elif "response_delete_range" in item:
                responses.append(DeleteResult.from_json(item["response_delete_range"]))
        return TxnResult(bool(data.get("succeeded")), responses, _revision(data))

    async def lease_grant(self, ttl_seconds: int) -> LeaseInfo:
        """A new lease; keys attached to it are deleted when it expires or is revoked."""
        data = await self._json("/v3/lease/grant", {"TTL": str(ttl_seconds)}, idempotent=False)
        ttl = int(data.get("TTL", 0))
        return LeaseInfo(int(data["ID"]), ttl, ttl)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease once; its new TTL. ``EtcdLeaseNotFound`` if it is gone."""
        data = await self._json("/v3/lease/keepalive", {"ID": str(lease_id)}, idempotent=True)
        ttl = int(data.get("TTL", 0))
        if ttl <= 0:
            raise EtcdLeaseNotFound(f"lease {lease_id} not found", NOT_FOUND)
        return ttl

    async def lease_revoke(self, lease_id: int) -> None:
        """Revoke the lease and delete its keys. ``EtcdLeaseNotFound`` if it is gone."""
        await self._json("/v3/lease/revoke", {"ID": str(lease_id)}, idempotent=False)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease's remaining TTL (and its keys). ``EtcdLeaseNotFound`` if it is gone."""
        body = {"ID": str(lease_id), "keys": keys}
        data = await self._json("/v3/lease/timetolive", body, idempotent=True)
        ttl = int(data.get("TTL", -1))
        if ttl < 0:
            raise EtcdLeaseNotFound(f"lease {lease_id} not found", NOT_FOUND)
        found = [_unb64(key) for key in data.get("keys", ())]
        return LeaseInfo(lease_id, ttl, int(data.get("grantedTTL", 0)), found)

    async def status(self) -> EtcdStatus:
        """The status of the member that answered (the current endpoint, or the next)."""
        data = await self._json("/v3/maintenance/status", {}, idempotent=True)
        header = data.get("header", {})
        return EtcdStatus(
            endpoint=self.endpoints[self._current],
            version=str(data.get("version", "")),
            member_id=int(header.get("member_id", 0)),
            leader=int(data.get("leader", 0)),
            raft_term=int(data.get("raftTerm", header.get("raft_term", 0))),
            revision=int(header.get("revision", 0)),
        )

    def watch(
        self,
        key: Bytes,
        *,
        prefix: bool = False,
        start_revision: int | None = None,
        prev_kv: bool = False,
    ) -> EtcdWatch:
        """Events on ``key`` (or every key under it), from ``start_revision`` or
        from now: an ``EtcdWatch`` (see ``etcdwatch.py``)."""
        return EtcdWatch(self, key, prefix, start_revision, prev_kv)
