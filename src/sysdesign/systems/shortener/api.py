"""``/shortener/v1``: an owner's links, one at a time or a thousand; their QR codes.

Every operation acts for an account: ``Authorization: Bearer <token>`` or
``X-API-Key`` (see ``access.py``); creating may be anonymous when the
settings allow it. A link is visible to its owner only (another's link
answers 404, as an unknown code does, so codes of other people's links
cannot be probed). Validation errors are 422 problems naming the field,
whether the schema or the domain refused it. The redirect is ``redirect.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sysdesign.platform.http import Page, PageRequest, Problem, page_request
from sysdesign.platform.service_app import create_service_app
from sysdesign.systems.shortener import access, bulk, domain, stats_api, web, workers
from sysdesign.systems.shortener.access import Creator, Owner
from sysdesign.systems.shortener.apikeys import ApiKeyNotFound, ApiKeys
from sysdesign.systems.shortener.domain import Link, LinkInvalid
from sysdesign.systems.shortener.qr import qr_response
from sysdesign.systems.shortener.schemas import (
    MAX_VISITS,
    NOT_FOUND,
    UNAUTHORIZED,
    Code,
    CreateLinkRequest,
    LinkOut,
    UpdateLinkRequest,
    link_out,
    problem,
    short_url,
    to_ms,
)
from sysdesign.systems.shortener.service import AliasTaken, LinkNotFound, LinkService

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform
    from sysdesign.systems.shortener.config import ShortenerConfig

DESCRIPTION = """\
Short links: `POST /v1/links` with a `target` (http or https) gives a
7-character `code`, or takes your `alias`; `GET /s/{code}` on the site's root
redirects there (301 or 302, the query string forwarded when the link says
so), until the link expires (`expires_at`) or has had `max_visits` visits:
then it answers 410. A link with a `password` asks visitors for it first.

