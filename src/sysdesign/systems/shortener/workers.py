"""The shortener's queue consumer: visit analytics.

Every redirect publishes a visit event on ``shortener.visits`` (straight to
the queue, or through the outbox for links with ``max_visits``). The
consumer group ``shortener-analytics`` reads them and adds each to its
link's counters (``stats.py``).

**Each visit counted once.** Delivery is at least once: a message comes
again after a consumer crash, and the relay may publish an outbox event
twice. The handler is ``idempotent``: the message's dedupe key goes into the
inbox table in the same transaction, on the link's shard, as the counter
increments, so a second delivery finds the record and changes nothing.
Inbox records of this consumer are kept ``INBOX_RETENTION_SECONDS`` (far
longer than any redelivery or relay retry takes) and then purged, so the
inbox does not grow by one row per visit forever; a group moved back
further than that by hand would count those visits again.

**Events that cannot be counted.** A malformed event (not JSON, a field
missing or of the wrong type, a key that is not its code) is logged and
moved to ``shortener.visits.dlq`` at once, without the subscription's
retries: retrying cannot fix it, and retries happen in place, holding up
every later visit of its partition for their whole backoff. The dead letter
keeps it for inspection, and for ``sysdesign queue replay`` once a consumer
that reads it is deployed (a producer upgraded first may send a shape this
one does not know yet). A visit of a link deleted since (or of a code now
held by another link) is dropped, recorded in the inbox as handled.

Configuration, read when the app is built and when the consumer starts:

- ``SYSDESIGN_SHORTENER_ANALYTICS``: ``0`` (or ``false``, ``no``, ``off``)
  runs no consumer in this process, for a web-only process; on by default.
- ``SYSDESIGN_SHORTENER_GEOIP_DB``: the path of a MaxMind DB file (GeoIP2 or
  GeoLite2 Country or City) for visitors' countries; unset, every country is
  ``unknown``. A path that is missing or not such a file stops start-up.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import structlog

from sysdesign.blocks.queue.idempotent import idempotent
from sysdesign.platform.background import BackgroundTask
from sysdesign.platform.envflag import env_flag
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.inbox import purge_processed
from sysdesign.systems.shortener import stats
from sysdesign.systems.shortener.analytics import (
    CountedVisit,
    GeoIP,
    MalformedVisit,
    classify_user_agent,
    parse_visit_event,
    summarise,
)
from sysdesign.systems.shortener.service import VISITS_TOPIC

if TYPE_CHECKING:
    from sysdesign.blocks.queue import Message, Subscription
    from sysdesign.platform.context import Platform
    from sysdesign.platform.uow import UnitOfWork

log = structlog.get_logger(__name__)

CONSUMER = "shortener-analytics"  # the consumer group and the inbox's consumer name
ANALYTICS_ENV = "SYSDESIGN_SHORTENER_ANALYTICS"
GEOIP_ENV = "SYSDESIGN_SHORTENER_GEOIP_DB"
INBOX_RETENTION_SECONDS = 7 * 86400
PURGE_INTERVAL_SECONDS = 3600.0


def analytics_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs the consumer (``SYSDESIGN_SHORTENER_ANALYTICS``)."""
    return env_flag(os.environ if environ is None else environ, ANALYTICS_ENV, True)


def open_geoip(environ: Mapping[str, str] | None = None) -> GeoIP:
    """The GeoIP database ``SYSDESIGN_SHORTENER_GEOIP_DB`` names, or none.
    ``ConfigurationError`` when the file is missing or not a MaxMind DB."""
    path = (os.environ if environ is None else environ).get(GEOIP_ENV, "").strip()
    if not path:
        return GeoIP(None)
    try:
        return GeoIP.open(path)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{GEOIP_ENV}: {exc}") from None


def check_configuration(environ: Mapping[str, str] | None = None) -> None:
    """Raise ``ConfigurationError`` now for a bad setting of the consumer's.

    Called while the app is built, so that ``sysdesign serve`` reports it in
    one line before serving rather than as a failed lifespan."""
    if analytics_enabled(environ):
        open_geoip(environ).close()


