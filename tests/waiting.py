"""Waiting, in a test, for what other tasks bring about."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def eventually(condition: Callable[[], bool], *, timeout: float) -> None:
    """Let other tasks run until ``condition`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"still not true after {timeout} s")
        await asyncio.sleep(0.001)
