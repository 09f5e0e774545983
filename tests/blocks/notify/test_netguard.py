"""The SSRF guard: which addresses are public, the allow list, and the httpcore
backend that checks every resolved address and connects to a checked one."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

import httpcore
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.blocks.notify.netguard import (
    AddressGuard,
    AddressRefused,
    GuardedNetworkBackend,
    IPAddress,
    Resolver,
    embedded_ipv4,
    ip_literal,
    is_public,
    parse_networks,
    why_not_public,
)
from tests.blocks.notify.helpers import HttpReceiver, Reply, Request

LOOPBACK = parse_networks("127.0.0.0/8, ::1")

# parse_networks


@pytest.mark.parametrize(
    ("text", "networks"),
    [
        ("", ()),
        ("  ", ()),
        (
            "127.0.0.0/8, ::1, 10.1.2.3",
            (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"), IPv4Network("10.1.2.3/32")),
        ),
        ("fd00::/8,", (IPv6Network("fd00::/8"),)),
    ],
)
def test_parse_networks(text: str, networks: tuple[Any, ...]) -> None:
    assert parse_networks(text) == networks


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("nonsense", "nonsense"),
        ("127.0.0.0/8, 300.1.1.1", "300.1.1.1"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.1.2.3/8", "10.1.2.3/8"),  # host bits set: would allow all of 10/8
        ("example.com", "example.com"),
    ],
)
def test_parse_networks_names_a_bad_entry(text: str, entry: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"not a network or address: '{entry}'")):
        parse_networks(text)


# is_public

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]

NOT_PUBLIC = {
    "127.0.0.1": "a loopback address",
    "127.255.255.254": "a loopback address",
    "10.0.0.1": "a private address",
    "172.16.0.1": "a private address",
    "172.31.255.255": "a private address",
    "192.168.1.1": "a private address",
    "169.254.169.254": "a link-local address",  # cloud metadata
    "169.254.0.1": "a link-local address",
    "100.64.0.1": "a shared (carrier-grade NAT) address",
    "100.127.255.254": "a shared (carrier-grade NAT) address",
    "0.0.0.0": "an unspecified address",
    "0.1.2.3": "an unspecified address",
    "224.0.0.1": "a multicast address",
    "239.255.255.250": "a multicast address",
    "240.0.0.1": "a reserved address",
    "255.255.255.255": "a reserved address",
    "192.0.2.1": "a special-purpose address",  # documentation
    "198.51.100.1": "a special-purpose address",
    "203.0.113.1": "a special-purpose address",
    "198.18.0.1": "a special-purpose address",  # benchmarking
    "::": "an unspecified address",
    "::1": "a loopback address",
    "fe80::1": "a link-local address",
    "fc00::1": "a private address",
    "fd12:3456::1": "a private address",
    "ff02::1": "a multicast address",
    "ff0e::1": "a multicast address",
    "fec0::1": "a site-local address",
    "2001:db8::1": "a special-purpose address",  # documentation
    "2001::1": "a special-purpose address",  # Teredo
    "100::1": "a reserved address",  # discard-only
    "::7f00:1": "a reserved address",  # IPv4-compatible, deprecated
    "64:ff9b:1::a00:1": "a reserved address",  # local-use NAT64
    "::ffff:127.0.0.1": "a loopback address",
    "::ffff:10.0.0.1": "a private address",
    "::ffff:169.254.169.254": "a link-local address",
    "::ffff:0.0.0.0": "an unspecified address",
    "2002:7f00:1::1": "a loopback address",  # 6to4 of 127.0.0.1
    "2002:a00:1::": "a private address",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1": "a loopback address",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "a link-local address",  # NAT64 of 169.254.169.254
}


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public(address)
    assert is_public(ip_address(address))
    assert why_not_public(address) is None


@pytest.mark.parametrize(("address", "reason"), NOT_PUBLIC.items())
def test_addresses_that_are_not_public(address: str, reason: str) -> None:
    assert not is_public(address)
    assert why_not_public(ip_address(address)) == reason


def test_is_public_refuses_text_that_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        is_public("example.com")


def mapped(address: IPv4Address) -> IPv6Address:
    return IPv6Address((0xFFFF << 32) | int(address))


@given(st.ip_addresses(v=4))
def test_an_ipv4_mapped_address_is_judged_by_its_ipv4_address(address: IPv4Address) -> None:
    assert is_public(address) == is_public(mapped(address))


@given(st.ip_addresses(v=4))
def test_6to4_and_nat64_forms_are_judged_by_their_ipv4_address(address: IPv4Address) -> None:
    sixtofour = IPv6Address((0x2002 << 112) | (int(address) << 80) | 1)
    nat64 = IPv6Address(int(IPv6Address("64:ff9b::")) | int(address))
    assert embedded_ipv4(sixtofour) == embedded_ipv4(nat64) == address
    assert is_public(sixtofour) == is_public(nat64) == is_public(address)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("::1", "::1"),
        ("example.com", None),
        ("cafe", None),
        ("1.2.3.4.5", None),
        ("", None),
    ],
)
def test_ip_literal(host: str, address: str | None) -> None:
    assert ip_literal(host) == (ip_address(address) if address else None)


# AddressGuard


def test_the_guard_lets_public_addresses_through() -> None:
    AddressGuard().check("8.8.8.8")
    AddressGuard().check(ip_address("2606:4700:4700::1111"))


def test_the_guard_refuses_naming_the_address_and_why() -> None:
    with pytest.raises(AddressRefused) as refused:
        AddressGuard().check("10.0.0.5")
    assert isinstance(refused.value, ValueError)
    assert str(refused.value) == "10.0.0.5 is a private address; refused"
    assert (refused.value.address, refused.value.reason) == ("10.0.0.5", "a private address")
    with pytest.raises(AddressRefused, match=re.escape("(127.0.0.1) is a loopback address")):
        AddressGuard().check("::ffff:127.0.0.1")


def test_the_guard_lets_allowed_networks_through() -> None:
    guard = AddressGuard(parse_networks("10.0.0.0/8, fd00::/8, 127.0.0.1"))
    guard.check("10.200.0.1")
    guard.check("fd00::5")
    guard.check("127.0.0.1")
    guard.check("::ffff:127.0.0.1")  # allowed by its IPv4 address
    for refused in ("127.0.0.2", "192.168.0.1", "fc00::1", "::1"):
        with pytest.raises(AddressRefused):
            guard.check(refused)


# GuardedNetworkBackend


def dns(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ip_address(a) for a in answers[host]]

    return resolve


async def no_dns(host: str, port: int) -> list[IPAddress]:
    raise AssertionError(f"{host} should not be resolved")


class RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.tls: list[tuple[ssl.SSLContext, str | None]] = []

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.tls.append((ssl_context, server_hostname))
        raise httpcore.ConnectError("recorded; no handshake")

    async def aclose(self) -> None:
        pass


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where it is asked to connect; refuses ``unreachable``."""

    def __init__(self, unreachable: Iterable[str] = ()) -> None:
        self.connects: list[tuple[str, int]] = []
        self.stream = RecordingStream()
        self.unreachable = set(unreachable)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host in self.unreachable:
            raise httpcore.ConnectError(f"{host} unreachable")
        return self.stream


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], ["8.8.8.8", "127.0.0.1"], ["2606:4700::1111", "fd00::1"]]
)
async def test_a_name_is_refused_when_any_address_is(answer: list[str]) -> None:
    delegate = RecordingBackend()
    backend = GuardedNetworkBackend(
        AddressGuard(), resolve=dns({"rebind.example": answer}), delegate=delegate
    )
    with pytest.raises(AddressRefused, match=re.escape(answer[-1])):
        await backend.connect_tcp("rebind.example", 443)
    assert delegate.connects == []


