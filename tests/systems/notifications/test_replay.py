"""Dead-letter replay: a failed message sent again once its cause is fixed, with
a full set of attempts; never twice when two replays race; every failed
message of an event in batches. Over HTTP with the workers running, and the
conditional UPDATE and row locks on every engine of the matrix."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from sysdesign.blocks.notify.base import Priority
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.platform.outbox import outbox_table
from sysdesign.systems.notifications import replay
from sysdesign.systems.notifications.domain import DLQ_TOPIC, deliver_topic
from sysdesign.systems.notifications.replay import NotFailed, Replay
from sysdesign.systems.notifications.service import NotFound
from sysdesign.systems.notifications.tables import events_table, messages_table
from tests.conftest import Headers, make_settings
from tests.systems.notifications.conftest import (
    API,
    HOOK,
    Receiver,
    eventually,
    inbox_template,
    messages_of,
    put_template,
    settled,
    trigger,
    user_id,
)


@pytest.fixture
def notify_env(notify_env: dict[str, str]) -> dict[str, str]:
    notify_env["SYSDESIGN_NOTIFY_MAX_ATTEMPTS"] = "2"  # fails after one retry
    return notify_env


async def deliveries_emitted(platform: Platform, message_id: str) -> int:
    """Delivery queue messages written to the outbox for ``message_id``."""
    async with platform.db.primary.read() as conn:
        rows = (await conn.execute(select(outbox_table.c.payload).where(
            outbox_table.c.topic.in_([deliver_topic(p) for p in Priority])
        ))).scalars().all()  # fmt: skip
    return sum(1 for p in rows if orjson.loads(p)["message_id"] == int(message_id))


async def dead_letters(platform: Platform) -> int:
    async with platform.db.primary.read() as conn:
        rows = await conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.topic == DLQ_TOPIC)
        )
        return len(rows.all())


async def failed_webhook(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, receiver: Receiver,
    clock: ManualClock,
) -> dict[str, Any]:  # fmt: skip
    """A webhook message that failed both its attempts (the receiver answered 500)."""
    receiver.statuses = [500, 500]
    me = await client.put(f"{API}/me", json={"webhook_url": receiver.url}, headers=ana)
    receiver.secret = me.json()["webhook_secret"]
    await put_template(client, admin, "order", HOOK)
    event = await trigger(client, admin, "order", {"user_ids": [await user_id(client, ana)]},
                          data={"id": 7})  # fmt: skip
    await settled(client, admin, event["id"], 1, "scheduled")
    clock.advance(11)  # past the first backoff (at most 10 seconds)
    [failed] = await settled(client, admin, event["id"], 1, "failed")
    assert failed["attempts"] == 2 and len(receiver.received) == 2
    return {**failed, "event_id": event["id"]}


async def test_a_dead_lettered_message_is_replayed_with_every_attempt_again(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, receiver: Receiver,
    clock: ManualClock, platform: Platform,
) -> None:  # fmt: skip
    failed = await failed_webhook(client, admin, ana, receiver, clock)
    assert await eventually(lambda: dead_letters(platform)) == 1
    # The receiver is mended, but answers 500 once more: the replay has two attempts.
    receiver.statuses = [500]
    response = await client.post(f"{API}/messages/{failed['id']}/retry", headers=admin)
    assert response.status_code == 200, response.text
    replayed = response.json()
    assert replayed["id"] == failed["id"] and replayed["status"] == "queued"
    assert replayed["attempts"] == 0 and replayed["reason"] == "replayed"
    assert replayed["last_error"] == failed["last_error"]  # why it failed, until it does not

    [waiting] = await settled(client, admin, failed["event_id"], 1, "scheduled")
    assert waiting["attempts"] == 1 and len(receiver.received) == 3
    clock.advance(11)
    [done] = await settled(client, admin, failed["event_id"], 1, "delivered")
    assert done["attempts"] == 2 and len(receiver.received) == 4
    assert all(r["valid"] for r in receiver.received)
    assert {r["headers"]["sysdesign-message-id"] for r in receiver.received} == {failed["id"]}
    assert await dead_letters(platform) == 1  # no new dead letter


async def test_two_replays_at_once_send_the_message_once(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, receiver: Receiver,
    clock: ManualClock, platform: Platform,
) -> None:  # fmt: skip
    failed = await failed_webhook(client, admin, ana, receiver, clock)
    emitted = await deliveries_emitted(platform, failed["id"])
    url = f"{API}/messages/{failed['id']}/retry"
    responses = await asyncio.gather(*(client.post(url, headers=admin) for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [200, 409]
    await settled(client, admin, failed["event_id"], 1, "delivered")
    assert len(receiver.received) == 3  # two failed attempts, then one send
    assert await deliveries_emitted(platform, failed["id"]) == emitted + 1


async def test_only_a_failed_message_is_replayed(
    client: httpx.AsyncClient, admin: Headers, ana: Headers
) -> None:
    await put_template(client, admin, "hello", inbox_template())
    event = await trigger(client, admin, "hello", {"user_ids": [await user_id(client, ana)]},
                          data={"name": "Ana"})  # fmt: skip
    [delivered] = await settled(client, admin, event["id"], 1, "delivered")
    response = await client.post(f"{API}/messages/{delivered['id']}/retry", headers=admin)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith("/message-not-failed") and body["message_status"] == "delivered"
    assert "delivered" in body["detail"]
    [still] = await messages_of(client, admin, event["id"])
    assert still["status"] == "delivered" and still["attempts"] == delivered["attempts"]
    items = (await client.get(f"{API}/inbox", headers=ana)).json()["items"]
    assert len(items) == 1


async def test_unknown_ids_are_404_and_bad_ones_422(client: httpx.AsyncClient,
                                                    admin: Headers) -> None:  # fmt: skip
    for path, what in (("messages/123/retry", "message"), ("events/123/retry-failed", "event")):
        response = await client.post(f"{API}/{path}", headers=admin)
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith(f"/{what}-not-found")
    for path in ("messages/abc/retry", "events/12345678901234567890/retry-failed"):
        assert (await client.post(f"{API}/{path}", headers=admin)).status_code == 422


async def test_replay_is_for_admins(client: httpx.AsyncClient, ana: Headers) -> None:
    for path in ("messages/123/retry", "events/123/retry-failed"):
        assert (await client.post(f"{API}/{path}", headers=ana)).status_code == 403
        assert (await client.post(f"{API}/{path}")).status_code == 401


async def test_every_failed_message_of_an_event_is_replayed(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, ben: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(replay, "BATCH", 2)  # three users: two transactions
    users = [await user_id(client, h) for h in (admin, ana, ben)]
    # The template names a variable the event does not give: every message fails.
    await put_template(client, admin, "hello", inbox_template())
    event = await trigger(client, admin, "hello", {"user_ids": users}, data={})
    failed = await settled(client, admin, event["id"], 3, "failed")
    assert all("undefined" in m["last_error"] for m in failed)
    other = await trigger(client, admin, "hello", {"user_ids": users[:1]}, data={})
    await settled(client, admin, other["id"], 1, "failed")

    await put_template(client, admin, "hello", inbox_template(channels={
        "in_app": {"en": {"body": "{{ name | default('someone') }} waved"}}
    }))  # fmt: skip
    response = await client.post(f"{API}/events/{event['id']}/retry-failed", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"requeued": 3}
    await settled(client, admin, event["id"], 3, "delivered")
    for headers in (ana, ben):
        items = (await client.get(f"{API}/inbox", headers=headers)).json()["items"]
        assert [i["body"] for i in items] == ["someone waved"]
    [untouched] = await messages_of(client, admin, other["id"])  # another event's: left
    assert untouched["status"] == "failed"
    again = await client.post(f"{API}/events/{event['id']}/retry-failed", headers=admin)
    assert again.json() == {"requeued": 0}


async def test_replays_race_on_every_engine(
    database_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    """Concurrent single and bulk replays requeue each failed message once and
    write one delivery for it, on SQLite, PostgreSQL and MariaDB."""
    settings = make_settings(tmp_path, database_url=database_url, auto_migrate=True,
                             outbox_relay=False, queue_url="memory://")  # fmt: skip
    platform = Platform(settings, clock=clock)
    await platform.start()
    try:
        now_ms = int(clock.time() * 1000)
        ids = [platform.ids.next_id() for _ in range(30)]
        async with platform.db.primary.begin() as conn:
            await conn.execute(events_table.insert(), [_event(7, now_ms)])
            await conn.execute(messages_table.insert(), [_failed(i, 7, now_ms) for i in ids])
        events_query = select(outbox_table.c.payload)
        jobs = Replay(platform)

        async def one(message_id: int) -> bool:
            try:
                await jobs.retry_message(message_id)
            except NotFailed:
                return False
            return True

        # Each message raced by two single replays; the event raced by two bulk ones.
        singles = await asyncio.gather(*(one(i) for i in ids[:10] for _ in range(2)))
        bulk = await asyncio.gather(*(jobs.retry_event(7) for _ in range(2)))
        assert singles.count(True) == 10 and sum(bulk) == 20
        async with platform.db.primary.read() as conn:
            payloads = (await conn.execute(events_query)).scalars().all()
            statuses = Counter((await conn.execute(select(messages_table.c.status))).scalars())
        assert statuses == {"queued": 30}
        assert Counter(orjson.loads(p)["message_id"] for p in payloads) == dict.fromkeys(ids, 1)
        with pytest.raises(NotFound):
            await jobs.retry_message(1)
        with pytest.raises(NotFound):
            await jobs.retry_event(8)
    finally:
        await platform.close()


def _failed(message_id: int, event_id: int, now_ms: int) -> dict[str, Any]:
    return {
        "id": message_id, "event_id": event_id, "recipient_id": message_id, "channel": "email",
        "status": "failed", "priority": Priority.NORMAL.value, "attempts": 3, "due_at": now_ms,
        "claimed_at": now_ms, "reason": None, "last_error": "boom", "provider_id": None,
        "digest_key": None, "digest_of": None, "created_at": now_ms, "updated_at": now_ms,
    }  # fmt: skip


def _event(event_id: int, now_ms: int) -> dict[str, Any]:
    return {
        "id": event_id, "caller": "test", "idempotency_key": None, "fingerprint": "f" * 64,
        "template": "t", "recipients": "{}", "data": "{}", "priority": "normal",
        "send_at": None, "created_at": now_ms, "fanout_done": True,
    }  # fmt: skip
