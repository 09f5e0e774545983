"""``MemoryStore``: eviction order, the byte budget, lazy and active expiry, and
the memory a key really takes. Time is a number passed in: nothing sleeps."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdesign.blocks.cache import EntryTooLarge, MemoryStore, NotAnInteger
from sysdesign.blocks.cache.store import ENTRY_OVERHEAD, entry_cost

T = 1000.0  # a time: the store only compares and adds them


def budget_for(count: int, key: str = "k0", size: int = 10) -> int:
    """A budget holding exactly ``count`` entries like ``(key, bytes(size))``."""
    return count * entry_cost(key, bytes(size))


def test_commands() -> None:
    s = MemoryStore()
    assert s.set("a", b"1", T) is True
    assert s.set("a", b"x", T, nx=True) is False
    assert s.set("b", b"x", T, xx=True) is False
    assert s.exists("a", "a", "b", now=T) == 2
    assert s.append("a", b"23", T) == 3
    assert s.append("new", b"ab", T) == 2
    assert s.strlen("a", T) == 3 and s.strlen("none", T) == 0
    assert s.incr_by("a", 7, T) == 130
    assert s.getdel("a", T) == b"130"
    assert s.getdel("a", T) is None
    with pytest.raises(NotAnInteger):
        s.incr_by("new", 1, T)
    s.set("max", b"9223372036854775806", T)
    assert s.incr_by("max", 1, T) == 2**63 - 1
    with pytest.raises(NotAnInteger, match="overflow"):
        s.incr_by("max", 1, T)
    assert s.delete("new", "none", now=T) == 1
    assert len(s) == 1
    s.flush()
    assert len(s) == 0 and s.stats.used_bytes == 0
    with pytest.raises(ValueError):
        s.set("a", b"", T, nx=True, xx=True)
    with pytest.raises(ValueError):
        s.set("a", b"", T, ttl=1, keep_ttl=True)
    with pytest.raises(ValueError):
        MemoryStore(policy="volatile-ttl")


def test_ttls_expire_persist_and_keep_ttl() -> None:
    s = MemoryStore()
    s.set("k", b"v", T, ttl=10)
    assert s.ttl("k", T + 4) == 6
    assert s.set("k", b"w", T + 4, keep_ttl=True)
    assert s.ttl("k", T + 4) == 6
    assert s.incr_by("n", 1, T) == 1 and s.expire("n", 5, T)
    assert s.incr_by("n", 1, T + 1) == 2 and s.ttl("n", T + 1) == 4  # incr keeps it
    assert s.append("n", b"0", T + 1) == 2 and s.ttl("n", T + 1) == 4  # so does append
    assert s.persist("n", T + 1) is True and s.ttl("n", T + 1) is None
    assert s.persist("n", T + 1) is False
    assert s.expire("n", 0, T + 1) is True  # a TTL of zero deletes
    assert s.expire("n", 5, T + 1) is False
    s.set("k", b"v", T, ttl=10)
    assert s.get("k", T + 9.999) == b"v"
    assert s.get("k", T + 10) is None  # exists while now < set time + ttl
    with pytest.raises(KeyError):
        s.ttl("k", T)


def test_lazy_expiry_on_access() -> None:
    s = MemoryStore()
    for i in range(5):
        s.set(f"k{i}", b"v", T, ttl=10)
    s.set("kept", b"v", T)
    later = T + 11
    assert s.get("k0", later) is None
    assert s.exists("k1", now=later) == 0
    assert s.delete("k2", now=later) == 0  # already gone: not counted as deleted
    assert s.set("k3", b"new", later, xx=True) is False
    assert s.incr_by("k4", 1, later) == 1  # starts again from nothing
    stats = s.stats
    assert stats.expirations == 5 and stats.keys == 2
    assert stats.used_bytes == entry_cost("kept", b"v") + entry_cost("k4", b"1")


def test_active_expiry_is_bounded_and_takes_only_expired_keys() -> None:
    s = MemoryStore()
    for i in range(100):
        s.set(f"short{i}", b"v", T, ttl=10 + i / 100)
        s.set(f"long{i}", b"v", T, ttl=1000)
        s.set(f"none{i}", b"v", T)
    assert s.expire_some(T + 5, 1000) == 0
    later = T + 20
    assert s.expire_some(later, 30) == 30
    assert s.expire_some(later, 30) == 30
    assert s.expire_some(later, 1000) == 40
    assert s.expire_some(later, 1000) == 0
    assert len(s) == 200 and s.stats.expirations == 100
    assert s.exists(*(f"long{i}" for i in range(100)), now=later) == 100


def test_active_expiry_skips_ttls_that_changed_and_the_heap_stays_compact() -> None:
    s = MemoryStore()
    s.set("moved", b"v", T, ttl=10)
    s.expire("moved", 100, T)
    s.set("cleared", b"v", T, ttl=10)
    s.persist("cleared", T)
    s.set("gone", b"v", T, ttl=10)
    s.delete("gone", now=T)
    assert s.expire_some(T + 50, 10) == 0
    assert len(s) == 2
    for i in range(20_000):  # one key's TTL rewritten again and again
        s.set("hot", b"v", T + i, ttl=3600)
    assert len(s._expiry) < 2 * 2 + 1100


def test_lru_evicts_the_least_recently_used() -> None:
    s = MemoryStore(max_bytes=budget_for(3), policy="allkeys-lru")
    for key in ("k1", "k2", "k3"):
        s.set(key, bytes(10), T)
    s.get("k1", T)  # k2 is now the least recently used
    s.set("k4", bytes(10), T)
    assert s.exists("k2", now=T) == 0
    s.set("k3", bytes(10), T)  # a write is a use: k1 is now the oldest
    s.set("k5", bytes(10), T)
    assert s.exists("k1", now=T) == 0
    assert s.exists("k3", "k4", "k5", now=T) == 3
    assert s.stats.evictions == 2 and s.stats.used_bytes == budget_for(3)


def test_eviction_prefers_counting_expired_victims_as_expired() -> None:
    s = MemoryStore(max_bytes=budget_for(2), policy="allkeys-lru")
    s.set("k1", bytes(10), T, ttl=1)
    s.set("k2", bytes(10), T)
    s.set("k3", bytes(10), T + 2)
    assert (s.stats.evictions, s.stats.expirations) == (0, 1)


def test_growing_a_value_evicts_others_never_itself() -> None:
    for policy in ("allkeys-lru", "allkeys-lfu"):
        s = MemoryStore(max_bytes=budget_for(4), policy=policy)
        for key in ("k1", "k2", "k3", "k4"):
            s.set(key, bytes(10), T)
        s.set("k1", bytes(10 + 2 * entry_cost("k2", bytes(10))), T)
        assert s.exists("k1", now=T) == 1
        assert s.stats.used_bytes <= s.max_bytes and len(s) == 2


def test_an_entry_bigger_than_the_budget_is_refused() -> None:
    s = MemoryStore(max_bytes=1000)
    s.set("k", b"small", T)
    with pytest.raises(EntryTooLarge):
        s.set("k", bytes(1000), T)
    with pytest.raises(EntryTooLarge):
        s.append("k", bytes(1000), T)
    assert s.get("k", T) == b"small"


def hot_and_cold(s: MemoryStore, hot: list[str]) -> None:
    """Hot keys, used a few times, then once every ten steps, while each step
    writes a key used once: ten such keys fill the cache between two uses."""
    for key in hot:
        s.set(key, bytes(10), T)
        for _ in range(3):
            s.get(key, T)
    for step in range(500):
        if step % 10 == 0:
            for key in hot:
                if s.get(key, T) is None:
                    s.set(key, bytes(10), T)
        s.set(f"cold{step:03d}", bytes(10), T)


def test_lfu_keeps_the_frequently_used_keys() -> None:
    hot = [f"hot{i}" for i in range(5)]
    lfu = MemoryStore(max_bytes=budget_for(10), policy="allkeys-lfu")
    hot_and_cold(lfu, hot)
    assert lfu.stats.misses == 0 and lfu.exists(*hot, now=T) == 5

    lru = MemoryStore(max_bytes=budget_for(10), policy="allkeys-lru")
    hot_and_cold(lru, hot)
    assert lru.stats.misses == 5 * 49  # each use found them pushed out: what LFU is for

    # A burst of keys used once (here 20 times the cache) passes through
    # without displacing the keys used often.
    for i in range(200):
        lfu.set(f"scan{i}", bytes(10), T)
    assert lfu.exists(*hot, now=T) == 5


def test_lfu_ages_out_keys_that_were_hot_once() -> None:
    s = MemoryStore(max_bytes=budget_for(10), policy="allkeys-lfu")
    for key in ("old0", "old1"):
        s.set(key, bytes(10), T)
        for _ in range(20):
            s.get(key, T)
    # A new working set, used a few times each, round after round.
    rounds = 0
    while s.exists("old0", "old1", now=T) and rounds < 200:
        for i in range(12):
            key = f"n{rounds}-{i}"
            s.set(key, bytes(10), T)
            s.get(key, T)
        rounds += 1
    assert s.exists("old0", "old1", now=T) == 0
    assert 5 < rounds < 100  # they held on for a while, not forever


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "set_ttl", "nx", "xx", "append", "incr", "get", "del", "expire"]),
        st.integers(0, 15),  # key
        st.integers(0, 300),  # value size
        st.floats(0, 5),  # clock step
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    policy=st.sampled_from(["allkeys-lru", "allkeys-lfu"]),
    slots=st.integers(1, 6),
    ops=operations,
)
def test_random_operations_keep_the_budget_and_never_return_a_wrong_value(
    policy: str, slots: int, ops: list[tuple[str, int, int, float]]
) -> None:
    s = MemoryStore(max_bytes=slots * entry_cost("k00", bytes(150)), policy=policy)
    model: dict[str, tuple[bytes, float | None]] = {}  # what a cache with no budget would hold
    now, reads = T, 0
    for op, k, size, step in ops:
        now += step
        key, value = f"k{k:02d}", bytes([k]) * size
        model = {m: (v, e) for m, (v, e) in model.items() if e is None or e > now}
        try:
            if op in ("set", "nx", "xx", "set_ttl"):
                present = s.exists(key, now=now) > 0
                ttl = 3.0 if op == "set_ttl" else None
                done = s.set(key, value, now, ttl=ttl, nx=op == "nx", xx=op == "xx")
                assert done == (op not in ("nx", "xx") or present == (op == "xx"))
                if done:
                    model[key] = (value, None if ttl is None else now + ttl)
            elif op == "append" and s.exists(key, now=now):
                s.append(key, b"+", now)
                model[key] = (model[key][0] + b"+", model[key][1])
            elif op == "incr" and s.exists(key, now=now) == 0:
                assert s.incr_by(key, size, now) == size
                model[key] = (b"%d" % size, None)
            elif op == "get":
                reads += 1
                got = s.get(key, now)
                assert got is None or got == model[key][0]
            elif op == "del":
                s.delete(key, now=now)
                model.pop(key, None)
            elif op == "expire" and s.expire(key, 2.0, now):
                model[key] = (model[key][0], now + 2.0)
            s.expire_some(now, 3)
        except EntryTooLarge:
            pass
        stats = s.stats
        entries = s._entries
        assert stats.used_bytes <= s.max_bytes
        assert stats.used_bytes == sum(entry_cost(k, e.value) for k, e in entries.items())
        assert stats.keys == len(s) == len(entries)
        assert stats.hits + stats.misses == reads
        if s._lfu is not None:  # every key in exactly the bucket of its priority
            buckets = s._lfu._buckets
            assert sum(len(b) for b in buckets.values()) == len(entries)
            assert all(key in buckets[e.priority] for key, e in entries.items())
        for key, entry in entries.items():  # what is kept is what was written, or expired
            if key in model:
                assert (entry.value, entry.expires) == model[key]
            else:
                assert entry.expires is not None and entry.expires <= now


def measure_per_key(policy: str, ttl: float | None, count: int) -> float:
    """Bytes a key takes in a store beyond its key and value characters:
    16-character keys, 100-byte values, the key and value objects included."""
    gc.collect()
    tracemalloc.start()
    try:
        s = MemoryStore(policy=policy)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            s.set(f"key:{i:012d}", b"%0100d" % i, T, ttl=ttl)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / count - 116


def test_memory_per_key_is_what_the_budget_charges() -> None:
    figures = {
        (policy, ttl): measure_per_key(policy, ttl, 50_000)
        for policy in ("allkeys-lru", "allkeys-lfu")
        for ttl in (None, 60.0)
    }
    for (policy, ttl), per_key in figures.items():
        print(f"{policy} ttl={ttl}: {per_key:.0f} bytes per key beyond key and value")
        # The fixed charge covers the worst case and does not overstate much.
        assert ENTRY_OVERHEAD * 0.55 < per_key <= ENTRY_OVERHEAD


def _state(s: MemoryStore) -> tuple[object, ...]:
    """Everything a store's later behaviour depends on, in eviction order."""
    entries = [(k, e.value, e.cost, e.expires, e.hits, e.priority) for k, e in s._entries.items()]
    buckets = None if s._lfu is None else {p: list(b) for p, b in s._lfu._buckets.items()}
    return entries, buckets, s.stats, sorted(s._expiry), s._volatile


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(["allkeys-lru", "allkeys-lfu"]),
    slots=st.integers(0, 4),
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "ttl", "get"]), st.integers(0, 5), st.integers(0, 300)),
        max_size=40,
    ),
)
def test_put_is_set_without_options(
    policy: str, slots: int, ops: list[tuple[str, int, int]]
) -> None:
    """The node's SET k v goes through ``put``, which writes some cases itself."""
    budget = slots * entry_cost("k0", bytes(150))
    stores = [MemoryStore(budget, policy), MemoryStore(budget, policy)]
    now = T
    for op, k, size in ops:
        now += 1.0
        key, value = f"k{k}", bytes([k]) * size
        outcomes = []
        for s, write in zip(stores, ("put", "set"), strict=True):
            try:
                if op == "put" and write == "put":
                    s.put(key, value, now)
                elif op == "put":
                    s.set(key, value, now)
                elif op == "ttl":
                    s.set(key, value, now, ttl=1.5)
                else:
                    s.get(key, now)
                outcomes.append("ok")
            except EntryTooLarge:
                outcomes.append("too large")
        assert outcomes[0] == outcomes[1]
        assert _state(stores[0]) == _state(stores[1])
