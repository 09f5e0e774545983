"""Trigger -> fan-out -> delivery on every channel -> status, end to end:
a real SMTP server receives the rendered e-mail, a real HTTP receiver checks
the webhook's signature, the SMS lands in the outbox file, the inbox gets
its item."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller

from sysdesign.benchmarks.server import free_port
from tests.conftest import Headers
from tests.systems.notifications.conftest import (
    API,
    Receiver,
    put_template,
    settled,
    trigger,
    user_id,
)

WELCOME = {
    "category": "account",
    "channels": {
        "in_app": {"en": {"subject": "Welcome {{ name }}", "body": "Hello {{ name }}"}},
        "email": {
            "en": {"subject": "Welcome, {{ name }}", "body": "Hello {{ name }}, code {{ code }}."},
            "pt": {
                "subject": "Bem-vinda, {{ name }}",
                "body": "Olá {{ name }}, código {{ code }}.",
            },
        },
        "sms": {"en": {"body": "Code {{ code }}"}},
        "webhook": {"en": {"body": "welcome {{ name }}"}},
    },
}


class Collector:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp(notify_env: dict[str, str]) -> Iterator[Collector]:
    collector = Collector()
    port = free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    notify_env["SYSDESIGN_NOTIFY_EMAIL_URL"] = (
        f"smtp://127.0.0.1:{port}?from=noreply%40example.com&starttls=false"
    )
    yield collector
    controller.stop()


@pytest.fixture
def sms_file(notify_env: dict[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "sms.jsonl"
    notify_env["SYSDESIGN_NOTIFY_SMS_URL"] = f"file://{path}"
    return path


async def test_one_event_reaches_every_channel_rendered(
    smtp: Collector,
    sms_file: Path,
    receiver: Receiver,
    client: httpx.AsyncClient,
    admin: Headers,
    ana: Headers,
) -> None:
    me = {"email": "ana@example.com", "phone": "+351912345678", "webhook_url": receiver.url,
          "locale": "pt-PT", "timezone": "Europe/Lisbon"}  # fmt: skip
    response = await client.put(f"{API}/me", json=me, headers=ana)
    assert response.status_code == 200, response.text
    receiver.secret = response.json()["webhook_secret"]
    assert receiver.secret
    ana_id = await user_id(client, ana)
    await put_template(client, admin, "welcome", WELCOME)

    event = await trigger(client, admin, "welcome", {"user_ids": [ana_id]},
                          data={"name": "Ana", "code": "123456"})  # fmt: skip
    found = await settled(client, admin, event["id"], 4, "sent", "delivered")
    by_channel = {m["channel"]: m for m in found}
    assert by_channel["in_app"]["status"] == "delivered"
    assert by_channel["webhook"]["status"] == "delivered"
    assert by_channel["email"]["status"] == "sent"
    assert by_channel["sms"]["status"] == "sent"

    # The e-mail, through a real SMTP server, in the recipient's language.
    assert len(smtp.messages) == 1
    envelope = smtp.messages[0]
    assert envelope.rcpt_tos == ["ana@example.com"]
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == "Bem-vinda, Ana"
    assert "Olá Ana, código 123456." in mail.get_body(("plain",)).get_content()

    # The webhook, signed with the secret the user was shown.
    assert len(receiver.received) == 1 and receiver.received[0]["valid"]
    assert receiver.received[0]["headers"]["sysdesign-message-id"] == by_channel["webhook"]["id"]

    # The SMS, in the outbox file.
    lines = [
        orjson.loads(line) for line in (await asyncio.to_thread(sms_file.read_text)).splitlines()
    ]
    assert len(lines) == 1 and "123456" in orjson.dumps(lines[0]).decode()

    # The inbox item, and the counts on the event.
    inbox = (await client.get(f"{API}/inbox", headers=ana)).json()["items"]
    assert [(i["title"], i["body"]) for i in inbox] == [("Welcome Ana", "Hello Ana")]
    status = (await client.get(f"{API}/events/{event['id']}", headers=admin)).json()
    assert status["status"] == "done"
    assert status["counts"] == {"in_app": {"delivered": 1}, "webhook": {"delivered": 1},
                                "email": {"sent": 1}, "sms": {"sent": 1}}  # fmt: skip


async def test_channels_without_an_address_are_suppressed(
    client: httpx.AsyncClient, admin: Headers, ana: Headers
) -> None:
    ana_id = await user_id(client, ana)
    await put_template(client, admin, "welcome", WELCOME)
    event = await trigger(client, admin, "welcome", {"user_ids": [ana_id]},
                          data={"name": "Ana", "code": "1"})  # fmt: skip
    found = await settled(client, admin, event["id"], 4, "delivered", "suppressed")
    suppressed = {m["channel"]: m["reason"] for m in found if m["status"] == "suppressed"}
    assert suppressed == {"email": "no address", "sms": "no address", "webhook": "no address"}


async def test_a_topic_reaches_every_subscriber(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, ben: Headers
) -> None:
    await put_template(client, admin, "news", {
        "category": "news", "priority": "bulk",
        "channels": {"in_app": {"en": {"body": "News: {{ headline }}"}}},
    })  # fmt: skip
    assert (await client.put(f"{API}/topics/weekly", json={"name": "Weekly"},
                             headers=admin)).status_code == 200  # fmt: skip
    assert (await client.put(f"{API}/topics/weekly/subscribers/me", headers=ana)).status_code == 204
    ben_id = await user_id(client, ben)
    added = await client.post(f"{API}/topics/weekly/subscribers",
                              json={"user_ids": [ben_id, ben_id, 999]}, headers=admin)  # fmt: skip
    assert added.json() == {"added": 2}
    event = await trigger(client, admin, "news", {"topic": "weekly"}, data={"headline": "Hi"})
    await settled(client, admin, event["id"], 3, "delivered")
    for who in (ana, ben):
        items = (await client.get(f"{API}/inbox", headers=who)).json()["items"]
        assert [i["body"] for i in items] == ["News: Hi"]
    assert (await client.delete(f"{API}/topics/weekly/subscribers/me",
                                headers=ana)).status_code == 204  # fmt: skip
    topic = (await client.get(f"{API}/topics/weekly", headers=admin)).json()
    assert topic == {"key": "weekly", "name": "Weekly", "subscribers": 2}


async def test_send_at_waits_for_its_time(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, clock: Any
) -> None:
    from datetime import UTC, datetime

    ana_id = await user_id(client, ana)
    await put_template(client, admin, "later", {
        "category": "news", "channels": {"in_app": {"en": {"body": "later"}}},
    })  # fmt: skip
    when = datetime.fromtimestamp(clock.time() + 3600, UTC).isoformat()
    event = await trigger(client, admin, "later", {"user_ids": [ana_id]}, send_at=when)
    await settled(client, admin, event["id"], 1, "scheduled")
    await asyncio.sleep(0.1)
    assert (await client.get(f"{API}/inbox/unread-count", headers=ana)).json() == {"count": 0}
    clock.advance(3601)
    await settled(client, admin, event["id"], 1, "delivered")
