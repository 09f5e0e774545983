"""Webhooks against a real local HTTP receiver that checks signatures; the
receiver is on loopback, which a sender reaches only when allowed to."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from ipaddress import ip_address
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.benchmarks.server import free_port
from sysdesign.blocks.notify import (
    Channel,
    Outgoing,
    PermanentFailure,
    Rendered,
    TemporaryFailure,
    WebhookSender,
    netguard,
    sign,
    verify_signature,
)
from sysdesign.blocks.notify.netguard import IPAddress, parse_networks
from sysdesign.blocks.notify.webhook import check_webhook_url
from sysdesign.platform.clock import ManualClock
from tests.blocks.notify.helpers import (
    Handler,
    HttpReceiver,
    Reply,
    Request,
    outgoing,
)

SECRET = "whsec_test"
LOOPBACK = parse_networks("127.0.0.0/8")


def webhook(url: str, **kwargs: Any) -> Outgoing:
    return outgoing(Channel.WEBHOOK, url, secret=SECRET, **kwargs)


def replying(status: int, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: Request) -> Reply:
        return Reply(status, headers or {})

    return handler


class WebhookSenderContext:
    """A sender of its own, closed on the way out; it may reach the loopback
    receivers unless told otherwise."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_networks", LOOPBACK)
        self.sender = WebhookSender(**kwargs)

    async def __aenter__(self) -> WebhookSender:
        return self.sender

    async def __aexit__(self, *exc: object) -> None:
        await self.sender.close()


async def test_a_signed_post_is_delivered_and_verifies(clock: ManualClock) -> None:
    verified: list[bool] = []

    async def receiver(request: Request) -> Reply:
        verified.append(
            verify_signature(
                SECRET,
                timestamp=request.headers["sysdesign-timestamp"],
                signature=request.headers["sysdesign-signature"],
                body=request.body,
                now=clock.time(),
            )
        )
        return Reply(204)

    async with HttpReceiver(receiver) as server, WebhookSenderContext(clock=clock) as sender:
        result = await sender.send(
            webhook(
                f"{server.url}/hooks/orders?x=1",
                rendered=Rendered(body="Shipped", subject="Order"),
                data={"order": "A-1", "items": [1, 2]},
                attempt=3,
            )
        )
    assert result is None
    assert verified == [True]
    [request] = server.requests
    assert request.method == "POST" and request.target == "/hooks/orders?x=1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["sysdesign-message-id"] == "1234567890"
    assert request.headers["sysdesign-timestamp"] == str(int(clock.time()))
    assert json.loads(request.body) == {
        "id": "1234567890",
        "template": "order-shipped",
        "category": "orders",
        "recipient_id": "42",
        "subject": "Order",
        "body": "Shipped",
        "data": {"order": "A-1", "items": [1, 2]},
        "attempt": 3,
    }


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425])
async def test_server_errors_and_retryable_statuses_are_temporary(status: int) -> None:
    async with HttpReceiver(replying(status)) as server, WebhookSenderContext() as sender:
        with pytest.raises(TemporaryFailure, match=str(status)) as failure:
            await sender.send(webhook(server.url))
    assert failure.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_other_client_errors_are_permanent(status: int) -> None:
    async with HttpReceiver(replying(status)) as server, WebhookSenderContext() as sender:
        with pytest.raises(PermanentFailure, match=str(status)):
            await sender.send(webhook(server.url))


async def test_429_with_retry_after_seconds() -> None:
    handler = replying(429, {"Retry-After": "7"})
    async with HttpReceiver(handler) as server, WebhookSenderContext() as sender:
        with pytest.raises(TemporaryFailure) as failure:
            await sender.send(webhook(server.url))
    assert failure.value.retry_after == 7.0


async def test_503_with_retry_after_as_a_date(clock: ManualClock) -> None:
    later = format_datetime(datetime.fromtimestamp(clock.time() + 120, UTC), usegmt=True)
    handler = replying(503, {"Retry-After": later})
    async with HttpReceiver(handler) as server, WebhookSenderContext(clock=clock) as sender:
        with pytest.raises(TemporaryFailure) as failure:
            await sender.send(webhook(server.url))
    assert failure.value.retry_after == 120.0


async def test_redirects_are_not_followed() -> None:
    async def handler(request: Request) -> Reply:
        return Reply(307, {"Location": "/elsewhere"})

    async with HttpReceiver(handler) as server, WebhookSenderContext() as sender:
        with pytest.raises(PermanentFailure, match="redirect"):
            await sender.send(webhook(server.url))
    assert [r.target for r in server.requests] == ["/"]


