"""The gateway: rate-limit rules applied to every request before it reaches a system.

Pure ASGI middleware on the root app. For each HTTP request it builds a
``RequestInfo`` (the system is the first path segment; the user comes from
a valid bearer token, checked without a database read; the API key from
``X-API-Key``; the IP from the connection, which uvicorn's
``--proxy-headers`` sets from ``X-Forwarded-For`` behind a trusted proxy),
asks the limiter, and either answers 429 ``application/problem+json`` with
``Retry-After`` and the ``RateLimit-*`` headers, or passes the request on
and adds the ``RateLimit-*`` headers of the rule closest to refusing to the
response.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sysdesign.blocks.ratelimit.limiter import RateLimiter, Verdict
from sysdesign.blocks.ratelimit.rules import RequestInfo
from sysdesign.blocks.ratelimit.shedding import Priority
from sysdesign.platform.http import Problem

# Operational endpoints are never limited: a load balancer's health checks must
# not be refused because a client exhausted a limit.
EXEMPT_PREFIXES = ("/healthz", "/readyz", "/metrics", "/_assets")


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limiter: Callable[[], RateLimiter],
        user_of_token: Callable[[str], str | None],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.user_of_token = user_of_token

    def request_info(self, scope: Scope) -> RequestInfo:
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = _bearer(headers)
        client = scope.get("client")
        return RequestInfo(
            system=path.split("/", 2)[1] if path.count("/") >= 1 else "",
            method=scope["method"],
            path=path,
            ip=client[0] if client else None,
            user=self.user_of_token(token) if token else None,
            api_key=headers.get("x-api-key") or None,
            headers=headers,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        limiter = self.limiter()
        shedder = limiter.shedder
        if not limiter.rules and shedder is None:
            await self.app(scope, receive, send)
            return
        info = self.request_info(scope)
        if shedder is None:
            await self._limited(limiter, info, scope, receive, send)
            return
        priority = limiter.priority_of(info)
        if not shedder.try_enter(priority):
            limiter.count_shed(priority)
            await self._shed(priority, scope, receive, send)
            return
        try:
            await self._limited(limiter, info, scope, receive, send)
        finally:
            shedder.leave()

    async def _limited(
        self, limiter: RateLimiter, info: RequestInfo, scope: Scope, receive: Receive, send: Send
    ) -> None:
        verdict = await limiter.check(info) if limiter.rules else Verdict(allowed=True)
        if not verdict.allowed:
            await self._refuse(verdict, scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _shed(priority: Priority, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(
            503,
            f"The server is overloaded and is shedding {priority.name.lower()}-priority "
            "requests; retry shortly",
            slug="overloaded",
            title="Overloaded",
            headers={"Retry-After": "1"},
            priority=priority.name.lower(),
        )
        await problem.response(scope["path"])(scope, receive, send)

    @staticmethod
    async def _refuse(verdict: Verdict, scope: Scope, receive: Receive, send: Send) -> None:
        deciding = verdict.deciding
        assert deciding is not None
        headers = verdict.headers()
        seconds = headers.get("Retry-After")
        problem = Problem(
            429,
            f"Rate limit {deciding.rule!r} exceeded; retry after {seconds} s"
            if seconds
            else f"Rate limit {deciding.rule!r} is lower than this request's cost",
            headers=headers,
            rule=deciding.rule,
            retry_after=int(seconds) if seconds else None,
        )
        await problem.response(scope["path"])(scope, receive, send)
