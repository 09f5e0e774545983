"""Pure ASGI middleware for the root app: request ids, logs, metrics, body limit.

Pure ASGI (no ``BaseHTTPMiddleware``) keeps each request one coroutine chain,
with no extra task or queue between the server and the application.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection
from typing import Any

import structlog
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sysdesign.platform.http import Problem
from sysdesign.platform.observability import HttpMetrics, get_logger

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The messages that open a response, and so carry its headers.
_OPENINGS = frozenset({"http.response.start", "websocket.http.response.start", "websocket.accept"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
REQUEST_ID_HEADER = b"x-request-id"

log = get_logger("sysdesign.access")


class BodyTooLarge(Problem):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes", limit=limit)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: at once by Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await Problem(400, "Content-Length is not a number").response()(
                        scope, receive, send
                    )
                    return
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                break
        # A chunked body is counted as it streams. Past the limit the app is told the
        # client left (it stops reading), whatever it answers is dropped, and 413 is sent.
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.labels("body_too_large").inc()
        await BodyTooLarge(self.max_bytes).response(scope.get("path"))(scope, receive, send)


class ObservabilityMiddleware:
    """Request id, access log, metrics, and the last-resort 500 for the whole stack.

    The route label is the matched route's template (``/accounts/v1/me``), never
    the raw path, so metric cardinality stays bounded.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics,
        systems: Collection[str],
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.systems = frozenset(systems)
        self.access_log = access_log
        # labels() takes a lock and hashes its arguments on every call; the set of
        # (system, route, method, status) is bounded, so keep the children at hand.
        self._series: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        if not request_id:
            request_id = os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        root_path = scope.get("root_path", "")
        status = 500
        started = False
        header_value = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            kind = message["type"]
            if kind in _OPENINGS:
                started = True
                status = message.get("status", 101)  # websocket.accept carries none
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, header_value),
                ]
            elif kind == "websocket.close" and not started:
                started = True
                status = 403  # closed before the handshake: the server's denial
            await send(message)

        t0 = time.perf_counter()
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Problem as problem:
            if started:
                raise
            await problem.response(scope.get("path"))(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_exception", path=scope.get("path"))
            if scope["type"] != "http":
                raise
            if not started:
                await Problem(500, "The server failed to answer this request").response(
                    scope.get("path")
                )(scope, receive, send_with_id)
            # else: a mounted app already answered with its 500 and re-raised for logging.
        finally:
            elapsed = time.perf_counter() - t0
            self._record(scope, root_path, status, elapsed)
            structlog.contextvars.reset_contextvars(**tokens)

    def _record(self, scope: Scope, root_path: str, status: int, elapsed: float) -> None:
        """Count the request; WebSockets are counted with status 101 (accepted) or the
        status they were refused with, and kept out of the latency histogram."""
        route = self._route_label(scope, root_path)
        method = scope.get("method", "WS")
        if method not in _METHODS:
            method = "WS" if scope["type"] == "websocket" else "OTHER"  # never a client's string
        system = self._system_label(scope.get("path", "")[len(root_path) :])
        key = (system, route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.metrics.requests.labels(system, route, method, str(status)),
                self.metrics.latency.labels(system, route, method),
            )
        series[0].inc()
        if method != "WS":  # a connection's lifetime is not a request's latency
            series[1].observe(elapsed)
        if self.access_log:
            log.info(
                "request",
                method=method,
                path=scope.get("path"),
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
            )

    def _system_label(self, path: str) -> str:
        first = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        return first if first in self.systems else "platform"

    @staticmethod
    def _route_label(scope: Scope, root_path: str) -> str:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if template is None:
            return "<unmatched>"
        prefix = scope.get("root_path", "")[len(root_path) :]
        if isinstance(route, Mount):
            # The mounted app answered without a route of its own that we can see
            # (its 404, or a plain Starlette route inside FastAPI): one label per mount.
            return prefix + "/{path}"
        return prefix + template
