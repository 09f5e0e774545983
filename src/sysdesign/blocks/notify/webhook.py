"""Webhooks: a signed JSON POST per notification to the recipient's URL.

The request::

    POST <address.value>
    Content-Type: application/json
    Sysdesign-Message-Id: <message_id>           (the same on every attempt)
    Sysdesign-Timestamp: <unix seconds>
    Sysdesign-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

    {"id", "template", "category", "recipient_id", "subject", "body", "data", "attempt"}

The signature covers the timestamp, so a receiver that checks it with
``verify_signature`` (which also refuses timestamps more than ``tolerance``
seconds from its clock) rejects both a changed body and a captured request
replayed later; it drops a retried copy by ``Sysdesign-Message-Id``. A
receiver rotating its secret may accept several ``v1=`` values in the header.

Outcomes: a 2xx is delivered. A 408, 425, 429 or 5xx, a timeout or a network
error is ``TemporaryFailure`` (with ``retry_after`` from a ``Retry-After``
header, in seconds or as an HTTP date). A redirect is not followed (the
subscriber should register the final URL) and, like any other status, is
``PermanentFailure``; so are a URL that is not http(s), an address without
a secret, and data that is not JSON.

Server-side request forgery: a sender that builds its own client connects
only to public addresses (``netguard``) and to the networks in
``allow_networks``. A host name is resolved once and every address it
resolves to must pass, and the connection goes to an address that was
checked, so DNS rebinding cannot reach an internal service. A refused address
is ``PermanentFailure``. ``check_webhook_url`` is the cheap check for when a
URL is registered.

At most ``host_concurrency`` requests go to one host at once; others wait
their turn (the wait is not counted in ``timeout``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import orjson

from sysdesign.blocks.notify.base import (
    Channel,
    DeliveryError,
    Outgoing,
    PermanentFailure,
    TemporaryFailure,
)
from sysdesign.blocks.notify.netguard import (
    AddressGuard,
    AddressRefused,
    GuardedNetworkBackend,
    GuardedTransport,
    Network,
    ip_literal,
)
from sysdesign.platform.clock import Clock, SystemClock

SIGNATURE_VERSION = "v1"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
HOST_CONCURRENCY = 8  # requests at once to one receiver host
# A receiver's answer is not used; reading a little of it lets the
# connection go back to the pool, reading all of it would let a receiver
# make us hold any amount.
_RESPONSE_READ_LIMIT = 64 * 1024
_USER_AGENT = "sysdesign-notify/1"
# Named in refusals so that whoever reads the dead letter knows the remedy.
ALLOW_NETWORKS_SETTING = "SYSDESIGN_NOTIFY_WEBHOOK_ALLOW_NETWORKS"


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``Sysdesign-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of
    ``"<timestamp>.<body>"`` under ``secret``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_signature(
    secret: str,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float,
    tolerance: float = 300,
) -> bool:
    """Whether a webhook request is genuine and fresh: ``signature`` (the
    header, possibly several comma- or space-separated ``v1=`` values) holds
    the signature of ``timestamp`` and ``body`` under ``secret``, and
    ``timestamp`` is within ``tolerance`` seconds of ``now``, before or after.
    Compares in constant time; never raises on malformed input."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 15:
        return False
    if not math.isfinite(now) or abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    found = False
    for candidate in signature.replace(",", " ").split():
        # Every candidate is compared, so the time taken does not say which matched.
        found |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    return found


def retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP
    date); ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def payload(message: Outgoing) -> bytes:
    """The JSON body for ``message``. Raises ``PermanentFailure`` when its
    data cannot be JSON."""
    try:
        return orjson.dumps(
            {
                "id": message.message_id,
                "template": message.template,
                "category": message.category,
                "recipient_id": str(message.recipient_id),
                "subject": message.rendered.subject,
                "body": message.rendered.body,
                "data": message.data,
                "attempt": message.attempt,
            }
        )
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise PermanentFailure(f"webhook data is not JSON: {exc}") from exc


