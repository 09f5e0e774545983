"""``CacheNode`` through redis-py (and redis-cli / redis-benchmark when installed),
on a free port, with the manual clock: TTLs run out when the test says so."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from sysdesign.blocks.cache import resp
from sysdesign.blocks.cache.node import CacheNode, main_node
from sysdesign.platform.clock import ManualClock


@pytest.fixture
async def node(clock: ManualClock) -> AsyncIterator[CacheNode]:
    async with CacheNode("127.0.0.1", 0, 0, "allkeys-lru", clock) as server:
        yield server


@pytest.fixture(params=[2, 3])
async def client(node: CacheNode, request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """redis-py speaking RESP2, and RESP3 (its default in 8.x: ``HELLO 3``)."""
    redis = Redis(host="127.0.0.1", port=node.port, socket_timeout=5, protocol=request.param)
    try:
        yield redis
    finally:
        await redis.aclose()


async def raw(port: int, data: bytes) -> bytes:
    """Everything the server sends back to ``data`` until it closes the
    connection (``data`` must make it: end with QUIT, or break the protocol)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(OSError):
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_ping_echo_get_set(client: Redis) -> None:
    assert await client.ping() is True
    assert await client.echo(b"hi") == b"hi"
    assert await client.get("k") is None
    assert await client.set("k", b"\x00\xffv") is True
    assert await client.get("k") == b"\x00\xffv"
    assert await client.set(b"\xff\xfe", b"binary key") is True
    assert await client.get(b"\xff\xfe") == b"binary key"


async def test_set_options(client: Redis, clock: ManualClock) -> None:
    assert await client.set("k", "1", nx=True) is True
    assert await client.set("k", "2", nx=True) is None
    assert await client.set("absent", "2", xx=True) is None
    assert await client.set("k", "3", xx=True) is True
    assert await client.set("k", "4", get=True) == b"3"
    assert await client.set("new", "x", get=True) is None
    assert await client.set("k", "5", ex=10) is True
    assert await client.ttl("k") == 10
    assert await client.set("k", "6", keepttl=True) is True
    assert await client.ttl("k") == 10
    assert await client.set("k", "7", px=1500) is True
    assert await client.pttl("k") == 1500
    clock.advance(1.5)
    assert await client.get("k") is None
    assert await client.set("k", "8", exat=int(clock.time()) + 5) is True
    assert await client.ttl("k") == 5
    for bad in (["ex", "0"], ["px", "-1"]):
        with pytest.raises(ResponseError, match="invalid expire time in 'set' command"):
            await client.execute_command("SET", "k", "v", *bad)
    for bad in (["nx", "xx"], ["ex", "1", "px", "1"], ["ex", "1", "keepttl"], ["bogus"], ["ex"]):
        with pytest.raises(ResponseError, match=r"^syntax error$"):
            await client.execute_command("SET", "k", "v", *bad)
    with pytest.raises(ResponseError, match="value is not an integer or out of range"):
        await client.execute_command("SET", "k", "v", "EX", "soon")


async def test_ttls(client: Redis, clock: ManualClock) -> None:
    assert await client.ttl("k") == -2
    assert await client.pttl("k") == -2
    await client.set("k", "v")
    assert await client.ttl("k") == -1
    assert await client.expire("k", 100) is True
    assert await client.expire("absent", 100) is False
    clock.advance(40)
    assert await client.ttl("k") == 60
    assert await client.pexpire("k", 2500) is True
    assert await client.pttl("k") == 2500
    assert await client.persist("k") is True
    assert await client.ttl("k") == -1
    assert await client.expire("k", 0) is True  # a non-positive TTL deletes, as in Redis
    assert await client.exists("k") == 0
    with pytest.raises(ResponseError, match="invalid expire time in 'expire' command"):
        await client.expire("k", 2**62)


async def test_active_expiry_reclaims_unread_keys(client: Redis, node: CacheNode) -> None:
    node.expire_interval = 0.001
    await client.mset({f"k{i}": b"v" for i in range(500)})
    for i in range(500):
        await client.expire(f"k{i}", 1)
    assert await client.dbsize() == 500
    assert isinstance(node.clock, ManualClock)
    node.clock.advance(2)
    for _ in range(1000):
        if await client.dbsize() == 0:
            break
        await asyncio.sleep(0.001)
    assert await client.dbsize() == 0
    assert (await client.info("stats"))["expired_keys"] == 500


async def test_counters(client: Redis) -> None:
    assert await client.incr("n") == 1
    assert await client.incrby("n", 10) == 11
    assert await client.decr("n") == 10
    assert await client.decrby("n", 20) == -10
    await client.set("s", "abc")
    with pytest.raises(ResponseError, match=r"^value is not an integer or out of range$"):
        await client.incr("s")
    with pytest.raises(ResponseError, match=r"^value is not an integer or out of range$"):
        await client.incrby("n", "x")
    await client.set("big", str(2**63 - 1))
    with pytest.raises(ResponseError, match="increment or decrement would overflow"):
        await client.incr("big")


