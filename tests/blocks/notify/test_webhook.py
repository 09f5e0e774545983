"""Webhooks against a real local HTTP receiver that checks signatures."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.blocks.notify import (
    Channel,
    Outgoing,
    PermanentFailure,
    Rendered,
    TemporaryFailure,
    WebhookSender,
    sign,
    verify_signature,
)
from sysdesign.platform.clock import ManualClock
from tests.blocks.notify.helpers import (
    Handler,
    HttpReceiver,
    Reply,
    Request,
    closed_port,
    outgoing,
)

SECRET = "whsec_test"


def webhook(url: str, **kwargs: Any) -> Outgoing:
    return outgoing(Channel.WEBHOOK, url, secret=SECRET, **kwargs)


def replying(status: int, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: Request) -> Reply:
        return Reply(status, headers or {})

    return handler


class WebhookSenderContext:
    """A sender of its own, closed on the way out."""

    def __init__(self, **kwargs: Any) -> None:
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
            await sender.send(webhook(f"http://127.0.0.1:{closed_port()}/"))


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
        sender = WebhookSender(client)
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
