"""Preferences, quiet hours (on the injected clock), digests and throttles."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from sysdesign.platform.clock import ManualClock
from tests.conftest import Headers
from tests.systems.notifications.conftest import (
    API,
    inbox_template,
    put_template,
    settled,
    trigger,
    user_id,
)

MAIL = {"en": {"subject": "s", "body": "{{ what }}"}}


def at(clock: ManualClock, hour: int, minute: int = 0) -> None:
    """Move the clock forward to the next ``hour:minute`` UTC."""
    now = datetime.fromtimestamp(clock.time(), UTC)
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    seconds = (target - now).total_seconds() % 86400
    clock.advance(seconds)


async def test_a_channel_turned_off_suppresses_it_and_critical_bypasses(
    client: httpx.AsyncClient, admin: Headers, ana: Headers
) -> None:
    await client.put(f"{API}/me", json={"email": "ana@example.com"}, headers=ana)
    prefs = {"disabled": [{"category": "social", "channel": "email"}]}
    assert (await client.put(f"{API}/me/preferences", json=prefs, headers=ana)).status_code == 200
    await put_template(client, admin, "liked", {"category": "social",
                                                "channels": {"email": MAIL}})  # fmt: skip
    await put_template(client, admin, "alert", {"category": "social", "critical": True,
                                                "channels": {"email": MAIL}})  # fmt: skip
    ana_id = await user_id(client, ana)
    liked = await trigger(client, admin, "liked", {"user_ids": [ana_id]}, data={"what": "x"})
    [message] = await settled(client, admin, liked["id"], 1, "suppressed")
    assert message["reason"] == "preference"
    alert = await trigger(client, admin, "alert", {"user_ids": [ana_id]}, data={"what": "x"})
    await settled(client, admin, alert["id"], 1, "sent")


async def test_quiet_hours_hold_a_message_until_they_end_but_not_a_critical_one(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, clock: ManualClock
) -> None:
    await client.put(f"{API}/me", json={"email": "ana@example.com"}, headers=ana)
    quiet = {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "UTC"}}
    saved = await client.put(f"{API}/me/preferences", json=quiet, headers=ana)
    assert saved.json()["quiet_hours"] == quiet["quiet_hours"]
    await put_template(client, admin, "liked", {"category": "social",
                                                "channels": {"email": MAIL}})  # fmt: skip
    await put_template(client, admin, "code", {"category": "security", "critical": True,
                                               "channels": {"email": MAIL}})  # fmt: skip
    ana_id = await user_id(client, ana)
    at(clock, 23)
    liked = await trigger(client, admin, "liked", {"user_ids": [ana_id]}, data={"what": "x"})
    [waiting] = await settled(client, admin, liked["id"], 1, "scheduled")
    assert waiting["reason"] == "quiet_hours"
    expected = datetime.fromtimestamp(clock.time(), UTC).replace(hour=7, minute=0, second=0)
    assert waiting["due_at_ms"] == int(expected.timestamp() * 1000) + 86400 * 1000

    code = await trigger(client, admin, "code", {"user_ids": [ana_id]}, data={"what": "1"})
    await settled(client, admin, code["id"], 1, "sent")  # critical: at once

    at(clock, 6, 59)
    await settled(client, admin, liked["id"], 1, "scheduled")
    at(clock, 7, 0)
    await settled(client, admin, liked["id"], 1, "sent")


async def test_a_digest_collapses_events_into_one_notification(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, clock: ManualClock
) -> None:
    template = inbox_template(
        digest_window_seconds=600, digest_group_field="post",
        channels={"in_app": {"en": {"subject": "{% if digest %}{{ digest.actors_text }} liked "
                                               "your post{% else %}{{ actor }} liked your post"
                                               "{% endif %}",
                                    "body": "post {{ post }}"}}},
    )  # fmt: skip
    await put_template(client, admin, "liked", template)
    ana_id = await user_id(client, ana)
    names = ["Ana", *(f"Fan{i}" for i in range(12))]
    events = []
    for name in names:
        events.append(await trigger(client, admin, "liked", {"user_ids": [ana_id]},
                                    data={"actor": name, "post": 1}))  # fmt: skip
    other = await trigger(client, admin, "liked", {"user_ids": [ana_id]},
                          data={"actor": "Zed", "post": 2})  # fmt: skip
    # Fan-outs run in parallel, so whichever message came first holds the digest.
    found = [await settled(client, admin, e["id"], 1, "scheduled", "suppressed") for e in events]
    heads = [e for e, [m] in zip(events, found, strict=True) if m["status"] == "scheduled"]
    assert len(heads) == 1
    assert sorted(m["reason"] for [m] in found) == ["digest"] + ["digested"] * 12
    await settled(client, admin, other["id"], 1, "scheduled")
    assert (await client.get(f"{API}/inbox/unread-count", headers=ana)).json() == {"count": 0}

    clock.advance(601)
    await settled(client, admin, heads[0]["id"], 1, "delivered")
    await settled(client, admin, other["id"], 1, "delivered")
    items = (await client.get(f"{API}/inbox", headers=ana)).json()["items"]
    assert sorted(i["title"] for i in items) == ["Ana and 12 others liked your post",
                                                 "Zed liked your post"]  # fmt: skip


async def test_a_throttle_suppresses_what_exceeds_it(
    client: httpx.AsyncClient, admin: Headers, ana: Headers
) -> None:
    await put_template(client, admin, "ping", inbox_template(throttle="2/hour"))
    ana_id = await user_id(client, ana)
    statuses = []
    for _ in range(4):
        event = await trigger(client, admin, "ping", {"user_ids": [ana_id]}, data={"name": "x"})
        [m] = await settled(client, admin, event["id"], 1, "delivered", "suppressed")
        statuses.append((m["status"], m["reason"]))
    assert statuses == [("delivered", None)] * 2 + [("suppressed", "throttled")] * 2
