"""The shortener's own settings, read from ``SYSDESIGN_SHORTENER_*`` when its app is built.

- ``SYSDESIGN_SHORTENER_BLOCKED_DOMAINS`` (none): comma-separated domains
  (with their subdomains) links may not point to.
- ``SYSDESIGN_SHORTENER_ANONYMOUS`` (``false``): whether ``POST /v1/links``
  works without credentials.
- ``SYSDESIGN_SHORTENER_CREATE_LIMIT_USER`` (``1000/minute,20000/day``): links
  one account (or its API keys) may create.
- ``SYSDESIGN_SHORTENER_CREATE_LIMIT_IP`` (``2000/minute``): links one client
  address may create, signed in or not.
- ``SYSDESIGN_SHORTENER_CREATE_LIMIT_ANONYMOUS`` (``10/minute,100/day``): links
  one address may create without signing in.

The analytics consumer reads two more (``workers.py``):
``SYSDESIGN_SHORTENER_ANALYTICS`` (on; ``0`` or ``false`` turns the consumer
off in this process) and ``SYSDESIGN_SHORTENER_GEOIP_DB`` (an ``.mmdb``
file giving visits a country; none: ``unknown``).

A limit list is ``N/unit`` items joined by commas (``off`` for none); a bulk
request or an import costs one per link. A value that does not parse stops
start-up with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sysdesign.blocks.ratelimit.base import Limit
from sysdesign.blocks.ratelimit.rules import parse_limit
from sysdesign.platform.envflag import env_flag
from sysdesign.platform.errors import ConfigurationError
from sysdesign.systems.shortener.domain import TargetPolicy

PREFIX = "SYSDESIGN_SHORTENER_"


def parse_limits(name: str, text: str) -> tuple[Limit, ...]:
    """``"1000/minute,20000/day"`` as limits; ``"off"`` as none."""
    text = text.strip()
    if text.lower() in ("off", "none", ""):
        return ()
    try:
        return tuple(parse_limit(part.strip()) for part in text.split(","))
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ShortenerConfig:
    blocked_domains: frozenset[str] = frozenset()
    anonymous_creation: bool = False
    per_user: tuple[Limit, ...] = field(default_factory=tuple)
    per_ip: tuple[Limit, ...] = field(default_factory=tuple)
    per_anonymous_ip: tuple[Limit, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ShortenerConfig:
        env = os.environ if environ is None else environ

        def get(key: str, default: str) -> tuple[str, str]:
            return PREFIX + key, env.get(PREFIX + key, default)

        raw = env.get(PREFIX + "BLOCKED_DOMAINS", "")
        blocked = {d.strip().lower().strip(".") for d in raw.split(",") if d.strip()}
        return cls(
            blocked_domains=frozenset(blocked),
            anonymous_creation=env_flag(env, PREFIX + "ANONYMOUS", False),
            per_user=parse_limits(*get("CREATE_LIMIT_USER", "1000/minute,20000/day")),
            per_ip=parse_limits(*get("CREATE_LIMIT_IP", "2000/minute")),
            per_anonymous_ip=parse_limits(*get("CREATE_LIMIT_ANONYMOUS", "10/minute,100/day")),
        )

    def policy(self, public_url: str | None) -> TargetPolicy:
        """Own hosts from ``public_url``; the blocked domains."""
        own = set()
        if public_url:
            host = urlsplit(public_url).hostname
            if host:
                own.add(host.lower())
        return TargetPolicy(frozenset(own), self.blocked_domains)