class HostSlots:
    """At most ``limit`` requests at once to one host: a receiver is never
    sent more than that however many messages wait for it, and the client's
    pool stays small per host (its bookkeeping grows with the connections
    in it). A host is forgotten when nothing is sent to it or waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"host_concurrency must be at least 1, not {limit!r}")
        self.limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @property
    def hosts(self) -> int:
        return len(self._slots)

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = (asyncio.Semaphore(self.limit), [0])
        semaphore, users = slot
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._slots[host]


def _webhook_host(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed "[" around an IPv6 address, say
        raise ValueError(f"a webhook URL must be http:// or https://, not {url!r}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"a webhook URL must be http:// or https://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"a webhook URL must name a host, not {url!r}")
    return parts.hostname


def check_webhook_url(url: str, allow_networks: Sequence[Network] = ()) -> None:
    """Returns when ``url`` may be registered as a webhook: http(s), with a
    host, and that host is not an IP literal outside public addresses and
    ``allow_networks``. Raises ``ValueError`` saying which. Resolves no name:
    a name is checked when a sender connects (it may change meanwhile)."""
    host = _webhook_host(url)
    literal = ip_literal(host)
    if literal is None:
        return
    try:
        AddressGuard(allow_networks).check(literal)
    except AddressRefused as exc:
        raise ValueError(
            f"webhook URL {url!r} points at {exc.address}, {exc.reason}; refused"
        ) from exc


def _refused(url: str, exc: AddressRefused) -> PermanentFailure:
    return PermanentFailure(
        f"webhook {url} resolves to {exc.address}, {exc.reason}; "
        f"refused (allow it with {ALLOW_NETWORKS_SETTING})"
    )


class WebhookSender:
    """The ``WEBHOOK`` channel. ``timeout`` bounds each whole request,
    connecting included.

    Without ``client`` it builds its own, with bounded pools, that connects
    only to public addresses and those inside ``allow_networks`` (no proxy).
    A given ``client`` is used as is and left open on ``close``: its
    connections are the caller's responsibility, and only a URL whose host is
    an IP literal is checked against ``allow_networks`` before sending."""

    channel = Channel.WEBHOOK

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        *,
        clock: Clock | None = None,
        allow_networks: Sequence[Network] = (),
        host_concurrency: int = HOST_CONCURRENCY,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be more than zero seconds, not {timeout!r}")
        self.timeout = timeout
        self._hosts = HostSlots(host_concurrency)
        self._clock = clock or SystemClock()
        self._guard = AddressGuard(allow_networks)
        self._owns_client = client is None
        if client is None:
            limits = httpx.Limits(
                max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0
            )
            client = httpx.AsyncClient(
                transport=GuardedTransport(GuardedNetworkBackend(self._guard), limits=limits),
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                headers={"User-Agent": _USER_AGENT},
            )
        self._client = client

    async def send(self, message: Outgoing) -> str | None:
        if message.channel != Channel.WEBHOOK or message.address.channel != Channel.WEBHOOK:
            raise PermanentFailure(f"a webhook sender cannot send a {message.channel} message")
        url = message.address.value
        try:
            host = _webhook_host(url)
        except ValueError as exc:
            raise PermanentFailure(str(exc)) from exc
        if (literal := ip_literal(host)) is not None:
            try:
                self._guard.check(literal)
            except AddressRefused as exc:
                raise _refused(url, exc) from exc
        secret = message.address.secret
        if not secret:
            raise PermanentFailure("the webhook address has no secret to sign with")
        body = payload(message)
        timestamp = str(int(self._clock.time()))
        headers = {
            "Content-Type": "application/json",
            "Sysdesign-Message-Id": message.message_id,
            "Sysdesign-Timestamp": timestamp,
            "Sysdesign-Signature": sign(secret, timestamp, body),
        }
        try:
            # The wait for a turn at a busy host is not part of the request's time.
            async with self._hosts.hold(host), asyncio.timeout(self.timeout):
                status, wait = await self._post(url, body, headers)
        except DeliveryError:
            raise
        except AddressRefused as exc:
            raise _refused(url, exc) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TemporaryFailure(f"webhook {url} timed out after {self.timeout} s") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise PermanentFailure(f"webhook URL {url!r} is not usable: {exc}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise TemporaryFailure(f"webhook {url} unreachable: {exc!r}") from exc
        except Exception as exc:
            # The contract allows only the two failures; an unforeseen error
            # is retried (and dead-lettered when it persists), not crashed on.
            raise TemporaryFailure(f"webhook not sent: {type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return None
        if status in RETRYABLE_STATUSES or 500 <= status < 600:
            raise TemporaryFailure(f"webhook {url} answered {status}", retry_after=wait)
        if 300 <= status < 400:
            raise PermanentFailure(
                f"webhook {url} redirected ({status}); redirects are not followed"
            )
        raise PermanentFailure(f"webhook {url} answered {status}")

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, float | None]:
        async with self._client.stream(
            "POST", url, content=body, headers=headers, follow_redirects=False
        ) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > _RESPONSE_READ_LIMIT:
                    break
            wait = retry_after(response.headers.get("Retry-After"), now=self._clock.time())
            return response.status_code, wait

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
