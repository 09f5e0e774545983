"""Sending e-mail to a real SMTP server with aiosmtplib, over a small pool
of reused connections.

``smtp://[user:password@]host[:port]?from=Name%20<noreply@example.com>`` and
``smtps://…`` (implicit TLS, port 465 by default). Options:

- ``from`` (required): the From header; its address is the envelope sender;
- ``starttls=true|false``: require the STARTTLS upgrade, or never try it;
  absent, upgrade when the server offers it;
- ``tls=true``: TLS from the first byte (what ``smtps://`` means);
- ``verify=false``: accept any server certificate (test servers only);
- ``timeout=10``: seconds for connecting and for each SMTP reply;
- ``pool=4``: at most this many connections, and so messages in flight;
  more senders wait for one;
- ``idle=30``: seconds a connection may rest between messages before it is
  closed instead of reused; ``0`` opens a connection per message;
- ``helo=name``: the name given in EHLO (default: this machine's FQDN).

The port defaults to 25, or 587 with ``starttls=true``, or 465 with TLS.

A reused connection is first checked with NOOP, so one that the server
closed while idle costs a new connection, never a failed message. After a
refusal the client has already reset the transaction (RSET) and keeps the
connection; after a broken conversation it is dropped.

Failures:

- no connection (refused, unreachable, timed out, TLS failed), a lost
  connection, a refused login, any reply while setting the session up
  (greeting, EHLO, STARTTLS, AUTH): ``TemporaryFailure``. These are about
  the server or these settings, not the message, so the message waits for
  them to be fixed rather than being failed;
- a 4xx reply to the message (MAIL, RCPT, DATA; e.g. 451 greylisting, 452
  full): ``TemporaryFailure``;
- a 5xx reply to the message (e.g. 550 no such user, 552 too big, 554
  rejected as spam), an address the client cannot put on the wire, an
  address that needs SMTPUTF8 the server lacks: ``PermanentFailure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import SplitResult, unquote

import aiosmtplib

from sysdesign.blocks.notify.base import DeliveryError, PermanentFailure, TemporaryFailure
from sysdesign.blocks.notify.email import WHAT
from sysdesign.blocks.notify.senderurl import count, flag, query_options, seconds
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.urls import redact

OPTIONS = frozenset({"from", "starttls", "tls", "verify", "timeout", "pool", "idle", "helo"})
DEFAULT_TIMEOUT = 10.0
DEFAULT_POOL = 4
DEFAULT_IDLE = 30.0  # well under the 300 s a server such as Postfix waits on an idle client


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int | None = None
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    verify: bool = True
    timeout: float = DEFAULT_TIMEOUT
    pool: int = DEFAULT_POOL
    idle: float = DEFAULT_IDLE
    helo: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def smtp_settings(parts: SplitResult) -> tuple[SmtpSettings, str]:
    """The settings of an ``smtp://`` or ``smtps://`` URL and its ``from``
    option. Raises ``ConfigurationError`` for a missing host or ``from``, a
    bad port, or a bad or unknown option."""
    options = query_options(parts, OPTIONS, what=WHAT)
    shown = redact(parts.geturl())
    if not parts.hostname:
        raise ConfigurationError(f"{WHAT}: no host in {shown}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{WHAT}: bad port in {shown}") from None
    if "from" not in options or not options["from"].strip():
        raise ConfigurationError(
            f"{WHAT}: {shown} has no from: add ?from=Name%20<noreply@your.domain>"
        )
    use_tls = parts.scheme == "smtps" or bool(flag(options, "tls", what=WHAT))
    start_tls = flag(options, "starttls", what=WHAT)
    if use_tls and start_tls:
        raise ConfigurationError(
            f"{WHAT}: TLS from the start (smtps:// or tls=true) and starttls=true exclude "
            f"each other in {shown}"
        )
    helo = options.get("helo") or None
    if helo is not None and not all(c.isalnum() or c in ".-[]:" for c in helo):
        raise ConfigurationError(f"{WHAT}: helo must be a host name, not {helo!r}")
    settings = SmtpSettings(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        use_tls=use_tls,
        start_tls=False if use_tls else start_tls,
        verify=flag(options, "verify", what=WHAT) is not False,
        timeout=seconds(options, "timeout", DEFAULT_TIMEOUT, what=WHAT),
        pool=count(options, "pool", DEFAULT_POOL, what=WHAT),
        idle=seconds(options, "idle", DEFAULT_IDLE, what=WHAT, allow_zero=True),
        helo=helo,
    )
    return settings, options["from"]


def _by_code(code: int, text: str) -> DeliveryError:
    if 500 <= code < 600:
        return PermanentFailure(text)
    return TemporaryFailure(text)


class SmtpTransport:
    """Delivers to one SMTP server over at most ``settings.pool`` connections."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # (client, rested since)
        self._slots = asyncio.Semaphore(settings.pool)
        self._closed = False

    async def deliver(self, email: EmailMessage, *, sender: str, recipient: str) -> None:
        if self._closed:
            raise TemporaryFailure("the e-mail sender is closed")
        async with self._slots:
            client = await self._checkout()
            keep = False
            try:
                await client.send_message(email, sender=sender, recipients=[recipient])
                keep = True
            except aiosmtplib.SMTPRecipientsRefused as exc:
                keep = True
                refusal = exc.recipients[0]
                raise _by_code(
                    refusal.code, f"recipient {recipient} refused: {refusal.code} {refusal.message}"
                ) from exc
            except aiosmtplib.SMTPHeloError as exc:
                # About the session, not the message: see the module's docstring.
                raise TemporaryFailure(
                    f"SMTP server {self.settings.where} refused EHLO/HELO: {exc.code} {exc.message}"
                ) from exc
            except aiosmtplib.SMTPResponseException as exc:
                keep = True
                raise _by_code(exc.code, f"SMTP server replied {exc.code} {exc.message}") from exc
            except aiosmtplib.SMTPNotSupported as exc:
                keep = True
                raise PermanentFailure(f"the SMTP server cannot take this message: {exc}") from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise TemporaryFailure(
                    f"SMTP conversation with {self.settings.where} failed: {exc}"
                ) from exc
            except ValueError as exc:
                keep = True
                raise PermanentFailure(f"address refused by the SMTP client: {exc}") from exc
            finally:
                await self._checkin(client, keep=keep and client.is_connected)

    async def close(self) -> None:
        """Says QUIT on every resting connection; those in use close when done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client, _ in idle:
            await self._quit(client)

    async def _checkout(self) -> aiosmtplib.SMTP:
        now = time.monotonic()
        fresh: list[tuple[aiosmtplib.SMTP, float]] = []
        for client, since in self._idle:
            if now - since <= self.settings.idle and client.is_connected:
                fresh.append((client, since))
            else:
                client.close()
        self._idle = fresh
        while self._idle:
            client, _ = self._idle.pop()
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
                continue
            return client
        return await self._connect()

    async def _checkin(self, client: aiosmtplib.SMTP, *, keep: bool) -> None:
        if not keep:
            client.close()
        elif self._closed or self.settings.idle == 0:
            await self._quit(client)
        else:
            self._idle.append((client, time.monotonic()))

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            use_tls=s.use_tls,
            start_tls=s.start_tls,
            validate_certs=s.verify,
            timeout=s.timeout,
            local_hostname=s.helo,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(
                f"SMTP server {s.where} refused the login ({exc.code} {exc.message}): "
                "check the user and password in the URL"
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(f"cannot reach SMTP server {s.where}: {exc}") from exc
        return client

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            if client.is_connected:
                await asyncio.wait_for(client.quit(), self.settings.timeout)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                client.close()
