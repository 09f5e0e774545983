"""``/locks/v1``: leases with fencing tokens over HTTP, one namespace per signed-in caller.

Every operation needs a bearer token, and lock names are per caller (stored
as ``u<user id>:<name>``): services that coordinate through one lock share
an account, and no other account can hold, block or inspect their locks.
A lease is renewed and released by its ``lease_id``, a random 128-bit value
that only the holder receives.

Acquire long-polls: the request waits up to ``wait`` seconds (at most 60)
for the lock, in its place in the queue; when the wait runs out the place is
given up and the answer is 409 ``lock-busy``. A client that waits longer asks
again (``client.py`` does), queueing anew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sysdesign.blocks.lock import (
    Lease,
    LeaseLost,
    LockConflict,
    LockService,
    LockTimeout,
    LockUnavailable,
    Ticket,
)
from sysdesign.blocks.lock.base import MAX_TTL_SECONDS, MIN_TTL_SECONDS
from sysdesign.platform.accounts.security import Principal, current_user
from sysdesign.platform.http import Problem, ProblemDetail
from sysdesign.platform.service_app import create_service_app

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

MAX_WAIT_SECONDS = 60.0
MAX_NAME_CHARS = 200

DESCRIPTION = f"""\
Distributed locks with **fencing tokens**: exclusive locks, read/write locks
(`mode: shared` for readers), and semaphores (`mode: permit` with `permits`),
granted first come, first served, on the lock block (`SYSDESIGN_LOCK_URL`).

A lease lasts `ttl` seconds unless renewed. Its `token` strictly increases
with every grant of a name: send it with every write to the resource the
lock protects, and have the resource refuse a token lower than one it has
seen. That is what keeps a holder that paused past its lease from
overwriting the next holder's work; no lock service can stop it otherwise.

Every operation needs `Authorization: Bearer <token>`; lock names are per
caller (1 to {MAX_NAME_CHARS} characters, no `/`, no control characters). Acquire waits up to `wait`
seconds (0 to {MAX_WAIT_SECONDS:g}) in its place in the queue, then answers 409
`lock-busy`.
"""


def _problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetail, "description": description}


UNAUTHORIZED = {401: _problem("No valid bearer token")}
UNAVAILABLE = {503: _problem("The lock store cannot be reached; retry after Retry-After")}
LockName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern=r"^[^/\x00-\x1f\x7f-\x9f]+$",
        description="Lock name: no `/` and no control characters",
    ),
]
LeaseId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="From the acquire reply")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcquireRequest(_Strict):
    ttl: Annotated[
        float,
        Field(ge=MIN_TTL_SECONDS, le=MAX_TTL_SECONDS, description="Seconds the lease lasts"),
    ]
    wait: Annotated[
        float, Field(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for the lock")
    ] = 0.0
    mode: Literal["exclusive", "shared", "permit"] = "exclusive"
    permits: Annotated[int, Field(ge=1, le=100_000, description="Semaphore size (permit)")] = 1
    label: Annotated[
        str | None, Field(max_length=100, description="Shown beside your user id to others")
    ] = None

    @field_validator("permits")
    @classmethod
    def _one_unless_permit(cls, permits: int, info: ValidationInfo) -> int:
        if info.data.get("mode", "exclusive") != "permit" and permits != 1:
            raise ValueError("permits must be 1 unless mode is permit")
        return permits


class RenewRequest(_Strict):
    lease_id: LeaseId
    ttl: Annotated[
        float, Field(ge=MIN_TTL_SECONDS, le=MAX_TTL_SECONDS, description="Seconds from now")
    ]


class ReleaseRequest(_Strict):
    lease_id: LeaseId


class LeaseOut(BaseModel):
    name: str
    lease_id: str = Field(description="Keep it secret: it renews and releases the lease")
    token: int = Field(description="The fencing token")
    mode: str
    permits: int
    owner: str
    ttl: float
    expires_at: float = Field(description="Unix time by the lock store's clock")


class ReleaseOut(BaseModel):
    released: bool = Field(description="false: the lease had already lapsed or been released")


class TicketOut(BaseModel):
    token: int
    mode: str
    permits: int
    owner: str
    expires_at: float


class LockStateOut(BaseModel):
    name: str
    holders: list[TicketOut]
    waiters: list[TicketOut] = Field(description="In the order they will be granted")


class LockNamesOut(BaseModel):
    names: list[str] = Field(description="Your locks that have holders or waiters now")


def _rename(lease: Lease, name: str, ttl: float) -> LeaseOut:
    return LeaseOut(
        name=name,
        lease_id=lease.ticket_id,
        token=lease.token,
        mode=lease.mode,
        permits=lease.permits,
        owner=lease.owner,
        ttl=ttl,
        expires_at=round(lease.expires_at, 3),
    )


def _ticket(t: Ticket) -> TicketOut:
    return TicketOut(
        token=t.token, mode=t.mode, permits=t.permits, owner=t.owner,
        expires_at=round(t.expires_at, 3),
    )  # fmt: skip


class Caller:
    """The lock service as one signed-in caller sees it: that caller's names only."""

    def __init__(self, locks: LockService, user: Principal) -> None:
        self.locks = locks
        self.user = user
        self.prefix = f"u{user.user_id}:"

    def stored(self, name: str) -> str:
        return self.prefix + name


