"""``GET /s/{code}`` on the root app: the redirect, the shortener's hot path.

Answers:

- 301 or 302 (as the link says) with ``Location``; the visit's query string
  is appended when the link forwards it. ``Cache-Control: private, max-age=90``
  on a 301 keeps browsers from remembering it forever (a link may change).
- 410 with a small HTML page when the link has expired or has had its
  ``max_visits``.
- 404 with a small HTML page for an unknown, disabled or blocked code.
- For a link with a password: a small form (200) that posts the password to
  the same address; the right one redirects (303), a wrong one shows the
  form again (401). Wrong guesses are limited per link and address
  (``PASSWORD_GUESSES``), counted on the ratelimit store.

Each request reads the link once (``LinkService.resolve``); GET and HEAD of
an ordinary link then take a path that builds no Request object
(``redirect``), the others go through ``follow`` with the link read. A
cached link makes no database query; a link with ``max_visits`` makes one
conditional UPDATE per visit (why: see ``service.py``).
"""

from __future__ import annotations

import contextlib
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sysdesign.blocks.ratelimit.base import Algorithm, Hit, Limit, StoreUnavailable
from sysdesign.systems.shortener.domain import Redirect
from sysdesign.systems.shortener.service import LinkService

PASSWORD_GUESSES = Limit(10, 900)  # wrong passwords per link and address, per 15 minutes

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="robots" content="noindex"></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Password needed</title>
<meta name="robots" content="noindex"><meta name="viewport" content="width=device-width">
</head><body><h1>Password needed</h1><p>This link is protected by a password.</p>
{error}<form method="post" action="{action}">
<label for="password">Password</label>
<input id="password" name="password" type="password" required autofocus
 autocomplete="current-password" maxlength="128">
<button type="submit">Continue</button></form></body></html>
"""


def _page(status: int, title: str, message: str) -> HTMLResponse:
    body = _PAGE.format(title=escape(title), message=escape(message))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    action = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    shown = f'<p role="alert"><strong>{escape(error)}</strong></p>' if error else ""
    body = _FORM.format(action=escape(action, quote=True), error=shown)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def _password_accepted(service: LinkService, request: Request, link: Redirect) -> bool:
    """Whether the posted password opens ``link``; raises nothing on bad input."""
    try:
        form = await request.form()
    except Exception:  # a body that is not a form: treated as no password
        return False
    password = form.get("password")
    if not isinstance(password, str) or not 1 <= len(password) <= 128:
        return False
    return await service.verify_password(link, password)


async def _guess_allowed(service: LinkService, key: str) -> bool:
    store = service.platform.ratelimit_store
    try:
        decision = await store.hit(Hit(Algorithm.SLIDING_LOG, key, PASSWORD_GUESSES))
    except StoreUnavailable:
        return True  # argon2's cost still bounds the guessing rate
    return decision.allowed


def redirect_routes(service: LinkService) -> list[Route]:
    """The root routes the shortener contributes: ``/s/{code}``."""

    async def follow(request: Request, resolved: tuple[int, Redirect] | None) -> Response:
        """Every case but the common one, given the link ``resolve`` read."""
        code = request.path_params["code"]
        if resolved is None or not resolved[1].enabled:
            return _page(404, "Link not found", "There is no link at this address.")
        link_id, link = resolved
        now_ms = int(service.clock.time() * 1000)
        if link.expired(now_ms):
            return _page(410, "Link expired", "This link has expired.")
        status = link.status
        if request.method == "POST" and not link.protected:
            return _page(405, "Method not allowed", "This link takes no form.")
        if link.protected:
            if request.method != "POST":
                return _form(request)
            ip = request.client.host if request.client else "unknown"
            guess_key = f"shortener-password|code={code}|ip={ip}"
            if not await _guess_allowed(service, guess_key):
                return _form(request, 429, "Too many wrong passwords; try again later.")
            if not await _password_accepted(service, request, link):
                return _form(request, 401, "That password is not right.")
            with contextlib.suppress(StoreUnavailable):
                await service.platform.ratelimit_store.refund(guess_key)
            status = 303  # the answer to a form post: the browser GETs the target
        visit = {
            "code": code,
            "at_ms": now_ms,
            "referrer": request.headers.get("referer"),
            "user_agent": request.headers.get("user-agent"),
            # Analytics turns it into a country and does not keep it.
            "ip": request.client.host if request.client else None,
        }
        if link.max_visits is not None:
            if not await service.count_limited_visit(link_id, code, visit):
                return _page(410, "Link used up", "This link has had all its visits.")
        else:
            await service.publish_visit(link_id, code, visit)
        headers = {"Location": link.location(request.url.query)}
        headers["Cache-Control"] = "private, max-age=90" if status == 301 else "no-store"
        return Response(status_code=status, headers=headers)

    async def redirect(scope: Scope, receive: Receive, send: Send) -> None:
        """The common case without building a Request: a GET or HEAD of an
        enabled, unexpired link with no password and no visit limit. Every
        other case goes to ``follow``, with the link read here."""
        code = scope["path_params"]["code"]
        resolved = await service.resolve(code)
        now_ms = int(service.clock.time() * 1000)
        if (
            scope["method"] not in ("GET", "HEAD")
            or resolved is None
            or not _plain(resolved[1], now_ms)
        ):
            response = await follow(Request(scope, receive, send), resolved)
            return await response(scope, receive, send)
        link_id, link = resolved
        referrer = user_agent = None
        for name, value in scope["headers"]:
            if name == b"referer":
                referrer = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        client = scope.get("client")
        visit = {"code": code, "at_ms": now_ms, "referrer": referrer, "user_agent": user_agent,
                 "ip": client[0] if client else None}  # fmt: skip
        await service.publish_visit(link_id, code, visit)
        location = link.location(scope["query_string"].decode("latin-1"))
        cache = b"private, max-age=90" if link.status == 301 else b"no-store"
        headers = [(b"location", location.encode("latin-1")), (b"cache-control", cache),
                   (b"content-length", b"0")]  # fmt: skip
        await send({"type": "http.response.start", "status": link.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    methods = ["GET", "HEAD", "POST"]
    return [Route("/s/{code}", _Asgi(redirect), methods=methods, name="shortener-redirect")]


def _plain(link: Redirect, now_ms: int) -> bool:
    """Whether the link redirects with nothing to ask or count first."""
    held = link.protected or link.max_visits is not None or link.expired(now_ms)
    return link.enabled and not held


class _Asgi:
    """An ASGI callable as a route's endpoint (a plain function would be taken
    for a request handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
