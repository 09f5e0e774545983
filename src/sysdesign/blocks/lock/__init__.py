"""The ``lock`` block: leases with fencing tokens, fair queues, read/write locks,
semaphores and leader election, over one ``TicketStore`` per backend.

``open_locks(url)`` picks the backend from the URL's scheme:

- ``sqlite:///path/locks.db``: the embedded default, shared by the processes
  of one host;
- ``memory://``: this process only (tests, one-process tools);
- ``postgresql://user@host/db``: ticket rows with expiry by the database's
  clock, LISTEN/NOTIFY to wake waiters (``postgres.py``);
- ``redis://host:6379/0?prefix=NAME``: one Lua script per operation, expiry
  by the server's clock, pub/sub to wake waiters (``redis.py``);
- ``etcd://h1:2379,h2:2379?prefix=/locks/``: a ticket is a key on its own
  lease, its token the key's create revision, each waiter watching the
  ticket ahead of it (``etcd.py``);
- ``redlock://h1:6379,h2:6379,h3:6379``: ``Redlock`` over independent Redis
  servers, exclusive locks only (``redlock.py`` says what it does not promise).

``base.py`` says what a ticket store guarantees; ``locks.py`` builds the
locks on it, the same for every backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sysdesign.blocks.lock.base import (
    LeaseLost,
    LockConflict,
    LockError,
    LockTimeout,
    LockUnavailable,
    Mode,
    Ticket,
    TicketStore,
)
from sysdesign.blocks.lock.fencing import FencedFile, FencedResource, StaleToken
from sysdesign.blocks.lock.locks import Held, Lease, LockService, LockState
from sysdesign.platform.clock import Clock
from sysdesign.platform.errors import ConfigurationError

if TYPE_CHECKING:
    from sysdesign.blocks.lock.redlock import Redlock

__all__ = [
    "FencedFile",
    "FencedResource",
    "Held",
    "Lease",
    "LeaseLost",
    "LockConflict",
    "LockError",
    "LockService",
    "LockState",
    "LockTimeout",
    "LockUnavailable",
    "Mode",
    "StaleToken",
    "Ticket",
    "TicketStore",
    "open_locks",
    "open_redlock",
    "open_store",
]


def open_store(url: str, *, clock: Clock | None = None) -> TicketStore:
    """The ticket store named by ``url``, not yet connected. ``clock`` drives
    expiry on the memory and sqlite stores. ``ConfigurationError`` for an
    unknown scheme or a bad URL."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from sysdesign.blocks.lock.memory import MemoryTicketStore

        return MemoryTicketStore(clock)
    if scheme == "sqlite":
        from sysdesign.blocks.lock.sqlite import SqliteTicketStore
        from sysdesign.platform.sqlitefile import path_from_url

        return SqliteTicketStore(path_from_url(url), clock)
    backends = {
        "postgresql": ("postgres", "PostgresTicketStore", "postgres"),
        "postgresql+asyncpg": ("postgres", "PostgresTicketStore", "postgres"),
        "postgres": ("postgres", "PostgresTicketStore", "postgres"),
        "redis": ("redis", "RedisTicketStore", "redis"),
        "rediss": ("redis", "RedisTicketStore", "redis"),
        "etcd": ("etcd", "EtcdTicketStore", ""),
    }
    if scheme in backends:
        module_name, class_name, extra = backends[scheme]
        try:
            module = importlib.import_module(f"sysdesign.blocks.lock.{module_name}")
        except ImportError as exc:
            if extra:
                raise ConfigurationError(
                    f"the {scheme} lock store needs its driver: pip install 'sysdesign[{extra}]'"
                    f" ({exc})"
                ) from None
            raise
        store: TicketStore = getattr(module, class_name).from_url(url)
        return store
    raise ConfigurationError(
        f"unsupported lock URL scheme {scheme!r}: use sqlite://, memory://, postgresql://, "
        "redis:// or etcd:// (redlock:// is the Redlock class, see redlock.py)"
    )


def open_locks(
    url: str, *, clock: Clock | None = None, owner: str | None = None
) -> LockService | Redlock:
    """Locks on the store named by ``url`` (see ``open_store``); for
    ``redlock://`` the ``Redlock`` (exclusive locks only, see ``open_redlock``)."""
    if urlsplit(url).scheme == "redlock":
        return open_redlock(url, clock=clock, owner=owner)
    return LockService(open_store(url, clock=clock), owner=owner)


def open_redlock(url: str, *, clock: Clock | None = None, owner: str | None = None) -> Redlock:
    """Redlock over the servers of ``redlock://h1:6379,h2:6379,h3:6379?socket_timeout=S``,
    not yet connected. ``ConfigurationError`` for a bad URL, fewer than three
    servers, or a missing driver."""
    try:
        from sysdesign.blocks.lock.redlock import Redlock
    except ImportError as exc:
        raise ConfigurationError(
            f"redlock needs its driver: pip install 'sysdesign[redis]' ({exc})"
        ) from None
    return Redlock.from_url(url, owner=owner, clock=clock)
