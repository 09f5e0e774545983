"""``MemoryStore``: a synchronous keyspace of bytes with expiry and a byte budget.

Nothing here awaits or locks: every method runs to completion, so each is
atomic with respect to the others as long as one thread calls them (the
asyncio facade ``MemoryCache``, or a RESP server's command loop). Time is
passed in as ``now`` (float seconds) by the caller; the store never reads a
clock, which keeps it deterministic under test.

**Expiry.** A key set with ``ttl`` at time ``t`` exists while ``now < t + ttl``.
Every operation that looks a key up takes ``now`` and drops the key if it
has expired (lazy expiry). A key nobody looks at again is reclaimed by
``expire_some(now, budget)``, which the owner calls periodically: it pops a
min-heap of ``(expiry, key)`` and examines at most ``budget`` heap entries
per call, so one call is bounded however many keys expired at once, and it
reclaims the earliest expired keys first. Changing or removing a TTL leaves
the old heap entry behind; it is recognised as stale when popped, and the
heap is compacted when stale entries outnumber live ones, so it stays
within about twice the number of keys with a TTL.

**Budget.** With ``max_bytes > 0`` the store evicts keys before a write
would take ``used_bytes`` over ``max_bytes``. Each entry costs
``len(key in UTF-8) + len(value) + ENTRY_OVERHEAD``; ``used_bytes`` is the
sum of those costs, an accounting figure rather than a reading of the
process's memory. An entry that alone costs more than the budget raises
``EntryTooLarge`` and changes nothing.

**Eviction.** ``allkeys-lru`` evicts the least recently used key, exactly:
the keyspace is an ``OrderedDict`` in use order (``move_to_end`` on use).
``allkeys-lfu`` is LFU with dynamic aging (LFU-DA, as in Squid's
``heap_lfuda``): a key's priority is ``age + hits`` as of its last use,
where ``hits`` counts its uses (up to ``LFU_MAX_HITS``) and ``age`` is the
priority of the last key evicted. The lowest priority goes first, the
least recently used among equals. Without aging, keys hot once would keep
their counts and stay forever; here each generation of evictions (the
lowest priority emptied: about one turnover of the cache's cold part)
raises ``age``, so an idle key is overtaken after about ``hits``
generations. Keys sit in one ``OrderedDict`` bucket per priority, with a
min-heap of priorities: a use is O(1) plus a heap push when it opens a
bucket, O(log b) for b distinct priorities. Against Redis's LFU (8-bit
logarithmic counters decayed per minute; evicting the lowest of a few
sampled keys) this is exact and costs more memory per key, and it ages by
evictions rather than minutes: a store that never evicts never ages, and
does not need to.

**Memory per key**, measured with tracemalloc by
``.venv/bin/pytest -q -s tests/blocks/cache/test_store.py -k memory_per_key``
(CPython 3.11, 64-bit; 50,000 keys of 16 characters, 100-byte values),
beyond the key's and value's characters: LRU 277 bytes, 366 with a TTL;
LFU 316, 405 with a TTL. That counts the key's ``str`` and value's
``bytes`` headers (49 + 33), the entry (72), hash table and order links,
and a TTL's heap entry (88). Hash tables grow in steps, so it varies with
the number of keys (250 to 405 between 20,000 and 300,000 keys).
``ENTRY_OVERHEAD`` is the worst figure, rounded up: the budget errs safe.

Hits and misses count the reads that return a value (``get``, ``getdel``).
``get``, ``set``, ``append`` and ``incr_by`` are uses for eviction; ``exists``,
``ttl``, ``strlen``, ``expire`` and ``persist`` are not.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from sysdesign.blocks.cache.base import CacheError, CacheStats, NotAnInteger

POLICIES = ("allkeys-lru", "allkeys-lfu")
ENTRY_OVERHEAD = 408  # bytes per entry beyond its key and value: measured, see above
LFU_MAX_HITS = 1000  # a key idle after this many uses is outlived after ~1000 generations
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# The expiry heap is compacted when it holds more than twice the keys with a
# TTL plus this many entries: the constant keeps small heaps from compacting often.
_HEAP_SLACK = 1024


class EntryTooLarge(CacheError, ValueError):
    """One entry would cost more than the store's whole budget."""


def key_cost(key: str) -> int:
    """The bytes a key is charged for: its UTF-8 length."""
    return len(key) if key.isascii() else len(key.encode())