async def test_a_literal_address_is_checked_without_resolving() -> None:
    delegate = RecordingBackend()
    backend = GuardedNetworkBackend(AddressGuard(), resolve=no_dns, delegate=delegate)
    with pytest.raises(AddressRefused, match=re.escape("169.254.169.254")):
        await backend.connect_tcp("169.254.169.254", 80)
    await backend.connect_tcp("8.8.8.8", 80)
    assert delegate.connects == [("8.8.8.8", 80)]


async def test_it_connects_to_the_checked_addresses_in_turn() -> None:
    delegate = RecordingBackend(unreachable={"2606:4700::1111"})
    answer = ["2606:4700::1111", "8.8.8.8", "8.8.8.8"]
    backend = GuardedNetworkBackend(
        AddressGuard(), resolve=dns({"hooks.example": answer}), delegate=delegate
    )
    assert await backend.connect_tcp("hooks.example", 443) is delegate.stream
    assert delegate.connects == [("2606:4700::1111", 443), ("8.8.8.8", 443)]


async def test_every_address_unreachable_is_a_connect_error() -> None:
    delegate = RecordingBackend(unreachable={"8.8.8.8", "1.1.1.1"})
    backend = GuardedNetworkBackend(
        AddressGuard(), resolve=dns({"h.example": ["8.8.8.8", "1.1.1.1"]}), delegate=delegate
    )
    with pytest.raises(httpcore.ConnectError, match=re.escape("1.1.1.1")):
        await backend.connect_tcp("h.example", 80)


