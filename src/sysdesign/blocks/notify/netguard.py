"""Outbound connections only to public addresses: a guard against server-side
request forgery for URLs that users choose (webhooks).

- ``is_public`` / ``why_not_public`` judge one address. IPv6 forms that carry
  an IPv4 address (``::ffff:a.b.c.d``, 6to4 ``2002:…``, NAT64
  ``64:ff9b::a.b.c.d``) are judged by the IPv4 address they reach.
- ``AddressGuard`` refuses what is not public unless an operator allowed its
  network (``parse_networks`` reads such a list).
- ``GuardedNetworkBackend`` is an httpcore network backend that resolves a
  host once, checks every address it got and connects to a checked address,
  never by name again: a DNS answer that changes between the check and the
  connection (DNS rebinding) cannot slip through. ``GuardedTransport`` puts it
  under an httpx client.

Not covered: a network-specific NAT64 prefix (only the well-known one is
recognised) and anything a proxy would do for us (``GuardedTransport`` uses
none).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import TypeAlias

import httpcore
import httpx

IPAddress: TypeAlias = IPv4Address | IPv6Address
Network: TypeAlias = IPv4Network | IPv6Network
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

_THIS_NETWORK_V4 = IPv4Network("0.0.0.0/8")  # connecting to 0.x reaches this host on Linux
_SHARED_V4 = IPv4Network("100.64.0.0/10")
_PRIVATE_V4 = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)
_UNIQUE_LOCAL_V6 = IPv6Network("fc00::/7")
# Everything routable on the IPv6 internet is allocated from 2000::/3; what
# lies outside it is special (and ::/96, IPv4-compatible, is deprecated).
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
# Hosts that getaddrinfo reads as IPv4 numbers (127.1, 0x7f000001, 2130706433).
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


class AddressRefused(ValueError):
    """A connection to ``address`` is refused because it is ``reason``
    ("a private address", …)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address} is {reason}; refused")
        self.address = address
        self.reason = reason


def parse_networks(text: str) -> tuple[Network, ...]:
    """The networks in a comma-separated list of CIDRs or single addresses
    (``"127.0.0.0/8, ::1, 10.1.2.3"``); ``()`` for an empty or blank string.
    Raises ``ValueError`` naming the first entry that is not a network, one
    with host bits set (``10.1.2.3/8``) included, since widening it silently
    would allow more than was written."""
    networks: list[Network] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(f"not a network or address: {entry!r} ({exc})") from exc
    return tuple(networks)


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a translation
    mechanism: IPv4-mapped, 6to4 or the well-known NAT64 prefix; else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def why_not_public(address: IPAddress | str) -> str | None:
    """Why a connection to ``address`` would stay inside private or special
    networks ("a loopback address", …); None when it is public. Raises
    ``ValueError`` for text that is not an IP address."""
    ip = ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        # ipaddress calls these forms reserved or (on some versions) global
        # by their IPv6 prefix, but the packets go to the embedded address.
        return _why_not_public_v4(inner) if inner is not None else _why_not_public_v6(ip)
    return _why_not_public_v4(ip)


def is_public(address: IPAddress | str) -> bool:
    """Whether ``address`` is globally reachable: not loopback, private,
    link-local, shared (CGNAT), unspecified, multicast, reserved or another
    special-purpose range; see ``why_not_public``."""
    return why_not_public(address) is None


def _why_not_public_v4(ip: IPv4Address) -> str | None:
    if ip in _THIS_NETWORK_V4:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in _SHARED_V4:
        return "a shared (carrier-grade NAT) address"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in network for network in _PRIVATE_V4):
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a special-purpose address"
    return None


