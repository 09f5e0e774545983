"""E-mail through a real SMTP server (aiosmtpd on a loopback port), and the
e-mail outbox directory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from sysdesign.benchmarks.server import free_port
from sysdesign.blocks.notify import (
    Channel,
    EmailSender,
    PermanentFailure,
    Rendered,
    TemporaryFailure,
    email_sender,
)
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.errors import ConfigurationError
from tests.blocks.notify.helpers import outgoing

FROM = "Shop%20<noreply@shop.example>"
RENDERED = Rendered(
    body="Olá Ana, your order A-1 shipped ✓",
    subject="Order A-1 shipped",
    html="<p>Olá <b>Ana</b>, your order A-1 shipped ✓</p>",
)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    peer: Any
    content: bytes

    @property
    def email(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it accepts and refuses on demand."""

    received: list[Received] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_reply: str | None = None
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), session.peer, envelope.content)
        )
        return "250 2.0.0 Ok: queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"p@ss w0rd", handled=False)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def smtp_port(recorder: Recorder) -> Iterator[int]:
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        server_hostname="smtp.test",
        authenticator=recorder.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def opened(url: str, clock: ManualClock | None = None) -> AsyncIterator[EmailSender]:
    sender = email_sender(url, clock=clock)
    try:
        yield sender
    finally:
        await sender.close()


def smtp_url(port: int, options: str = "") -> str:
    return f"smtp://127.0.0.1:{port}?from={FROM}&starttls=false&helo=client.test{options}"


async def test_the_server_receives_subject_parts_addresses_and_message_id(
    recorder: Recorder, smtp_port: int, clock: ManualClock
) -> None:
    message = outgoing(Channel.EMAIL, "ana@example.org", rendered=RENDERED)
    async with opened(smtp_url(smtp_port), clock) as sender:
        message_id = await sender.send(message)
    assert message_id == "<1234567890@shop.example>"
    [received] = recorder.received
    assert received.mail_from == "noreply@shop.example"
    assert received.rcpt_tos == ["ana@example.org"]
    email = received.email
    assert email["Subject"] == "Order A-1 shipped"
    assert email["From"] == "Shop <noreply@shop.example>"
    assert email["To"] == "ana@example.org"
    assert email["Message-ID"] == message_id
    assert email["Auto-Submitted"] == "auto-generated"
    assert email.get_content_type() == "multipart/alternative"
    text, html = email.get_body(("plain",)), email.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == RENDERED.body
    assert html.get_content().strip() == RENDERED.html


async def test_every_attempt_carries_the_same_message_id(
    recorder: Recorder, smtp_port: int
) -> None:
    async with opened(smtp_url(smtp_port)) as sender:
        for attempt in (1, 2):
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org", attempt=attempt))
    first, second = (r.email["Message-ID"] for r in recorder.received)
    assert first == second


async def test_text_only_is_a_single_part(recorder: Recorder, smtp_port: int) -> None:
    async with opened(smtp_url(smtp_port)) as sender:
        await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))
    email = recorder.received[0].email
    assert email.get_content_type() == "text/plain"
    assert email.get_content().strip() == "Your order shipped."


async def test_a_subject_cannot_add_headers(recorder: Recorder, smtp_port: int) -> None:
    rendered = Rendered(body="b", subject="Hi\r\nBcc: victim@example.org\nX: y")
    async with opened(smtp_url(smtp_port)) as sender:
        await sender.send(outgoing(Channel.EMAIL, "ana@example.org", rendered=rendered))
    email = recorder.received[0].email
    assert email["Subject"] == "Hi Bcc: victim@example.org X: y"
    assert email["Bcc"] is None


async def test_connections_are_reused_and_closed(recorder: Recorder, smtp_port: int) -> None:
    async with opened(smtp_url(smtp_port)) as sender:
        for n in range(3):
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org", message_id=f"m{n}"))
    assert len({r.peer for r in recorder.received}) == 1


async def test_idle_zero_opens_a_connection_per_message(recorder: Recorder, smtp_port: int) -> None:
    async with opened(smtp_url(smtp_port, "&idle=0")) as sender:
        for n in range(3):
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org", message_id=f"m{n}"))
    assert len({r.peer for r in recorder.received}) == 3


async def test_concurrent_sends_stay_within_the_pool(recorder: Recorder, smtp_port: int) -> None:
    async with opened(smtp_url(smtp_port, "&pool=2")) as sender:
        await asyncio.gather(
            *(
                sender.send(outgoing(Channel.EMAIL, f"u{n}@example.org", message_id=f"m{n}"))
                for n in range(10)
            )
        )
    assert sorted(r.rcpt_tos[0] for r in recorder.received) == sorted(
        f"u{n}@example.org" for n in range(10)
    )
    assert len({r.peer for r in recorder.received}) <= 2


async def test_login_with_the_url_credentials(recorder: Recorder, smtp_port: int) -> None:
    url = f"smtp://mailer:p%40ss%20w0rd@127.0.0.1:{smtp_port}?from={FROM}&starttls=false"
    async with opened(url) as sender:
        await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))
    assert recorder.logins == [(b"mailer", b"p@ss w0rd")]
    assert len(recorder.received) == 1


async def test_a_refused_login_is_temporary(recorder: Recorder, smtp_port: int) -> None:
    url = f"smtp://mailer:wrong@127.0.0.1:{smtp_port}?from={FROM}&starttls=false"
    async with opened(url) as sender:
        with pytest.raises(TemporaryFailure, match="refused the login"):
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))
    assert recorder.received == []


