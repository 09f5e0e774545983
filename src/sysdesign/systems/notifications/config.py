"""The notification system's settings, read from ``SYSDESIGN_NOTIFY_*`` when its app is built.

- ``SYSDESIGN_NOTIFY_EMAIL_URL`` (``file://<data_dir>/outbox/email``): where
  e-mail goes: ``smtp://[user:pass@]host:port?from=...`` or a directory that
  receives one ``.eml`` file per message.
- ``SYSDESIGN_NOTIFY_SMS_URL`` (``file://<data_dir>/outbox/sms.jsonl``): the
  SMS provider: ``twilio://SID:TOKEN@api.twilio.com?from=...`` or a JSON-lines file.
- ``SYSDESIGN_NOTIFY_MAX_ATTEMPTS`` (5): sends of one message before it fails
  and goes to ``notifications.deliver.dlq``.
- ``SYSDESIGN_NOTIFY_BACKOFF_SECONDS`` (2): the first retry's delay; each next
  one doubles, up to ``SYSDESIGN_NOTIFY_BACKOFF_MAX_SECONDS`` (3600), with jitter.
- ``SYSDESIGN_NOTIFY_WORKERS`` (on): ``0`` runs no fan-out, delivery or
  scheduler in this process (a web-only process).
- ``SYSDESIGN_NOTIFY_SCHEDULER_SECONDS`` (0.5): how often the scheduler
  compares the next due time it knows of with the clock (no query when nothing is due).
- ``SYSDESIGN_NOTIFY_SWEEP_SECONDS`` (60): how often it reads the database
  anyway, for rows other processes scheduled and messages whose worker died.
- ``SYSDESIGN_NOTIFY_VISIBILITY_SECONDS`` (120): how long a message may stay
  claimed by a worker before the scheduler hands it to another.
- ``SYSDESIGN_NOTIFY_RETENTION_DAYS`` (30): messages in a final status (sent,
  delivered, failed, suppressed) not updated for this long are deleted, then
  events older than this whose fan-out is done and that have no message left
  (their idempotency keys go with them). ``0`` keeps them forever. Messages
  still ``scheduled``, ``queued`` or ``sending`` are kept whatever their age.
- ``SYSDESIGN_NOTIFY_INBOX_RETENTION_DAYS`` (90): inbox items created longer
  ago are deleted, read or not; ``0`` keeps them forever.
- ``SYSDESIGN_NOTIFY_RETENTION_SECONDS`` (3600): how often the retention job
  (``retention.Retention``) runs.
- ``SYSDESIGN_NOTIFY_WEBHOOK_ALLOW_NETWORKS`` (empty): networks webhooks may
  reach although they are not public (loopback, private, link-local), as
  comma-separated CIDRs or addresses such as ``10.0.0.0/8,127.0.0.1``; by
  default webhooks reach only public addresses.
- ``SYSDESIGN_NOTIFY_WEBHOOK_HOST_CONCURRENCY`` (8): webhook requests at once
  to one host, per process; the others wait their turn.

A value that does not parse stops start-up with one line naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sysdesign.blocks.notify.netguard import Network, parse_networks
from sysdesign.platform.envflag import env_flag
from sysdesign.platform.errors import ConfigurationError

PREFIX = "SYSDESIGN_NOTIFY_"
MAX_RETENTION_DAYS = 36_500.0  # a hundred years; more is "forever", which is 0


def _number(
    env: Mapping[str, str], key: str, default: float, *, minimum: float,
    maximum: float | None = None,
) -> float:  # fmt: skip
    raw = env.get(PREFIX + key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{key} must be a number, got {raw!r}") from None
    if not math.isfinite(value):  # float() also reads "nan" and "inf"
        raise ConfigurationError(f"{PREFIX}{key} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigurationError(f"{PREFIX}{key} must be at least {minimum:g}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{PREFIX}{key} must be at most {maximum:g}, got {raw!r}")
    return value


def _networks(env: Mapping[str, str], key: str) -> tuple[Network, ...]:
    """Comma-separated networks or addresses (an address alone is its /32 or /128)."""
    try:
        return tuple(dict.fromkeys(parse_networks(env.get(PREFIX + key, ""))))
    except ValueError as exc:
        raise ConfigurationError(
            f"{PREFIX}{key}: {exc}; use networks or addresses such as 10.0.0.0/8 or 127.0.0.1"
        ) from None


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    email_url: str
    sms_url: str
    max_attempts: int = 5
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    workers: bool = True
    scheduler_seconds: float = 0.5
    sweep_seconds: float = 60.0
    visibility_seconds: float = 120.0
    retention_days: float = 30.0
    inbox_retention_days: float = 90.0
    retention_seconds: float = 3600.0
    webhook_allow_networks: tuple[Network, ...] = ()
    webhook_host_concurrency: int = 8

    @classmethod
    def from_env(cls, data_dir: Path, environ: Mapping[str, str] | None = None) -> NotifyConfig:
        env = os.environ if environ is None else environ
        base = data_dir.expanduser().resolve() / "outbox"
        return cls(
            email_url=env.get(PREFIX + "EMAIL_URL", "").strip() or f"file://{base / 'email'}",
            sms_url=env.get(PREFIX + "SMS_URL", "").strip() or f"file://{base / 'sms.jsonl'}",
            max_attempts=int(_number(env, "MAX_ATTEMPTS", 5, minimum=1)),
            backoff_seconds=_number(env, "BACKOFF_SECONDS", 2.0, minimum=0.0),
            backoff_max_seconds=_number(env, "BACKOFF_MAX_SECONDS", 3600.0, minimum=0.0),
            workers=env_flag(env, PREFIX + "WORKERS", True),
            scheduler_seconds=_number(env, "SCHEDULER_SECONDS", 0.5, minimum=0.001),
            sweep_seconds=_number(env, "SWEEP_SECONDS", 60.0, minimum=0.01),
            visibility_seconds=_number(env, "VISIBILITY_SECONDS", 120.0, minimum=0.01),
            retention_days=_number(
                env, "RETENTION_DAYS", 30.0, minimum=0.0, maximum=MAX_RETENTION_DAYS
            ),
            inbox_retention_days=_number(
                env, "INBOX_RETENTION_DAYS", 90.0, minimum=0.0, maximum=MAX_RETENTION_DAYS
            ),
            retention_seconds=_number(env, "RETENTION_SECONDS", 3600.0, minimum=0.01),
            webhook_allow_networks=_networks(env, "WEBHOOK_ALLOW_NETWORKS"),
            webhook_host_concurrency=int(
                _number(env, "WEBHOOK_HOST_CONCURRENCY", 8, minimum=1, maximum=1000)
            ),
        )
