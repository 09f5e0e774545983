"""The server-rendered page at ``/shortener/`` (placeholder: the page lands here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sysdesign.platform.context import Platform
    from sysdesign.systems.shortener.service import LinkService


def install(app: FastAPI, platform: Platform, links: LinkService) -> None:
    return None
