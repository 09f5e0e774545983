"""The lock contract on every backend: exclusion, fencing tokens, fairness, leases, modes."""

from __future__ import annotations

import asyncio

import pytest

from sysdesign.blocks.lock import (
    FencedResource,
    LeaseLost,
    LockConflict,
    LockService,
    LockTimeout,
    StaleToken,
)
from sysdesign.blocks.lock.election import Election
from tests.blocks.lock.conftest import LONG, SHORT, Elapse


async def test_acquire_release_and_tokens_that_only_grow(locks: LockService) -> None:
    first = await locks.acquire("job", ttl=LONG)
    assert (first.name, first.mode, first.owner) == ("job", "exclusive", "test")
    assert await locks.try_acquire("job", ttl=LONG) is None
    assert await locks.release(first) is True
    assert await locks.release(first) is False  # a stale release changes nothing
    tokens = [first.token]
    for _ in range(5):
        lease = await locks.acquire("job", ttl=LONG, wait=0)
        tokens.append(lease.token)
        await locks.release(lease)
    assert tokens == sorted(set(tokens))  # strictly increasing, across every holder
    other = await locks.acquire("other-job", ttl=LONG)
    assert other.token >= 1  # names are independent
    await locks.release(other)


async def test_fifty_concurrent_holders_lose_no_update(locks: LockService) -> None:
    counter = {"value": 0}
    tokens: list[int] = []

    async def worker() -> None:
        async with locks.hold("counter", ttl=LONG) as held:
            value = counter["value"]
            await asyncio.sleep(0)  # the read-modify-write spans a yield
            await asyncio.sleep(0)
            counter["value"] = value + 1
            tokens.append(held.lease.token)

    await asyncio.gather(*(worker() for _ in range(50)))
    assert counter["value"] == 50
    assert tokens == sorted(tokens) and len(set(tokens)) == 50  # granted in token order


async def test_waiters_are_served_first_come_first_served(locks: LockService) -> None:
    holder = await locks.acquire("fifo", ttl=LONG)
    order: list[int] = []

    async def waiter(i: int) -> None:
        lease = await locks.acquire("fifo", ttl=LONG)
        order.append(i)
        await locks.release(lease)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(waiter(i)))
        # Each is queued before the next asks.
        for _ in range(100):
            if len((await locks.inspect("fifo")).waiters) == i + 1:
                break
            await asyncio.sleep(0.005)
    state = await locks.inspect("fifo")
    assert [t.token for t in state.holders] == [holder.token]
    assert len(state.waiters) == 8
    await locks.release(holder)
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_a_wait_that_runs_out_leaves_nothing_queued(locks: LockService) -> None:
    holder = await locks.acquire("busy", ttl=LONG)
    with pytest.raises(LockTimeout, match="not granted in time"):
        await locks.acquire("busy", ttl=LONG, wait=0.1)
    waiter = asyncio.create_task(locks.acquire("busy", ttl=LONG))
    for _ in range(200):
        if (await locks.inspect("busy")).waiters:
            break
        await asyncio.sleep(0.005)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    state = await locks.inspect("busy")
    assert state.waiters == [] and [t.token for t in state.holders] == [holder.token]
    await locks.release(holder)
    assert (await locks.inspect("busy")).holders == []


async def test_a_lapsed_lease_frees_the_lock_and_cannot_be_renewed(
    locks: LockService, elapse: Elapse
) -> None:
    stale = await locks.acquire("lease", ttl=SHORT)
    renewed = await locks.renew(stale)
    assert renewed.token == stale.token
    waiter = asyncio.create_task(locks.acquire("lease", ttl=LONG))
    await elapse(SHORT * 1.5)
    fresh = await asyncio.wait_for(waiter, 10)
    assert fresh.token > stale.token
    with pytest.raises(LeaseLost, match="has lapsed"):
        await locks.renew(stale)
    assert await locks.release(stale) is False
    assert [t.token for t in (await locks.inspect("lease")).holders] == [fresh.token]
    await locks.release(fresh)


async def test_a_paused_holder_s_late_write_is_refused_by_the_resource(
    locks: LockService, elapse: Elapse
) -> None:
    """The holder stalls past its lease, another acquires and writes, the
    stalled one wakes and writes with its old token."""
    resource = FencedResource([])
    paused = await locks.acquire("row", ttl=SHORT)
    resource.write(paused.token, lambda v: [*v, "paused-1"])
    await elapse(SHORT * 1.5)  # the pause
    active = await locks.acquire("row", ttl=LONG, wait=5)
    resource.write(active.token, lambda v: [*v, "active"])
    with pytest.raises(StaleToken, match=f"{paused.token} is stale: {active.token}"):
        resource.write(paused.token, lambda v: [*v, "paused-2"])
    assert resource.value == ["paused-1", "active"] and resource.refused == 1
    resource.write(active.token, lambda v: [*v, "active-2"])  # the holder writes again
    await locks.release(active)


async def test_hold_keeps_the_lease_alive_and_says_when_it_is_lost(locks: LockService) -> None:
    ttl = 0.3
    async with locks.hold("kept", ttl=ttl) as held:
        first = held.lease
        await asyncio.sleep(ttl * 3)  # real time: the keepalive renews every ttl / 3
        assert not held.lost.is_set()
        assert held.lease.token == first.token
        assert await locks.try_acquire("kept", ttl=LONG) is None
        await locks.store.remove("kept", first.ticket_id)  # taken away from outside
        for _ in range(100):
            if held.lost.is_set():
                break
            await asyncio.sleep(0.02)
        assert held.lost.is_set()
    assert (await locks.inspect("kept")).holders == []


