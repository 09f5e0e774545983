"""The server-rendered page at ``/shortener/``: shorten a URL, see your links and their stats.

Plain HTML forms and links, no JavaScript and no external assets. The routes
are the page's, not the API's: they are left out of the OpenAPI document.

- ``GET /``: signed in, the shorten form and your links (newest first,
  ``?before=<id>`` for older ones); signed out, the sign-in and register forms.
- ``POST /login``, ``POST /register``, ``POST /logout``: the browser session
  (``websession.py``: the accounts service's tokens in HttpOnly cookies).
- ``POST /links``: the shorten form; 303 to the new link's page, or the form
  again with the message beside the field (422, or 409 for a taken alias).
- ``GET /links/{code}``: one link, its QR code and its visits;
  ``GET /links/{code}/qr.svg`` the QR code; ``POST /links/{code}/toggle`` and
  ``POST /links/{code}/delete`` change it. Another's link is a 404, as an
  unknown code is.

Every POST must be a form body (415 otherwise) carrying the CSRF token of its
session (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from sysdesign.platform.http import Problem
from sysdesign.systems.shortener.domain import LinkInvalid
from sysdesign.systems.shortener.qr import qr_response
from sysdesign.systems.shortener.schemas import MAX_VISITS, short_url
from sysdesign.systems.shortener.service import AliasTaken, LinkNotFound
from sysdesign.systems.shortener.stats import link_stats, visit_totals
from sysdesign.systems.shortener.webforms import SHORTEN_FIELDS, LinkView, new_link
from sysdesign.systems.shortener.webframe import (
    Form,
    Handler,
    PageFrame,
    client_ip,
    root,
    see_other,
)
from sysdesign.systems.shortener.websession import BrowserSession

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sysdesign.platform.context import Platform
    from sysdesign.systems.shortener.domain import Link
    from sysdesign.systems.shortener.service import LinkService

PAGE_SIZE = 20
STATS_DAYS = 30
MAX_EMAIL_CHARS, MAX_PASSWORD_CHARS = 320, 1024


class WebPages(PageFrame):
    def __init__(self, platform: Platform, links: LinkService) -> None:
        super().__init__(platform)
        self._links = links

    async def not_found(self, request: Request, session: BrowserSession) -> HTMLResponse:
        return await self.error(
            request, session, 404, "Link not found", "You have no link with this code."
        )

    def _user_id(self, session: BrowserSession) -> int:
        assert session.principal is not None  # the frame sends the signed-out elsewhere
        return session.principal.user_id

    def _view(self, request: Request, link: Link, total_visits: int | None = None) -> LinkView:
        now_ms = int(self._platform.clock.time() * 1000)
        return LinkView.of(link, short_url(request, link.code), now_ms, total_visits)

    # --- the index: your links, or the sign-in forms ------------------------------------

    async def index(self, request: Request, session: BrowserSession, form: Form) -> Response:
        if session.principal is None:
            return await self._sign_in_page(request, session)
        before = request.query_params.get("before")
        if before is not None and not (before.isascii() and before.isdigit() and len(before) < 20):
            return await self.error(
                request, session, 400, "No such page", "This is not a page of your links."
            )
        return await self._links_page(
            request, session, before_id=None if before is None else int(before)
        )

    async def _links_page(
        self,
        request: Request,
        session: BrowserSession,
        *,
        before_id: int | None = None,
        values: Form | None = None,
        errors: Mapping[str, str] | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        found = await self._links.list(
            self._user_id(session), tag=None, before_id=before_id, limit=PAGE_SIZE + 1
        )
        page = found[:PAGE_SIZE]
        older = page[-1].id if len(found) > PAGE_SIZE else None
        totals = await visit_totals(self._platform, [(link.id, link.code) for link in page])
        errors = dict(errors or {})
        options_open = any(f in errors or (values or {}).get(f) for f in SHORTEN_FIELDS[1:])
        return await self.render(
            request,
            session,
            "index.html",
            status=status,
            headers=headers,
            links=[self._view(request, link, totals[link.id]) for link in page],
            older=older,
            first_page=before_id is None,
            values=values or {},
            errors=errors,
            options_open=options_open,
        )

    async def _sign_in_page(
        self,
        request: Request,
        session: BrowserSession,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        login: Form | None = None,
        login_error: str | None = None,
        register: Form | None = None,
        register_errors: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.render(
            request,
            session,
            "signin.html",
            status=status,
            headers=headers,
            login=login or {},
            login_error=login_error,
            register=register or {},
            register_errors=register_errors or {},
        )

    # --- the session --------------------------------------------------------------------

    async def login(self, request: Request, session: BrowserSession, form: Form) -> Response:
        email, password = form.get("email", "").strip(), form.get("password", "")
        shown = {"email": email}
        if not email or not password:
            return await self._sign_in_page(
                request,
                session,
                status=400,
                login=shown,
                login_error="Enter your e-mail and password.",
            )
        if len(email) > MAX_EMAIL_CHARS or len(password) > MAX_PASSWORD_CHARS:
            return await self._sign_in_page(
                request,
                session,
                status=400,
                login=shown,
                login_error="The e-mail or password is too long.",
            )
        try:
            pair = await self._platform.accounts.login(email, password, client_ip(request))
        except Problem as problem:
            if problem.status not in (401, 429):
                raise
            return await self._sign_in_page(
                request,
                session,
                status=problem.status,
                headers=problem.headers,
                login=shown,
                login_error=f"{problem.detail or problem.title}.",
            )
        self.sessions.started(session, pair)
        return see_other(f"{root(request)}/")

    async def register(self, request: Request, session: BrowserSession, form: Form) -> Response:
        from sysdesign.platform.accounts.api import RegisterRequest

        shown = {
            "email": form.get("email", "").strip(),
            "display_name": form.get("display_name", "").strip(),
        }
        try:
            body = RegisterRequest(
                email=shown["email"],
                password=form.get("password", ""),
                display_name=shown["display_name"] or None,
            )
        except ValidationError as exc:
            errors: dict[str, str] = {}
            for err in exc.errors():
                name = str(err["loc"][0]) if err.get("loc") else "email"
                errors.setdefault(name, _register_message(name, err["msg"]))
            return await self._sign_in_page(
                request, session, status=422, register=shown, register_errors=errors
            )
        accounts = self._platform.accounts
        try:
            await accounts.register(str(body.email), body.password, body.display_name)
            pair = await accounts.login(str(body.email), body.password, client_ip(request))
        except Problem as problem:
            if problem.status not in (409, 429):
                raise
            message = f"{problem.detail or problem.title}."
            return await self._sign_in_page(
                request,
                session,
                status=problem.status,
                headers=problem.headers,
                register=shown,
                register_errors={str(problem.extra.get("field", "_")): message},
            )
        self.sessions.started(session, pair)
        return see_other(f"{root(request)}/")

    async def logout(self, request: Request, session: BrowserSession, form: Form) -> Response:
        await self.sessions.end(request, session)
        return see_other(f"{root(request)}/")

    # --- links --------------------------------------------------------------------------

    async def shorten(self, request: Request, session: BrowserSession, form: Form) -> Response:
        typed = {name: form.get(name, "") for name in SHORTEN_FIELDS}
        values = {**typed, "password": ""}  # a password is never sent back in a page
        owner, host = self._user_id(session), request.url.netloc
        try:
            new = new_link(typed, max_visits_limit=MAX_VISITS)
            link = await self._links.create(owner, new, host=host, ip=client_ip(request))
        except Problem as problem:
            if problem.status != 429:
                raise
            return await self._links_page(
                request,
                session,
                values=values,
                status=429,
                headers=problem.headers,
                errors={"_": f"{problem.detail or problem.title}."},
            )
        except LinkInvalid as exc:
            field = exc.field if exc.field in SHORTEN_FIELDS else "_"
            return await self._links_page(
                request, session, values=values, status=422, errors={field: exc.message}
            )
        except AliasTaken as exc:
            return await self._links_page(
                request,
                session,
                values=values,
                status=409,
                errors={"alias": f"The alias {exc} is taken."},
            )
        return see_other(f"{root(request)}/links/{link.code}")

    async def link_page(self, request: Request, session: BrowserSession, form: Form) -> Response:
        try:
            link = await self._links.get(self._user_id(session), request.path_params["code"])
        except LinkNotFound:
            return await self.not_found(request, session)
        stats = await link_stats(self._platform, link.id, link.code, days=STATS_DAYS)
        peak = max((day.visits for day in stats.daily), default=0)
        return await self.render(
            request,
            session,
            "link.html",
            view=self._view(request, link),
            stats=stats,
            peak=peak,
            days=STATS_DAYS,
        )

    async def qr_svg(self, request: Request, session: BrowserSession, form: Form) -> Response:
        try:
            link = await self._links.get(self._user_id(session), request.path_params["code"])
        except LinkNotFound:
            return await self.not_found(request, session)
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        }
        return qr_response(short_url(request, link.code), "svg", scale=4, headers=headers)

    async def toggle(self, request: Request, session: BrowserSession, form: Form) -> Response:
        code = request.path_params["code"]
        # The state wanted, not "flip": a form posted twice leaves the link as it said.
        wanted = form.get("enabled")
        if wanted not in ("0", "1"):
            return await self.error(
                request, session, 400, "Bad form", "Say whether the link is to be enabled."
            )
        try:
            await self._links.update(
                self._user_id(session), code, {"enabled": wanted == "1"}, host=request.url.netloc
            )
        except LinkNotFound:
            return await self.not_found(request, session)
        return see_other(f"{root(request)}/links/{code}")

    async def delete(self, request: Request, session: BrowserSession, form: Form) -> Response:
        try:
            await self._links.delete(self._user_id(session), request.path_params["code"])
        except LinkNotFound:
            return await self.not_found(request, session)
        return see_other(f"{root(request)}/")


def _register_message(field: str, message: str) -> str:
    if field == "password":
        return "A password has 8 to 1024 characters."
    if field == "display_name":
        return "A display name has at most 100 characters."
    return message[:1].upper() + message[1:] + "."


def install(app: FastAPI, platform: Platform, links: LinkService) -> None:
    pages = WebPages(platform, links)
    routes: list[tuple[str, Handler, str, bool | None]] = [
        ("/", pages.index, "GET", None),
        ("/login", pages.login, "POST", False),
        ("/register", pages.register, "POST", False),
        ("/logout", pages.logout, "POST", True),
        ("/links", pages.shorten, "POST", True),
        ("/links/{code}", pages.link_page, "GET", True),
        ("/links/{code}/qr.svg", pages.qr_svg, "GET", True),
        ("/links/{code}/toggle", pages.toggle, "POST", True),
        ("/links/{code}/delete", pages.delete, "POST", True),
    ]
    for path, handler, method, signed_in in routes:
        app.add_route(
            path,
            pages.page(handler, signed_in=signed_in),
            methods=[method],
            include_in_schema=False,
        )
