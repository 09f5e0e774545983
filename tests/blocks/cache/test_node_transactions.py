"""MULTI/EXEC/DISCARD and ``SET ... IFEQ`` on ``CacheNode``: what the cache
cluster's atomic operations are built on, through redis-py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from sysdesign.blocks.cache import resp
from sysdesign.blocks.cache.node import CacheNode
from sysdesign.platform.clock import ManualClock
from tests.blocks.cache.test_node import raw


@pytest.fixture
async def node(clock: ManualClock) -> AsyncIterator[CacheNode]:
    async with CacheNode("127.0.0.1", 0, 0, "allkeys-lru", clock) as server:
        yield server


@pytest.fixture
async def client(node: CacheNode) -> AsyncIterator[Redis]:
    redis = Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
    try:
        yield redis
    finally:
        await redis.aclose()


def command(*args: str) -> bytes:
    return resp.array(resp.bulk(a.encode()) for a in args)


async def test_exec_runs_the_queued_commands_and_answers_each(client: Redis) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.set("n", b"0", px=5000, nx=True)
    pipe.incrby("n", 5)
    pipe.pttl("n")
    pipe.get("absent")
    assert await pipe.execute() == [True, 5, 5000, None]
    assert await client.get("n") == b"5"


async def test_an_error_at_run_time_is_that_command_s_reply_only(client: Redis) -> None:
    await client.set("text", b"abc")
    pipe = client.pipeline(transaction=True)
    pipe.incr("text")
    pipe.set("after", b"1")
    replies = await pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], ResponseError) and replies[1] is True
    assert await client.get("after") == b"1"


async def test_a_command_refused_while_queueing_aborts_the_transaction(
    node: CacheNode, client: Redis
) -> None:
    sent = [("MULTI",), ("SET", "k", "v"), ("GET",), ("NOSUCH",), ("EXEC",), ("QUIT",)]
    replies = await raw(node.port, b"".join(command(*c) for c in sent))
    assert replies == (
        b"+OK\r\n+QUEUED\r\n"
        b"-ERR wrong number of arguments for 'get' command\r\n"
        b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n+OK\r\n"
    )
    assert await client.get("k") is None
    pipe = client.pipeline(transaction=True)
    pipe.set("k", b"v")
    pipe.execute_command("NOSUCH")
    with pytest.raises(ResponseError, match="NOSUCH"):  # redis-py names the refused command
        await pipe.execute()


async def test_multi_discard_and_their_misuse(node: CacheNode, client: Redis) -> None:
    sent = [("EXEC",), ("DISCARD",), ("MULTI",), ("MULTI",), ("SET", "k", "v"), ("DISCARD",)]
    replies = await raw(node.port, b"".join(command(*c) for c in [*sent, ("QUIT",)]))
    assert replies == (
        b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n"
        b"-ERR MULTI calls can not be nested\r\n+QUEUED\r\n+OK\r\n+OK\r\n"
    )
    assert await client.get("k") is None


async def test_set_ifeq_replaces_only_the_expected_value(node: CacheNode, client: Redis) -> None:
    assert await client.execute_command("SET", "k", "new", "IFEQ", "old") is None
    assert await client.get("k") is None  # IFEQ never creates a key
    await client.set("k", b"old")
    assert await client.execute_command("SET", "k", "x", "IFEQ", "other") is None
    assert await client.execute_command("SET", "k", "new", "IFEQ", "old", "PX", 2000) is True
    assert await client.get("k") == b"new"
    assert 0 < await client.pttl("k") <= 2000
    sent = command("SET", "k", "z", "IFEQ", "nope", "GET") + command("QUIT")
    assert await raw(node.port, sent) == b"$3\r\nnew\r\n+OK\r\n"
    assert await client.get("k") == b"new"
    for bad in (("IFEQ",), ("NX", "IFEQ", "a"), ("IFEQ", "a", "XX"), ("IFEQ", "a", "IFEQ", "b")):
        with pytest.raises(ResponseError, match="syntax error"):
            await client.execute_command("SET", "k", "v", *bad)
