"""``/shortener/v1``: the signed-in owner's links. The redirect is ``redirect.py``.

Every operation needs a bearer token; a link is visible to its owner only
(another's link answers 404, as an unknown code does, so codes of other
people's links cannot be probed). Validation errors are 422 problems naming
the field, whether the schema or the domain refused it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sysdesign.platform.accounts.security import Principal, current_user
from sysdesign.platform.http import Page, PageRequest, Problem, ProblemDetail, page_request
from sysdesign.platform.service_app import create_service_app
from sysdesign.systems.shortener import domain, stats_api, web, workers
from sysdesign.systems.shortener.domain import Link, LinkInvalid
from sysdesign.systems.shortener.service import AliasTaken, LinkNotFound, LinkService, NewLink

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

DESCRIPTION = """\
Short links: `POST /v1/links` with a `target` (http or https) gives a
7-character `code`, or takes your `alias`; `GET /s/{code}` on the site's root
redirects there (301 or 302, the query string forwarded when the link says
so), until the link expires (`expires_at`) or has had `max_visits` visits:
then it answers 410. Every operation needs `Authorization: Bearer <token>`;
you see and change your own links only.
"""

MAX_VISITS = 2**62
Code = Annotated[str, Path(min_length=1, max_length=domain.ALIAS_MAX, pattern=r"^[A-Za-z0-9_-]+$")]
Tag = Annotated[
    str,
    Field(min_length=1, max_length=domain.MAX_TAG_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"),
]
Tags = Annotated[list[Tag], Field(max_length=domain.MAX_TAGS)]
Target = Annotated[
    str, Field(min_length=1, max_length=domain.MAX_URL_CHARS, examples=["https://example.com/a"])
]
Title = Annotated[str, Field(max_length=domain.MAX_TITLE_CHARS)]
MaxVisits = Annotated[int, Field(ge=1, le=MAX_VISITS)]
Status = Literal[301, 302]
User = Annotated[Principal, Depends(current_user)]


class CreateLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: Target
    alias: (
        Annotated[
            str,
            Field(
                min_length=domain.ALIAS_MIN,
                max_length=domain.ALIAS_MAX,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="Your own code; reserved words and 7 plain letters and digits "
                "(the shape of generated codes) are refused",
            ),
        ]
        | None
    ) = None
    title: Title | None = None
    tags: Tags = []
    expires_at: datetime | None = Field(None, description="After this, the link answers 410")
    max_visits: MaxVisits | None = Field(None, description="After this many visits, 410")
    redirect_status: Status = 302
    forward_query: bool = Field(False, description="Append the visit's query string")


class UpdateLinkRequest(BaseModel):
    """Only the fields sent change; `null` clears title, expires_at and max_visits."""

    model_config = ConfigDict(extra="forbid")

    target: Target | None = None
    title: Title | None = None
    tags: Tags | None = None
    expires_at: datetime | None = None
    max_visits: MaxVisits | None = None
    redirect_status: Status | None = None
    forward_query: bool | None = None
    enabled: bool | None = Field(None, description="false: the short URL answers 404")


class LinkOut(BaseModel):
    id: str
    code: str
    short_url: str
    target: str
    custom: bool
    title: str | None
    tags: list[str]
    expires_at: datetime | None
    max_visits: int | None
    visits: int = Field(description="Counted for links with max_visits")
    redirect_status: int
    forward_query: bool
    enabled: bool
    created_at: datetime
    updated_at: datetime


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
    try:
        return int(value.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise LinkInvalid("expires_at", "the expiry is out of range") from None


def short_url(request: Request, code: str) -> str:
    public = request.app.state.platform.settings.public_url
    base = public.rstrip("/") if public else f"{request.url.scheme}://{request.url.netloc}"
    return f"{base}/s/{code}"


def _out(request: Request, link: Link) -> LinkOut:
    return LinkOut(
        id=str(link.id),
        code=link.code,
        short_url=short_url(request, link.code),
        target=link.target,
        custom=link.custom,
        title=link.title,
        tags=link.tags,
        expires_at=_time(link.expires_at_ms),
        max_visits=link.max_visits,
        visits=link.visits,
        redirect_status=link.redirect_status,
        forward_query=link.forward_query,
        enabled=link.enabled,
        created_at=_time(link.created_at_ms),  # type: ignore[arg-type]
        updated_at=_time(link.updated_at_ms),  # type: ignore[arg-type]
    )


def _problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetail, "description": description}


NOT_FOUND = {404: _problem("No link with this code is yours")}
UNAUTHORIZED = {401: _problem("Missing, invalid or expired bearer token")}


def _install_errors(app: FastAPI) -> None:
    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LinkInvalid)
        error = {"field": exc.field, "location": ["body", exc.field],
                 "message": exc.message, "type": exc.kind}  # fmt: skip
        return Problem(422, f"Invalid value for: {exc.field}", errors=[error]).response(
            request.url.path
        )

    async def taken(request: Request, exc: Exception) -> Response:
        return Problem(
            409, f"The alias {exc} is taken", slug="alias-taken", title="Alias taken",
            field="alias",
        ).response(request.url.path)  # fmt: skip

    async def not_found(request: Request, exc: Exception) -> Response:
        return Problem(404, f"You have no link with the code {exc}", slug="link-not-found",
                       title="Link not found").response(request.url.path)  # fmt: skip

    app.add_exception_handler(LinkInvalid, invalid)
    app.add_exception_handler(AliasTaken, taken)
    app.add_exception_handler(LinkNotFound, not_found)


def create_app(platform: Platform, service: LinkService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await platform.connect_queue()  # visit events; start() connects it only with the relay
        consumers = await workers.start(platform)
        try:
            yield
        finally:
            await workers.stop(consumers)

    app = create_service_app(
        platform, name="shortener", title="URL shortener", description=DESCRIPTION,
        lifespan=lifespan,
    )  # fmt: skip
    _install_errors(app)
    app.state.links = service

    @app.post("/v1/links", status_code=201, response_model=LinkOut, tags=["links"],
              summary="Shorten a URL",
              responses={**UNAUTHORIZED, 409: _problem("The alias is taken")})  # fmt: skip
    async def create(body: CreateLinkRequest, user: User, request: Request) -> LinkOut:
        new = NewLink(
            target=body.target,
            alias=body.alias,
            title=body.title,
            tags=tuple(body.tags),
            expires_at_ms=_ms(body.expires_at),
            max_visits=body.max_visits,
            redirect_status=body.redirect_status,
            forward_query=body.forward_query,
        )
        link = await service.create(user.user_id, new, host=request.url.netloc)
        return _out(request, link)

    @app.get("/v1/links", response_model=Page[LinkOut], tags=["links"],
             summary="Your links, newest first", responses={**UNAUTHORIZED})  # fmt: skip
    async def list_links(
        user: User,
        request: Request,
        pages: Annotated[PageRequest, Depends(page_request)],
        tag: Annotated[
            str | None,
            Query(
                max_length=domain.MAX_TAG_CHARS,
                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                description="Only links with this tag",
            ),
        ] = None,
    ) -> Page[LinkOut]:
        before = pages.after.get("id") if pages.after else None
        if before is not None and not isinstance(before, int):
            raise Problem(400, "The cursor is not one this server issued", slug="invalid-cursor")
        links = await service.list(user.user_id, tag=tag, before_id=before, limit=pages.fetch)
        page = pages.page(links, lambda link: {"id": link.id})
        return Page[LinkOut](
            items=[_out(request, link) for link in page.items], next_cursor=page.next_cursor
        )

    @app.get("/v1/links/{code}", response_model=LinkOut, tags=["links"],
             summary="One of your links", responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def get(code: Code, user: User, request: Request) -> LinkOut:
        return _out(request, await service.get(user.user_id, code))

    @app.patch("/v1/links/{code}", response_model=LinkOut, tags=["links"],
               summary="Change a link", responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def patch(code: Code, body: UpdateLinkRequest, user: User, request: Request) -> LinkOut:
        changes: dict[str, Any] = {}
        for name in body.model_fields_set:
            value = getattr(body, name)
            if name in ("target", "tags", "redirect_status", "forward_query", "enabled"):
                if value is None:
                    raise LinkInvalid(name, f"{name} cannot be null")
                changes[name] = list(value) if name == "tags" else value
            elif name == "expires_at":
                changes["expires_at_ms"] = _ms(value)
            else:
                changes[name] = value
        link = await service.update(user.user_id, code, changes, host=request.url.netloc)
        return _out(request, link)

    @app.delete("/v1/links/{code}", status_code=204, tags=["links"], summary="Delete a link",
                responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def remove(code: Code, user: User) -> Response:
        await service.delete(user.user_id, code)
        return Response(status_code=204)

    stats_api.install(app, platform, service)
    web.install(app, platform, service)
    return app