async def test_multi_key_and_string_commands(client: Redis) -> None:
    assert await client.mset({"a": "1", "b": "2"}) is True
    assert await client.mget("a", "b", "c") == [b"1", b"2", None]
    assert await client.exists("a", "b", "c", "a") == 3
    assert await client.append("a", "23") == 3
    assert await client.strlen("a") == 3
    assert await client.strlen("c") == 0
    assert await client.getdel("a") == b"123"
    assert await client.getdel("a") is None
    assert await client.delete("a", "b", "c") == 1
    await client.set("x", "1")
    assert await client.dbsize() == 1
    assert await client.flushdb() is True
    assert await client.dbsize() == 0
    await client.set("x", "1")
    assert await client.flushall() is True
    assert await client.dbsize() == 0
    with pytest.raises(ResponseError, match="wrong number of arguments for 'mset' command"):
        await client.execute_command("MSET", "a", "1", "b")


async def test_errors_match_redis(client: Redis) -> None:
    with pytest.raises(ResponseError) as info:
        await client.execute_command("FOO", "a", "b")
    assert str(info.value) == "unknown command 'FOO', with args beginning with: 'a' 'b'"
    with pytest.raises(ResponseError, match=r"^wrong number of arguments for 'get' command$"):
        await client.execute_command("GET")
    with pytest.raises(ResponseError, match=r"^wrong number of arguments for 'set' command$"):
        await client.execute_command("SET", "k")
    with pytest.raises(ResponseError, match="unsupported protocol version"):
        await client.execute_command("HELLO", "4")
    with pytest.raises(ResponseError, match="DB index is out of range"):
        await client.execute_command("SELECT", "1")
    assert await client.execute_command("SELECT", "0") is True


async def test_connection_and_introspection(client: Redis, node: CacheNode) -> None:
    assert await client.client_setname("me") is True
    assert await client.client_getname() in ("me", b"me")  # decoded under RESP3 only
    assert await client.execute_command("CLIENT", "SETINFO", "LIB-NAME", "x") == b"OK"
    assert await client.config_get("maxmemory") == {"maxmemory": "0"}
    assert await client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    assert await client.config_get("save") == {"save": ""}
    assert await client.config_get("appendonly") == {"appendonly": "no"}
    assert await client.command_count() > 20
    assert await client.execute_command("COMMAND", "DOCS") in ([], {})
    commands = await client.command()
    assert commands["get"]["arity"] == 2 and commands["mget"]["arity"] == -2


async def test_info_sections(client: Redis, node: CacheNode) -> None:
    await client.set("k", "v")
    await client.get("k")
    await client.get("missing")
    info = await client.info()
    assert info["redis_version"] and info["tcp_port"] == node.port
    assert info["keyspace_hits"] == 1 and info["keyspace_misses"] == 1
    assert info["db0"]["keys"] == 1
    assert info["used_memory"] > 0 and info["maxmemory_policy"] == "allkeys-lru"
    memory = await client.info("memory")
    assert set(memory) == {"used_memory", "maxmemory", "maxmemory_policy"}
    for section in ("server", "stats", "keyspace", "clients"):
        assert await client.info(section)


async def test_raw_replies(node: CacheNode) -> None:
    assert (
        await raw(node.port, b"PING x\r\nECHO y\r\nGET k\r\nQUIT\r\n")
        == b"$1\r\nx\r\n$1\r\ny\r\n$-1\r\n+OK\r\n"
    )
    assert await raw(node.port, b"FOO\r\nQUIT\r\n") == (
        b"-ERR unknown command 'FOO', with args beginning with: \r\n+OK\r\n"
    )
    assert (await raw(node.port, b"HELLO 3\r\nCONFIG GET save\r\nQUIT\r\n")).endswith(
        b"%1\r\n$4\r\nsave\r\n$0\r\n\r\n+OK\r\n"
    )


async def test_quit_closes_only_that_client(node: CacheNode) -> None:
    reply = await raw(node.port, resp.encode_command(b"QUIT") + resp.encode_command(b"PING"))
    assert reply == b"+OK\r\n"


async def test_pipeline_of_a_thousand(client: Redis) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for i in range(500):
            pipe.set(f"k{i}", str(i))
            pipe.get(f"k{i}")
        results = await pipe.execute()
    assert len(results) == 1000
    assert results[1::2] == [str(i).encode() for i in range(500)]


async def test_eviction_under_small_maxmemory(clock: ManualClock) -> None:
    async with CacheNode("127.0.0.1", 0, 20_000, "allkeys-lru", clock) as node:
        client = Redis(port=node.port, socket_timeout=5)
        try:
            for i in range(200):
                await client.set(f"k{i}", b"x" * 100)
            info = await client.info()
            assert info["evicted_keys"] > 0
            assert info["used_memory"] <= 20_000
            assert await client.get("k199") == b"x" * 100
            assert await client.get("k0") is None
            with pytest.raises(ResponseError, match=r"^command not allowed when used memory"):
                await client.set("huge", b"x" * 30_000)
            with pytest.raises(ResponseError, match=r"^command not allowed when used memory"):
                await client.mset({"small": b"x", "huge": b"x" * 30_000})
            assert await client.exists("small", "huge") == 0
        finally:
            await client.aclose()


