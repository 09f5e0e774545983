"""``LocksClient``: the Python client of ``/locks/v1``.

```python
async with LocksClient("http://127.0.0.1:8000", access_token) as locks:
    async with locks.hold("nightly-report", ttl=30, wait=120) as held:
        write_report(fence=held.lease.token)   # the resource checks the token
        if held.lost.is_set(): ...             # a renewal found the lease gone
```

A wait longer than the service's 60-second long poll is several polls, each
queueing anew (a place in the queue is not kept between them). Errors: the
block's own (``LockTimeout``, ``LeaseLost``, ``LockConflict``,
``LockUnavailable``), and ``LockError`` with the problem's detail for any
other refusal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sysdesign.blocks.lock import (
    LeaseLost,
    LockConflict,
    LockError,
    LockTimeout,
    LockUnavailable,
    Mode,
)
from sysdesign.blocks.lock.locks import Held, kept

POLL_SECONDS = 55.0  # under the service's 60 s cap, and under common proxy timeouts


@dataclass(frozen=True, slots=True)
class RemoteLease:
    name: str
    lease_id: str
    token: int
    mode: str
    permits: int
    owner: str
    ttl: float
    expires_at: float


class LocksClient:
    """``base_url`` is where sysdesign serves (the client adds ``/locks/v1``);
    ``access_token`` a bearer token from ``/accounts/v1/login``."""

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/locks/v1",
            headers={"Authorization": f"Bearer {access_token}"},
            transport=transport,
            timeout=timeout,
        )
        self._timeout = timeout

    async def __aenter__(self) -> LocksClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any], wait: float = 0.0) -> dict[str, Any]:
        try:
            response = await self._http.post(path, json=body, timeout=self._timeout + wait)
        except httpx.TransportError as exc:
            raise LockUnavailable(f"the lock service cannot be reached: {exc}") from None
        return _answer(response)

    async def acquire(
        self,
        name: str,
        ttl: float,
        *,
        wait: float | None = None,
        mode: Mode = "exclusive",
        permits: int = 1,
        label: str | None = None,
    ) -> RemoteLease:
        """As ``LockService.acquire``: ``wait`` None waits as long as it takes."""
        deadline = None if wait is None else time.monotonic() + wait
        body: dict[str, Any] = {"ttl": ttl, "mode": mode, "permits": permits}
        if label is not None:
            body["label"] = label
        while True:
            left = POLL_SECONDS if deadline is None else max(deadline - time.monotonic(), 0.0)
            poll = min(left, POLL_SECONDS)
            try:
                data = await self._post(
                    f"/locks/{_path(name)}/acquire", {**body, "wait": poll}, poll
                )
            except LockTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            return RemoteLease(**data)

    async def try_acquire(self, name: str, ttl: float, **kwargs: Any) -> RemoteLease | None:
        try:
            return await self.acquire(name, ttl, wait=0, **kwargs)
        except LockTimeout:
            return None

    async def renew(self, lease: RemoteLease, ttl: float | None = None) -> RemoteLease:
        seconds = lease.ttl if ttl is None else ttl
        body = {"lease_id": lease.lease_id, "ttl": seconds}
        return RemoteLease(**await self._post(f"/locks/{_path(lease.name)}/renew", body))

    async def release(self, lease: RemoteLease) -> bool:
        body = {"lease_id": lease.lease_id}
        data = await self._post(f"/locks/{_path(lease.name)}/release", body)
        return bool(data["released"])

    async def inspect(self, name: str) -> dict[str, Any]:
        """``{name, holders, waiters}`` as the service lists them."""
        try:
            response = await self._http.get(f"/locks/{_path(name)}")
        except httpx.TransportError as exc:
            raise LockUnavailable(f"the lock service cannot be reached: {exc}") from None
        return _answer(response)

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, ttl: float, *, wait: float | None = None, **kwargs: Any
    ) -> AsyncIterator[Held[RemoteLease]]:
        """The lease, renewed every ``ttl / 3`` seconds, released on the way out."""
        lease = await self.acquire(name, ttl, wait=wait, **kwargs)
        async with kept(lease, self.renew, self.release, name) as held:
            yield held


def _path(name: str) -> str:
    return quote(name, safe="")


def _answer(response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        data: dict[str, Any] = response.json()
        return data
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = problem.get("detail") or problem.get("title") or response.text
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    if slug == "lock-busy":
        raise LockTimeout(detail)
    if slug == "lease-lost":
        raise LeaseLost(detail)
    if slug == "lock-in-use-otherwise":
        raise LockConflict(detail)
    if response.status_code == 503:
        raise LockUnavailable(detail)
    raise LockError(f"{response.status_code}: {detail}")