async def test_550_recipient_refused_is_permanent(recorder: Recorder, smtp_port: int) -> None:
    recorder.rcpt_reply = "550 5.1.1 No such user"
    async with opened(smtp_url(smtp_port)) as sender:
        with pytest.raises(PermanentFailure, match="550"):
            await sender.send(outgoing(Channel.EMAIL, "nobody@example.org"))
        # The refusal reset the transaction; the same sender goes on sending.
        recorder.rcpt_reply = None
        await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))
    assert [r.rcpt_tos for r in recorder.received] == [["ana@example.org"]]


async def test_451_is_temporary(recorder: Recorder, smtp_port: int) -> None:
    recorder.rcpt_reply = "451 4.7.1 Greylisted, try again later"
    async with opened(smtp_url(smtp_port)) as sender:
        with pytest.raises(TemporaryFailure, match="451") as failure:
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))
    assert failure.value.retryable


@pytest.mark.parametrize(
    ("reply", "failure"),
    [("554 5.7.1 Rejected as spam", PermanentFailure), ("452 4.3.1 Disk full", TemporaryFailure)],
)
async def test_replies_to_the_message_map_by_code(
    recorder: Recorder, smtp_port: int, reply: str, failure: type[Exception]
) -> None:
    recorder.data_reply = reply
    async with opened(smtp_url(smtp_port)) as sender:
        with pytest.raises(failure, match=reply[:3]):
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))


async def test_a_closed_port_is_temporary() -> None:
    async with opened(smtp_url(free_port())) as sender:
        with pytest.raises(TemporaryFailure, match="cannot reach"):
            await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))


async def test_a_server_that_never_greets_times_out_as_temporary() -> None:
    release = asyncio.Event()
    handlers: list[asyncio.Task[Any]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with opened(smtp_url(port, "&timeout=0.2")) as sender:
            with pytest.raises(TemporaryFailure):
                await sender.send(outgoing(Channel.EMAIL, "ana@example.org"))
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers, return_exceptions=True)


@pytest.mark.parametrize(
    "address", ["not-an-address", "two@example.org, three@example.org", "Ana <a@b.org>", ""]
)
async def test_an_invalid_address_is_permanent(
    recorder: Recorder, smtp_port: int, address: str
) -> None:
    async with opened(smtp_url(smtp_port)) as sender:
        with pytest.raises(PermanentFailure):
            await sender.send(outgoing(Channel.EMAIL, address))
    assert recorder.received == []


async def test_the_outbox_directory_writes_a_parseable_eml(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    message = outgoing(Channel.EMAIL, "ana@example.org", rendered=RENDERED)
    async with opened(f"file://{directory}?from={FROM}") as sender:
        message_id = await sender.send(message)
        await sender.send(message)  # a retry rewrites the same file
    names = await asyncio.to_thread(lambda: [p.name for p in directory.iterdir()])
    assert names == ["1234567890.eml"]
    raw = (directory / "1234567890.eml").read_bytes()
    assert b"\r\n" in raw
    email = message_from_bytes(raw, policy=policy.default)
    assert isinstance(email, EmailMessage)
    assert email["Message-ID"] == message_id == "<1234567890@shop.example>"
    assert email["Subject"] == "Order A-1 shipped"
    assert email["To"] == "ana@example.org"
    html = email.get_body(("html",))
    assert html is not None and html.get_content().strip() == RENDERED.html


async def test_the_outbox_has_a_default_from_and_hashes_unsafe_ids(tmp_path: Path) -> None:
    async with opened(f"file://{tmp_path}") as sender:
        await sender.send(outgoing(Channel.EMAIL, "ana@example.org", message_id="../../etc/x"))
    [written] = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert written.suffix == ".eml" and "/" not in written.stem and ".." not in written.stem
    email = message_from_bytes(written.read_bytes(), policy=policy.default)
    assert email["From"] == "sysdesign <notifications@localhost>"
    assert email["Message-ID"] == f"<{written.stem}@localhost>"


async def test_a_message_for_another_channel_is_permanent(tmp_path: Path) -> None:
    async with opened(f"file://{tmp_path}") as sender:
        with pytest.raises(PermanentFailure):
            await sender.send(outgoing(Channel.SMS, "+15550001111"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gopher://mail.example", "unsupported"),
        ("smtp://mail.example:25", "no from"),
        ("smtp://mail.example:25?from=", "no from"),
        ("smtp://mail.example:25?from=nobody", "from must be an address"),
        ("smtp://mail.example?from=a@b.org&starttsl=true", "unknown option 'starttsl'"),
        ("smtps://mail.example?from=a@b.org&starttls=true", "exclude each other"),
        ("smtp://mail.example?from=a@b.org&starttls=maybe", "true or false"),
        ("smtp://mail.example?from=a@b.org&timeout=-1", "seconds"),
        ("smtp://mail.example?from=a@b.org&pool=0", "at least 1"),
        ("smtp://mail.example:99999?from=a@b.org", "bad port"),
        ("smtp://?from=a@b.org", "no host"),
        ("file://relative/outbox", "absolute path"),
        ("file:///tmp/outbox?from=a@b.org&x=1", "unknown option"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        email_sender(url)


def test_a_password_never_appears_in_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as error:
        email_sender("smtp://user:s3cret@mail.example?from=a@b.org&nope=1")
    assert "s3cret" not in str(error.value)
