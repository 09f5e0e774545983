"""``ClusterCache``: the ``Cache`` contract over N cache nodes, sharded by a consistent-hash ring.

``sysdesign://h1:6380,h2:6381,h3:6382?replicas=2`` names the nodes
(``sysdesign cache-node`` processes, or Redis 8.4 or newer: anything that
speaks RESP with MULTI/EXEC and ``SET ... IFEQ``). The client alone decides
where a key lives, as memcached clients do: every client with the same node
list and ``vnodes`` computes the same owners, and the nodes know nothing of
each other.

- **Replicas.** A key is written to its ``replicas`` owners (the first R
  distinct nodes clockwise on the ring). Plain writes go to all of them at
  once; conditional and atomic ones (``set`` with NX/XX,
  ``compare_and_set``, ``incr``) are decided by the first live owner, the
  key's primary, and the result is then copied to the others. Replicas are
  therefore eventually consistent: two racing updates of one key can reach a
  replica in the other order, leaving it one update behind until the next
  write.
- **Failover.** Reads go to the first live owner; a node that fails
  (refused, reset or timed out) is marked down at once and the read moves to
  the next owner, so with R >= 2 a node's death loses no reads. A key whose
  owners are all down raises ``CacheUnavailable``, and callers go to the
  source, as on any miss.
- **Recovery without stale values.** A write or delete that skips a down
  owner leaves a hint: the key. A background check pings down nodes every
  ``retry_interval`` seconds, deletes their hinted keys and only then lets
  them serve again, so a node cut off for a while never answers with a value
  that was replaced or deleted meanwhile. A node that missed more than
  ``hint_limit`` keys is flushed instead (the cluster's nodes hold only its
  keys). A node that restarted comes back empty: its keys are misses until
  written again.
- **Membership.** ``add_node`` and ``remove_node`` change the ring: about
  1/(N+1) of the keys move to a new node, and a removed node's keys (about
  1/N) move to their next owners; moved keys are misses until written again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from itertools import islice
from typing import Any, TypeVar

from sysdesign.blocks.cache.base import Cache, CacheStats, CacheUnavailable
from sysdesign.blocks.cache.clusternode import (
    DEFAULT_TIMEOUT,
    Member,
    NodeCache,
    parse_cluster_url,
)
from sysdesign.blocks.cache.redis import _ms
from sysdesign.blocks.cache.ring import DEFAULT_VNODES, HashRing
from sysdesign.platform.background import BackgroundTask

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_RETRY_INTERVAL = 1.0
DEFAULT_HINT_LIMIT = 100_000


class ClusterCache(Cache):
    """The cache across ``nodes`` (``host:port``), each key on ``replicas`` of them.

    Raises what ``RedisCache`` raises, and ``CacheUnavailable`` when every
    owner of a key is down (for ``get_many``, ``set_many`` and ``delete``:
    of any key asked for).
    """

    name = "cluster"

    def __init__(
        self,
        nodes: Iterable[str],
        *,
        replicas: int = 1,
        vnodes: int = DEFAULT_VNODES,
        prefix: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        hint_limit: int = DEFAULT_HINT_LIMIT,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        self.replicas = replicas
        self._prefix = prefix
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._hint_limit = hint_limit
        self.ring = HashRing(vnodes=vnodes)
        self.members: dict[str, Member] = {}
        for address in nodes:
            self._join(address)
        if not self.members:
            raise ValueError("a cluster needs at least one node")
        self._checker = BackgroundTask(self._check_forever, "cache-cluster-health")
        self.failovers = 0

    @classmethod
    def from_url(cls, url: str) -> ClusterCache:
        """``sysdesign://h1:6380,h2:6381?replicas=2&vnodes=160&prefix=&socket_timeout=0.25
        &retry_interval=1&hint_limit=100000``."""
        nodes, options = parse_cluster_url(url)
        return cls(nodes, **options)

    # --- membership and health -----------------------------------------------------

    def _join(self, address: str) -> Member:
        url = f"redis://{address}/0"
        member = Member(address, NodeCache(url, prefix=self._prefix, timeout=self._timeout))
        self.ring.add(address)
        self.members[address] = member
        return member

    async def add_node(self, address: str) -> None:
        """Put a node on the ring (``host:port``); it serves its share at once."""
        if address in self.members:
            raise ValueError(f"node {address} is already in the cluster")
        member = self._join(address)
        try:
            await member.cache.connect()
        except CacheUnavailable as exc:
            self._mark_down(member, exc)

    async def remove_node(self, address: str) -> None:
        """Take a node off the ring; its keys are served by their next owners."""
        if address not in self.members:
            raise ValueError(f"node {address} is not in the cluster")
        if len(self.members) == 1:
            raise ValueError("the last node of a cluster cannot be removed")
        self.ring.remove(address)
        member = self.members.pop(address)
        await member.cache.close()

    def owners(self, key: str) -> list[str]:
        """The nodes that hold ``key``, its primary first."""
        return self.ring.owners(key, self.replicas)

    def _owners(self, key: str) -> list[Member]:
        return [self.members[a] for a in self.ring.owners(key, self.replicas)]

    def _mark_down(self, member: Member, exc: Exception) -> None:
        member.failures += 1
        if member.up:
            member.up = False
            self.failovers += 1
            log.warning("cache node %s is down: %s", member.address, exc)

    def _hint(self, member: Member, keys: Iterable[str]) -> None:
        if member.flush_on_return:
            return
        member.hints.update(dict.fromkeys(keys))
        if len(member.hints) > self._hint_limit:
            member.hints.clear()
            member.flush_on_return = True

    async def connect(self) -> None:
        """Connect to every node; those that do not answer are marked down and
        checked again in the background. ``CacheUnavailable`` when none answers."""
        members = list(self.members.values())
        results = await asyncio.gather(
            *(m.cache.connect() for m in members), return_exceptions=True
        )
        for member, result in zip(members, results, strict=True):
            if isinstance(result, CacheUnavailable):
                self._mark_down(member, result)
            elif isinstance(result, BaseException):
                raise result
        self._checker.start()
        if not any(m.up for m in members):
            raise CacheUnavailable(
                f"no node of the cache cluster answers: {', '.join(self.members)}"
            )

    async def close(self) -> None:
        await self._checker.stop()
        await asyncio.gather(*(m.cache.close() for m in self.members.values()))

    async def ping(self) -> None:
        """Ask every node; fine while every key has a live owner: at most
        R - 1 nodes down."""
        live = [m for m in self.members.values() if m.up]
        await self._on_each(live, [m.cache.ping() for m in live], [[]] * len(live))
        await self.check_nodes()
        down = [m.address for m in self.members.values() if not m.up]
        if len(down) >= min(self.replicas, len(self.members)):
            raise CacheUnavailable(f"cache nodes down: {', '.join(down)}")

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval)
            await self.check_nodes()

    async def check_nodes(self) -> None:
        """Bring back every down node that answers, once its hinted keys are deleted."""
        for member in [m for m in self.members.values() if not m.up]:
            try:
                await member.cache.ping()
                if member.flush_on_return:
                    await member.cache.flush()
                    member.flush_on_return = False
                    member.hints.clear()
                while member.hints and not member.flush_on_return:
                    # The oldest 500, without copying every hint for each batch.
                    batch = list(islice(member.hints, 500))
                    await member.cache.delete(*batch)
                    for key in batch:
                        member.hints.pop(key, None)
            except CacheUnavailable:
                continue
            if not member.flush_on_return and member.address in self.members:
                member.up = True
                log.warning("cache node %s is back", member.address)

    # --- routing ------------------------------------------------------------------

    def _unavailable(self, key: str) -> CacheUnavailable:
        owners = ", ".join(self.owners(key))
        return CacheUnavailable(f"every owner of key {key!r} is down: {owners}")

    def _live(self, key: str) -> list[Member]:
        owners = self._owners(key)
        live = [m for m in owners if m.up]
        for member in owners:
            if not member.up:
                self._hint(member, (key,))
        return live

    async def _read(self, key: str, op: Callable[[NodeCache], Awaitable[T]]) -> T:
        for member in [m for m in self._owners(key) if m.up]:
            try:
                return await op(member.cache)
            except CacheUnavailable as exc:
                self._mark_down(member, exc)
        raise self._unavailable(key)

    async def _on_each(
        self, members: list[Member], ops: list[Awaitable[T]], keys: list[list[str]]
    ) -> dict[Member, T]:
        """Run one call per member at once: the results of those that answered.
        A member that fails is marked down and hinted with its keys."""
        results = await asyncio.gather(*ops, return_exceptions=True)
        answered: dict[Member, T] = {}
        for member, result, its_keys in zip(members, results, keys, strict=True):
            if isinstance(result, CacheUnavailable):
                self._mark_down(member, result)
                self._hint(member, its_keys)
            elif isinstance(result, BaseException):
                raise result
            else:
                answered[member] = result
        return answered

    async def _write_all(self, key: str, op: Callable[[NodeCache], Awaitable[T]]) -> T:
        live = self._live(key)
        answered = await self._on_each(live, [op(m.cache) for m in live], [[key]] * len(live))
        for member in live:
            if member in answered:
                return answered[member]
        raise self._unavailable(key)

    async def _decide_then_copy(
        self,
        key: str,
        decide: Callable[[NodeCache], Awaitable[T]],
        copy: Callable[[T], Callable[[NodeCache], Awaitable[Any]] | None],
    ) -> T:
        """``decide`` on the first live owner; then ``copy(result)``, if any,
        on the others."""
        live = self._live(key)
        for i, member in enumerate(live):
            try:
                result = await decide(member.cache)
            except CacheUnavailable as exc:
                self._mark_down(member, exc)
                self._hint(member, (key,))
                continue
            then = copy(result)
            rest = [m for m in live[i + 1 :] if m.up]
            if then is not None and rest:
                await self._on_each(rest, [then(m.cache) for m in rest], [[key]] * len(rest))
            return result
        raise self._unavailable(key)

    # --- the contract -------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        return await self._read(key, lambda c: c.get(key))

    async def ttl(self, key: str) -> float | None:
        return await self._read(key, lambda c: c.ttl(key))

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        if only_if_absent and only_if_present:
            raise ValueError("only_if_absent and only_if_present exclude each other")
        _ms(ttl)
        if not (only_if_absent or only_if_present):
            return await self._write_all(key, lambda c: c.set(key, value, ttl))

        def copy(done: bool) -> Callable[[NodeCache], Awaitable[bool]] | None:
            return (lambda c: c.set(key, value, ttl)) if done else None

        return await self._decide_then_copy(
            key,
            lambda c: c.set(
                key, value, ttl, only_if_absent=only_if_absent, only_if_present=only_if_present
            ),
            copy,
        )

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        _ms(ttl)

        def copy(done: bool) -> Callable[[NodeCache], Awaitable[bool]] | None:
            return (lambda c: c.set(key, value, ttl)) if done else None

        return await self._decide_then_copy(
            key, lambda c: c.compare_and_set(key, expected, value, ttl), copy
        )

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        _ms(ttl)

        def copy(result: tuple[int, float | None]) -> Callable[[NodeCache], Awaitable[bool]]:
            value, left = result
            return lambda c: c.set(key, str(value).encode(), left)

        value, _ = await self._decide_then_copy(
            key, lambda c: c.incr_with_ttl(key, amount, ttl), copy
        )
        return value

    def _by_member(self, keys: Iterable[str]) -> tuple[dict[Member, list[str]], dict[str, Member]]:
        """Each key under every live owner of it, and each key's first live owner."""
        groups: dict[Member, list[str]] = {}
        first: dict[str, Member] = {}
        for key in keys:
            live = self._live(key)
            if not live:
                raise self._unavailable(key)
            first[key] = live[0]
            for member in live:
                groups.setdefault(member, []).append(key)
        return groups, first

    async def delete(self, *keys: str) -> int:
        names = list(dict.fromkeys(keys))
        if not names:
            return 0
        # Each key is counted on its first live owner only, so a key held by
        # R nodes counts once.
        groups, counted = self._by_member(names)
        members = list(groups)
        ops: list[Awaitable[tuple[int, int]]] = []
        for member in members:
            mine = [k for k in groups[member] if counted[k] is member]
            others = [k for k in groups[member] if counted[k] is not member]
            ops.append(self._delete_two(member.cache, mine, others))
        answered = await self._on_each(members, ops, [groups[m] for m in members])
        self._check_acknowledged(names, groups, answered)
        return sum(counts[0] for counts in answered.values())

    @staticmethod
    async def _delete_two(cache: NodeCache, mine: list[str], others: list[str]) -> tuple[int, int]:
        return (
            await cache.delete(*mine) if mine else 0,
            await cache.delete(*others) if others else 0,
        )

    def _check_acknowledged(
        self, keys: list[str], groups: dict[Member, list[str]], answered: Mapping[Member, Any]
    ) -> None:
        done: set[str] = set()
        for member in answered:
            done.update(groups[member])
        for key in keys:
            if key not in done:
                raise self._unavailable(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        # A node that fails is marked down, so each pass sends its keys to
        # their next owner, until they are found or have no live owner left.
        pending = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        while pending:
            groups: dict[Member, list[str]] = {}
            for key in pending:
                live = [m for m in self._owners(key) if m.up]
                if not live:
                    raise self._unavailable(key)
                groups.setdefault(live[0], []).append(key)
            members = list(groups)
            answered = await self._on_each(
                members, [m.cache.get_many(groups[m]) for m in members], [[]] * len(members)
            )
            pending = []
            for member in members:
                if member in answered:
                    found.update(answered[member])
                else:
                    pending.extend(groups[member])
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        _ms(ttl)
        if not items:
            return
        groups, _ = self._by_member(items)
        members = list(groups)
        answered = await self._on_each(
            members,
            [m.cache.set_many({k: items[k] for k in groups[m]}, ttl) for m in members],
            [groups[m] for m in members],
        )
        self._check_acknowledged(list(items), groups, answered)

    async def stats(self) -> CacheStats:
        """The sum over the nodes that answer (``keys`` counts every copy)."""
        total = CacheStats()
        for stats in (await self.node_stats()).values():
            if stats is not None:
                for name in ("hits", "misses", "evictions", "expirations", "keys", "used_bytes"):
                    setattr(total, name, getattr(total, name) + getattr(stats, name))
        return total

    async def node_stats(self) -> dict[str, CacheStats | None]:
        """Each node's own figures; ``None`` for a node that is down."""
        members = [m for m in self.members.values() if m.up]
        answered = await self._on_each(
            members, [m.cache.stats() for m in members], [[]] * len(members)
        )
        by_address: dict[str, CacheStats | None] = dict.fromkeys(self.members)
        by_address.update((m.address, stats) for m, stats in answered.items())
        return by_address
