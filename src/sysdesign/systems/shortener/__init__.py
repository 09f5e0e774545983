"""Scenario 8, the URL shortener: short codes without collisions, cached redirects.

``/shortener/v1`` manages a signed-in owner's links; ``/s/{code}`` on the
root app redirects (``root_routes``: short URLs must be short). Built so far:
the links core (codes, aliases, validation, expiry, visit limits, cached
redirects, visit events). Not yet: the analytics consumer and stats, QR
codes, the web page, bulk import, API keys, admin disable, per-user limits,
the benchmark.

Configuration: ``SYSDESIGN_SHORTENER_BLOCKED_DOMAINS``, a comma-separated list
of domains (with their subdomains) links may not point to.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sysdesign.systems.shortener.domain import TargetPolicy

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.routing import BaseRoute

    from sysdesign.platform.context import Platform

BLOCKED_DOMAINS_ENV = "SYSDESIGN_SHORTENER_BLOCKED_DOMAINS"


def policy_for(platform: Platform) -> TargetPolicy:
    """Own hosts from ``public_url``; blocked domains from the environment."""
    from urllib.parse import urlsplit

    own = set()
    if platform.settings.public_url:
        host = urlsplit(platform.settings.public_url).hostname
        if host:
            own.add(host.lower())
    raw = os.environ.get(BLOCKED_DOMAINS_ENV, "")
    blocked = {d.strip().lower().strip(".") for d in raw.split(",") if d.strip()}
    return TargetPolicy(frozenset(own), frozenset(blocked))


def create_app(platform: Platform) -> FastAPI:
    from sysdesign.systems.shortener.api import create_app as build
    from sysdesign.systems.shortener.service import LinkService

    return build(platform, LinkService(platform, policy_for(platform)))


def root_routes(platform: Platform, app: FastAPI) -> list[BaseRoute]:
    """Routes for the root app: the redirect at ``/s/{code}``."""
    from sysdesign.systems.shortener.redirect import redirect_routes

    return list(redirect_routes(app.state.links))


__all__ = ["create_app", "root_routes"]
