"""The frame around every handler of the web page: session, form checks, rendering.

``PageFrame.page(handler)`` loads the browser session (``websession.py``),
refuses a POST that is not a form body (415) or lacks its session's CSRF
token (403), calls the handler, and writes back the cookies the request
changed. ``render`` fills a template with what every page needs (who is
signed in, the CSRF token) and the headers every page carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sysdesign.platform.http import Problem
from sysdesign.systems.shortener.websession import CSRF_FIELD, BrowserSession, SessionManager

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
FORM_MAX_FIELDS = 32
_SELF_ONLY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Pages show one person's links: never cached, never framed (a framed page's buttons
# could be clicked through a disguise), nothing loaded from elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": _SELF_ONLY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

Form = Mapping[str, str]
Handler = Callable[[Request, BrowserSession, Form], Awaitable[Response]]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


class PageFrame:
    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self.sessions = SessionManager(platform)
        self._templates = Environment(
            loader=PackageLoader("sysdesign.systems.shortener", "templates"), autoescape=True
        )

    def page(self, handler: Handler, *, signed_in: bool | None) -> Callable[..., Any]:
        """``handler`` with the session loaded and its cookies written back. For a POST:
        a form body and its CSRF token first. ``signed_in`` True: the page needs a
        session (else the sign-in page); False: the sign-in forms' token; None: either."""

        async def endpoint(request: Request) -> Response:
            session = await self.sessions.load(request)
            form: Form = {}
            if signed_in and session.principal is None:
                response = see_other(f"{root(request)}/")
            elif request.method == "POST":
                form_or_refusal = await self._checked_form(request, session, signed_in)
                if isinstance(form_or_refusal, Response):
                    response = form_or_refusal
                else:
                    response = await handler(request, session, form_or_refusal)
            else:
                response = await handler(request, session, form)
            self.sessions.apply(request, response, session)
            return response

        return endpoint

    async def _checked_form(
        self, request: Request, session: BrowserSession, signed_in: bool | None
    ) -> Form | Response:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media not in FORM_TYPES:
            return await self.error(
                request, session, 415, "Not a form", "This address takes the page's forms only."
            )
        try:
            raw = await request.form(max_files=0, max_fields=FORM_MAX_FIELDS)
        except HTTPException:
            return await self.error(
                request, session, 400, "Bad form", "The form could not be read."
            )
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
        await raw.close()
        # Browsers say where a request comes from; a form on another site is refused
        # even before its token is looked at.
        cross_site = request.headers.get("sec-fetch-site") == "cross-site"
        user_form = signed_in if signed_in is not None else session.principal is not None
        if cross_site or not self.sessions.csrf_valid(
            session, form.get(CSRF_FIELD), signed_in=user_form
        ):
            return await self.error(
                request,
                session,
                403,
                "Form expired",
                "This form is out of date or did not come from this "
                "site. Go back, reload the page and try again.",
            )
        return form

    async def render(
        self,
        request: Request,
        session: BrowserSession,
        template: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        user = None
        if session.principal is not None:
            try:
                user = await self._platform.accounts.get_user(session.principal.user_id)
            except Problem:
                user = None  # the account is gone; the token lives until it expires
        csrf = (
            self.sessions.csrf_for_user(session)
            if session.principal is not None
            else self.sessions.csrf_for_anonymous(session)
        )
        html = self._templates.get_template(template).render(
            root=root(request),
            site=str(request.scope.get("app_root_path", "")),
            user=user,
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})

    async def error(
        self, request: Request, session: BrowserSession, status: int, title: str, message: str
    ) -> HTMLResponse:
        return await self.render(
            request, session, "error.html", status=status, title=title, message=message
        )