def entry_cost(key: str, value: bytes) -> int:
    """What an entry counts against the budget."""
    return key_cost(key) + len(value) + ENTRY_OVERHEAD


def parse_int(value: bytes) -> int:
    """``value`` as a signed 64-bit integer in canonical base-10 form (no sign
    ``+``, no spaces, no leading zeros), as Redis reads one; else ``NotAnInteger``."""
    if 0 < len(value) <= 20:
        try:
            number = int(value)
        except ValueError:
            pass
        else:
            if b"%d" % number == value and _INT64_MIN <= number <= _INT64_MAX:
                return number
    raise NotAnInteger("value is not an integer or out of range")


class _Entry:
    __slots__ = ("cost", "expires", "hits", "priority", "value")

    def __init__(self, value: bytes, cost: int) -> None:
        self.value = value
        self.cost = cost
        self.expires: float | None = None
        self.hits = 0  # LFU only
        self.priority = 0  # LFU only


class _LFU:
    """Keys by priority ``age + hits``; see the module docstring."""

    __slots__ = ("_buckets", "_heap", "age")

    def __init__(self) -> None:
        self.age = 0
        self._buckets: dict[int, OrderedDict[str, None]] = {}
        # Priorities that have (or had) a bucket; an emptied one is skipped when it surfaces.
        self._heap: list[int] = []

    def add(self, key: str, entry: _Entry) -> None:
        """Place ``key`` as just used."""
        entry.hits = min(entry.hits + 1, LFU_MAX_HITS)
        priority = entry.priority = self.age + entry.hits
        bucket = self._buckets.get(priority)
        if bucket is None:
            bucket = self._buckets[priority] = OrderedDict()
            heapq.heappush(self._heap, priority)
            if len(self._heap) > 2 * len(self._buckets) + 64:
                self._heap = sorted(self._buckets)  # a sorted list is a heap
        bucket[key] = None

    def remove(self, key: str, entry: _Entry) -> None:
        bucket = self._buckets[entry.priority]
        del bucket[key]
        if not bucket:
            del self._buckets[entry.priority]

    def touch(self, key: str, entry: _Entry) -> None:
        self.remove(key, entry)
        self.add(key, entry)

    def victim(self) -> str:
        """The key to evict next; the store has at least one key in a bucket."""
        heap, buckets = self._heap, self._buckets
        while heap[0] not in buckets:
            heapq.heappop(heap)
        self.age = heap[0]
        return next(iter(buckets[heap[0]]))

    def clear(self) -> None:
        self.age = 0
        self._buckets.clear()
        self._heap.clear()


