"""``/cache/v1``: a key-value cache over HTTP, one namespace per signed-in caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Response

from sysdesign.blocks.cache import CacheError, CacheUnavailable, EntryTooLarge, NotAnInteger
from sysdesign.platform.accounts.security import Principal, current_user
from sysdesign.platform.http import Problem, ProblemDetail
from sysdesign.platform.service_app import create_service_app
from sysdesign.systems.cache.cluster_view import (
    ClusterOut,
    OwnersOut,
    cluster_status,
    key_owners,
)
from sysdesign.systems.cache.domain import (
    ETAG_LIST_PATTERN,
    MAX_KEY_CHARS,
    MAX_TTL_SECONDS,
    PreconditionFailed,
    WriteConditions,
    etag_of,
    not_modified,
    parse_etags,
)
from sysdesign.systems.cache.schemas import (
    IncrOut,
    IncrRequest,
    MGetOut,
    MGetRequest,
    MSetOut,
    MSetRequest,
    StatsOut,
    StoredOut,
    TtlSeconds,
    to_base64,
)
from sysdesign.systems.cache.service import Entry, KeyValueService

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

DESCRIPTION = f"""\
A shared key-value cache, like Redis or Memcached over HTTP, on the cache block
(`SYSDESIGN_CACHE_URL`: this process's memory, Redis, or our own cache nodes).

**Every operation needs `Authorization: Bearer <token>`** from the accounts
service, and **keys are per caller**: the key `session:1` of one account and
the key `session:1` of another are two different keys. No account can read,
overwrite or delete another's keys. `GET /v1/stats` gives the figures of the
whole cache, shared by every caller.

A key is 1 to {MAX_KEY_CHARS} characters of UTF-8 text, anything but empty
(in a path, percent-encode what URLs reserve: `/keys/a%3Fb`; a `/` may stay as
it is). A value is any bytes up to the server's body limit
(`SYSDESIGN_MAX_BODY_BYTES`, 413 beyond). A cache may forget any key at any
time (memory budget, expiry): treat a 404 as "ask the source".

Values are raw bytes in `PUT` and `GET /v1/keys/{{key}}`; in the JSON of
`mget` and `mset` they are **standard base64** (RFC 4648, section 4, with
padding). A value's `ETag` is a digest of its bytes: send it back in
`If-Match` to write only if nobody changed the value since you read it
(compare-and-set). TTLs are seconds, more than 0 and at most
{MAX_TTL_SECONDS:,} (ten years); a write without `ttl` leaves the key with no
expiry, as Redis's SET does.

The cache being unreachable is a 503 problem with `Retry-After`.
"""

BINARY = {"schema": {"type": "string", "format": "binary"}}


def _problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetail, "description": description}


UNAUTHORIZED = {401: _problem("No valid bearer token")}
UNAVAILABLE = {503: _problem("The cache cannot be reached now; retry after Retry-After seconds")}
NOT_FOUND = {404: _problem("No such key (never set, deleted, expired or evicted)")}
PRECONDITION = {412: _problem("A write condition (nx, xx, If-Match, If-None-Match) did not hold")}


VALUE_HEADERS = {
    "ETag": {"description": "A digest of the value", "schema": {"type": "string"}},
    "Cache-TTL": {
        "description": "Seconds to live; absent when the key has no expiry",
        "schema": {"type": "string"},
    },
}

PathKey = Annotated[
    str,
    Path(min_length=1, max_length=MAX_KEY_CHARS, description="The key, percent-encoded"),
]


def _etags(description: str) -> Any:
    return Header(pattern=ETAG_LIST_PATTERN, description=description)


def _seconds(ttl: float) -> str:
    return f"{ttl:.3f}".rstrip("0").rstrip(".")


def _no_such_key() -> Problem:
    return Problem(404, "No such key", slug="key-not-found", title="Key not found")


def _headers_of(entry: Entry) -> dict[str, str]:
    headers = {"ETag": etag_of(entry.value)}
    if entry.ttl is not None:
        headers["Cache-TTL"] = _seconds(entry.ttl)
    return headers


def _caller(request: Request, user: Annotated[Principal, Depends(current_user)]) -> KeyValueService:
    """The cache as the signed-in caller sees it: that caller's namespace only."""
    return KeyValueService(request.app.state.platform.cache, user.user_id)


Caller = Annotated[KeyValueService, Depends(_caller)]
User = Annotated[Principal, Depends(current_user)]


def _install_cache_errors(app: FastAPI) -> None:
    async def unavailable(request: Request, exc: Exception) -> Response:
        return Problem(
            503,
            "The cache cannot be reached now",
            slug="cache-unavailable",
            title="Cache unavailable",
            headers={"Retry-After": "1"},
        ).response(request.url.path)

    async def not_an_integer(request: Request, exc: Exception) -> Response:
        # 409, not 422: the request is well formed; what refuses it is the value
        # the key holds now, and changing that value is how the caller resolves it.
        return Problem(
            409,
            f"The key's value is not a 64-bit integer, or the result would overflow: {exc}",
            slug="not-an-integer",
            title="Not an integer",
        ).response(request.url.path)

    async def too_large(request: Request, exc: Exception) -> Response:
        return Problem(413, "The value is larger than the cache's whole memory budget").response(
            request.url.path
        )

    async def refused(request: Request, exc: Exception) -> Response:
        return Problem(
            502, "The cache refused the operation", slug="cache-error", title="Cache error"
        ).response(request.url.path)

    async def precondition(request: Request, exc: Exception) -> Response:
        return Problem(
            412, str(exc), slug="precondition-failed", title="Precondition failed"
        ).response(request.url.path)

    app.add_exception_handler(CacheUnavailable, unavailable)
    app.add_exception_handler(NotAnInteger, not_an_integer)
    app.add_exception_handler(EntryTooLarge, too_large)
    app.add_exception_handler(CacheError, refused)
    app.add_exception_handler(PreconditionFailed, precondition)


def create_app(platform: Platform) -> FastAPI:
    app = create_service_app(
        platform, name="cache", title="Distributed cache", description=DESCRIPTION
    )
    _install_cache_errors(app)
    cache = platform.cache  # built now, so that the platform's start() connects it

    @app.post(
        "/v1/keys/{key:path}/incr",
        summary="Add to an integer",
        response_model=IncrOut,
        tags=["keys"],
        responses={
            **UNAUTHORIZED,
            409: _problem("The value is not a 64-bit integer, or the result would overflow"),
            **UNAVAILABLE,
        },
    )
    async def incr(
        key: PathKey, kv: Caller, body: Annotated[IncrRequest | None, Body()] = None
    ) -> IncrOut:
        """Add `amount` (default 1) to the integer at the key, creating it at 0
        (with `ttl`, if given) when absent; atomic under concurrent callers.
        An existing key keeps its expiry."""
        body = body or IncrRequest()
        return IncrOut(key=key, value=await kv.incr(key, body.amount, body.ttl))

    @app.put(
        "/v1/keys/{key:path}",
        summary="Store a value",
        response_model=StoredOut,
        tags=["keys"],
        responses={
            200: {"description": "Replaced", "headers": {"ETag": {"schema": {"type": "string"}}}},
            201: {
                "model": StoredOut,
                "description": "Created",
                "headers": {"ETag": {"schema": {"type": "string"}}},
            },
            **UNAUTHORIZED,
            **PRECONDITION,
            413: _problem("The value is larger than the body limit"),
            **UNAVAILABLE,
        },
        openapi_extra={
            "requestBody": {
                "required": False,
                "description": "The value: any bytes, possibly none. The content type is "
                "not stored; the value is read back as application/octet-stream.",
                "content": {"application/octet-stream": BINARY},
            }
        },
    )
    async def put(
        key: PathKey,
        request: Request,
        response: Response,
        kv: Caller,
        ttl: Annotated[TtlSeconds | None, Query()] = None,
        nx: Annotated[bool, Query(description="Write only if the key is absent")] = False,
        xx: Annotated[bool, Query(description="Write only if the key exists")] = False,
        if_match: Annotated[
            str | None, _etags("Write only if the value has one of these ETags; *: if it exists")
        ] = None,
        if_none_match: Annotated[
            str | None, _etags("Write only if the value has none of these ETags; *: if absent")
        ] = None,
    ) -> StoredOut:
        """Store the request body under the key: 201 when it was created, 200
        when it replaced a value, 412 when a condition kept it from being
        written. Conditions combine: `nx`, `xx`, `If-Match`, `If-None-Match`."""
        if nx and xx:
            raise Problem(
                422,
                "nx and xx exclude each other: a key cannot be both absent and present",
                errors=[
                    {
                        "field": "xx",
                        "location": ["query", "xx"],
                        "message": "cannot be combined with nx",
                        "type": "conflict",
                    }
                ],
            )
        conditions = WriteConditions(
            only_if_absent=nx,
            only_if_present=xx,
            if_match=parse_etags(if_match),
            if_none_match=parse_etags(if_none_match),
        )
        value = await request.body()
        created = await kv.put(key, value, ttl, conditions)
        tag = etag_of(value)
        response.status_code = 201 if created else 200
        response.headers["ETag"] = tag
        return StoredOut(key=key, created=created, etag=tag, ttl=ttl)

    @app.get(
        "/v1/keys/{key:path}",
        summary="Read a value",
        response_class=Response,
        tags=["keys"],
        responses={
            200: {
                "description": "The value, as it was stored",
                "content": {"application/octet-stream": BINARY},
                "headers": VALUE_HEADERS,
            },
            304: {"description": "If-None-Match matched: the copy the caller holds is current"},
            **UNAUTHORIZED,
            **NOT_FOUND,
            **UNAVAILABLE,
        },
    )
    async def get(
        key: PathKey,
        kv: Caller,
        if_none_match: Annotated[
            str | None, _etags("ETags the caller holds: 304 if one is current")
        ] = None,
    ) -> Response:
        """The value as raw bytes, its `ETag`, and `Cache-TTL`: the seconds it has left.
        `HEAD` answers the same status and headers without the value: an
        existence check, like Redis's EXISTS."""
        entry = await kv.get(key)
        if entry is None:
            raise _no_such_key()
        headers = _headers_of(entry)
        if not_modified(entry.value, parse_etags(if_none_match)):
            return Response(status_code=304, headers=headers)
        return Response(entry.value, headers=headers, media_type="application/octet-stream")

    # Not in the document: a HEAD answer has no body, so its errors cannot be the
    # problem documents every operation declares. GET's description mentions it.
    @app.head("/v1/keys/{key:path}", include_in_schema=False)
    async def head(key: PathKey, kv: Caller) -> Response:
        """The headers a read would answer, without the value: an existence
        check (Redis's EXISTS) that also gives the ETag and the time left."""
        entry = await kv.get(key)
        if entry is None:
            raise _no_such_key()
        return Response(status_code=200, headers=_headers_of(entry))

    @app.delete(
        "/v1/keys/{key:path}",
        summary="Delete a key",
        status_code=204,
        response_class=Response,
        tags=["keys"],
        responses={**UNAUTHORIZED, **NOT_FOUND, **UNAVAILABLE},
    )
    async def delete(key: PathKey, kv: Caller) -> Response:
        """Remove the key: 204, or 404 when there was none."""
        if not await kv.delete(key):
            raise _no_such_key()
        return Response(status_code=204)

    @app.post(
        "/v1/mget",
        summary="Read many keys",
        response_model=MGetOut,
        tags=["batches"],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )
    async def mget(body: MGetRequest, kv: Caller) -> MGetOut:
        """Up to 1,000 keys in one round trip to the cache."""
        found = await kv.get_many(body.keys)
        return MGetOut(values={k: None if v is None else to_base64(v) for k, v in found.items()})

    @app.post(
        "/v1/mset",
        summary="Store many values",
        response_model=MSetOut,
        tags=["batches"],
        responses={
            413: _problem("The body is larger than the limit"),
            **UNAUTHORIZED,
            **UNAVAILABLE,
        },
    )
    async def mset(body: MSetRequest, kv: Caller) -> MSetOut:
        """Up to 1,000 values in one round trip, all with the same `ttl` (or none)."""
        await kv.set_many(body.items, body.ttl)
        return MSetOut(stored=len(body.items))

    @app.get(
        "/v1/stats",
        summary="The cache's figures",
        response_model=StatsOut,
        tags=["stats"],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )
    async def stats(_user: User) -> StatsOut:
        """Hits, misses, evictions and expirations since the cache started, and
        the keys and bytes it holds now: of the whole cache (on Redis, of the
        whole server), not of the caller's keys alone."""
        s = await cache.stats()
        return StatsOut(
            backend=cache.name,
            hits=s.hits,
            misses=s.misses,
            hit_ratio=round(s.hit_ratio, 6),
            evictions=s.evictions,
            expirations=s.expirations,
            keys=s.keys,
            used_bytes=s.used_bytes,
        )

    not_a_cluster = {404: _problem("The cache is not a cluster of cache nodes")}

    @app.get(
        "/v1/cluster",
        summary="The cluster's nodes, their shares and health",
        response_model=ClusterOut,
        tags=["cluster"],
        responses={**UNAUTHORIZED, **not_a_cluster},
    )
    async def cluster(_user: User) -> ClusterOut:
        """Each node of a `sysdesign://` cache as this process sees it: up or
        routed around, its share of the ring, keys waiting to be deleted on it
        before it serves again, and its own figures. 404 on any other backend."""
        return await cluster_status(cache)

    @app.get(
        "/v1/cluster/owners/{key:path}",
        summary="The nodes that hold a key",
        response_model=OwnersOut,
        tags=["cluster"],
        responses={**UNAUTHORIZED, **not_a_cluster},
    )
    async def owners(key: PathKey, kv: Caller) -> OwnersOut:
        """Where the caller's `key` lives, its primary first (whether or not it is set)."""
        return key_owners(cache, key, kv.stored_name(key))

    return app
