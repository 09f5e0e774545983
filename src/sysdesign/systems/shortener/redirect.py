"""``GET /s/{code}`` on the root app: the redirect, the shortener's hot path.

Answers:

- 301 or 302 (as the link says) with ``Location``; the visit's query string
  is appended when the link forwards it. ``Cache-Control: private, max-age=90``
  on a 301 keeps browsers from remembering it forever (a link may change).
- 410 with a small HTML page when the link has expired or has had its
  ``max_visits``.
- 404 with a small HTML page for an unknown or disabled code.

A cached link makes no database query (``LinkService.resolve``); a link
with ``max_visits`` makes one conditional UPDATE per visit (why: see
``service.py``).
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sysdesign.systems.shortener.service import LinkService

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="robots" content="noindex"></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


def _page(status: int, title: str, message: str) -> HTMLResponse:
    body = _PAGE.format(title=escape(title), message=escape(message))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def redirect_routes(service: LinkService) -> list[Route]:
    """The root routes the shortener contributes: ``/s/{code}``."""

    async def follow(request: Request) -> Response:
        code = request.path_params["code"]
        resolved = await service.resolve(code)
        if resolved is None or not resolved[1].enabled:
            return _page(404, "Link not found", "There is no link at this address.")
        link_id, link = resolved
        now_ms = int(service.clock.time() * 1000)
        if link.expired(now_ms):
            return _page(410, "Link expired", "This link has expired.")
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
        headers["Cache-Control"] = "private, max-age=90" if link.status == 301 else "no-store"
        return Response(status_code=link.status, headers=headers)

    return [Route("/s/{code}", follow, methods=["GET", "HEAD"], name="shortener-redirect")]
