"""The notification system's background work, started in its app's lifespan:
the fan-out consumers, the delivery consumers (one per priority) and the
scheduler. ``SYSDESIGN_NOTIFY_WORKERS=0`` runs none of them in a process.

Topics are created here with their partition counts before anything is
published to them: critical deliveries get more partitions and more
concurrency than normal and bulk ones, and fan-out needs few (each step is
a thousand recipients).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sysdesign.blocks.notify.base import Channel, Priority, Sender
from sysdesign.systems.notifications.delivery import BATCH as DELIVERY_BATCH
from sysdesign.systems.notifications.delivery import Delivery
from sysdesign.systems.notifications.domain import deliver_topic, fanout_topic
from sysdesign.systems.notifications.fanout import CONSUMER as FANOUT_GROUP
from sysdesign.systems.notifications.fanout import FanOut
from sysdesign.systems.notifications.retention import Retention
from sysdesign.systems.notifications.scheduler import Scheduler

if TYPE_CHECKING:
    from sysdesign.blocks.queue import Subscription
    from sysdesign.platform.clock import Clock
    from sysdesign.platform.context import Platform
    from sysdesign.systems.notifications.config import NotifyConfig

DELIVERY_GROUP = "notifications-delivery"
# (partitions, concurrency) per priority: critical has room even when the others are busy.
DELIVERY_CAPACITY = {Priority.CRITICAL: (8, 8), Priority.NORMAL: (4, 4), Priority.BULK: (4, 4)}
FANOUT_PARTITIONS = 2


def build_senders(config: NotifyConfig, clock: Clock | None = None) -> dict[Channel, Sender]:
    """The channels' senders from the configuration (``ConfigurationError`` for a bad URL)."""
    from sysdesign.blocks.notify.email import email_sender
    from sysdesign.blocks.notify.sms import sms_sender
    from sysdesign.blocks.notify.webhook import WebhookSender

    return {
        Channel.EMAIL: email_sender(config.email_url, clock=clock),
        Channel.SMS: sms_sender(config.sms_url, clock=clock),
        Channel.WEBHOOK: WebhookSender(
            clock=clock,
            allow_networks=config.webhook_allow_networks,
            host_concurrency=config.webhook_host_concurrency,
        ),
    }


@dataclass
class Workers:
    scheduler: Scheduler
    delivery: Delivery
    subscriptions: list[Subscription] = field(default_factory=list)
    retention: Retention | None = None

    async def stop(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
        await self.scheduler.stop()
        for subscription in self.subscriptions:
            await subscription.stop()


async def start(
    platform: Platform, config: NotifyConfig, senders: Mapping[Channel, Sender]
) -> Workers:
    """Start every consumer and the scheduler; expects the queue connected."""
    queue = platform.queue
    scheduler = Scheduler(platform, config)
    delivery = Delivery(platform, config, senders, scheduler)
    workers = Workers(scheduler, delivery)
    fanout = FanOut(platform, scheduler)
    # Critical events skip the outbox's backlog of bulk ones on their way to the queue.
    platform.relay.expedite(fanout_topic(Priority.CRITICAL), deliver_topic(Priority.CRITICAL))
    try:
        for priority in Priority:
            partitions, concurrency = DELIVERY_CAPACITY[priority]
            await queue.create_topic(fanout_topic(priority), FANOUT_PARTITIONS)
            await queue.create_topic(deliver_topic(priority), partitions)
            for sub in (
                queue.subscribe(fanout_topic(priority), FANOUT_GROUP, fanout, concurrency=2),
                queue.subscribe_batch(
                    deliver_topic(priority),
                    DELIVERY_GROUP,
                    delivery,
                    concurrency=concurrency,
                    # A batch's sends may all be slow: as long as a message's own claim.
                    visibility_timeout=config.visibility_seconds,
                    batch_size=DELIVERY_BATCH,
                ),
            ):
                await sub.start()
                workers.subscriptions.append(sub)
        await scheduler.run_once()  # what was due while no process ran
        scheduler.start()
        workers.retention = Retention(platform, config)
        workers.retention.start()
    except BaseException:
        await workers.stop()
        raise
    return workers
