"""``/notifications/v1``: trigger events, manage templates and topics, read status.

Admins (``SYSDESIGN_ADMIN_EMAILS``) trigger events over HTTP and manage
templates and topics; other systems of this process use ``client.py``.
Every signed-in user manages their own addresses, preferences and inbox
(``me_api.py``). Errors are problem+json; validation errors are 422 and name
the field, template errors the line too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Request, Response
from fastapi.responses import JSONResponse

from sysdesign.blocks.notify.base import Channel, Sender
from sysdesign.blocks.notify.templates import TemplateInvalid
from sysdesign.platform.accounts.security import Principal, admin_user
from sysdesign.platform.http import Page, PageRequest, Problem, page_request
from sysdesign.platform.service_app import create_service_app
from sysdesign.systems.notifications import me_api, workers
from sysdesign.systems.notifications.domain import (
    KEY_PATTERN,
    Invalid,
    Recipients,
    Template,
    public_status,
)
from sysdesign.systems.notifications.replay import NotFailed, Replay
from sysdesign.systems.notifications.schemas import (
    ADMIN_ONLY,
    NOT_FAILED,
    NOT_FOUND,
    Added,
    EventOut,
    MessageOut,
    Requeued,
    SubscribersIn,
    TemplateIn,
    TemplateOut,
    TopicIn,
    TopicOut,
    TriggerIn,
    UserId,
    message_out,
    problem,
    template_out,
    to_ms,
)
from sysdesign.systems.notifications.service import (
    IdempotencyKeyReused,
    NotFound,
    NotificationService,
)

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig

DESCRIPTION = """\
One call sends a notification to many people on every channel they use:
`POST /v1/events` with a `template`, recipients (`user_ids` or a `topic`),
`data` for the template, and an optional `idempotency_key` (or the
`Idempotency-Key` header), `priority` and `send_at`. Each recipient gets the
in-app inbox, and e-mail, SMS and a signed webhook where they gave an
address, subject to their preferences and quiet hours (critical templates
bypass both), digests and throttles. `GET /v1/events/{id}` counts messages
per channel and status; `/messages` lists them with attempts and errors.
A message that failed every attempt is replayed with
`POST /v1/messages/{id}/retry`, an event's failed messages with
`POST /v1/events/{id}/retry-failed`.
"""

EARLIER = {"model": EventOut, "description": "The event made earlier with this idempotency key"}
Admin = Annotated[Principal, Depends(admin_user)]
Key = Annotated[str, Path(min_length=1, max_length=100, pattern=KEY_PATTERN)]
Id = Annotated[str, Path(pattern=r"^[0-9]{1,19}$")]


def _install_errors(app: FastAPI) -> None:
    def unprocessable(request: Request, field: str, message: str, kind: str,
                      **extra: Any) -> Response:  # fmt: skip
        error = {"field": field, "location": ["body", *field.split(".")], "message": message,
                 "type": kind, **extra}  # fmt: skip
        return Problem(422, f"Invalid value for: {field}", errors=[error]).response(
            request.url.path
        )

    async def template_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TemplateInvalid)
        return unprocessable(request, exc.field, exc.message, "template_invalid",
                             line=exc.line)  # fmt: skip

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Invalid)
        return unprocessable(request, exc.field, exc.message, "value_error")

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotFound)
        slug = exc.what.replace(" ", "-") + "-not-found"
        return Problem(404, f"There is no {exc.what} {exc.key}", slug=slug,
                       title="Not found").response(request.url.path)  # fmt: skip

    async def reused(request: Request, exc: Exception) -> Response:
        return Problem(422, "This idempotency key was used with a different request",
                       slug="idempotency-key-reused", title="Idempotency key reused",
                       errors=[{"field": "idempotency_key", "location": ["body", "idempotency_key"],
                                "message": "used before with a different request",
                                "type": "idempotency_key_reused"}],
                       ).response(request.url.path)  # fmt: skip

    app.add_exception_handler(TemplateInvalid, template_invalid)
    app.add_exception_handler(Invalid, invalid)
    app.add_exception_handler(NotFound, not_found)

    async def not_failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotFailed)
        return Problem(409, f"Message {exc.message_id} is {exc.status}: only a failed message "
                       "is retried", slug="message-not-failed", title="Message not failed",
                       message_status=exc.status).response(request.url.path)  # fmt: skip

    app.add_exception_handler(IdempotencyKeyReused, reused)
    app.add_exception_handler(NotFailed, not_failed)


def event_out(event: Any, counts: list[tuple[str, str, int]]) -> EventOut:
    table: dict[Any, dict[Any, int]] = {}
    for channel, status, count in counts:
        shown = public_status(status).value
        row = table.setdefault(channel, {})
        row[shown] = row.get(shown, 0) + count
    state = "done" if event.fanout_done else ("fanning_out" if counts else "accepted")
    return EventOut(id=str(event.id), status=state, template=event.template,
                    priority=event.priority, send_at_ms=event.send_at_ms,
                    created_at_ms=event.created_at_ms, counts=table)  # fmt: skip


def create_app(
    platform: Platform, service: NotificationService, config: NotifyConfig,
    senders: dict[Channel, Sender] | None,
) -> FastAPI:  # fmt: skip
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = None
        if config.workers and senders is not None:
            await platform.connect_queue()
            running = await workers.start(platform, config, senders)
        app.state.notification_workers = running
        try:
            yield
        finally:
            if running is not None:
                await running.stop()
            for sender in (senders or {}).values():
                await sender.close()

    app = create_service_app(platform, name="notifications", title="Notification system",
                             description=DESCRIPTION, lifespan=lifespan)  # fmt: skip
    app.state.notifications = service
    _install_errors(app)
    # First: ``/topics/{key}/subscribers/me`` must match before the admin's ``/{user_id}``.
    me_api.install(app, platform, service, config)

    @app.post("/v1/events", status_code=202, response_model=EventOut, tags=["events"],
              summary="Send a notification to users or a topic",
              responses={**ADMIN_ONLY, 200: EARLIER})  # fmt: skip
    async def trigger(
        body: TriggerIn, admin: Admin,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    ) -> Response:  # fmt: skip
        recipients = Recipients(user_ids=tuple(body.to.user_ids or ()), topic=body.to.topic)
        event, created = await service.trigger(
            f"user:{admin.user_id}", body.template, recipients, body.data,
            idempotency_key=body.idempotency_key or idempotency_key, priority=body.priority,
            send_at_ms=to_ms(body.send_at),
        )  # fmt: skip
        out = event_out(event, [])
        return JSONResponse(out.model_dump(mode="json"), status_code=202 if created else 200)

    @app.get("/v1/events/{event_id}", response_model=EventOut, tags=["events"],
             summary="An event's messages counted per channel and status",
             responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def get_event(event_id: Id, _admin: Admin) -> EventOut:
        return event_out(*await service.event_status(int(event_id)))

    @app.get("/v1/events/{event_id}/messages", response_model=Page[MessageOut], tags=["events"],
             summary="An event's messages: status, attempts, last error",
             responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def event_messages(
        event_id: Id, _admin: Admin, pages: Annotated[PageRequest, Depends(page_request)]
    ) -> Page[MessageOut]:
        after = pages.after_value("id", int)
        rows = await service.event_messages(int(event_id), after, pages.fetch)
        page = pages.page(rows, lambda m: {"id": m.id})
        return Page[MessageOut](items=[message_out(m) for m in page.items],
                                next_cursor=page.next_cursor)  # fmt: skip

    replay = Replay(platform)

    @app.post("/v1/messages/{message_id}/retry", response_model=MessageOut, tags=["events"],
              summary="Send a failed message again, with a full set of attempts",
              responses={**ADMIN_ONLY, **NOT_FOUND, **NOT_FAILED})  # fmt: skip
    async def retry_message(message_id: Id, _admin: Admin) -> MessageOut:
        return message_out(await replay.retry_message(int(message_id)))

    @app.post("/v1/events/{event_id}/retry-failed", response_model=Requeued, tags=["events"],
              summary="Send every failed message of an event again",
              responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def retry_failed(event_id: Id, _admin: Admin) -> Requeued:
        return Requeued(requeued=await replay.retry_event(int(event_id)))

    @app.put("/v1/templates/{key}", response_model=TemplateOut, tags=["templates"],
             summary="Create or replace a template (its sources are checked first)",
             responses={**ADMIN_ONLY})  # fmt: skip
    async def put_template(key: Key, body: TemplateIn, _admin: Admin) -> TemplateOut:
        channels = {c: {loc: src.model_dump() for loc, src in locales.items()}
                    for c, locales in body.channels.items()}  # fmt: skip
        template = Template(
            key=key, category=body.category, critical=body.critical, priority=body.priority,
            channels=channels, digest_window_seconds=body.digest_window_seconds,
            digest_group_field=body.digest_group_field, throttle=body.throttle,
        )  # fmt: skip
        return template_out(await service.put_template(template))

    @app.get("/v1/templates", response_model=Page[TemplateOut], tags=["templates"],
             summary="Templates, by key", responses={**ADMIN_ONLY})  # fmt: skip
    async def list_templates(
        _admin: Admin, pages: Annotated[PageRequest, Depends(page_request)]
    ) -> Page[TemplateOut]:
        after = pages.after_value("key", str)
        rows = await service.list_templates(after, pages.fetch)
        page = pages.page(rows, lambda t: {"key": t.key})
        return Page[TemplateOut](items=[template_out(t) for t in page.items],
                                 next_cursor=page.next_cursor)  # fmt: skip

    @app.get("/v1/templates/{key}", response_model=TemplateOut, tags=["templates"],
             summary="One template", responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def get_template(key: Key, _admin: Admin) -> TemplateOut:
        return template_out(await service.get_template(key))

    @app.delete("/v1/templates/{key}", status_code=204, tags=["templates"],
                summary="Delete a template", responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def delete_template(key: Key, _admin: Admin) -> Response:
        await service.delete_template(key)
        return Response(status_code=204)

    @app.put("/v1/topics/{key}", response_model=TopicOut, tags=["topics"],
             summary="Create a topic or rename it", responses={**ADMIN_ONLY})  # fmt: skip
    async def put_topic(key: Key, body: TopicIn, _admin: Admin) -> TopicOut:
        row, count = await service.put_topic(key, body.name)
        return TopicOut(key=row.key, name=row.name, subscribers=count)

    @app.get("/v1/topics/{key}", response_model=TopicOut, tags=["topics"],
             summary="A topic and its subscriber count",
             responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def get_topic(key: Key, _admin: Admin) -> TopicOut:
        row, count = await service.get_topic(key)
        return TopicOut(key=row.key, name=row.name, subscribers=count)

    @app.post("/v1/topics/{key}/subscribers", response_model=Added, tags=["topics"],
              summary="Subscribe up to 10,000 users (those subscribed already are skipped)",
              responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def add_subscribers(key: Key, body: SubscribersIn, _admin: Admin) -> Added:
        return Added(added=await service.subscribe(key, body.user_ids))

    @app.delete("/v1/topics/{key}/subscribers/{user_id}", status_code=204, tags=["topics"],
                summary="Unsubscribe a user", responses={**ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def remove_subscriber(
        key: Key, user_id: Annotated[UserId, Path()], _admin: Admin
    ) -> Response:
        await service.unsubscribe(key, user_id)
        return Response(status_code=204)

    return app


__all__ = ["create_app", "problem"]
