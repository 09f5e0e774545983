"""``/notifications/v1/me``, ``/inbox`` and topic self-service: what every
signed-in user does for themselves.

The inbox stream (``GET /v1/inbox/stream``) is Server-Sent Events: an
``unread-count`` event first (read after subscribing, so nothing falls in
between), then an ``item`` and an ``unread-count`` for each new item and an
``unread-count`` whenever items are read or archived; a comment line every 15
seconds keeps proxies from closing an idle stream. It ends when the client
goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from sysdesign.blocks.notify.prefs import Preferences, parse_quiet_hours
from sysdesign.blocks.notify.webhook import check_webhook_url as check_reachable
from sysdesign.platform.accounts.security import Principal, current_user
from sysdesign.platform.http import Page, PageRequest, page_request
from sysdesign.systems.notifications.domain import (
    KEY_PATTERN,
    Invalid,
    Subscriber,
    check_phone,
    check_timezone,
    check_webhook_url,
)
from sysdesign.systems.notifications.inbox import Inbox
from sysdesign.systems.notifications.schemas import (
    NOT_FOUND,
    UNAUTHORIZED,
    Changed,
    Disabled,
    InboxItemOut,
    PreferencesIn,
    QuietHoursIn,
    SecretOut,
    SubscriberIn,
    SubscriberOut,
    UnreadCount,
)

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig
    from sysdesign.systems.notifications.service import NotificationService

User = Annotated[Principal, Depends(current_user)]
Key = Annotated[str, Path(min_length=1, max_length=100, pattern=KEY_PATTERN)]
ItemId = Annotated[str, Path(pattern=r"^[0-9]{1,19}$")]
HEARTBEAT_SECONDS = 15.0
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "unread-count and item events"}
}


def subscriber_out(sub: Subscriber, secret: str | None = None) -> SubscriberOut:
    return SubscriberOut(
        user_id=str(sub.user_id), email=sub.email, phone=sub.phone, webhook_url=sub.webhook_url,
        locale=sub.locale, timezone=sub.timezone, has_webhook_secret=bool(sub.webhook_secret),
        webhook_secret=secret,
    )  # fmt: skip


def preferences_out(prefs: Preferences) -> PreferencesIn:
    quiet = prefs.quiet_hours
    return PreferencesIn(
        disabled=[Disabled(category=c, channel=ch) for c, ch in sorted(prefs.disabled)],
        quiet_hours=None if quiet is None else QuietHoursIn(
            start=f"{quiet.start:%H:%M}", end=f"{quiet.end:%H:%M}", timezone=quiet.timezone
        ),
    )  # fmt: skip


def sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _item_out(item: dict[str, Any]) -> InboxItemOut:
    return InboxItemOut(**{**item, "id": str(item["id"]), "message_id": str(item["message_id"])})


def install(
    app: FastAPI, platform: Platform, service: NotificationService, config: NotifyConfig
) -> None:
    inbox = Inbox(platform)
    app.state.inbox = inbox

    @app.get("/v1/me", response_model=SubscriberOut, tags=["me"],
             summary="Where you get notifications", responses={**UNAUTHORIZED})  # fmt: skip
    async def get_me(user: User) -> SubscriberOut:
        return subscriber_out(await service.get_subscriber(user.user_id))

    @app.put("/v1/me", response_model=SubscriberOut, tags=["me"],
             summary="Set your e-mail, phone (E.164), webhook, locale and time zone; a webhook "
                     "secret is made (and shown once) when you first set a webhook",
             responses={**UNAUTHORIZED})  # fmt: skip
    async def put_me(body: SubscriberIn, user: User) -> SubscriberOut:
        if body.phone is not None:
            check_phone(body.phone)
        if body.webhook_url is not None:
            check_webhook_url(body.webhook_url)
            try:  # an internal address written out is refused now, a name when it is sent to
                check_reachable(body.webhook_url, config.webhook_allow_networks)
            except ValueError as exc:
                raise Invalid("webhook_url", str(exc)) from None
        check_timezone(body.timezone)
        sub = Subscriber(user.user_id, email=body.email, phone=body.phone,
                         webhook_url=body.webhook_url, locale=body.locale,
                         timezone=body.timezone)  # fmt: skip
        saved, secret = await service.put_subscriber(sub)
        return subscriber_out(saved, secret)

    @app.post("/v1/me/webhook-secret", response_model=SecretOut, tags=["me"],
              summary="Make a new webhook signing secret (the old one stops at once)",
              responses={**UNAUTHORIZED})  # fmt: skip
    async def rotate(user: User) -> SecretOut:
        return SecretOut(webhook_secret=await service.rotate_webhook_secret(user.user_id))

    @app.get("/v1/me/preferences", response_model=PreferencesIn, tags=["me"],
             summary="Your channel preferences and quiet hours",
             responses={**UNAUTHORIZED})  # fmt: skip
    async def get_preferences(user: User) -> PreferencesIn:
        return preferences_out(await service.get_preferences(user.user_id))

    @app.put("/v1/me/preferences", response_model=PreferencesIn, tags=["me"],
             summary="Turn channels off per category; set quiet hours in your time zone",
             responses={**UNAUTHORIZED})  # fmt: skip
    async def put_preferences(body: PreferencesIn, user: User) -> PreferencesIn:
        quiet = None
        if body.quiet_hours is not None:
            q = body.quiet_hours
            check_timezone(q.timezone, "quiet_hours.timezone")
            try:
                quiet = parse_quiet_hours(q.start, q.end, q.timezone)
            except ValueError as exc:
                raise Invalid("quiet_hours", str(exc)) from None
        prefs = Preferences(frozenset((d.category, d.channel) for d in body.disabled), quiet)
        return preferences_out(await service.put_preferences(user.user_id, prefs))

    @app.put("/v1/topics/{key}/subscribers/me", status_code=204, tags=["topics"],
             summary="Subscribe yourself to a topic",
             responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def subscribe_me(key: Key, user: User) -> Response:
        await service.subscribe(key, [user.user_id])
        return Response(status_code=204)

    @app.delete("/v1/topics/{key}/subscribers/me", status_code=204, tags=["topics"],
                summary="Unsubscribe yourself from a topic",
                responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def unsubscribe_me(key: Key, user: User) -> Response:
        await service.unsubscribe(key, user.user_id)
        return Response(status_code=204)

    @app.get("/v1/inbox", response_model=Page[InboxItemOut], tags=["inbox"],
             summary="Your in-app notifications, newest first",
             responses={**UNAUTHORIZED})  # fmt: skip
    async def list_inbox(
        user: User,
        pages: Annotated[PageRequest, Depends(page_request)],
        unread: Annotated[bool | None, Query(description="Only unread (true) or read")] = None,
        archived: Annotated[bool, Query(description="The archive instead")] = False,
    ) -> Page[InboxItemOut]:
        before = pages.after_value("id", int)
        rows = await inbox.list(user.user_id, before_id=before, limit=pages.fetch,
                                unread=unread, archived=archived)  # fmt: skip
        page = pages.page(rows, lambda item: {"id": item["id"]})
        return Page[InboxItemOut](items=[_item_out(i) for i in page.items],
                                  next_cursor=page.next_cursor)  # fmt: skip

    @app.get("/v1/inbox/unread-count", response_model=UnreadCount, tags=["inbox"],
             summary="How many unread, unarchived items you have",
             responses={**UNAUTHORIZED})  # fmt: skip
    async def unread_count(user: User) -> UnreadCount:
        return UnreadCount(count=await inbox.unread_count(user.user_id))

    @app.post("/v1/inbox/read-all", response_model=Changed, tags=["inbox"],
              summary="Mark every item read", responses={**UNAUTHORIZED})  # fmt: skip
    async def read_all(user: User) -> Changed:
        return Changed(changed=await inbox.read_all(user.user_id))

    @app.post("/v1/inbox/{item_id}/read", response_model=InboxItemOut, tags=["inbox"],
              summary="Mark an item read", responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def read(item_id: ItemId, user: User) -> InboxItemOut:
        return _item_out(await inbox.read(user.user_id, int(item_id)))

    @app.post("/v1/inbox/{item_id}/archive", response_model=InboxItemOut, tags=["inbox"],
              summary="Archive an item", responses={**UNAUTHORIZED, **NOT_FOUND})  # fmt: skip
    async def archive(item_id: ItemId, user: User) -> InboxItemOut:
        return _item_out(await inbox.archive(user.user_id, int(item_id)))

    @app.get("/v1/inbox/stream", tags=["inbox"], response_class=StreamingResponse,
             summary="Live inbox updates (Server-Sent Events)",
             responses={**STREAM_RESPONSES, **UNAUTHORIZED})  # fmt: skip
    async def stream(user: User, request: Request) -> StreamingResponse:
        return StreamingResponse(
            _events(inbox, user.user_id, request), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )  # fmt: skip


async def _events(inbox: Inbox, user_id: int, request: Request) -> AsyncIterator[bytes]:
    async with inbox.watch(user_id) as sub:
        yield sse("unread-count", {"count": await inbox.unread_count(user_id)})
        while not await request.is_disconnected():
            raw = await sub.get(timeout=HEARTBEAT_SECONDS)
            if raw is None:
                if sub.closed:
                    return
                yield b": keep-alive\n\n"
                continue
            message = orjson.loads(raw)
            if message.get("type") == "item":
                yield sse("item", message["item"])
                yield sse("unread-count", {"count": message["unread_count"]})
            elif message.get("type") == "unread-count":
                yield sse("unread-count", {"count": message["count"]})
