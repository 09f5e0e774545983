"""What only the PostgreSQL store does: expiry by the database's clock, one-line
errors for an unreachable server, and waiters woken by NOTIFY (also after the
listening connection was killed), not by the poll."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sysdesign.blocks.lock import LockUnavailable, open_store
from sysdesign.blocks.lock.postgres import PostgresTicketStore
from sysdesign.platform.errors import ConfigurationError
from tests.blocks.lock.conftest import server_url

NEVER = 600.0  # a poll interval no test outlives: only a notification can wake


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with server_url("postgres") as url:
        yield url


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresTicketStore]:
    built = PostgresTicketStore(url, poll_interval=NEVER)
    await built.connect()
    try:
        yield built
    finally:
        await built.close()


async def enqueue(store: PostgresTicketStore, name: str, ttl: float = 30.0) -> str:
    ticket_id = uuid.uuid4().hex
    await store.enqueue(name, ticket_id, "exclusive", 1, "test", ttl)
    return ticket_id


async def test_a_ticket_past_its_expiry_by_the_database_clock_is_gone(
    store: PostgresTicketStore, url: str
) -> None:
    first = await store.enqueue("job", "a", "exclusive", 1, "test", 0.3)
    await asyncio.sleep(0.6)
    assert await store.queue("job") == []
    assert await store.names() == []
    assert await store.refresh("job", "a", 30) is None
    second = await store.enqueue("job", "b", "exclusive", 1, "test", 30)
    assert second.token > first.token
    conn = await asyncpg.connect(url)
    try:  # the write purged the expired row, and kept the counter
        assert await conn.fetch("SELECT id FROM lock_tickets") == [("b",)]
        assert await conn.fetchval("SELECT last_token FROM lock_names") == second.token
    finally:
        await conn.close()
    assert await store.remove("job", "a") is False
    assert await store.remove("job", "b") is True


async def test_tokens_keep_growing_after_every_ticket_is_gone(url: str) -> None:
    tokens = []
    for _ in range(2):  # a second store on the same database finds the tables
        store = open_store(url)
        await store.connect()
        ticket = await store.enqueue("job", uuid.uuid4().hex, "exclusive", 1, "t", 30)
        assert await store.remove("job", ticket.id) is True
        tokens.append(ticket.token)
        await store.close()
    assert tokens == [1, 2]


async def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    store = open_store("postgresql://locker:secret@127.0.0.1:1/locks?timeout=2")
    with pytest.raises(LockUnavailable) as failure:
        await store.connect()
    message = str(failure.value)
    assert message.startswith("postgres at locker@127.0.0.1:1/locks is unavailable: ")
    assert "\n" not in message and "secret" not in message
    with pytest.raises(LockUnavailable, match="not connected"):
        await store.queue("job")


def test_url_forms() -> None:
    store = PostgresTicketStore.from_url("postgresql+asyncpg://u:pw@db:6543/locks?pool_size=3")
    assert store.server == "u@db:6543/locks"
    assert open_store("postgres://db/locks").server == "db/locks"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="pool_size must be a positive number"):
        open_store("postgresql://localhost/db?pool_size=none")


async def test_a_release_wakes_only_the_waiter_watching_that_ticket(
    store: PostgresTicketStore, url: str
) -> None:
    other = PostgresTicketStore.from_url(url)  # the releases come from another client
    await other.connect()
    try:
        first = await store.enqueue("a", uuid.uuid4().hex, "exclusive", 1, "t", 30)
        second = await store.enqueue("b", uuid.uuid4().hex, "exclusive", 1, "t", 30)
        on_first = asyncio.create_task(store.wait("a", [first], 60))
        on_second = asyncio.create_task(store.wait("b", [second], 60))
        await asyncio.sleep(0.05)
        assert await other.remove("a", first.id) is True
        await asyncio.wait_for(on_first, 10)  # the poll is NEVER: this was the NOTIFY
        await asyncio.sleep(0.2)
        assert not on_second.done()
        assert await other.remove("b", second.id) is True
        await asyncio.wait_for(on_second, 10)
    finally:
        await other.close()


LISTENER = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
)


async def test_a_killed_listener_reconnects_and_wakes_waiters_again(
    store: PostgresTicketStore, url: str
) -> None:
    ticket = await store.enqueue("job", uuid.uuid4().hex, "exclusive", 1, "t", 30)
    conn = await asyncpg.connect(url)
    try:
        killed = await conn.fetchval(LISTENER)
        assert killed is not None and store.listening
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", killed)
        for _ in range(500):  # the store notices and listens on a new connection
            await store.wait("job", [ticket], 0.01)
            if store.listening and await conn.fetchval(LISTENER) not in (None, killed):
                break
        assert store.listening and await conn.fetchval(LISTENER) not in (None, killed)
    finally:
        await conn.close()
    waiter = asyncio.create_task(store.wait("job", [ticket], 60))
    await asyncio.sleep(0.05)
    await store.remove("job", ticket.id)
    await asyncio.wait_for(waiter, 10)
