"""E-mail: one RFC 5322 message per notification, to an SMTP server or to
the e-mail outbox directory.

``email_sender(url)`` picks where the messages go:

- ``file:///abs/dir[?from=Name%20<noreply@example.com>]``: the **e-mail
  outbox directory**, the embedded default for machines without an SMTP
  server. Each message is written as ``<dir>/<message_id>.eml`` (CRLF line
  ends, exactly the bytes an SMTP server would have received) atomically:
  to a temporary file beside it, fsync'd, then renamed, so a reader never
  sees half a message. A retry rewrites the same file. ``from`` defaults to
  ``sysdesign <notifications@localhost>``.
- ``smtp://[user:password@]host[:port]?from=…`` or ``smtps://…`` (TLS from
  the first byte): a real SMTP server, ``smtp.py`` lists the options and
  how failures map to temporary and permanent ones. ``from`` is required.

Every message is ``multipart/alternative`` when the rendering has HTML (the
text part first, as RFC 2046 orders them from plainest), plain text
otherwise. Its ``Message-ID`` is made from ``Outgoing.message_id`` and the
sender's domain, so every attempt of one notification carries the same one
and a mailbox or the outbox keeps one copy. ``send`` returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address as MailAddress
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sysdesign.blocks.notify.base import (
    Channel,
    DeliveryError,
    Outgoing,
    PermanentFailure,
    TemporaryFailure,
)
from sysdesign.blocks.notify.senderurl import file_path, query_options
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.errors import ConfigurationError

WHAT = "e-mail sender URL"
DEFAULT_OUTBOX_FROM = "sysdesign <notifications@localhost>"
# Letters, digits, '_' and '-' in dot-separated runs: valid as the left side
# of a Message-ID and as a file name on every platform.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class EmailTransport(Protocol):
    """Where built messages go: an SMTP server or the outbox directory."""

    async def deliver(self, email: EmailMessage, *, sender: str, recipient: str) -> None:
        """Hand over ``email`` for ``recipient``; ``sender`` is the envelope
        sender. Raises ``TemporaryFailure`` or ``PermanentFailure``."""
        ...

    async def close(self) -> None: ...


def mailbox(value: str) -> MailAddress:
    """``value`` as one bare address (``user@domain``). Raises ``ValueError``
    for anything else: a display name, several addresses, a line break."""
    if not value or value != value.strip() or any(c in value for c in "\r\n\0"):
        raise ValueError(f"not an e-mail address: {value!r}")
    try:
        address = MailAddress(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(f"not an e-mail address: {value!r}") from exc
    if not address.username or not address.domain or "@" not in value:
        raise ValueError(f"not an e-mail address: {value!r}")
    return address


def from_address(value: str, *, what: str = WHAT) -> MailAddress:
    """The ``from`` option, ``Name <user@domain>`` or a bare address. Raises
    ``ConfigurationError`` when it is not one valid address."""
    if any(c in value for c in "\r\n\0"):
        raise ConfigurationError(f"{what}: from must be one line, not {value!r}")
    name, addr = parseaddr(value)
    try:
        address = mailbox(addr)
    except ValueError:
        raise ConfigurationError(
            f"{what}: from must be an address such as 'Name <noreply@example.com>', not {value!r}"
        ) from None
    return MailAddress(display_name=name, username=address.username, domain=address.domain)


def message_id_header(message_id: str, domain: str) -> str:
    """``<message_id@domain>``; a ``message_id`` that is not safe there (or in
    a file name) is replaced by its SHA-256, so the header is still stable."""
    left = message_id if _SAFE_ID.fullmatch(message_id) else _digest(message_id)
    try:
        right = domain.encode("idna").decode("ascii")
    except UnicodeError:
        right = "localhost"
    if not _SAFE_ID.fullmatch(right):
        right = "localhost"
    return f"<{left}@{right}>"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def one_line(text: str) -> str:
    """Whitespace runs (line breaks included) as one space: a subject can
    never add a header."""
    return " ".join(text.split())


def build_email(message: Outgoing, *, sender: MailAddress, now: float) -> EmailMessage:
    """The RFC 5322 message for ``message``. Raises ``PermanentFailure`` when
    the recipient is not one valid address."""
    try:
        recipient = mailbox(message.address.value)
    except ValueError as exc:
        raise PermanentFailure(str(exc)) from None
    rendered = message.rendered
    email = EmailMessage(policy=policy.default)
    email["From"] = sender
    email["To"] = recipient
    email["Subject"] = one_line(rendered.subject or "")
    email["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    email["Message-ID"] = message_id_header(message.message_id, sender.domain)
    # RFC 3834: tells auto-responders (vacation replies) not to answer.
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(rendered.body)
    if rendered.html is not None:
        email.add_alternative(rendered.html, subtype="html")
    return email


class EmailSender:
    """The ``EMAIL`` channel: builds each message and hands it to a transport.
    Safe to call concurrently; ``send`` returns the ``Message-ID``."""

    channel = Channel.EMAIL

    def __init__(
        self, transport: EmailTransport, sender: MailAddress, *, clock: Clock | None = None
    ) -> None:
        self.transport = transport
        self.sender = sender
        self._clock = clock or SystemClock()

    async def send(self, message: Outgoing) -> str | None:
        if message.channel != Channel.EMAIL or message.address.channel != Channel.EMAIL:
            raise PermanentFailure(f"an e-mail sender cannot send a {message.channel} message")
        email = build_email(message, sender=self.sender, now=self._clock.time())
        try:
            await self.transport.deliver(
                email, sender=self.sender.addr_spec, recipient=message.address.value
            )
        except DeliveryError:
            raise
        except Exception as exc:
            # The contract allows only the two failures; an unforeseen error
            # is retried (and dead-lettered when it persists), not crashed on.
            raise TemporaryFailure(f"e-mail not sent: {type(exc).__name__}: {exc}") from exc
        return str(email["Message-ID"])

    async def close(self) -> None:
        await self.transport.close()


class EmailOutbox:
    """The e-mail outbox directory: ``<dir>/<message_id>.eml`` per message,
    written atomically; created on the first message."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, email: EmailMessage) -> Path:
        left = str(email["Message-ID"]).strip("<>").rpartition("@")[0]
        return self.directory / f"{left}.eml"

    async def deliver(self, email: EmailMessage, *, sender: str, recipient: str) -> None:
        data = email.as_bytes(policy=policy.SMTP)
        try:
            await asyncio.to_thread(_write_atomically, self.path_for(email), data)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write to the e-mail outbox directory: {exc}") from exc

    async def close(self) -> None:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    # The rename is durable once the directory entry is on disk too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def email_sender(url: str, *, clock: Clock | None = None) -> EmailSender:
    """The e-mail sender named by ``url`` (``file://``, ``smtp://``,
    ``smtps://``), not yet connected. Raises ``ConfigurationError`` for an
    unknown scheme, a missing or invalid ``from``, or a bad option."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        options = query_options(parts, frozenset({"from"}), what=WHAT)
        sender = from_address(options.get("from", DEFAULT_OUTBOX_FROM))
        return EmailSender(EmailOutbox(file_path(parts, what=WHAT)), sender, clock=clock)
    if parts.scheme in ("smtp", "smtps"):
        from sysdesign.blocks.notify.smtp import SmtpTransport, smtp_settings

        settings, from_value = smtp_settings(parts)
        return EmailSender(SmtpTransport(settings), from_address(from_value), clock=clock)
    raise ConfigurationError(
        f"unsupported {WHAT} scheme {parts.scheme!r}: use file:///abs/dir (the e-mail outbox "
        "directory), smtp://host:port?from=… or smtps://host:port?from=…"
    )
