"""SMS: the outbox file, and a Twilio-style provider against a local endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from sysdesign.benchmarks.server import free_port
from sysdesign.blocks.notify import (
    Channel,
    PermanentFailure,
    Rendered,
    TemporaryFailure,
    TwilioSmsSender,
    is_e164,
    sms_sender,
)
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.errors import ConfigurationError
from tests.blocks.notify.helpers import HttpReceiver, Reply, Request, outgoing

PHONE = "+15550002222"
SID, TOKEN = "AC0123456789", "tok/en+secret"


def text(body: str = "Your code is 123456", **kwargs: Any) -> Any:
    return outgoing(Channel.SMS, kwargs.pop("to", PHONE), rendered=Rendered(body=body), **kwargs)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def test_the_outbox_file_appends_one_json_line_per_message(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "sms" / "sms-outbox.jsonl"
    sender = sms_sender(f"file://{path}", clock=clock)
    assert await sender.send(text(message_id="a")) is None
    clock.advance(5)
    await sender.send(text("Olá ✓", message_id="b", to="+351912345678"))
    await sender.close()
    lines = await asyncio.to_thread(read_lines, path)
    assert [(line["id"], line["to"], line["body"]) for line in lines] == [
        ("a", PHONE, "Your code is 123456"),
        ("b", "+351912345678", "Olá ✓"),
    ]
    first = lines[0]["at"]
    assert first.endswith("Z") and first != lines[1]["at"]


async def test_concurrent_sends_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "sms-outbox.jsonl"
    sender = sms_sender(f"file://{path}")
    await asyncio.gather(*(sender.send(text("x" * 500, message_id=str(n))) for n in range(50)))
    await sender.close()
    lines = await asyncio.to_thread(read_lines, path)
    assert sorted(int(line["id"]) for line in lines) == list(range(50))


@pytest.mark.parametrize(
    "number",
    [
        "5550002222",
        "+1555",
        "+0155500022",
        "+1 555 000 2222",
        "+1555000222233334",
        "",
        "+١٥٥٥٠٠٠٢٢٢٢",
    ],
)
async def test_bad_numbers_are_permanent(tmp_path: Path, number: str) -> None:
    path = tmp_path / "sms-outbox.jsonl"
    sender = sms_sender(f"file://{path}")
    with pytest.raises(PermanentFailure, match=r"E\.164"):
        await sender.send(text(to=number))
    assert not await asyncio.to_thread(path.exists)
    assert not is_e164(number)


async def test_an_empty_or_overlong_text_is_permanent(tmp_path: Path) -> None:
    sender = sms_sender(f"file://{tmp_path}/sms-outbox.jsonl")
    for body in ("", "x" * 1601):
        with pytest.raises(PermanentFailure):
            await sender.send(text(body))


def twilio(port: int, **extra: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in extra.items())
    return (
        f"twilio://{SID}:tok%2Fen%2Bsecret@api.twilio.com?from=%2B15550001111"
        f"&base_url=http://127.0.0.1:{port}{'&' + query if query else ''}"
    )


async def test_the_provider_gets_basic_auth_and_the_form(clock: ManualClock) -> None:
    async def provider(request: Request) -> Reply:
        body = json.dumps({"sid": "SM42", "status": "queued"}).encode()
        return Reply(201, {"Content-Type": "application/json"}, body)

    async with HttpReceiver(provider) as server:
        sender = sms_sender(twilio(server.port), clock=clock)
        try:
            assert await sender.send(text()) == "SM42"
        finally:
            await sender.close()
    [request] = server.requests
    assert request.method == "POST"
    assert request.target == f"/2010-04-01/Accounts/{SID}/Messages.json"
    expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {
        "To": [PHONE],
        "From": ["+15550001111"],
        "Body": ["Your code is 123456"],
    }


@pytest.mark.parametrize(
    ("status", "failure", "retry_after"),
    [
        (429, TemporaryFailure, 30.0),
        (500, TemporaryFailure, None),
        (503, TemporaryFailure, None),
        (400, PermanentFailure, None),
        (401, PermanentFailure, None),
        (302, PermanentFailure, None),
    ],
)
async def test_provider_answers_map_to_failures(
    status: int, failure: type[Exception], retry_after: float | None
) -> None:
    async def provider(request: Request) -> Reply:
        headers = {"Retry-After": "30"} if status == 429 else {}
        body = json.dumps({"code": 21211, "message": "Invalid 'To' Phone Number"}).encode()
        return Reply(status, headers, body)

    async with HttpReceiver(provider) as server:
        sender = sms_sender(twilio(server.port))
        try:
            with pytest.raises(failure, match=str(status)) as raised:
                await sender.send(text())
        finally:
            await sender.close()
    assert getattr(raised.value, "retry_after", None) == retry_after
    if status == 400:
        assert "21211 Invalid 'To' Phone Number" in str(raised.value)


async def test_an_unreachable_provider_is_temporary() -> None:
    sender = sms_sender(twilio(free_port()))
    try:
        with pytest.raises(TemporaryFailure, match="unreachable"):
            await sender.send(text())
    finally:
        await sender.close()


async def test_a_slow_provider_times_out_as_temporary() -> None:
    async def slow(request: Request) -> Reply:
        await server.release.wait()
        return Reply(201)

    async with HttpReceiver(slow) as server:
        sender = sms_sender(twilio(server.port, timeout="0.2"))
        try:
            with pytest.raises(TemporaryFailure, match="timed out"):
                await sender.send(text())
        finally:
            await sender.close()


async def test_bad_numbers_never_reach_the_provider() -> None:
    async with HttpReceiver(lambda request: asyncio.sleep(0, Reply(201))) as server:
        sender = sms_sender(twilio(server.port))
        try:
            with pytest.raises(PermanentFailure):
                await sender.send(text(to="555-0100"))
        finally:
            await sender.close()
    assert server.requests == []


def test_the_default_endpoint_is_twilio() -> None:
    sender = sms_sender(f"twilio://{SID}:secret@api.twilio.com?from=%2B15550001111")
    assert isinstance(sender, TwilioSmsSender)
    assert sender.endpoint == f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"


def test_an_unescaped_plus_in_from_is_understood() -> None:
    sender = sms_sender(f"twilio://{SID}:secret@api.twilio.com?from=+15550001111")
    assert isinstance(sender, TwilioSmsSender)
    assert sender.from_number == "+15550001111"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("carrier-pigeon://coop", "unsupported"),
        ("twilio://api.twilio.com?from=%2B15550001111", "ACCOUNT_SID:AUTH_TOKEN"),
        (f"twilio://{SID}:t@api.twilio.com", r"E\.164"),
        (f"twilio://{SID}:t@api.twilio.com?from=555", r"E\.164"),
        (f"twilio://{SID}:t@api.twilio.com?from=%2B15550001111&base_url=ftp://x", "base_url"),
        (f"twilio://{SID}:t@api.twilio.com?from=%2B15550001111&region=eu", "unknown option"),
        ("file://sms-outbox.jsonl", "absolute path"),
        ("file:///tmp/sms.jsonl?fsync=no", "unknown option"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        sms_sender(url)


def test_the_token_never_appears_in_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as error:
        sms_sender(f"twilio://{SID}:hunter2@api.twilio.com?from=%2B15550001111&nope=1")
    assert "hunter2" not in str(error.value)