class MemoryStore:
    """Bytes by key with TTLs, under an optional byte budget. See the module docstring."""

    def __init__(self, max_bytes: int = 0, policy: str = "allkeys-lru") -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0: unbounded), not {max_bytes}")
        if policy not in POLICIES:
            raise ValueError(f"unknown eviction policy {policy!r}: use one of {POLICIES}")
        self.max_bytes = max_bytes
        self.policy = policy
        self._lfu = _LFU() if policy == "allkeys-lfu" else None
        # Under LRU the keyspace itself keeps use order; under LFU the buckets do.
        self._lru: OrderedDict[str, _Entry] | None = None if self._lfu else OrderedDict()
        self._entries: dict[str, _Entry] = {} if self._lru is None else self._lru
        self._expiry: list[tuple[float, str]] = []
        self._volatile = 0  # entries with a TTL
        self._used = 0
        self._hits = self._misses = self._evictions = self._expirations = 0

    def __len__(self) -> int:
        """Stored keys, counting expired ones not yet reclaimed (as Redis's DBSIZE)."""
        return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        """A snapshot; ``used_bytes`` is the accounted cost, ``keys`` is ``len(self)``."""
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            keys=len(self._entries),
            used_bytes=self._used,
        )

    # --- internals ------------------------------------------------------------

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires is not None and entry.expires <= now:
            self._remove(key, entry)
            self._expirations += 1
            return None
        return entry

    def _remove(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        if self._lfu is not None:
            self._lfu.remove(key, entry)
        self._used -= entry.cost
        if entry.expires is not None:
            self._volatile -= 1

    def _touch(self, key: str, entry: _Entry) -> None:
        if self._lru is not None:
            self._lru.move_to_end(key)
        else:
            assert self._lfu is not None
            self._lfu.touch(key, entry)

    def _make_room(self, extra: int, now: float) -> None:
        """Evict until ``extra`` more bytes fit. The key being written is out
        of the eviction order (LFU) or last in it (LRU), so it is never chosen."""
        while self._used + extra > self.max_bytes:
            key = self._lfu.victim() if self._lfu is not None else next(iter(self._entries))
            entry = self._entries[key]
            if entry.expires is not None and entry.expires <= now:
                self._expirations += 1
            else:
                self._evictions += 1
            self._remove(key, entry)

    def _write(self, key: str, entry: _Entry | None, value: bytes, now: float) -> _Entry:
        """Store ``value`` at ``key`` (``entry``: its live entry, if any) as a
        use, keeping the entry's TTL; evicts others first if the budget needs it."""
        # The calls to _check_fits and _make_room are guarded here so that a
        # write that fits (nearly all of them) makes neither call.
        budget = self.max_bytes
        lfu = self._lfu
        if entry is None:
            cost = (len(key) if key.isascii() else len(key.encode())) + len(value) + ENTRY_OVERHEAD
            if budget:
                if cost > budget:
                    self._check_fits(key, cost)
                if self._used + cost > budget:
                    self._make_room(cost, now)
            entry = self._entries[key] = _Entry(value, cost)
            if lfu is not None:
                lfu.add(key, entry)
            self._used += cost
            return entry
        cost = entry.cost - len(entry.value) + len(value)
        if budget and cost > budget:
            self._check_fits(key, cost)
        if lfu is not None:
            lfu.remove(key, entry)
        else:
            assert self._lru is not None
            self._lru.move_to_end(key)
        if budget and self._used + cost - entry.cost > budget:
            self._make_room(cost - entry.cost, now)
        if lfu is not None:
            lfu.add(key, entry)
        self._used += cost - entry.cost
        entry.value, entry.cost = value, cost
        return entry

    def _check_fits(self, key: str, cost: int) -> None:
        if cost > self.max_bytes:
            raise EntryTooLarge(
                f"an entry of {cost} bytes at {key[:64]!r} exceeds the whole "
                f"budget of {self.max_bytes} bytes"
            )

    def _set_expiry(self, key: str, entry: _Entry, expires: float | None) -> None:
        if expires is None:
            if entry.expires is not None:
                self._volatile -= 1
        elif expires != entry.expires:
            if entry.expires is None:
                self._volatile += 1
            heapq.heappush(self._expiry, (expires, key))
            if len(self._expiry) > 2 * self._volatile + _HEAP_SLACK:
                self._compact_expiry()
        entry.expires = expires

    def _compact_expiry(self) -> None:
        entries = self._entries
        current: dict[str, float] = {}
        for when, key in self._expiry:
            entry = entries.get(key)
            if entry is not None and entry.expires == when:
                current[key] = when
        self._expiry = [(when, key) for key, when in current.items()]
        heapq.heapify(self._expiry)

    # --- commands -------------------------------------------------------------

    def get(self, key: str, now: float) -> bytes | None:
        # _live and _touch written out: this is the node's hottest path.
        entry = self._entries.get(key)
        if entry is None or (entry.expires is not None and entry.expires <= now):
            if entry is not None:
                self._remove(key, entry)
                self._expirations += 1
            self._misses += 1
            return None
        self._hits += 1
        if self._lru is not None:
            self._lru.move_to_end(key)
        else:
            assert self._lfu is not None
            self._lfu.touch(key, entry)
        return entry.value

    def set(
        self,
        key: str,
        value: bytes,
        now: float,
        ttl: float | None = None,
        nx: bool = False,
        xx: bool = False,
        keep_ttl: bool = False,
    ) -> bool:
        """Store ``value``; ``False`` (and no change) when ``nx`` and the key
        exists, or ``xx`` and it does not. The key takes ``ttl`` seconds (> 0),
        or no expiry, or with ``keep_ttl`` the expiry it had."""
        if nx and xx:
            raise ValueError("nx and xx exclude each other")
        if ttl is not None and (keep_ttl or not ttl > 0):
            raise ValueError(f"ttl must be > 0 seconds and excludes keep_ttl, not {ttl}")
        entry = self._entries.get(key)  # _live written out, as in get
        if entry is not None and entry.expires is not None and entry.expires <= now:
            self._remove(key, entry)
            self._expirations += 1
            entry = None
        if (nx and entry is not None) or (xx and entry is None):
            return False
        entry = self._write(key, entry, value, now)
        if keep_ttl:
            pass
        elif ttl is not None:
            self._set_expiry(key, entry, now + ttl)
        elif entry.expires is not None:  # the common case, no TTL before or after, costs nothing
            self._set_expiry(key, entry, None)
        return True

    def put(self, key: str, value: bytes, now: float) -> None:
        """``set(key, value, now)``: no TTL, no condition. Overwriting a key that
        has no TTL, under LRU, without evicting (a cache's usual write) is
        done here in full; anything else goes through ``set``."""
        entry = self._entries.get(key)
        lru = self._lru
        if entry is not None and entry.expires is None and lru is not None:
            grown = len(value) - len(entry.value)
            # Within budget after the write implies the entry alone fits it too.
            if not self.max_bytes or self._used + grown <= self.max_bytes:
                lru.move_to_end(key)
                self._used += grown
                entry.value = value
                entry.cost += grown
                return
        self.set(key, value, now)

    def delete(self, *keys: str, now: float) -> int:
        """Remove ``keys``; how many of them existed."""
        removed = 0
        for key in keys:
            entry = self._live(key, now)
            if entry is not None:
                self._remove(key, entry)
                removed += 1
        return removed

    def exists(self, *keys: str, now: float) -> int:
        """How many of ``keys`` exist (a key named twice counts twice, as in Redis)."""
        return sum(self._live(key, now) is not None for key in keys)

    def expire(self, key: str, ttl: float, now: float) -> bool:
        """Give ``key`` ``ttl`` more seconds; ``ttl <= 0`` deletes it. ``False``
        when it does not exist."""
        entry = self._live(key, now)
        if entry is None:
            return False
        if ttl <= 0:
            self._remove(key, entry)
        else:
            self._set_expiry(key, entry, now + ttl)
        return True

    def persist(self, key: str, now: float) -> bool:
        """Remove ``key``'s expiry; ``False`` when it is absent or has none."""
        entry = self._live(key, now)
        if entry is None or entry.expires is None:
            return False
        self._set_expiry(key, entry, None)
        return True

    def ttl(self, key: str, now: float) -> float | None:
        """Seconds ``key`` has left; ``None`` without expiry; ``KeyError`` when absent."""
        entry = self._live(key, now)
        if entry is None:
            raise KeyError(key)
        return None if entry.expires is None else entry.expires - now

    def incr_by(self, key: str, amount: int, now: float) -> int:
        """Add ``amount`` to the integer at ``key`` (absent: 0, created without
        expiry; present: its TTL is kept). ``NotAnInteger`` when the value is
        not a 64-bit integer or the result would not be one."""
        entry = self._live(key, now)
        result = (0 if entry is None else parse_int(entry.value)) + amount
        if not _INT64_MIN <= result <= _INT64_MAX:
            raise NotAnInteger("increment or decrement would overflow")
        self._write(key, entry, b"%d" % result, now)
        return result

    def append(self, key: str, value: bytes, now: float) -> int:
        """Append to the value at ``key`` (absent: empty), keeping its TTL; the new length."""
        entry = self._live(key, now)
        joined = value if entry is None else entry.value + value
        self._write(key, entry, joined, now)
        return len(joined)

    def strlen(self, key: str, now: float) -> int:
        entry = self._live(key, now)
        return 0 if entry is None else len(entry.value)

    def getdel(self, key: str, now: float) -> bytes | None:
        entry = self._live(key, now)
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        self._remove(key, entry)
        return entry.value

    def flush(self) -> None:
        """Remove every key; the counters of hits, misses, evictions and expirations stay."""
        self._entries.clear()
        if self._lfu is not None:
            self._lfu.clear()
        self._expiry.clear()
        self._volatile = self._used = 0

    def expire_some(self, now: float, budget: int = 100) -> int:
        """Reclaim expired keys, earliest first, examining at most ``budget``
        entries of the expiry heap; how many keys it removed. The owner calls
        it periodically, and again at once while it returns ``budget``."""
        heap, entries = self._expiry, self._entries
        removed = 0
        for _ in range(budget):
            if not heap or heap[0][0] > now:
                break
            when, key = heapq.heappop(heap)
            entry = entries.get(key)
            if entry is not None and entry.expires == when:
                self._remove(key, entry)
                self._expirations += 1
                removed += 1
        return removed