async def test_a_receiver_that_does_not_answer_in_time_is_temporary() -> None:
    async def slow(request: Request) -> Reply:
        await server.release.wait()
        return Reply(200)

    async with HttpReceiver(slow) as server, WebhookSenderContext(timeout=0.2) as sender:
        with pytest.raises(TemporaryFailure, match="timed out"):
            await sender.send(webhook(server.url))


async def test_a_closed_port_is_temporary() -> None:
    async with WebhookSenderContext() as sender:
        with pytest.raises(TemporaryFailure, match="unreachable"):
            await sender.send(webhook(f"http://127.0.0.1:{free_port()}/"))


@pytest.mark.parametrize(
    "url", ["ftp://example.org/hook", "file:///etc/passwd", "not a url", "http:///nohost"]
)
async def test_only_http_urls(url: str) -> None:
    async with WebhookSenderContext() as sender:
        with pytest.raises(PermanentFailure, match="http"):
            await sender.send(webhook(url))


async def test_no_secret_is_permanent() -> None:
    async with WebhookSenderContext() as sender:
        with pytest.raises(PermanentFailure, match="secret"):
            await sender.send(outgoing(Channel.WEBHOOK, "http://127.0.0.1:1/"))


async def test_data_that_is_not_json_is_permanent() -> None:
    async with WebhookSenderContext() as sender:
        with pytest.raises(PermanentFailure, match="JSON"):
            await sender.send(webhook("http://127.0.0.1:1/", data={"x": object()}))


async def test_a_given_client_is_used_and_left_open() -> None:
    async with HttpReceiver(replying(200)) as server, httpx.AsyncClient() as client:
        sender = WebhookSender(client, allow_networks=LOOPBACK)
        await sender.send(webhook(server.url))
        await sender.close()
        assert not client.is_closed
    assert len(server.requests) == 1


async def test_concurrent_deliveries() -> None:
    async with HttpReceiver(replying(200)) as server, WebhookSenderContext() as sender:
        await asyncio.gather(
            *(sender.send(webhook(server.url, message_id=f"m{n}")) for n in range(20))
        )
    assert sorted(r.headers["sysdesign-message-id"] for r in server.requests) == sorted(
        f"m{n}" for n in range(20)
    )


# Server-side request forgery


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1, a loopback address"),
        ("localhost", "a loopback address"),  # resolved: 127.0.0.1 or ::1
        ("127.1", "127.0.0.1, a loopback address"),  # getaddrinfo's shorthand
        ("10.0.0.1", "10.0.0.1, a private address"),
        ("169.254.169.254", "169.254.169.254, a link-local address"),
        ("[::1]", "::1, a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address"),  # spelt per Python version
        ("100.64.0.1", "100.64.0.1, a shared (carrier-grade NAT) address"),
    ],
)
async def test_a_default_sender_refuses_internal_addresses(host: str, shown: str) -> None:
    async with (
        HttpReceiver(replying(200)) as server,
        WebhookSenderContext(allow_networks=()) as sender,
    ):
        url = f"http://{host}:{server.port}/hook"
        with pytest.raises(PermanentFailure) as failure:
            await sender.send(webhook(url))
    assert shown in str(failure.value)
    assert str(failure.value).startswith(f"webhook {url} resolves to ")
    assert str(failure.value).endswith(
        "refused (allow it with SYSDESIGN_NOTIFY_WEBHOOK_ALLOW_NETWORKS)"
    )
    assert server.requests == []


async def test_a_literal_address_is_refused_before_any_connection() -> None:
    async def transport(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request should be made, got {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        sender = WebhookSender(client)
        with pytest.raises(PermanentFailure, match=re.escape("10.0.0.5, a private address")):
            await sender.send(webhook("https://10.0.0.5/hook"))


def fake_dns(answers: dict[str, list[str]]) -> netguard.Resolver:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ip_address(a) for a in answers[host]]

    return resolve


async def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netguard, "resolve_host", fake_dns({"rebind.example": ["127.0.0.1"]}))
    async with (
        HttpReceiver(replying(200)) as server,
        WebhookSenderContext(allow_networks=()) as sender,
    ):
        with pytest.raises(
            PermanentFailure, match=re.escape("resolves to 127.0.0.1, a loopback address")
        ):
            await sender.send(webhook(f"http://rebind.example:{server.port}/hook"))
    assert server.requests == []


async def test_an_allowed_name_is_reached_at_the_checked_address_under_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # rebind.example has no real DNS: reaching the receiver proves the
    # connection went to the address that was checked.
    monkeypatch.setattr(netguard, "resolve_host", fake_dns({"rebind.example": ["127.0.0.1"]}))
    async with HttpReceiver(replying(204)) as server, WebhookSenderContext() as sender:
        assert await sender.send(webhook(f"http://rebind.example:{server.port}/hook")) is None
    [request] = server.requests
    assert request.headers["host"] == f"rebind.example:{server.port}"
    assert request.target == "/hook"


