"""Scenario 11, the notification system: one call, every channel, once.

``POST /notifications/v1/events`` (admins; other systems use
``client.NotificationsClient``) records an event with its fan-out in one
transaction; the fan-out consumer turns it into one message per recipient
and channel (in-app inbox, e-mail, SMS, signed webhook); delivery consumers,
one per priority so that bulk never delays critical, apply preferences,
quiet hours, digests and throttles, render the template for the recipient's
locale and send, retrying with backoff through the scheduler and
dead-lettering what keeps failing. Users manage their addresses,
preferences, topics and inbox (with a live Server-Sent Events stream) under
``/notifications/v1/me`` and ``/inbox``.

Configuration: ``config.NotifyConfig`` (``SYSDESIGN_NOTIFY_*``), and
``SYSDESIGN_ADMIN_EMAILS`` for the accounts that may trigger events and
manage templates and topics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sysdesign.platform.context import Platform


def create_app(platform: Platform) -> FastAPI:
    from sysdesign.systems.notifications.api import create_app as build
    from sysdesign.systems.notifications.config import NotifyConfig
    from sysdesign.systems.notifications.service import NotificationService
    from sysdesign.systems.notifications.workers import build_senders

    config = NotifyConfig.from_env(platform.settings.data_dir)
    _ = platform.realtime  # built now, so that the platform connects it at start-up
    # Built now so that a bad sender URL stops start-up with one line.
    senders = build_senders(config, platform.clock) if config.workers else None
    return build(platform, NotificationService(platform), config, senders)


__all__ = ["create_app"]
