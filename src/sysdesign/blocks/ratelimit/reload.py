"""Rules from a YAML file, reloaded when the file changes, without a restart.

A change is noticed by polling the file's modification time and size. An
invalid new version is refused with its error logged and kept for the
rules API to show; the rules in force stay as they were until a valid
version arrives.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import structlog

from sysdesign.blocks.ratelimit.limiter import RateLimiter
from sysdesign.blocks.ratelimit.rules import Policy, RulesError, load_policy
from sysdesign.platform.background import BackgroundTask

log = structlog.get_logger("sysdesign.ratelimit")

DEFAULT_RULES = "default_rules.yaml"


def default_rules_text() -> str:
    return resources.files("sysdesign.blocks.ratelimit").joinpath(DEFAULT_RULES).read_text()


class RulesSource:
    """Where the rules come from: a file, or the built-in defaults when ``path`` is None."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.last_error: str | None = None
        self._stamp: tuple[float, int] | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"built-in {DEFAULT_RULES}"

    def _read(self) -> tuple[str, tuple[float, int] | None]:
        if self.path is None:
            return default_rules_text(), None
        try:
            stat = self.path.stat()
            return self.path.read_text(), (stat.st_mtime, stat.st_size)
        except OSError as exc:
            raise RulesError(f"{self.path}: cannot read the rules file: {exc.strerror}") from None

    def load(self) -> Policy:
        """The rules now; ``RulesError`` when the source is invalid (``last_error`` keeps it)."""
        try:
            text, stamp = self._read()
        except RulesError as exc:
            self.last_error = str(exc)
            raise
        # Remember this version even when it is broken: it is not retried until it changes.
        self._stamp = stamp
        try:
            policy = load_policy(text, source=self.name)
        except RulesError as exc:
            self.last_error = str(exc)
            raise
        self.last_error = None
        return policy

    def changed(self) -> bool:
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
        except OSError:
            return self._stamp is not None
        return (stat.st_mtime, stat.st_size) != self._stamp

    def reload_into(self, limiter: RateLimiter) -> int:
        """Load and install the rules; returns how many. On ``RulesError`` the
        limiter keeps its rules."""
        policy = self.load()
        limiter.set_policy(policy)
        log.info("ratelimit.rules_loaded", source=self.name, rules=len(policy.rules))
        return len(policy.rules)


class RulesWatcher:
    def __init__(self, source: RulesSource, limiter: RateLimiter, interval: float) -> None:
        self.source = source
        self.limiter = limiter
        self.interval = interval
        self._task = BackgroundTask(self._watch, "ratelimit-rules")

    def start(self) -> None:
        if self.source.path is not None:  # the built-in rules never change
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.source.changed():
                continue
            try:
                self.source.reload_into(self.limiter)
            except RulesError as exc:
                log.error("ratelimit.rules_invalid", source=self.source.name, error=str(exc))