async def test_resolution_failures_are_connect_errors() -> None:
    async def failing(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(httpcore.ConnectError, match=re.escape("cannot resolve gone.example")):
        await GuardedNetworkBackend(AddressGuard(), resolve=failing).connect_tcp("gone.example", 80)
    empty = GuardedNetworkBackend(AddressGuard(), resolve=dns({"none.example": []}))
    with pytest.raises(httpcore.ConnectError, match="no address"):
        await empty.connect_tcp("none.example", 80)


async def test_slow_resolution_is_a_connect_timeout() -> None:
    async def slow(host: str, port: int) -> list[IPAddress]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    backend = GuardedNetworkBackend(AddressGuard(), resolve=slow)
    with pytest.raises(httpcore.ConnectTimeout):
        await backend.connect_tcp("slow.example", 80, timeout=0.05)


async def test_unix_sockets_are_refused() -> None:
    with pytest.raises(AddressRefused, match="unix socket"):
        await GuardedNetworkBackend(AddressGuard()).connect_unix_socket("/run/docker.sock")


async def test_tls_is_checked_against_the_name_while_connecting_to_the_address() -> None:
    delegate = RecordingBackend()
    backend = GuardedNetworkBackend(
        AddressGuard(LOOPBACK), resolve=dns({"rebind.example": ["127.0.0.1"]}), delegate=delegate
    )
    async with httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(), network_backend=backend
    ) as pool:
        with pytest.raises(httpcore.ConnectError, match="recorded"):
            await pool.request("GET", "https://rebind.example/hook")
    assert delegate.connects == [("127.0.0.1", 443)]
    [(context, server_hostname)] = delegate.stream.tls
    assert server_hostname == "rebind.example"
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


async def test_a_real_connection_goes_to_the_checked_address_under_the_name() -> None:
    async def ok(request: Request) -> Reply:
        return Reply(200, body=b"hi")

    # ::1 first: nothing listens there, so the backend falls back to 127.0.0.1.
    answer = {"rebind.example": ["::1", "127.0.0.1"]}
    backend = GuardedNetworkBackend(AddressGuard(LOOPBACK), resolve=dns(answer))
    async with (
        HttpReceiver(ok) as server,
        httpcore.AsyncConnectionPool(network_backend=backend) as pool,
    ):
        response = await pool.request("GET", f"http://rebind.example:{server.port}/x")
    assert (response.status, response.content) == (200, b"hi")
    [request] = server.requests
    assert request.headers["host"] == f"rebind.example:{server.port}"