async def test_allow_networks_admits_only_what_it_names() -> None:
    allow = parse_networks("10.0.0.0/8")
    async with (
        HttpReceiver(replying(200)) as server,
        WebhookSenderContext(allow_networks=allow) as sender,
    ):
        with pytest.raises(PermanentFailure, match="loopback"):
            await sender.send(webhook(server.url))
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in",
        "http://localhost:8080/",  # a name: checked when connecting, not here
        "http://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
    ],
)
def test_check_webhook_url_accepts(url: str) -> None:
    check_webhook_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/hook", "http:// or https://"),
        ("example.org/hook", "http:// or https://"),
        ("http://[::1/hook", "http:// or https://"),
        ("https:///hook", "must name a host"),
        ("http://127.0.0.1:8080/", "127.0.0.1, a loopback address"),
        ("http://0x7f000001/", "127.0.0.1, a loopback address"),
        ("https://10.1.2.3/", "10.1.2.3, a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address"),
        ("http://[fd00::1]/", "fd00::1, a private address"),
        ("http://[::ffff:10.0.0.1]/", "a private address"),
        ("http://0.0.0.0:9000/", "0.0.0.0, an unspecified address"),
    ],
)
def test_check_webhook_url_refuses(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_webhook_url(url)


def test_check_webhook_url_honours_allow_networks() -> None:
    check_webhook_url("https://10.1.2.3/", parse_networks("10.0.0.0/8"))
    with pytest.raises(ValueError, match="private"):
        check_webhook_url("https://192.168.0.1/", parse_networks("10.0.0.0/8"))


# verify_signature, the receiver's half

NOW = 1_750_000_000.0
BODY = b'{"id":"1"}'


def test_a_tampered_body_fails_verification() -> None:
    signature = sign(SECRET, int(NOW), BODY)
    args = {"timestamp": str(int(NOW)), "signature": signature, "now": NOW}
    assert verify_signature(SECRET, body=BODY, **args)  # type: ignore[arg-type]
    assert not verify_signature(SECRET, body=b'{"id":"2"}', **args)  # type: ignore[arg-type]
    assert not verify_signature("other", body=BODY, **args)  # type: ignore[arg-type]


def test_a_changed_timestamp_fails_verification() -> None:
    signature = sign(SECRET, int(NOW), BODY)
    assert not verify_signature(
        SECRET, timestamp=str(int(NOW) + 1), signature=signature, body=BODY, now=NOW
    )


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 10**9])
def test_stale_and_future_timestamps_fail(offset: int) -> None:
    stamp = int(NOW) + offset
    signature = sign(SECRET, stamp, BODY)
    assert not verify_signature(
        SECRET, timestamp=str(stamp), signature=signature, body=BODY, now=NOW
    )
    assert verify_signature(
        SECRET,
        timestamp=str(stamp),
        signature=signature,
        body=BODY,
        now=NOW,
        tolerance=abs(offset),
    )


def test_one_of_several_signatures_may_match() -> None:
    good = sign(SECRET, int(NOW), BODY)
    header = f"v1={'0' * 64}, {good}"
    assert verify_signature(SECRET, timestamp=str(int(NOW)), signature=header, body=BODY, now=NOW)


@pytest.mark.parametrize("timestamp", ["", "abc", "-5", "1.5", "١٢٣", "9" * 40])
def test_malformed_timestamps_fail(timestamp: str) -> None:
    signature = sign(SECRET, timestamp, BODY)
    assert not verify_signature(
        SECRET, timestamp=timestamp, signature=signature, body=BODY, now=NOW
    )


@given(st.text(), st.text(), st.binary(), st.floats(allow_nan=True))
def test_verification_never_raises(timestamp: str, signature: str, body: bytes, now: float) -> None:
    assert verify_signature(
        SECRET, timestamp=timestamp, signature=signature, body=body, now=now
    ) in (
        True,
        False,
    )


async def test_no_more_than_host_concurrency_requests_reach_one_host_at_once(
    clock: ManualClock,
) -> None:
    in_flight = 0
    most = 0

    async def slow(request: Request) -> Reply:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return Reply(200, {})

    async with (
        HttpReceiver(slow) as receiver,
        WebhookSenderContext(clock=clock, host_concurrency=3) as sender,
    ):
        results = await asyncio.gather(
            *(sender.send(webhook(receiver.url, message_id=str(n))) for n in range(20))
        )
    assert results == [None] * 20
    assert most == 3  # the requests did overlap, three at a time
    assert sender._hosts.hosts == 0  # nothing kept for a host nothing is sent to


def test_host_concurrency_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="host_concurrency"):
        WebhookSender(host_concurrency=0)
