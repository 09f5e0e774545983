"""The registry of the fifteen systems of the statement of work.

A system is *built* when its package ``sysdesign.systems.<name>`` exists and
exposes ``create_app(platform) -> FastAPI``; it may also expose
``seed(platform, size, progress)`` for demo and benchmark data, in the package
or in its ``seed.py``. Until then it
is listed here, with its seed scenario, as not built yet.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sysdesign.platform.context import Platform

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SystemSpec:
    name: str
    title: str
    scenario: int
    seed_scenario: str
    summary: str
    module: str

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def built(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    @property
    def status(self) -> str:
        return "built" if self.built else "not built yet"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def create_app(self, platform: Platform) -> FastAPI:
        return self.load().create_app(platform)

    def seeder(self) -> Callable[[Platform, int, Progress], Awaitable[Any]] | None:
        """``seed`` of the package, or of its ``seed.py`` (imported only now)."""
        hook = getattr(self.load(), "seed", None)
        # Once imported, a package's ``seed.py`` is its attribute ``seed``: the module
        # shadows a function of that name, so the function is looked up inside it.
        if hook is None and importlib.util.find_spec(f"{self.module}.seed") is not None:
            hook = importlib.import_module(f"{self.module}.seed")
        if isinstance(hook, ModuleType):
            hook = getattr(hook, "seed", None)
        return hook


def _spec(
    name: str, title: str, scenario: int, seed: str, summary: str, module: str | None = None
) -> SystemSpec:
    return SystemSpec(name, title, scenario, seed, summary, module or f"sysdesign.systems.{name}")


SYSTEMS: tuple[SystemSpec, ...] = (
    _spec(
        "shop",
        "E-commerce",
        1,
        "Design Amazon: e-commerce platform",
        "Catalog, search, cart, checkout without overselling, payments, reviews.",
    ),
    _spec(
        "social",
        "Social network",
        2,
        "Design Facebook/Meta: social media platform",
        "Friends, posts, hybrid fan-out news feed, likes, real-time notifications.",
    ),
    _spec(
        "rides",
        "Ride sharing",
        3,
        "Design Uber: ride-sharing platform",
        "Driver locations, nearby matching without double dispatch, surge pricing.",
    ),
    _spec(
        "video",
        "Video streaming",
        4,
        "Design Netflix: video streaming platform",
        "Upload, multi-bitrate HLS encoding, streaming, profiles, stream limits.",
    ),
    _spec(
        "music",
        "Music streaming",
        5,
        "Design Spotify: music streaming platform",
        "Catalog, audio streaming, playlists, follows, weekly recommendations.",
    ),
    _spec(
        "careers",
        "Professional network",
        6,
        "Design LinkedIn: professional networking",
        "Profiles, connections, feed, jobs and applications, people you may know.",
    ),
    _spec(
        "messenger",
        "Messenger",
        7,
        "Design WhatsApp: messaging platform",
        "1:1 and group messages, receipts, offline delivery, media, end-to-end keys.",
    ),
    _spec(
        "shortener",
        "URL shortener",
        8,
        "Design a URL shortener (TinyURL, bit.ly)",
        "Short codes without collisions, cached redirects, click analytics.",
    ),
    _spec(
        "crawler",
        "Web crawler",
        9,
        "Design a web crawler",
        "Frontier, politeness per host, robots.txt, dedup, distributed workers.",
    ),
    _spec(
        "cache",
        "Distributed cache",
        10,
        "Design a distributed cache",
        "RESP cache nodes, LRU/LFU eviction, consistent hashing, replication.",
    ),
    _spec(
        "notifications",
        "Notification system",
        11,
        "Design a notification system",
        "Templates, channels, preferences, digests, priorities, retries.",
    ),
    _spec(
        "drive",
        "File storage and sync",
        12,
        "Design a file storage system (Dropbox)",
        "Chunked, deduplicated uploads, versions, sync between devices, sharing.",
    ),
    _spec(
        "chat",
        "Chat system",
        13,
        "Design a chat system",
        "Rooms, presence, typing, ordered delivery over WebSocket, history.",
    ),
    _spec(
        "ratelimiter",
        "Rate limiter",
        14,
        "Design a rate limiter",
        "Token bucket, GCRA, sliding windows, rules, the gateway's 429s.",
    ),
    _spec(
        "locks",
        "Distributed lock service",
        15,
        "Design a distributed lock service",
        "Leases, fencing tokens, fair waiting, leader election, five backends.",
    ),
)

BY_NAME: dict[str, SystemSpec] = {s.name: s for s in SYSTEMS}

# Platform services mounted beside the systems; always built.
PLATFORM_SERVICES: dict[str, str] = {"accounts": "sysdesign.platform.accounts.api"}


def get_system(name: str) -> SystemSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted([*BY_NAME, *PLATFORM_SERVICES]))
        raise KeyError(f"unknown system {name!r}; known: {known}") from None