def _caller(request: Request, user: Annotated[Principal, Depends(current_user)]) -> Caller:
    return Caller(request.app.state.platform.locks, user)


Me = Annotated[Caller, Depends(_caller)]


def _install_errors(app: FastAPI) -> None:
    async def unavailable(request: Request, exc: Exception) -> Response:
        return Problem(
            503, "The lock store cannot be reached now", slug="lock-store-unavailable",
            title="Lock store unavailable", headers={"Retry-After": "1"},
        ).response(request.url.path)  # fmt: skip

    async def conflict(request: Request, exc: Exception) -> Response:
        return Problem(409, str(exc), slug="lock-in-use-otherwise", title="Lock used otherwise"
                       ).response(request.url.path)  # fmt: skip

    app.add_exception_handler(LockUnavailable, unavailable)
    app.add_exception_handler(LockConflict, conflict)


def create_app(platform: Platform) -> FastAPI:
    app = create_service_app(
        platform, name="locks", title="Distributed lock service", description=DESCRIPTION
    )
    _install_errors(app)
    _ = platform.locks  # built now, so that the platform's start() connects it

    @app.post(
        "/v1/locks/{name}/acquire",
        summary="Acquire a lock, waiting up to `wait` seconds",
        response_model=LeaseOut,
        tags=["locks"],
        responses={
            409: _problem("Not granted within `wait` (lock-busy), or the name is in use as "
                          "another kind of lock (lock-in-use-otherwise)"),
            **UNAUTHORIZED, **UNAVAILABLE,
        },
    )  # fmt: skip
    async def acquire(name: LockName, body: AcquireRequest, me: Me) -> LeaseOut:
        """A lease once granted, first come, first served. Its `token` is the
        fencing token."""
        owner = f"user:{me.user.user_id}" + (f"/{body.label}" if body.label else "")
        try:
            lease = await me.locks.acquire(
                me.stored(name), body.ttl, wait=body.wait, mode=body.mode,
                permits=body.permits, owner=owner,
            )  # fmt: skip
        except LockTimeout:
            raise Problem(
                409, f"lock {name!r} was not granted within {body.wait:g} seconds",
                slug="lock-busy", title="Lock busy", headers={"Retry-After": "1"},
            ) from None  # fmt: skip
        return _rename(lease, name, body.ttl)

    @app.post(
        "/v1/locks/{name}/renew",
        summary="Extend a lease",
        response_model=LeaseOut,
        tags=["locks"],
        responses={410: _problem("The lease lapsed or was released"), **UNAUTHORIZED,
                   **UNAVAILABLE},
    )  # fmt: skip
    async def renew(name: LockName, body: RenewRequest, me: Me) -> LeaseOut:
        """The same lease and token, lasting `ttl` seconds from now; 410 when it
        lapsed or was released (another holder may have the lock now)."""
        try:
            lease = await me.locks.renew_by_id(me.stored(name), body.lease_id, body.ttl)
        except LeaseLost:
            raise _lost(name) from None
        return _rename(lease, name, body.ttl)

    @app.post(
        "/v1/locks/{name}/release",
        summary="Give a lock back",
        response_model=ReleaseOut,
        tags=["locks"],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )
    async def release(name: LockName, body: ReleaseRequest, me: Me) -> ReleaseOut:
        """`released: false` when the lease had already lapsed or been released:
        a stale release changes nothing."""
        return ReleaseOut(released=await me.locks.store.remove(me.stored(name), body.lease_id))

    @app.get(
        "/v1/locks/{name}",
        summary="Holders and waiters of a lock",
        response_model=LockStateOut,
        tags=["locks"],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )
    async def inspect(name: LockName, me: Me) -> LockStateOut:
        state = await me.locks.inspect(me.stored(name))
        return LockStateOut(
            name=name,
            holders=[_ticket(t) for t in state.holders],
            waiters=[_ticket(t) for t in state.waiters],
        )

    @app.get(
        "/v1/locks",
        summary="Your locks in use",
        response_model=LockNamesOut,
        tags=["locks"],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )
    async def names(me: Me) -> LockNamesOut:
        every = await me.locks.store.names()
        return LockNamesOut(names=[n[len(me.prefix) :] for n in every if n.startswith(me.prefix)])

    return app


def _lost(name: str) -> Problem:
    return Problem(
        410, f"the lease on {name!r} lapsed or was released: acquire the lock again",
        slug="lease-lost", title="Lease lost",
    )  # fmt: skip
