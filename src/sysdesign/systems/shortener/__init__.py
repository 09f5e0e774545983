"""Scenario 8, the URL shortener: short codes without collisions, cached redirects.

``/shortener/v1`` manages an owner's links (bearer token or API key), in
bulk and as CSV too, with QR codes and visit statistics; ``/s/{code}`` on
the root app redirects (``root_routes``: short URLs must be short), asking
for the password of a protected link; ``/shortener/`` is a small web page.

Configuration: ``config.ShortenerConfig`` (``SYSDESIGN_SHORTENER_*``), and
``SYSDESIGN_ADMIN_EMAILS`` for the accounts that may block links.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.routing import BaseRoute

    from sysdesign.platform.context import Platform
    from sysdesign.systems.shortener.domain import TargetPolicy


def policy_for(platform: Platform) -> TargetPolicy:
    """Where links may point, from the settings and the environment."""
    from sysdesign.systems.shortener.config import ShortenerConfig

    return ShortenerConfig.from_env().policy(platform.settings.public_url)


def create_app(platform: Platform) -> FastAPI:
    from sysdesign.blocks.ratelimit.memory import MemoryRateLimitStore
    from sysdesign.systems.shortener.api import create_app as build
    from sysdesign.systems.shortener.apikeys import ApiKeys
    from sysdesign.systems.shortener.config import ShortenerConfig
    from sysdesign.systems.shortener.limits import CreationLimiter
    from sysdesign.systems.shortener.service import LinkService

    config = ShortenerConfig.from_env()
    limiter = CreationLimiter(
        platform.ratelimit_store,
        MemoryRateLimitStore(platform.clock),
        per_user=config.per_user,
        per_ip=config.per_ip,
        per_anonymous_ip=config.per_anonymous_ip,
    )
    service = LinkService(platform, config.policy(platform.settings.public_url), limiter)
    return build(platform, service, config, ApiKeys(platform))


def root_routes(platform: Platform, app: FastAPI) -> list[BaseRoute]:
    """Routes for the root app: the redirect at ``/s/{code}``."""
    from sysdesign.systems.shortener.redirect import redirect_routes

    return list(redirect_routes(app.state.links))


__all__ = ["create_app", "root_routes"]
