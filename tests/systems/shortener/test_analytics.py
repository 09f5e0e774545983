"""Visit analytics end to end: redirects publish visits, the consumer counts each
once, ``GET /shortener/v1/links/{code}/stats`` shows them to the owner; across
duplicate deliveries, restarts, deleted links and malformed events, and on
PostgreSQL and MariaDB as on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from sysdesign.blocks.queue import EVENT_ID_HEADER
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.inbox import inbox_table, record_processed
from sysdesign.systems.shortener import policy_for, workers
from sysdesign.systems.shortener.analytics import GeoIP
from sysdesign.systems.shortener.service import VISITS_TOPIC, LinkService, NewLink
from sysdesign.systems.shortener.stats import LinkStats, link_stats, record_visit
from tests.conftest import Headers, sign_in
from tests.systems.shortener.analytics_helpers import (
    CHROME_WINDOWS,
    CURL,
    GOOGLEBOT,
    LINKS,
    SAFARI_IPHONE,
    analytics_settings,
    client_from,
    eventually,
    log_in,
    pairs,
    running,
    stats_rows,
    stats_when,
    today,
    total_is,
    visit,
    visit_message,
)
from tests.systems.shortener.analytics_mmdb import write_mmdb
from tests.systems.shortener.conftest import shorten


@pytest.fixture
def app(tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Starlette:
    """The root app with the relay and the analytics consumer on, no GeoIP database."""
    monkeypatch.setenv(workers.ANALYTICS_ENV, "1")
    monkeypatch.delenv(workers.GEOIP_ENV, raising=False)
    return create_app(analytics_settings(tmp_path), clock=clock)


# --- counting through the HTTP API ------------------------------------------------------


async def test_visits_are_counted_by_referrer_browser_os_and_country(
    client: httpx.AsyncClient, alice: Headers, clock: ManualClock
) -> None:
    code = (await shorten(client, alice))["code"]
    for _ in range(3):
        await visit(client, code, CHROME_WINDOWS, "https://news.example/story?id=1")
    for _ in range(2):
        await visit(client, code, SAFARI_IPHONE)
    await visit(client, code, CHROME_WINDOWS, "https://mail.example/")
    for bot in (GOOGLEBOT, CURL, None):
        assert (await visit(client, code, bot, "https://spam.example/")).status_code == 302

    body = await stats_when(client, alice, code, total_is(9))
    assert body["bots"] == 3
    assert pairs(body["referrers"]) == [("news.example", 3), ("direct", 2), ("mail.example", 1)]
    assert pairs(body["browsers"]) == [("Chrome", 4), ("Mobile Safari", 2)]
    assert pairs(body["os"]) == [("Windows", 4), ("iOS", 2)]
    # The test client's address is in a documentation range: no country.
    assert pairs(body["countries"]) == [("unknown", 6)]
    assert len(body["daily"]) == 30
    assert body["daily"][-1] == {"day": today(clock), "visits": 9, "bots": 3}
    assert all(d["visits"] == 0 for d in body["daily"][:-1])
    assert body["daily"][0]["day"] == today(clock, 29)


async def test_bots_are_counted_apart(client: httpx.AsyncClient, alice: Headers) -> None:
    code = (await shorten(client, alice))["code"]
    for bot in (GOOGLEBOT, CURL, "facebookexternalhit/1.1", None):
        await visit(client, code, bot, "https://chat.example/")
    body = await stats_when(client, alice, code, total_is(4))
    assert body["bots"] == 4
    assert body["referrers"] == body["browsers"] == body["os"] == body["countries"] == []


async def test_limited_links_are_counted_through_the_outbox(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice, max_visits=3))["code"]
    statuses = [(await visit(client, code, CHROME_WINDOWS)).status_code for _ in range(5)]
    assert statuses == [302, 302, 302, 410, 410]
    body = await stats_when(client, alice, code, total_is(3))
    assert pairs(body["browsers"]) == [("Chrome", 3)]  # used-up visits are not visits


async def test_daily_counts_follow_the_clock(
    client: httpx.AsyncClient, alice: Headers, clock: ManualClock
) -> None:
    code = (await shorten(client, alice))["code"]
    await visit(client, code, CHROME_WINDOWS)
    clock.advance(2 * 86400)
    alice = await log_in(client, "alice@example.com")  # the first token has expired
    await visit(client, code, GOOGLEBOT)
    await visit(client, code, SAFARI_IPHONE)
    body = await stats_when(client, alice, code, total_is(3), days=3)
    assert body["daily"] == [
        {"day": today(clock, 2), "visits": 1, "bots": 0},
        {"day": today(clock, 1), "visits": 0, "bots": 0},
        {"day": today(clock), "visits": 2, "bots": 1},
    ]
    one = (await client.get(f"{LINKS}/{code}/stats?days=1", headers=alice)).json()
    assert one["daily"] == [{"day": today(clock), "visits": 2, "bots": 1}]
    assert (one["total"], one["bots"]) == (3, 1)  # totals are for all time


async def test_countries_come_from_the_geoip_database(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = {"81.2.69.0/24": {"country": {"iso_code": "GB"}},
               "2001:218::/32": {"country": {"iso_code": "JP"}}}  # fmt: skip
    monkeypatch.setenv(workers.GEOIP_ENV, str(write_mmdb(tmp_path / "geo.mmdb", records)))
    monkeypatch.setenv(workers.ANALYTICS_ENV, "1")
    app = create_app(analytics_settings(tmp_path), clock=clock)
    async with running(app), client_from(app, "198.51.100.1") as local:
        alice = await sign_in(local, "alice@example.com")
        code = (await shorten(local, alice))["code"]
        for ip, times in (("81.2.69.142", 2), ("2001:218::7", 1), ("8.8.8.8", 1)):
            async with client_from(app, ip) as visitor:
                for _ in range(times):
                    assert (await visit(visitor, code, CHROME_WINDOWS)).status_code == 302
        body = await stats_when(local, alice, code, total_is(4))
    assert pairs(body["countries"]) == [("GB", 2), ("JP", 1), ("unknown", 1)]


# --- exactly once -------------------------------------------------------------------------


async def test_a_message_delivered_twice_is_counted_once(
    client: httpx.AsyncClient, alice: Headers, platform: Platform, clock: ManualClock
) -> None:
    link = await shorten(client, alice)
    code, link_id = link["code"], int(link["id"])
    at_ms = int(clock.time() * 1000)
    payload = {"link_id": str(link_id), "code": code, "at_ms": at_ms, "referrer": None,
               "user_agent": CHROME_WINDOWS, "ip": None}  # fmt: skip
    # The relay republishing one outbox event: two messages, one event id.
    for _ in range(2):
        await platform.queue.publish(
            VISITS_TOPIC, payload, key=code, headers={EVENT_ID_HEADER: "event-1"}
        )
    # A later visit of the same code is handled after both (one partition, in order).
    await visit(client, code, SAFARI_IPHONE)
    body = await stats_when(client, alice, code, total_is(2))
    assert pairs(body["browsers"]) == [("Chrome", 1), ("Mobile Safari", 1)]

    # The same message handed to the handler twice, as after a crash before its ack.
    counter = workers.VisitCounter(platform, GeoIP(None))
    message = visit_message(link_id, code, at_ms, offset=10**9, ua=CHROME_WINDOWS)
    await counter(message)
    await counter(message)
    stats = await link_stats(platform, link_id, code)
    assert (stats.total, stats.browsers) == (3, [("Chrome", 2), ("Mobile Safari", 1)])


async def test_stats_survive_a_restart_and_are_not_counted_again(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(workers.ANALYTICS_ENV, "1")
    monkeypatch.delenv(workers.GEOIP_ENV, raising=False)
    first = create_app(analytics_settings(tmp_path), clock=clock)
    async with running(first), client_from(first, "198.51.100.1") as client:
        alice = await sign_in(client, "alice@example.com")
        code = (await shorten(client, alice))["code"]
        for ua in (CHROME_WINDOWS, CHROME_WINDOWS, GOOGLEBOT):
            await visit(client, code, ua, "https://news.example/")
        before = await stats_when(client, alice, code, total_is(3))

    second = create_app(analytics_settings(tmp_path), clock=clock)
    platform: Platform = second.state.platform
    # Move the consumer group back to the start: every visit is delivered again,
    # and the inbox must turn each into a no-op.
    await platform.connect_queue()
    await platform.queue.reset(VISITS_TOPIC, workers.CONSUMER, to_offset="earliest")
    async with running(second), client_from(second, "198.51.100.1") as client:
        unchanged = (await client.get(f"{LINKS}/{code}/stats", headers=alice)).json()
        assert unchanged == before
        await visit(client, code, SAFARI_IPHONE)  # after the redelivered ones, in order
        after = await stats_when(client, alice, code, total_is(4))
    assert (after["bots"], pairs(after["browsers"])) == (1, [("Chrome", 2), ("Mobile Safari", 1)])


# --- what is not counted --------------------------------------------------------------------


async def test_visits_of_a_deleted_link_are_dropped_and_its_stats_go_with_it(
    client: httpx.AsyncClient, alice: Headers, platform: Platform, clock: ManualClock
) -> None:
    link = await shorten(client, alice)
    code, link_id = link["code"], int(link["id"])
    await visit(client, code, CHROME_WINDOWS)
    await stats_when(client, alice, code, total_is(1))
    assert (await client.delete(f"{LINKS}/{code}", headers=alice)).status_code == 204
    assert await stats_rows(platform, code, link_id) == 0  # deleted with the link

    # A visit event still in the queue when its link went: handled, not counted.
    counter = workers.VisitCounter(platform, GeoIP(None))
    at_ms = int(clock.time() * 1000)
    await counter(visit_message(link_id, code, at_ms, offset=10**9, ua=CHROME_WINDOWS))
    assert await stats_rows(platform, code, link_id) == 0
    assert (await link_stats(platform, link_id, code)).total == 0


async def test_malformed_events_go_to_the_dead_letter_topic_at_once(
    client: httpx.AsyncClient, alice: Headers, platform: Platform, clock: ManualClock
) -> None:
    link = await shorten(client, alice)
    code = link["code"]
    good = {"link_id": link["id"], "code": code, "at_ms": int(clock.time() * 1000)}
    await platform.queue.publish(VISITS_TOPIC, b"not json", key=code)
    await platform.queue.publish(VISITS_TOPIC, {"code": code, "at_ms": 1}, key=code)
    await platform.queue.publish(VISITS_TOPIC, {**good, "code": "another"}, key=code)
    await visit(client, code, CHROME_WINDOWS)  # after the malformed ones, in order
    await stats_when(client, alice, code, total_is(1))
    dead = await platform.queue.dead_letters(VISITS_TOPIC)
    assert len(dead) == 3
    assert all(m.headers["dlq-error"].startswith("malformed visit event") for m in dead)
    assert all(m.headers["dlq-attempts"] == "1" for m in dead)  # no retries first


async def test_old_inbox_records_of_this_consumer_are_purged(
    client: httpx.AsyncClient, platform: Platform, clock: ManualClock
) -> None:
    # ``client`` runs the app: its start-up has migrated both shards.
    now_ms = int(clock.time() * 1000)
    old_ms = now_ms - (workers.INBOX_RETENTION_SECONDS + 60) * 1000
    for db in platform.db.shards:
        async with db.begin() as conn:
            for consumer, message, at_ms in (
                (workers.CONSUMER, "old", old_ms),
                (workers.CONSUMER, "recent", now_ms),
                ("someone-else", "old", old_ms),
            ):
                await record_processed(conn, consumer, message, at_ms)
    cutoff_ms = now_ms - workers.INBOX_RETENTION_SECONDS * 1000
    assert await workers.purge_inbox(platform, cutoff_ms) == len(platform.db.shards)
    for db in platform.db.shards:
        async with db.read() as conn:
            t = inbox_table
            rows = await conn.execute(select(t.c.consumer, t.c.message_id).order_by(t.c.consumer))
            assert sorted(map(tuple, rows)) == [
                ("shortener-analytics", "recent"), ("someone-else", "old"),
            ]  # fmt: skip


# --- the endpoint ---------------------------------------------------------------------------


async def test_stats_are_the_owners_only(
    client: httpx.AsyncClient, alice: Headers, bob: Headers
) -> None:
    code = (await shorten(client, alice))["code"]
    for path, headers in ((f"{LINKS}/{code}/stats", bob), (f"{LINKS}/nosuchcode/stats", alice)):
        response = await client.get(path, headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
    anonymous = await client.get(f"{LINKS}/{code}/stats")
    assert anonymous.status_code == 401
    fresh = (await client.get(f"{LINKS}/{code}/stats", headers=alice)).json()
    assert (fresh["total"], fresh["bots"], len(fresh["daily"])) == (0, 0, 30)


@pytest.mark.parametrize("days", ["0", "367", "-1", "x", "1.5"])
async def test_days_out_of_range_is_a_422(
    client: httpx.AsyncClient, alice: Headers, days: str
) -> None:
    code = (await shorten(client, alice))["code"]
    response = await client.get(f"{LINKS}/{code}/stats?days={days}", headers=alice)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "days"


async def test_a_year_of_days_is_the_widest_window(
    client: httpx.AsyncClient, alice: Headers
) -> None:
    code = (await shorten(client, alice))["code"]
    body = (await client.get(f"{LINKS}/{code}/stats?days=366", headers=alice)).json()
    assert len(body["daily"]) == 366


# --- configuration --------------------------------------------------------------------------


async def test_a_bad_geoip_path_stops_the_app_from_being_built(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "missing.mmdb")
    monkeypatch.setenv(workers.GEOIP_ENV, missing)
    monkeypatch.setenv(workers.ANALYTICS_ENV, "1")
    with pytest.raises(ConfigurationError) as info:
        create_app(analytics_settings(tmp_path), clock=clock)
    assert workers.GEOIP_ENV in str(info.value) and "\n" not in str(info.value)


async def test_the_consumer_can_be_turned_off(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(workers.ANALYTICS_ENV, "0")
    platform = Platform(analytics_settings(tmp_path), clock=clock)
    try:
        assert await workers.start(platform) == []
    finally:
        await platform.close()


# --- on every engine --------------------------------------------------------------------------


@pytest.fixture
def analytics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.ANALYTICS_ENV, "1")
    monkeypatch.delenv(workers.GEOIP_ENV, raising=False)


@pytest.mark.usefixtures("analytics_on")
async def test_counting_on_every_engine(engine_platform: Platform, clock: ManualClock) -> None:
    platform = engine_platform
    service = LinkService(platform, policy_for(platform))
    links = [await service.create(1, NewLink(f"https://example.com/{i}")) for i in range(6)]
    at_ms = int(clock.time() * 1000)
    agents = [CHROME_WINDOWS, CHROME_WINDOWS, SAFARI_IPHONE, GOOGLEBOT]
    for link in links:
        for ua in agents:
            await service.publish_visit(link.id, link.code, {
                "code": link.code, "at_ms": at_ms, "referrer": "https://news.example/",
                "user_agent": ua, "ip": None,
            })  # fmt: skip
        # One event published twice under one event id, as a relay retry would.
        duplicate = {"link_id": str(link.id), "code": link.code, "at_ms": at_ms,
                     "referrer": None, "user_agent": CHROME_WINDOWS, "ip": None}  # fmt: skip
        for _ in range(2):
            await platform.queue.publish(
                VISITS_TOPIC, duplicate, key=link.code, headers={EVENT_ID_HEADER: link.code}
            )
    running = await workers.start(platform)  # six links, partitions handled concurrently
    try:

        async def read() -> list[LinkStats]:
            return [await link_stats(platform, link.id, link.code) for link in links]

        every = await eventually(
            read, lambda stats: all(s.total == 5 for s in stats), "five visits of every link"
        )
    finally:
        await workers.stop(running)
    for stats in every:
        assert (stats.total, stats.bots) == (5, 1)
        assert stats.browsers == [("Chrome", 3), ("Mobile Safari", 1)]
        assert stats.referrers == [("news.example", 3), ("direct", 1)]
        assert stats.daily[-1].visits == 5 and stats.daily[-1].day == today(clock)


async def test_values_that_differ_by_case_are_two_values_on_every_engine(
    engine_platform: Platform, clock: ManualClock
) -> None:
    from sysdesign.systems.shortener.analytics import CountedVisit

    platform = engine_platform
    service = LinkService(platform, policy_for(platform))
    link = await service.create(1, NewLink("https://example.com/"))
    day = datetime.fromtimestamp(clock.time(), UTC).date()
    async with platform.unit_of_work(link.code) as uow:
        for browser in ("Foo", "foo", "Foo", "Ünï"):
            visit = CountedVisit(link.id, link.code, day, False, "direct", browser, "X", "unknown")
            await record_visit(uow.conn, visit)
    stats = await link_stats(platform, link.id, link.code, days=1)
    assert stats.browsers == [("Foo", 2), ("foo", 1), ("Ünï", 1)]
    assert stats.daily[0].visits == stats.total == 4
