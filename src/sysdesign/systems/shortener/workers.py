"""The shortener's queue consumers (placeholder: the analytics consumer lands here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform


async def start(platform: Platform) -> list[Any]:
    return []


async def stop(running: list[Any]) -> None:
    return None