Authenticate with `Authorization: Bearer <token>` or, from scripts, with
`X-API-Key` (make keys at `POST /v1/api-keys`). You see and change your own
links only. `POST /v1/links/bulk` takes up to 1,000 links, `POST
/v1/links/import` a CSV file of them, and `GET /v1/links.csv` exports yours.
Creation is rate-limited per account and per address (429 with Retry-After).
"""

QR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "The QR code"},
}


class BulkCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    links: list[CreateLinkRequest] = Field(min_length=1, max_length=bulk.MAX_BULK)


class ItemError(BaseModel):
    status: int = Field(description="422 invalid, 409 alias taken")
    field: str
    message: str
    type: str


class BulkItem(BaseModel):
    index: int = Field(description="Position in the request (import: data row, from 0)")
    link: LinkOut | None = None
    error: ItemError | None = None


class BulkResult(BaseModel):
    created: int
    failed: int
    items: list[BulkItem]


def _bulk_result(request: Request, outcomes: list[bulk.Outcome | LinkInvalid]) -> BulkResult:
    items = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Link):
            items.append(BulkItem(index=index, link=link_out(request, outcome)))
        elif isinstance(outcome, AliasTaken):
            error = ItemError(status=409, field="alias", type="alias_taken",
                              message=f"the alias {outcome} is taken")  # fmt: skip
            items.append(BulkItem(index=index, error=error))
        else:
            error = ItemError(status=422, field=outcome.field, type=outcome.kind,
                              message=outcome.message)  # fmt: skip
            items.append(BulkItem(index=index, error=error))
    created = sum(1 for i in items if i.link is not None)
    return BulkResult(created=created, failed=len(items) - created, items=items)


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


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

    async def key_not_found(request: Request, exc: Exception) -> Response:
        return Problem(404, f"You have no API key {exc}", slug="api-key-not-found",
                       title="API key not found").response(request.url.path)  # fmt: skip

    app.add_exception_handler(LinkNotFound, not_found)
    app.add_exception_handler(ApiKeyNotFound, key_not_found)


def create_app(
    platform: Platform, service: LinkService, config: ShortenerConfig, keys: ApiKeys
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await platform.connect_queue()  # visit events; start() connects it only with the relay
        service.start_visit_batches()
        consumers = await workers.start(platform)
        try:
            yield
        finally:
            await service.stop_visit_batches()
            await workers.stop(consumers)

    app = create_service_app(
        platform, name="shortener", title="URL shortener", description=DESCRIPTION,
        lifespan=lifespan,
    )  # fmt: skip
    _install_errors(app)
    app.state.links = service
    app.state.shortener_config = config
    taken = {409: problem("The alias is taken")}
    limited = {429: problem("Too many links created; see Retry-After")}

    @app.post("/v1/links", status_code=201, response_model=LinkOut, tags=["links"],
              summary="Shorten a URL",
              responses={**UNAUTHORIZED, **taken, **limited})  # fmt: skip
    async def create(body: CreateLinkRequest, owner: Creator, request: Request) -> LinkOut:
        link = await service.create(
            owner, body.new_link(), host=request.url.netloc, ip=_client_ip(request)
        )
        return link_out(request, link)

    @app.post("/v1/links/bulk", response_model=BulkResult, tags=["links"],
              summary="Shorten up to 1,000 URLs; each item is answered on its own",
              responses={**UNAUTHORIZED, **limited})  # fmt: skip
    async def create_bulk(body: BulkCreateRequest, owner: Owner, request: Request) -> BulkResult:
        await service.admit(owner, _client_ip(request), len(body.links))
        news = [item.new_link() for item in body.links]
        outcomes = await bulk.create_many(service, owner, news, host=request.url.netloc)
        return _bulk_result(request, list(outcomes))

    @app.post("/v1/links/import", response_model=BulkResult, tags=["links"],
              summary="Import links from CSV (up to 1,000 rows)",
              openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {
                  "schema": {"type": "string"},
                  "example": "target,alias,title,tags\nhttps://example.com/a,,A page,docs web\n",
              }}}},
              responses={**UNAUTHORIZED, **limited,
                         415: problem("The body is not text/csv")})  # fmt: skip
    async def import_csv(owner: Owner, request: Request) -> BulkResult:
        if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
            raise Problem(415, "Send the links as text/csv", slug="unsupported-media-type")
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise LinkInvalid("csv", "the CSV is not UTF-8") from None
        rows = bulk.parse_csv(text)
        news = [row for row in rows if not isinstance(row, LinkInvalid)]
        await service.admit(owner, _client_ip(request), len(news))
        created = iter(await bulk.create_many(service, owner, news, host=request.url.netloc))
        outcomes = [row if isinstance(row, LinkInvalid) else next(created) for row in rows]
        return _bulk_result(request, outcomes)

    @app.get("/v1/links.csv", tags=["links"], summary="Export your links as CSV",
             response_class=StreamingResponse,
             responses={**UNAUTHORIZED, 200: {"content": {"text/csv": {}},
                                              "description": "One row per link"}})  # fmt: skip
    async def export_csv(owner: Owner, request: Request) -> StreamingResponse:
        rows = bulk.export_csv(service, owner, lambda code: short_url(request, code))
        return StreamingResponse(
            rows, media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="links.csv"'},
        )  # fmt: skip

    @app.get("/v1/links", response_model=Page[LinkOut], tags=["links"],
             summary="Your links, newest first", responses={**UNAUTHORIZED})  # fmt: skip
    async def list_links(
        owner: Owner,
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
        before = pages.after_value("id", int)
        links = await service.list(owner, tag=tag, before_id=before, limit=pages.fetch)
        page = pages.page(links, lambda link: {"id": link.id})
        return Page[LinkOut](
            items=[link_out(request, link) for link in page.items], next_cursor=page.next_cursor
        )

    @app.get("/v1/links/{code}", response_model=LinkOut, tags=["links"],
             summary="One of your links", responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def get(code: Code, owner: Owner, request: Request) -> LinkOut:
        return link_out(request, await service.get(owner, code))

    @app.get("/v1/links/{code}/qr.{kind}", tags=["links"], response_class=Response,
             summary="The short URL as a QR code", responses={**QR_RESPONSES, **UNAUTHORIZED,
                                                              **NOT_FOUND})  # fmt: skip
    async def qr(
        code: Code,
        kind: Literal["svg", "png"],
        owner: Owner,
        request: Request,
        scale: Annotated[int, Query(ge=1, le=40, description="Pixels per module")] = 8,
        border: Annotated[int, Query(ge=0, le=10, description="Quiet zone, in modules")] = 4,
    ) -> Response:
        link = await service.get(owner, code)
        return qr_response(short_url(request, link.code), kind, scale, border)

    @app.patch("/v1/links/{code}", response_model=LinkOut, tags=["links"],
               summary="Change a link", responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def patch(code: Code, body: UpdateLinkRequest, owner: Owner, request: Request) -> LinkOut:
        changes: dict[str, Any] = {}
        for name in body.model_fields_set:
            value = getattr(body, name)
            if name in ("target", "tags", "redirect_status", "forward_query", "enabled"):
                if value is None:
                    raise LinkInvalid(name, f"{name} cannot be null")
                changes[name] = list(value) if name == "tags" else value
            elif name == "expires_at":
                changes["expires_at_ms"] = to_ms(value)
            else:
                changes[name] = value
        link = await service.update(owner, code, changes, host=request.url.netloc)
        return link_out(request, link)

    @app.delete("/v1/links/{code}", status_code=204, tags=["links"], summary="Delete a link",
                responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def remove(code: Code, owner: Owner) -> Response:
        await service.delete(owner, code)
        return Response(status_code=204)

    access.install(app, service, keys)
    stats_api.install(app, platform, service)
    web.install(app, platform, service)
    return app


__all__ = ["MAX_VISITS", "create_app", "qr_response", "short_url"]