async def test_readers_share_and_a_writer_waits_its_turn(locks: LockService) -> None:
    r1 = await locks.acquire("doc", ttl=LONG, mode="shared")
    r2 = await locks.acquire("doc", ttl=LONG, mode="shared", wait=0)
    writer = asyncio.create_task(locks.acquire("doc", ttl=LONG))
    await asyncio.sleep(0.05)
    # A reader arriving after the waiting writer queues behind it: writers never starve.
    late_reader = asyncio.create_task(locks.acquire("doc", ttl=LONG, mode="shared"))
    await asyncio.sleep(0.05)
    state = await locks.inspect("doc")
    assert {t.token for t in state.holders} == {r1.token, r2.token} and len(state.waiters) == 2
    await locks.release(r1)
    await asyncio.sleep(0.05)
    assert not writer.done()
    await locks.release(r2)
    w = await asyncio.wait_for(writer, 5)
    await asyncio.sleep(0.05)
    assert not late_reader.done()
    await locks.release(w)
    r3 = await asyncio.wait_for(late_reader, 5)
    assert r1.token < r2.token < w.token < r3.token
    await locks.release(r3)


async def test_a_semaphore_admits_n_holders(locks: LockService) -> None:
    permits = [await locks.acquire("pool", ttl=LONG, mode="permit", permits=3) for _ in range(3)]
    assert await locks.try_acquire("pool", ttl=LONG, mode="permit", permits=3) is None
    fourth = asyncio.create_task(locks.acquire("pool", ttl=LONG, mode="permit", permits=3))
    await asyncio.sleep(0.05)
    assert not fourth.done()
    await locks.release(permits[1])
    lease = await asyncio.wait_for(fourth, 5)
    assert lease.token > permits[2].token
    state = await locks.inspect("pool")
    assert len(state.holders) == 3 and state.waiters == []
    with pytest.raises(LockConflict, match="semaphore of 3, not as a semaphore of 2"):
        await locks.acquire("pool", ttl=LONG, mode="permit", permits=2, wait=0)
    with pytest.raises(LockConflict, match="not as a lock"):
        await locks.acquire("pool", ttl=LONG, wait=0)
    assert len((await locks.inspect("pool")).holders) == 3  # the refused left no ticket
    for held in [permits[0], permits[2], lease]:
        await locks.release(held)


async def test_leader_election(locks: LockService) -> None:
    election = Election(locks, "scheduler", ttl=LONG)
    assert await election.leader() is None
    seen: list[tuple[str, int] | None] = []

    async def watch() -> None:
        async for leader in election.observe(poll=0.05):
            seen.append(leader)
            if len(seen) == 3:
                return

    async def observed(count: int) -> None:
        for _ in range(500):  # an observer sees leaders that last longer than its poll
            if len(seen) == count:
                return
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    await observed(1)
    a = await election.campaign("node-a")
    b_campaign = asyncio.create_task(election.campaign("node-b"))
    await asyncio.sleep(0.05)
    assert await election.leader() == ("node-a", a.token)
    assert not b_campaign.done()
    await observed(2)
    assert await election.resign(a) is True
    b = await asyncio.wait_for(b_campaign, 5)
    assert await election.leader() == ("node-b", b.token) and b.token > a.token
    await asyncio.wait_for(watcher, 5)
    assert seen == [None, ("node-a", a.token), ("node-b", b.token)]
    await election.resign(b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "ttl": 1}, "name must be 1 to 256"),
        ({"name": "x" * 257, "ttl": 1}, "name must be 1 to 256"),
        ({"name": "a", "ttl": 0}, "ttl must be 0.05 to 86400 seconds"),
        ({"name": "a", "ttl": 0.01}, "ttl must be 0.05"),
        ({"name": "a", "ttl": 86_401}, "to 86400 seconds, not 86401"),
        ({"name": "a", "ttl": 1, "mode": "both"}, "mode must be one of"),
        ({"name": "a", "ttl": 1, "mode": "permit", "permits": 0}, "permits must be"),
        ({"name": "a", "ttl": 1, "permits": 2}, "1 unless mode is permit"),
        ({"name": "a", "ttl": 1, "wait": -1}, "wait must be at least 0"),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_queued(
    locks: LockService, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await locks.acquire(**kwargs)  # type: ignore[arg-type]
    assert await locks.store.names() == []


async def test_a_waiter_whose_ticket_ran_out_queues_again(
    locks: LockService, elapse: Elapse
) -> None:
    holder = await locks.acquire("stall", ttl=LONG)
    waiter = asyncio.create_task(locks.acquire("stall", ttl=SHORT))
    await asyncio.sleep(0.05)
    # On a manual clock the waiter cannot refresh in time: its ticket lapses
    # as if its process had stalled; on a server it refreshes and keeps it.
    await elapse(SHORT * 2)
    for _ in range(500):  # it notices at its next refresh, and queues again
        if len((await locks.inspect("stall")).waiters) == 1:
            break
        await asyncio.sleep(0.01)
    assert len((await locks.inspect("stall")).waiters) == 1 and not waiter.done()
    await locks.release(holder)
    lease = await asyncio.wait_for(waiter, 10)
    assert lease.token > holder.token
    await locks.release(lease)
