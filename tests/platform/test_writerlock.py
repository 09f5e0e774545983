"""SQLite writers' turns: one at a time, in arrival order, urgent ones first."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sysdesign.platform.writerlock import URGENT_BURST, WriterLock, urgent


async def _queue_behind(lock: WriterLock, names: list[tuple[str, bool]]) -> list[str]:
    """Hold the lock while ``names`` queue (each urgent or not), then let them run."""
    order: list[str] = []

    async def writer(name: str) -> None:
        async with lock:
            order.append(name)
            await asyncio.sleep(0)

    await lock.acquire()
    tasks = []
    for name, is_urgent in names:
        if is_urgent:
            with urgent():
                tasks.append(asyncio.create_task(writer(name)))
        else:
            tasks.append(asyncio.create_task(writer(name)))
        await asyncio.sleep(0)  # queued in this order
    assert lock.waiting == len(names)
    lock.release()
    await asyncio.gather(*tasks)
    return order


async def test_writers_take_turns_in_arrival_order() -> None:
    lock = WriterLock()
    names = [(f"w{n}", False) for n in range(5)]
    assert await _queue_behind(lock, names) == ["w0", "w1", "w2", "w3", "w4"]


async def test_urgent_writers_go_before_the_others_in_their_own_order() -> None:
    lock = WriterLock()
    names = [("bulk1", False), ("code1", True), ("bulk2", False), ("code2", True)]
    assert await _queue_behind(lock, names) == ["code1", "code2", "bulk1", "bulk2"]


async def test_urgent_writers_do_not_starve_the_others() -> None:
    lock = WriterLock()
    names = [("bulk1", False), *((f"code{n}", True) for n in range(URGENT_BURST + 3))]
    order = await _queue_behind(lock, names)
    assert order.index("bulk1") == URGENT_BURST
    assert order[:URGENT_BURST] == [f"code{n}" for n in range(URGENT_BURST)]


async def test_a_waiter_cancelled_after_the_lock_was_released_to_another_raises_cancelled() -> None:
    lock = WriterLock()
    await lock.acquire()
    first = asyncio.create_task(lock.acquire())
    second = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    second.cancel()  # cancelled while waiting ...
    lock.release()  # ... and the lock goes to ``first`` before ``second`` runs
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.wait_for(first, 1)
    assert lock.waiting == 0
    lock.release()
    await asyncio.wait_for(lock.acquire(), 1)


async def test_only_one_writer_holds_the_lock_at_a_time() -> None:
    lock = WriterLock()
    holding = 0
    most = 0

    async def writer(n: int) -> None:
        nonlocal holding, most
        with urgent() if n % 3 == 0 else contextlib.nullcontext():
            async with lock:
                holding += 1
                most = max(most, holding)
                await asyncio.sleep(0)
                holding -= 1

    await asyncio.gather(*(writer(n) for n in range(200)))
    assert most == 1
    assert lock.waiting == 0
    await asyncio.wait_for(lock.acquire(), 1)  # free again


async def test_a_cancelled_waiter_does_not_keep_the_lock() -> None:
    lock = WriterLock()
    await lock.acquire()
    waiting = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lock.waiting == 0
    lock.release()
    await asyncio.wait_for(lock.acquire(), 1)


async def test_a_waiter_cancelled_as_the_lock_reaches_it_passes_it_on() -> None:
    lock = WriterLock()
    await lock.acquire()
    first = asyncio.create_task(lock.acquire())
    second = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    lock.release()  # handed to ``first``, which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the lock went on to ``second``
    lock.release()
    await asyncio.wait_for(lock.acquire(), 1)