async def test_garbage_closes_only_that_client(client: Redis, node: CacheNode) -> None:
    await client.set("k", "v")
    reply = await raw(node.port, b"*1\r\n$x\r\n")
    assert reply == b"-ERR Protocol error: invalid bulk length\r\n"
    assert await client.get("k") == b"v"
    reply = await raw(node.port, b"PING\r\n*1\r\n$4\r\nPING\r\n*x\r\nPING\r\n")
    assert reply == b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
    assert await client.get("k") == b"v"


@pytest.mark.parametrize(
    "data",
    [b"*2\r\n$3\r\nGET\r\n:5\r\n", b"*" + b"9" * 70_000, b"\x00\xff" * 40_000, b'GET "k\r\n'],
)
async def test_protocol_errors_answer_and_close(node: CacheNode, data: bytes) -> None:
    reply = await raw(node.port, data)
    assert reply.startswith(b"-ERR Protocol error: ") and reply.count(b"\r\n") == 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=4))
async def test_random_streams_never_kill_the_server(node: CacheNode, chunks: list[bytes]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", node.port)
    with contextlib.suppress(OSError):
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n"), 5) == b"+PONG\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


NAMES = [
    "PING", "ECHO", "GET", "SET", "DEL", "EXISTS", "EXPIRE", "PEXPIRE", "PERSIST", "TTL",
    "PTTL", "INCR", "INCRBY", "DECR", "DECRBY", "MGET", "MSET", "APPEND", "STRLEN", "GETDEL",
    "DBSIZE", "FLUSHDB", "INFO", "CONFIG", "COMMAND", "CLIENT", "HELLO", "SELECT", "FOO",
]  # fmt: skip
WORDS = [
    "k", "0", "1", "-1", "10", "9223372036854775807", "-9223372036854775808", "x", "EX", "PX",
    "EXAT", "PXAT", "NX", "XX", "GET", "KEEPTTL", "COUNT", "DOCS", "SETNAME", "SETINFO", "2",
    "3", "*",
]  # fmt: skip
arguments = st.one_of(st.sampled_from(WORDS).map(str.encode), st.binary(max_size=12))
random_commands = st.lists(
    st.tuples(st.sampled_from(NAMES).map(str.encode), st.lists(arguments, max_size=5)),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(random_commands)
async def test_random_commands_get_replies_not_crashes(
    node: CacheNode, commands: list[tuple[bytes, list[bytes]]]
) -> None:
    """Every command, whatever its arguments, gets a reply on a connection that stays open."""
    marker = resp.bulk(b"end-of-test")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        data = b"".join(resp.encode_command(name, *args) for name, args in commands)
        writer.write(data + resp.encode_command(b"ECHO", b"end-of-test"))
        received = b""
        while not received.endswith(marker):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, received
            received += chunk
        assert b"internal error" not in received
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
async def test_redis_cli(node: CacheNode) -> None:
    async def cli(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "redis-cli", "-p", str(node.port), *args, stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0
        return out.decode().strip()

    assert await cli("SET", "k", "v") == "OK"
    assert await cli("GET", "k") == "v"


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark missing")
async def test_redis_benchmark_smoke(node: CacheNode) -> None:
    process = await asyncio.create_subprocess_exec(
        *("redis-benchmark", "-p", str(node.port), "-t", "set,get", "-n", "2000", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 0, text
    assert "SET:" in text and "GET:" in text
    assert "error" not in text.lower() and "WARNING" not in text, text


def test_main_node_rejects_a_bad_policy() -> None:
    with pytest.raises(SystemExit):
        main_node(["--policy", "volatile-ttl"])


async def test_command_names_in_any_case(node: CacheNode) -> None:
    data = b"".join(
        resp.encode_command(name, *args)
        for name, args in [(b"set", [b"k", b"v"]), (b"GeT", [b"k"]), (b"GET", [b"k"])]
    )
    assert await raw(node.port, data + resp.encode_command(b"qUiT")) == (
        b"+OK\r\n$1\r\nv\r\n$1\r\nv\r\n+OK\r\n"
    )


async def test_a_clock_set_later_is_the_one_read(node: CacheNode) -> None:
    later = ManualClock(start=2_000_000_000.0)
    node.clock = later
    data = resp.encode_command(b"SET", b"k", b"v", b"EX", b"10") + resp.encode_command(b"GET", b"k")
    assert await raw(node.port, data + resp.encode_command(b"QUIT")) == b"+OK\r\n$1\r\nv\r\n+OK\r\n"
    later.advance(10)
    assert await raw(node.port, b"GET k\r\nQUIT\r\n") == b"$-1\r\n+OK\r\n"
