"""What makes notifications hard: retries then dead letters, a duplicate
trigger delivered once, a worker dying mid-send, critical messages overtaking
a bulk backlog."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from sysdesign.blocks.notify.base import Priority
from sysdesign.blocks.notify.webhook import WebhookSender
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.systems.notifications.delivery import Delivery
from sysdesign.systems.notifications.domain import DLQ_TOPIC, SENDING, Message, deliver_topic
from sysdesign.systems.notifications.tables import messages_table
from tests.conftest import Headers
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


def workers_of(app: Any) -> Any:
    return app.state.mounted["notifications"].state.notification_workers


async def dead_letters(platform: Platform) -> list[Any]:
    queue = platform.queue
    found = []
    for partition in range(await queue.partitions(DLQ_TOPIC)):
        found += await queue.backend.read(DLQ_TOPIC, partition, 0, 100)
    return found


async def test_a_failing_webhook_is_retried_with_backoff_then_dead_lettered(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, receiver: Receiver,
    clock: ManualClock, platform: Platform,
) -> None:  # fmt: skip
    receiver.statuses = [500] * 10
    me = await client.put(f"{API}/me", json={"webhook_url": receiver.url}, headers=ana)
    receiver.secret = me.json()["webhook_secret"]
    await put_template(client, admin, "order", HOOK)
    ana_id = await user_id(client, ana)
    event = await trigger(client, admin, "order", {"user_ids": [ana_id]}, data={"id": 7})

    for attempt in (1, 2):  # SYSDESIGN_NOTIFY_MAX_ATTEMPTS=3 in these tests
        [waiting] = await settled(client, admin, event["id"], 1, "scheduled")
        assert waiting["attempts"] == attempt
        assert "500" in waiting["last_error"]
        assert len(receiver.received) == attempt  # it waits for the backoff, on the clock
        clock.advance(10 * 2 ** (attempt - 1) + 1)  # the longest jittered backoff, and a second
        await eventually(lambda a=attempt: _attempts_above(client, admin, event["id"], a))

    [failed] = await settled(client, admin, event["id"], 1, "failed")
    assert failed["attempts"] == 3 and len(receiver.received) == 3
    assert all(r["valid"] for r in receiver.received)
    # Every attempt carried the same message id, so a receiver can drop repeats.
    assert {r["headers"]["sysdesign-message-id"] for r in receiver.received} == {failed["id"]}

    letters = await eventually(lambda: dead_letters(platform))
    assert len(letters) == 1
    letter = letters[0].json()
    assert letter["message_id"] == failed["id"] and letter["attempts"] == 3
    assert "500" in letter["error"]


async def _attempts_above(client: httpx.AsyncClient, admin: Headers, event_id: str,
                          attempts: int) -> bool:  # fmt: skip
    [message] = await messages_of(client, admin, event_id)
    return message["attempts"] > attempts and message["status"] != "queued"


async def test_a_webhook_that_recovers_is_delivered(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, receiver: Receiver,
    clock: ManualClock,
) -> None:  # fmt: skip
    receiver.statuses = [503]
    me = await client.put(f"{API}/me", json={"webhook_url": receiver.url}, headers=ana)
    receiver.secret = me.json()["webhook_secret"]
    await put_template(client, admin, "order", HOOK)
    event = await trigger(client, admin, "order", {"user_ids": [await user_id(client, ana)]},
                          data={"id": 8})  # fmt: skip
    await settled(client, admin, event["id"], 1, "scheduled")
    clock.advance(11)
    [done] = await settled(client, admin, event["id"], 1, "delivered")
    assert done["attempts"] == 2


async def test_a_duplicate_trigger_is_delivered_once(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, platform: Platform
) -> None:
    await put_template(client, admin, "hello", inbox_template())
    ana_id = await user_id(client, ana)
    body = {"template": "hello", "to": {"user_ids": [ana_id]}, "data": {"name": "Ana"}}
    first = await client.post(f"{API}/events", json=body,
                              headers={**admin, "Idempotency-Key": "k-1"})  # fmt: skip
    again = await client.post(f"{API}/events", json={**body, "idempotency_key": "k-1"},
                              headers=admin)  # fmt: skip
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(f"{API}/events", json={**body, "data": {"name": "Bo"}},
                              headers={**admin, "Idempotency-Key": "k-1"})  # fmt: skip
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")

    [message] = await settled(client, admin, first.json()["id"], 1, "delivered")
    # The queue delivers at least once: a repeated delivery message changes nothing.
    await platform.queue.publish(deliver_topic_of(message), {"message_id": int(message["id"])},
                                 key=str(ana_id))  # fmt: skip
    await platform.queue.publish("notifications.fanout.normal",
                                 {"event_id": int(first.json()["id"]), "after": None})  # fmt: skip
    await settled(client, admin, first.json()["id"], 1, "delivered")
    items = (await client.get(f"{API}/inbox", headers=ana)).json()["items"]
    assert len(items) == 1


def deliver_topic_of(message: dict[str, Any]) -> str:
    from sysdesign.blocks.notify.base import Priority

    return deliver_topic(Priority.NORMAL)


async def test_a_message_whose_worker_died_is_sent_by_another(
    app: Any, client: httpx.AsyncClient, admin: Headers, ana: Headers, clock: ManualClock,
    platform: Platform,
) -> None:  # fmt: skip
    from datetime import UTC, datetime

    await put_template(client, admin, "hello", inbox_template())
    when = datetime.fromtimestamp(clock.time() + 86400, UTC).isoformat()
    event = await trigger(client, admin, "hello", {"user_ids": [await user_id(client, ana)]},
                          data={"name": "Ana"}, send_at=when)  # fmt: skip
    [message] = await settled(client, admin, event["id"], 1, "scheduled")
    # A worker claims it and dies before finishing: the row stays "sending".
    async with platform.db.primary.begin() as conn:
        await conn.execute(
            update(messages_table).where(messages_table.c.id == int(message["id"]))
            .values(status=SENDING, attempts=1, claimed_at=int(clock.time() * 1000))
        )  # fmt: skip
    scheduler = workers_of(app).scheduler
    assert await scheduler.run_once() == 0  # within the visibility timeout: left alone
    clock.advance(121)
    assert await scheduler.run_once() == 1  # what the periodic sweep does
    [done] = await settled(client, admin, event["id"], 1, "delivered")
    assert done["attempts"] == 2
    items = (await client.get(f"{API}/inbox", headers=ana)).json()["items"]
    assert [i["body"] for i in items] == ["Ana waved"]


async def test_a_critical_message_overtakes_a_bulk_backlog(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    backlog = 10_000
    # Bulk deliveries are held up, as by a slow channel, until the code is in:
    # every bulk worker is busy and the rest of the backlog waits in the queue.
    released = asyncio.Event()
    deliver = Delivery._deliver

    async def slow_bulk(self: Delivery, claimed: list[Message]) -> None:
        if claimed and claimed[0].priority is Priority.BULK:
            await released.wait()
        await deliver(self, claimed)

    monkeypatch.setattr(Delivery, "_deliver", slow_bulk)
    await put_template(client, admin, "promo", inbox_template(priority="bulk", category="promo"))
    await put_template(client, admin, "code", {
        "category": "security", "critical": True, "priority": "critical",
        "channels": {"in_app": {"en": {"body": "Your code is {{ code }}"}}},
    })  # fmt: skip
    await client.put(f"{API}/topics/everyone", json={"name": "Everyone"}, headers=admin)
    added = await client.post(f"{API}/topics/everyone/subscribers",
                              json={"user_ids": list(range(1, backlog + 1))},
                              headers=admin)  # fmt: skip
    assert added.json() == {"added": backlog}
    bulk = await trigger(client, admin, "promo", {"topic": "everyone"}, data={"name": "x"})

    async def fanned_out() -> bool:
        status = (await client.get(f"{API}/events/{bulk['id']}", headers=admin)).json()
        return status["status"] == "done"

    await eventually(fanned_out, timeout=60)
    ana_id = await user_id(client, ana)
    critical = await trigger(client, admin, "code", {"user_ids": [ana_id]},
                             data={"code": "424242"})  # fmt: skip
    await settled(client, admin, critical["id"], 1, "delivered")
    status = (await client.get(f"{API}/events/{bulk['id']}", headers=admin)).json()
    waiting = status["counts"]["in_app"].get("queued", 0)
    assert waiting > backlog // 2, status["counts"]
    released.set()

    async def drained() -> bool:
        status = (await client.get(f"{API}/events/{bulk['id']}", headers=admin)).json()
        return status["counts"]["in_app"] == {"delivered": backlog}

    await eventually(drained, timeout=120)


MAIL_AND = {"subject": "Order {{ id }}", "body": "order {{ id }}"}


async def test_one_broken_message_does_not_hold_up_the_rest_of_its_batch(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    render = Delivery._render

    async def email_breaks(self: Delivery, item: Any, out: Any) -> Any:
        if item.msg.channel.value == "email":
            raise RuntimeError("the e-mail renderer broke")
        return await render(self, item, out)

    monkeypatch.setattr(Delivery, "_render", email_breaks)
    await client.put(f"{API}/me", json={"email": "ana@example.com"}, headers=ana)
    await put_template(client, admin, "both", {
        "category": "orders", "channels": {"in_app": {"en": MAIL_AND}, "email": {"en": MAIL_AND}},
    })  # fmt: skip
    # One recipient: both messages share a partition, and so a batch.
    event = await trigger(client, admin, "both", {"user_ids": [await user_id(client, ana)]},
                          data={"id": 7})  # fmt: skip

    async def in_app_delivered() -> list[dict[str, Any]] | None:
        found = await messages_of(client, admin, event["id"])
        return found if any(m["status"] == "delivered" for m in found) else None

    found = {m["channel"]: m for m in await eventually(in_app_delivered)}
    assert found["in_app"]["status"] == "delivered"
    # Left to the scheduler's rescue (shown as queued), not failed with its batch.
    assert found["email"]["status"] == "queued"


async def test_what_a_batch_sent_is_written_while_its_other_sends_wait(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    released = asyncio.Event()
    send = WebhookSender.send

    async def slow(self: WebhookSender, message: Any) -> Any:
        await released.wait()
        return await send(self, message)

    monkeypatch.setattr(WebhookSender, "send", slow)
    me = await client.put(f"{API}/me", json={"email": "ana@example.com",
                                             "webhook_url": receiver.url}, headers=ana)  # fmt: skip
    receiver.secret = me.json()["webhook_secret"]
    await put_template(client, admin, "both", {
        "category": "orders", "channels": {"email": {"en": MAIL_AND}, "webhook": {"en": MAIL_AND}},
    })  # fmt: skip
    event = await trigger(client, admin, "both", {"user_ids": [await user_id(client, ana)]},
                          data={"id": 8})  # fmt: skip

    async def mailed() -> list[dict[str, Any]] | None:
        found = await messages_of(client, admin, event["id"])
        return found if any(m["status"] == "sent" for m in found) else None

    found = {m["channel"]: m for m in await eventually(mailed)}
    assert found["webhook"]["status"] == "queued"  # still being sent
    assert receiver.received == []
    released.set()
    await settled(client, admin, event["id"], 2, "sent", "delivered")
    assert len(receiver.received) == 1 and receiver.received[0]["valid"]
