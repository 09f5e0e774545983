"""``Platform``: the one place that turns settings into live objects.

Backends are built on first use or in ``start()``, never at import. Tests
pass a ``ManualClock`` and their own settings; nothing is global.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from sysdesign.platform.accounts.security import Passwords, TokenService
from sysdesign.platform.accounts.service import AccountService
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.db import ShardRouter
from sysdesign.platform.errors import BackendUnavailable, ConfigurationError
from sysdesign.platform.http import CursorCodec
from sysdesign.platform.idempotency import IdempotencyStore
from sysdesign.platform.ids import SnowflakeGenerator
from sysdesign.platform.migrations import migrate_all
from sysdesign.platform.observability import DbMetrics, HttpMetrics
from sysdesign.platform.uow import UnitOfWork
from sysdesign.settings import Settings

if TYPE_CHECKING:
    from sysdesign.blocks.cache import Cache
    from sysdesign.blocks.lock import LockService
    from sysdesign.blocks.queue import Queue
    from sysdesign.blocks.queue.relay import OutboxRelay
    from sysdesign.blocks.ratelimit.base import RateLimitStore
    from sysdesign.blocks.ratelimit.limiter import RateLimiter
    from sysdesign.blocks.ratelimit.reload import RulesSource, RulesWatcher
    from sysdesign.blocks.realtime import Realtime
    from sysdesign.platform.accounts.throttle import LoginThrottle

ReadinessCheck = Callable[[], Awaitable[None]]


class Platform:
    def __init__(self, settings: Settings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.ids = SnowflakeGenerator(self.settings.worker_id)
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self.http_metrics = HttpMetrics(self.metrics_registry)
        self.db_metrics = DbMetrics(self.metrics_registry)
        self._readiness: dict[str, ReadinessCheck] = {}
        self._started = False

    # --- built lazily ---------------------------------------------------------------

    @cached_property
    def db(self) -> ShardRouter:
        router = ShardRouter.from_urls(self.settings.database_urls)
        self.db_metrics.watch(router)
        for database in router.shards:
            self.add_readiness_check(f"database:{database.name}", database.ping)
        return router

    @cached_property
    def secret(self) -> str:
        return self.settings.signing_secret()

    @cached_property
    def cursors(self) -> CursorCodec:
        return CursorCodec(self.secret)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.secret, self.settings.access_token_ttl_seconds, self.clock)

    @cached_property
    def passwords(self) -> Passwords:
        s = self.settings
        return Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)

    @cached_property
    def accounts(self) -> AccountService:
        s = self.settings
        return AccountService(
            db=self.db.primary,
            ids=self.ids,
            clock=self.clock,
            passwords=self.passwords,
            tokens=self.tokens,
            refresh_ttl_seconds=s.refresh_token_ttl_seconds,
            throttle=self.login_throttle,
        )

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        from sysdesign.blocks.ratelimit.base import Limit
        from sysdesign.blocks.ratelimit.memory import MemoryRateLimitStore
        from sysdesign.platform.accounts.throttle import LoginThrottle

        s = self.settings
        window = s.login_failure_window_seconds
        return LoginThrottle(
            self.ratelimit_store,
            MemoryRateLimitStore(self.clock),
            per_email=Limit(s.login_failures_per_email, window),
            per_ip=Limit(s.login_failures_per_ip, window),
        )

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        return IdempotencyStore(self.db.primary, self.clock, self.settings.idempotency_ttl_seconds)

    @cached_property
    def queue(self) -> Queue:
        """The queue block on ``queue_url``. Its visibility timeouts, leases and
        backoffs are operational and run on real time, whatever ``clock`` is."""
        from sysdesign.blocks.queue import open_queue

        queue = open_queue(self.settings.url("queue"))
        self.add_readiness_check("queue", queue.ping)
        return queue

    @cached_property
    def cache(self) -> Cache:
        """The cache block on ``cache_url``, not yet connected: ``start()``
        connects it once something has built it (the cache system does when
        its app is created), or call ``connect_cache()``. The memory backend
        expires keys by ``clock``; Redis by its own."""
        from sysdesign.blocks.cache import open_cache

        cache = open_cache(self.settings.url("cache"), clock=self.clock)
        self.add_readiness_check("cache", cache.ping)
        return cache

    @cached_property
    def locks(self) -> LockService:
        """The lock block on ``lock_url``, not yet connected: ``start()``
        connects it once something has built it (the locks system does when
        its app is created), or call ``connect_locks()``. The sqlite and
        memory stores expire leases by ``clock``; servers by their own."""
        from urllib.parse import urlsplit

        from sysdesign.blocks.lock import LockService, open_store

        url = self.settings.url("lock")
        if urlsplit(url).scheme == "redlock":
            # Redlock is a lock without a queue: no fair waiting, no shared modes,
            # no listing of holders and waiters, which the locks service offers.
            raise ConfigurationError(
                "SYSDESIGN_LOCK_URL: redlock:// is a library lock (open_redlock), not a store "
                "the locks service can run on: use sqlite://, postgresql://, redis:// or etcd://"
            )
        locks = LockService(open_store(url, clock=self.clock))
        self.add_readiness_check("locks", locks.ping)
        return locks

    @cached_property
    def realtime(self) -> Realtime:
        """The realtime block on ``realtime_url``, not yet connected: ``start()``
        connects it once something has built it, or call ``connect_realtime()``."""
        from sysdesign.blocks.realtime import open_realtime

        realtime = open_realtime(self.settings.url("realtime"), clock=self.clock)
        self.add_readiness_check("realtime", realtime.ping)
        return realtime

    @cached_property
    def relay(self) -> OutboxRelay:
        from sysdesign.blocks.queue.relay import OutboxRelay

        return OutboxRelay(self.db, self.queue, clock=self.clock)

    @cached_property
    def ratelimit_store(self) -> RateLimitStore:
        from sysdesign.blocks.ratelimit import open_store

        store = open_store(self.settings.url("ratelimit"), clock=self.clock)
        self.add_readiness_check("ratelimit", store.ping)
        return store

    @cached_property
    def ratelimit_rules(self) -> RulesSource:
        from sysdesign.blocks.ratelimit.reload import RulesSource

        return RulesSource(self.settings.ratelimit_rules)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        """The gateway's limiter: the rules on the ratelimit store, and a
        per-process memory store for rules that fall back to local limits."""
        from sysdesign.blocks.ratelimit.limiter import RateLimiter
        from sysdesign.blocks.ratelimit.memory import MemoryRateLimitStore
        from sysdesign.blocks.ratelimit.rules import RulesError

        try:
            policy = self.ratelimit_rules.load()
        except RulesError as exc:
            raise ConfigurationError(str(exc)) from None
        limiter = RateLimiter(
            self.ratelimit_store,
            policy.rules,
            fallback=MemoryRateLimitStore(self.clock),
            registry=self.metrics_registry,
        )
        limiter.set_policy(policy)
        return limiter

    @cached_property
    def ratelimit_watcher(self) -> RulesWatcher:
        from sysdesign.blocks.ratelimit.reload import RulesWatcher

        return RulesWatcher(
            self.ratelimit_rules, self.rate_limiter, self.settings.ratelimit_reload_seconds
        )

    def unit_of_work(self, shard_key: object | None = None) -> UnitOfWork:
        """A transaction on the shard owning ``shard_key`` (the primary when ``None``)."""
        db = self.db.primary if shard_key is None else self.db.for_key(shard_key)
        wake = self.relay.wake if "relay" in self.__dict__ else None
        return UnitOfWork(db, self.ids, self.clock, on_events_committed=wake)

    # --- lifecycle ------------------------------------------------------------------

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._readiness[name] = check

    async def start(self) -> None:
        """Connect to every configured backend; migrate the embedded database."""
        if self._started:
            return
        self.settings.ensure_data_dir()
        _ = self.secret
        for database in self.db.shards:
            try:
                await database.ping(timeout=10)
            except Exception as exc:
                raise BackendUnavailable(
                    f"database {database.safe_url} is unreachable: {exc.__class__.__name__}: {exc}"
                ) from None
        if self.settings.should_auto_migrate:
            await migrate_all(self.db)
        if self.settings.outbox_relay:
            await self.connect_queue()
            self.relay.start()
        # The login throttle counts on the ratelimit store even with the gateway off.
        await self._connect("ratelimit store", self.ratelimit_store.connect)
        if self.settings.ratelimit_enabled:
            _ = self.rate_limiter  # a broken rules file stops start-up with its error
            self.ratelimit_watcher.start()
        # Only a process that serves something using the cache has built it by now;
        # the others neither connect to it nor fail when it is down.
        if "cache" in self.__dict__:
            await self.connect_cache()
        if "locks" in self.__dict__:
            await self.connect_locks()
        if "realtime" in self.__dict__:
            await self.connect_realtime()
        self._started = True

    @staticmethod
    async def _connect(what: str, connect: Callable[[], Awaitable[None]]) -> None:
        try:
            await connect()
        except (BackendUnavailable, ConfigurationError):
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"{what} is unreachable: {exc.__class__.__name__}: {exc}"
            ) from None

    async def connect_queue(self) -> Queue:
        """The queue, connected; one clear error when its backend is unreachable."""
        queue = self.queue
        await self._connect(f"queue {queue.name}", queue.connect)
        return queue

    async def connect_cache(self) -> Cache:
        """The cache, connected; one clear error when its backend is unreachable."""
        cache = self.cache
        await self._connect(f"cache {cache.name}", cache.connect)
        return cache

    async def connect_locks(self) -> LockService:
        """The locks, connected; one clear error when their store is unreachable."""
        locks = self.locks
        await self._connect(f"lock store {locks.store.name}", locks.connect)
        return locks

    async def connect_realtime(self) -> Realtime:
        """The realtime block, connected; one clear error when its server is unreachable."""
        realtime = self.realtime
        await self._connect(f"realtime {realtime.name}", realtime.connect)
        return realtime

    async def readiness(self, timeout: float = 3.0) -> dict[str, str]:
        """``{check: "ok" | error}`` for every configured backend."""
        _ = self.db  # registers the database checks

        async def run(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), timeout)
                return "ok"
            except Exception as exc:
                detail = str(exc)
                return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__

        names = list(self._readiness)
        results = await asyncio.gather(*(run(self._readiness[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        if "ratelimit_watcher" in self.__dict__:
            await self.ratelimit_watcher.stop()
        if "ratelimit_store" in self.__dict__:
            await self.ratelimit_store.close()
        if "cache" in self.__dict__:
            await self.cache.close()
        if "locks" in self.__dict__:
            await self.locks.close()
        if "realtime" in self.__dict__:
            await self.realtime.close()
        if "relay" in self.__dict__:
            await self.relay.stop()
        if "queue" in self.__dict__:
            await self.queue.close()
        if "db" in self.__dict__:
            await self.db.dispose()
        self._started = False
