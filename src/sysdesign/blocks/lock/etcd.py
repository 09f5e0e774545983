"""``EtcdTicketStore``: the lock queues as keys of an etcd cluster, each on its own lease.

``etcd://h1:2379,h2:2379,h3:2379?prefix=/sysdesign/locks/&timeout=5&watches=64``
(``etcds://`` for TLS): the endpoints of one cluster, tried in turn (see
``etcdapi.EtcdClient``); ``prefix`` is the key space the store owns,
``timeout`` the seconds one request may take on one endpoint, ``watches``
how many waits of this store may hold a watch stream at once (one HTTP
connection each; a wait beyond them polls instead).

Layout: a ticket is the key ``<prefix><name>/<ticket id>`` (name and id
percent-encoded, so a ``/`` in a name cannot reach into another name's
queue), attached to a lease of its own; its value is JSON of the mode,
permits, owner, the TTL asked for and the estimated expiry. A name's queue
is every key under ``<prefix><name>/``, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import orjson

from sysdesign.blocks.lock.base import LockError, LockUnavailable, Mode, Ticket, TicketStore
from sysdesign.blocks.lock.etcdapi import (
    Compare,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    KeyValue,
    Put,
    Range,
    parse_endpoints,
)
from sysdesign.platform.errors import ConfigurationError

T = TypeVar("T")
DEFAULT_PREFIX = "/sysdesign/locks/"
TIMEOUT_SECONDS = 5.0
MAX_WATCHES = 64  # httpx pools 100 connections per client: leave room for requests
POLL_SECONDS = 0.05
RETRY_SECONDS = 0.05  # a watch that failed everywhere: first pause, doubling
MAX_RETRY_SECONDS = 1.0
# Names whose last queue read ``wait`` remembers; a forgotten one watches from
# its tickets' creation instead, which is as correct, only replays more.
MAX_SEEN_NAMES = 10_000


def lease_seconds(ttl: float) -> int:
    """The whole seconds of the etcd lease for a ticket of ``ttl`` seconds:
    rounded up, at least 1. etcd leases count whole seconds, and etcd raises
    a TTL below its minimum (1.5 election timeouts, rounded up: 2 s with the
    default timings) to that minimum, so a ticket lives at least ``ttl``."""
    return max(1, math.ceil(ttl))


class EtcdTicketStore(TicketStore):
    """The ticket queues in etcd.

    Guarantees: a ticket's token is its key's ``create_revision``, etcd's
    cluster-wide revision at the write that created it, so tokens strictly
    increase per name across every ticket the name ever had (they are not
    consecutive: other writes take revisions too). ``enqueue`` creates the
    key in a transaction that fails if it exists, attached to a new lease of
    ``lease_seconds(ttl)``; the lease expiring deletes the key, so a dead
    holder's ticket leaves by etcd's clock, and ``queue`` shows every key etcd
    still has (never filtered by this host's clock: a lease etcd still keeps
    is a held lock). ``refresh`` keeps the lease alive (or, for another TTL,
    moves the key to a new lease; the key, and so the token, stays);
    ``remove`` deletes the key and revokes its lease.

    ``Ticket.expires_at`` is an estimate by this host's clock, written into
    the ticket's value: the time before the grant or keepalive plus the TTL
    etcd granted, so it is never later than the lease's real expiry (on a
    host whose clock agrees). etcd's lease is what counts.

    ``wait`` watches the keys of the watched tickets (a waiter watches only
    the tickets ahead of it that ``base.blockers`` names, so a release wakes
    one exclusive waiter) from the revision after the one at which a queue
    read last saw them alive, so a deletion between the read and the watch
    is replayed, not missed; a lease's expiry deletes the key and wakes it
    the same way. A watch that no endpoint keeps (the cluster electing a
    leader) is tried again from the same revisions until the wait's timeout;
    beyond ``watches`` concurrent waits, a wait polls the queue instead.

    Errors: ``LockUnavailable``, one line, when no endpoint answers, etcd
    refuses a request, or a write's outcome is unknown (a ticket whose
    enqueue failed that way, or was cancelled, is revoked if etcd can be
    reached, and otherwise expires with its lease); ``ConfigurationError`` for a bad URL.
    """

    name = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = TIMEOUT_SECONDS,
        watches: int = MAX_WATCHES,
    ) -> None:
        if not prefix:
            raise ConfigurationError("the etcd lock prefix must not be empty")
        self.endpoints = list(endpoints)
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._timeout = timeout
        self._client: EtcdClient | None = None
        self._watch_slots = asyncio.Semaphore(watches)
        # name -> ticket id -> a revision at which a queue read saw that ticket alive.
        self._seen_alive: dict[str, dict[str, int]] = {}

    @classmethod
    def from_url(cls, url: str) -> EtcdTicketStore:
        try:
            endpoints = parse_endpoints(url)
        except ValueError as exc:
            raise ConfigurationError(f"bad etcd lock URL: {exc}") from None
        options: dict[str, Any] = {}
        for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if key == "prefix":
                options["prefix"] = value
            elif key in ("timeout", "watches"):
                try:
                    number = float(value) if key == "timeout" else int(value)
                except ValueError:
                    number = 0
                if number <= 0:
                    raise ConfigurationError(
                        f"etcd lock URL option {key} must be a positive number"
                    )
                options[key] = number
            else:
                raise ConfigurationError(
                    f"unknown etcd lock URL option {key!r}: use prefix, timeout or watches"
                )
        return cls(endpoints, **options)

    # -- plumbing ---------------------------------------------------------------

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            raise LockUnavailable("the etcd lock store is not connected: call connect() first")
        return self._client

    async def connect(self) -> None:
        if self._client is None:
            self._client = EtcdClient(self.endpoints, timeout_seconds=self._timeout)
            try:
                await self.ping()
            except LockUnavailable:
                await self.close()
                raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._call(
            self.client.range(Range(self.prefix, prefix=True, limit=1, keys_only=True))
        )

    async def _call(self, request: Awaitable[T], *, lease_may_be_gone: bool = False) -> T:
        """``request``'s result; its errors as ``LockUnavailable``, except
        ``EtcdLeaseNotFound`` where the caller expects it."""
        try:
            return await request
        except EtcdLeaseNotFound:
            if lease_may_be_gone:
                raise
            raise LockUnavailable("etcd lost a lease this store had just been granted") from None
        except EtcdError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: EtcdError) -> LockUnavailable:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return LockUnavailable(f"etcd at {','.join(self.endpoints)} is unavailable: {reason}")

    def _queue_key(self, name: str) -> str:
        return f"{self.prefix}{quote(name, safe='')}/"

    def _key(self, name: str, ticket_id: str) -> str:
        return self._queue_key(name) + quote(ticket_id, safe="")

    def _ticket(self, name: str, kv: KeyValue) -> Ticket | None:
        ticket_id = unquote(kv.key.decode().rpartition("/")[2])
        try:
            meta = orjson.loads(kv.value)
            mode: Mode = meta["mode"]
            return Ticket(
                name,
                ticket_id,
                kv.create_revision,
                mode,
                int(meta["permits"]),
                str(meta["owner"]),
                float(meta["expires_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # not a ticket of ours: a key someone else put under the prefix

    # -- the contract -----------------------------------------------------------

    async def enqueue(
        self, name: str, ticket_id: str, mode: Mode, permits: int, owner: str, ttl: float
    ) -> Ticket:
        seconds = lease_seconds(ttl)
        key = self._key(name, ticket_id)
        before = time.time()
        lease = await self._call(self.client.lease_grant(seconds))
        meta = {"mode": mode, "permits": permits, "owner": owner, "ttl": seconds}
        value = orjson.dumps({**meta, "expires_at": before + lease.ttl})
        try:
            result = await self._call(
                self.client.txn(
                    [Compare.create_revision(key, "==", 0)], [Put(key, value, lease.id)]
                )
            )
        except BaseException:
            # Failed with its outcome unknown, or cancelled: the key may exist, and
            # no caller knows of it. Revoking its lease deletes it, so it does not
            # block the queue until its TTL runs out.
            await asyncio.shield(self._revoke(lease.id))
            raise
        if not result.succeeded:
            await self._revoke(lease.id)
            raise LockError(f"ticket {ticket_id} is already queued for {name!r}")
        # A transaction of one put: the store's revision after it is the key's creation.
        return Ticket(name, ticket_id, result.revision, mode, permits, owner, before + lease.ttl)

    async def queue(self, name: str) -> list[Ticket]:
        result = await self._call(
            self.client.range(Range(self._queue_key(name), prefix=True, sort_by_create=True))
        )
        tickets = [t for kv in result.kvs if (t := self._ticket(name, kv)) is not None]
        self._seen_alive.pop(name, None)  # re-inserted last: the oldest go first
        if tickets:
            self._seen_alive[name] = {t.id: result.revision for t in tickets}
            if len(self._seen_alive) > MAX_SEEN_NAMES:
                del self._seen_alive[next(iter(self._seen_alive))]
        return tickets

    async def refresh(self, name: str, ticket_id: str, ttl: float) -> Ticket | None:
        key = self._key(name, ticket_id)
        kv = await self._call(self.client.get(key))
        if kv is None or (ticket := self._ticket(name, kv)) is None:
            return None
        meta = orjson.loads(kv.value)
        seconds = lease_seconds(ttl)
        before = time.time()
        if seconds == meta.get("ttl"):
            lease_id = kv.lease
            try:
                granted = await self._call(
                    self.client.lease_keepalive(lease_id), lease_may_be_gone=True
                )
            except EtcdLeaseNotFound:
                return None
        else:
            # etcd cannot change a lease's TTL: move the key to a new lease.
            new = await self._call(self.client.lease_grant(seconds))
            lease_id, granted = new.id, new.ttl
        value = orjson.dumps({**meta, "ttl": seconds, "expires_at": before + granted})
        # Only while the key is the same ticket: a put must never recreate a
        # ticket that left (it would come back with a new token).
        try:
            result = await self._call(
                self.client.txn(
                    [Compare.create_revision(key, "==", kv.create_revision)],
                    [Put(key, value, lease_id)],
                ),
                lease_may_be_gone=True,
            )
            kept = result.succeeded
        except EtcdLeaseNotFound:
            kept = False  # the lease ran out between the keepalive and the put
        except LockUnavailable:
            if lease_id != kv.lease:
                await self._revoke(lease_id)
            raise
        if lease_id != kv.lease:
            await self._revoke(kv.lease if kept else lease_id)
        if not kept:
            return None
        return Ticket(
            name,
            ticket_id,
            ticket.token,
            ticket.mode,
            ticket.permits,
            ticket.owner,
            before + granted,
        )

    async def remove(self, name: str, ticket_id: str) -> bool:
        result = await self._call(self.client.delete(self._key(name, ticket_id), prev_kv=True))
        seen = self._seen_alive.get(name, {})
        seen.pop(ticket_id, None)
        if not seen:
            self._seen_alive.pop(name, None)
        for kv in result.prev_kvs:
            if kv.lease:
                await self._revoke(kv.lease)
        return result.deleted > 0

    async def _revoke(self, lease_id: int) -> None:
        # Best effort: a lease left behind has no keys, or expires with its TTL.
        with contextlib.suppress(EtcdError, LockUnavailable):
            await self._call(self.client.lease_revoke(lease_id))

    async def names(self) -> list[str]:
        result = await self._call(
            self.client.range(Range(self.prefix, prefix=True, keys_only=True))
        )
        found = set()
        for kv in result.kvs:
            queue_key = kv.key.decode()[len(self.prefix) :].rpartition("/")[0]
            if queue_key:
                found.add(unquote(queue_key))
        return sorted(found)

    # -- waiting ----------------------------------------------------------------

    async def wait(self, name: str, watched: Sequence[Ticket], timeout: float) -> None:
        if timeout <= 0:
            return
        if not watched:
            await asyncio.sleep(timeout)
            return
        seen = self._seen_alive.get(name, {})
        # Each watched ticket existed at this revision (a queue read saw it, or it
        # was created then): its deletion, if any, comes after it.
        alive_at = {self._key(name, t.id): max(seen.get(t.id, 0), t.token) for t in watched}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if self._watch_slots.locked():
                    await self._poll(name, {t.id for t in watched})
                    return
                async with self._watch_slots:
                    await self._watch(name, alive_at)

    async def _watch(self, name: str, alive_at: dict[str, int]) -> None:
        """Return at the first deletion of a key of ``alive_at`` after the
        revision given for it. A watch that no endpoint keeps (all of them
        down, or electing a leader) is tried again, from the same revisions
        so nothing is missed, until the caller's timeout ends the wait."""
        start = min(alive_at.values()) + 1
        pause = RETRY_SECONDS
        while True:
            if len(alive_at) == 1:
                (key,) = alive_at
                watch = self.client.watch(key, start_revision=start)
            else:
                # Several tickets (a semaphore's waiter): one stream on the queue.
                watch = self.client.watch(self._queue_key(name), prefix=True, start_revision=start)
            try:
                async with watch as events:
                    async for event in events:
                        after = alive_at.get(event.kv.key.decode())
                        gone = event.type == "DELETE" and after is not None
                        if gone and event.kv.mod_revision > after:
                            return
            except EtcdCompacted:
                return  # the revisions needed are gone: the caller reads the queue afresh
            except EtcdError:
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_SECONDS)

    async def _poll(self, name: str, ids: set[str]) -> None:
        """The fallback when every watch slot is taken: look every ``POLL_SECONDS``
        (a failed look is tried again at the next one, until the timeout)."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                result = await self._call(
                    self.client.range(Range(self._queue_key(name), prefix=True, keys_only=True))
                )
            except LockUnavailable:
                continue
            present = {unquote(kv.key.decode().rpartition("/")[2]) for kv in result.kvs}
            if not ids <= present:
                return
