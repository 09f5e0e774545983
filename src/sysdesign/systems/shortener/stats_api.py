"""``GET /v1/links/{code}/stats`` (placeholder: the analytics endpoint lands here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sysdesign.platform.context import Platform
    from sysdesign.systems.shortener.service import LinkService


def install(app: FastAPI, platform: Platform, links: LinkService) -> None:
    return None