class VisitCounter:
    """The handler of ``shortener.visits``: count each visit once (see the module)."""

    def __init__(self, platform: Platform, geoip: GeoIP) -> None:
        self._platform = platform
        self._geoip = geoip

    async def __call__(self, message: Message) -> None:
        try:
            event = parse_visit_event(message.payload)
            if message.key != event.code:
                # The key chooses the shard the inbox record goes to; one that is not
                # the code would record it away from the link's counters.
                raise MalformedVisit(f"the key {message.key!r} is not the code {event.code!r}")
        except MalformedVisit as exc:
            log.warning("shortener_visit_malformed", message=message.id, error=str(exc))
            await self._platform.queue.dead_letter(message, f"malformed visit event: {exc}")
            return
        # Classified before the transaction: parsing a new user agent takes a
        # while, and on SQLite the transaction holds the shard's write lock.
        visit = summarise(event, self._geoip)
        count = idempotent(CONSUMER, self._unit_of_work, partial(self._count, visit))
        await count(message)

    def _unit_of_work(self, message: Message) -> UnitOfWork:
        return self._platform.unit_of_work(message.key)

    async def _count(self, visit: CountedVisit, message: Message, uow: UnitOfWork) -> None:
        if not await stats.link_exists(uow.conn, visit.link_id, visit.code):
            log.info("shortener_visit_of_deleted_link", code=visit.code, message=message.id)
            return
        # A deletion committing between the check and here makes the foreign key
        # refuse the row: the transaction rolls back, the retry drops the visit.
        await stats.record_visit(uow.conn, visit)


async def purge_inbox(platform: Platform, older_than_ms: int) -> int:
    """Forget this consumer's inbox records older than ``older_than_ms`` on every
    shard (only its own: other consumers keep theirs as long as they need)."""
    purged = 0
    for db in platform.db.shards:
        async with db.begin() as conn:
            purged += await purge_processed(conn, older_than_ms, consumer=CONSUMER)
    return purged


@dataclass
class AnalyticsConsumer:
    """The running consumer: its subscription, the inbox purge, the GeoIP reader."""

    subscription: Subscription
    geoip: GeoIP
    purge: BackgroundTask | None = None

    async def stop(self) -> None:
        if self.purge is not None:
            await self.purge.stop()
        await self.subscription.stop()
        self.geoip.close()


def _purge_loop(platform: Platform) -> BackgroundTask:
    async def run() -> None:
        while True:
            cutoff_ms = int((platform.clock.time() - INBOX_RETENTION_SECONDS) * 1000)
            try:
                purged = await purge_inbox(platform, cutoff_ms)
                if purged:
                    log.info("shortener_inbox_purged", consumer=CONSUMER, records=purged)
            except Exception as exc:  # the next round tries again
                log.warning("shortener_inbox_purge_failed", error=repr(exc))
            await asyncio.sleep(PURGE_INTERVAL_SECONDS)  # real time: an operational cadence

    return BackgroundTask(run, name=f"{CONSUMER}-inbox-purge")


async def start(platform: Platform) -> list[AnalyticsConsumer]:
    """Start the analytics consumer unless ``SYSDESIGN_SHORTENER_ANALYTICS=0``.
    Expects the queue connected (the app's lifespan connects it first)."""
    if not analytics_enabled():
        log.info("shortener_analytics_off", setting=ANALYTICS_ENV)
        return []
    # ua-parser compiles its patterns on first use (a tenth of a second or more):
    # in a thread now rather than on the event loop at the first visit.
    await asyncio.to_thread(classify_user_agent, "Mozilla/5.0")
    geoip = open_geoip()
    try:
        subscription = platform.queue.subscribe(
            VISITS_TOPIC, CONSUMER, VisitCounter(platform, geoip)
        )
        await subscription.start()
    except BaseException:
        geoip.close()
        raise
    purge = _purge_loop(platform)
    purge.start()
    return [AnalyticsConsumer(subscription, geoip, purge)]


async def stop(running: list[AnalyticsConsumer]) -> None:
    for consumer in running:
        await consumer.stop()