def _why_not_public_v6(ip: IPv6Address) -> str | None:
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _UNIQUE_LOCAL_V6:
        return "a private address"
    if ip.is_site_local:
        return "a site-local address"
    if ip not in _GLOBAL_UNICAST_V6:
        return "a reserved address"
    if not ip.is_global:
        return "a special-purpose address"
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` names when it is an IP literal, including the
    IPv4 shorthands getaddrinfo accepts (``127.1``, ``0x7f000001``,
    ``2130706433``); None for a name. Never touches the network."""
    try:
        return ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


class AddressGuard:
    """Lets through public addresses and those inside ``allow``. An IPv6
    form carrying an IPv4 address is allowed when either is inside ``allow``."""

    def __init__(self, allow: Iterable[Network] = ()) -> None:
        self.allow: tuple[Network, ...] = tuple(allow)

    def check(self, address: IPAddress | str) -> None:
        """Returns when a connection to ``address`` is allowed; raises
        ``AddressRefused`` saying why not otherwise (``ValueError`` for text
        that is not an IP address)."""
        ip = ip_address(address) if isinstance(address, str) else address
        reason = why_not_public(ip)
        if reason is None or self._allowed(ip):
            return
        inner = embedded_ipv4(ip) if isinstance(ip, IPv6Address) else None
        # Python 3.11 spells ::ffff:127.0.0.1 as ::ffff:7f00:1; name both.
        raise AddressRefused(str(ip) if inner is None else f"{ip} ({inner})", reason)

    def _allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
            candidates.append(inner)
        # A network of the other family simply does not contain the address.
        return any(c in network for c in candidates for network in self.allow)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host`` from the system resolver, in its order of
    preference, without duplicates. Raises ``OSError`` when it has none."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            found[ip_address(sockaddr[0])] = None
    return list(found)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only where ``guard`` allows. ``connect_tcp`` resolves the host
    once (with ``resolve``, by default ``resolve_host``; a literal address is
    not resolved), raises ``AddressRefused`` when ANY address is refused, and
    otherwise connects to the checked addresses in turn through ``delegate``,
    by address. TLS is the delegate's stream's own: httpcore passes the URL's
    host name to ``start_tls``, so certificates are still checked against the
    name. Unix sockets are refused. Resolution failures raise
    ``httpcore.ConnectError``, an exhausted ``timeout`` ``httpcore.ConnectTimeout``."""

    def __init__(
        self,
        guard: AddressGuard,
        *,
        resolve: Resolver | None = None,
        delegate: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.guard = guard
        self._resolve = resolve
        self._delegate = delegate or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            # One deadline for resolving and every attempt, as the caller
            # asked for one connect timeout.
            async with asyncio.timeout(timeout):
                addresses = await self._addresses(host, port)
                for address in addresses:
                    self.guard.check(address)
                return await self._connect_first(addresses, port, local_address, socket_options)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = ip_literal(host)
        if literal is not None:
            return [literal]
        # Looked up at call time, not bound at construction, so that a test
        # can stand in for DNS under a sender that builds its own backend.
        resolve = self._resolve or resolve_host
        try:
            found = list(dict.fromkeys(await resolve(host, port)))
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not found:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return found

    async def _connect_first(
        self,
        addresses: Sequence[IPAddress],
        port: int,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        options = list(socket_options or ())
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._delegate.connect_tcp(
                    str(address),
                    port,
                    timeout=None,  # the deadline in connect_tcp bounds this
                    local_address=local_address,
                    socket_options=options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(f"unix socket {path}", "not a network address")

    async def sleep(self, seconds: float) -> None:
        await self._delegate.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections all go through ``backend``:
    HTTP/1.1, certificates verified against the URL's host name, no proxy (a
    proxy would connect on our behalf, unchecked; an ``httpx.AsyncClient``
    given a transport ignores the proxy environment variables too).
    ``AddressRefused`` passes through the client unchanged. Raises
    ``RuntimeError`` at construction, rather than sending unguarded, when the
    installed httpx no longer keeps its pool where this replaces it."""

    def __init__(self, backend: GuardedNetworkBackend, *, limits: httpx.Limits) -> None:
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, limits=limits)
        # httpx offers no network_backend option, so the pool it built is
        # swapped for an identical one over the guarded backend.
        if type(getattr(self, "_pool", None)) is not httpcore.AsyncConnectionPool:
            raise RuntimeError("httpx.AsyncHTTPTransport changed; cannot guard its connections")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=backend,
        )
