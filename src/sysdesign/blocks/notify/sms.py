"""SMS: to the SMS outbox file, or to a provider's HTTP API.

``sms_sender(url)`` picks the provider:

- ``file:///abs/path/sms-outbox.jsonl``: the **SMS outbox file**, the
  embedded default. Each message appends one JSON line
  ``{"id", "to", "body", "at"}`` (``at``: ISO 8601, UTC), flushed and
  fsync'd before ``send`` returns. One lock orders this process's writes;
  other processes may append too (each line is one ``write`` to a file
  opened for appending). A retry appends the line again with the same
  ``id``: readers keep the first of each id.
- ``twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from=%2B15550001111``: a
  real provider, Twilio's Messages API (``POST /2010-04-01/Accounts/{sid}/
  Messages.json`` with HTTP basic auth and the form fields ``To``, ``From``,
  ``Body``). ``base_url=http://127.0.0.1:PORT`` sends to another endpoint
  speaking the same API (tests), ``timeout=10`` bounds each request.
  ``send`` returns the provider's message ``sid``. A 429 or 5xx, a timeout or
  a network error is ``TemporaryFailure`` (``Retry-After`` honoured); any
  other 4xx (a number the provider refuses, bad credentials) and a redirect
  are ``PermanentFailure``. The API takes no idempotency key, so a retry
  after a lost answer can send a text twice.

Numbers must be E.164 (``+`` then 8 to 15 digits, no leading zero) and the
text at most 1600 characters (a provider's limit for one message, however
many segments); anything else is ``PermanentFailure``.
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
import orjson

from sysdesign.blocks.notify.base import (
    Channel,
    Outgoing,
    PermanentFailure,
    TemporaryFailure,
)
from sysdesign.blocks.notify.senderurl import file_path, query_options, seconds
from sysdesign.blocks.notify.webhook import retry_after
from sysdesign.platform.clock import Clock, SystemClock
from sysdesign.platform.errors import ConfigurationError
from sysdesign.platform.urls import redact

WHAT = "SMS sender URL"
MAX_SMS_CHARS = 1600
DEFAULT_TIMEOUT = 10.0
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def is_e164(number: str) -> bool:
    """Whether ``number`` is ``+`` and 8 to 15 digits, the first not 0."""
    return _E164.fullmatch(number) is not None


def _check(message: Outgoing) -> None:
    if message.channel != Channel.SMS or message.address.channel != Channel.SMS:
        raise PermanentFailure(f"an SMS sender cannot send a {message.channel} message")
    if not is_e164(message.address.value):
        raise PermanentFailure(
            f"not an E.164 phone number: {message.address.value!r} (write +15550001111)"
        )
    if not message.rendered.body:
        raise PermanentFailure("an SMS needs a body")
    if len(message.rendered.body) > MAX_SMS_CHARS:
        raise PermanentFailure(f"an SMS is at most {MAX_SMS_CHARS} characters")


class SmsOutboxFile:
    """The SMS outbox file: one JSON line per message, durable on return."""

    channel = Channel.SMS

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._lock = asyncio.Lock()

    async def send(self, message: Outgoing) -> str | None:
        _check(message)
        at = datetime.fromtimestamp(self._clock.time(), UTC).isoformat().replace("+00:00", "Z")
        line = orjson.dumps(
            {
                "id": message.message_id,
                "to": message.address.value,
                "body": message.rendered.body,
                "at": at,
            }
        )
        async with self._lock:
            try:
                await asyncio.to_thread(_append_line, self.path, line + b"\n")
            except OSError as exc:
                raise TemporaryFailure(f"cannot write to the SMS outbox file: {exc}") from exc
        return None

    async def close(self) -> None:
        return None


def _append_line(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # One write almost always takes the whole line; a short one is
        # finished rather than left as a torn line for the next to follow.
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class TwilioSmsSender:
    """Twilio's Messages API (or anything speaking it at ``base_url``)."""

    channel = Channel.SMS

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str = "https://api.twilio.com",
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.from_number = from_number
        self.timeout = timeout
        self._clock = clock or SystemClock()
        self.endpoint = (
            f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
            "/Messages.json"
        )
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0
            ),
            follow_redirects=False,
        )

    async def send(self, message: Outgoing) -> str | None:
        _check(message)
        form = {
            "To": message.address.value,
            "From": self.from_number,
            "Body": message.rendered.body,
        }
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(
                    self.endpoint, data=form, auth=self._auth, follow_redirects=False
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TemporaryFailure(f"SMS provider timed out after {self.timeout} s") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise TemporaryFailure(f"SMS provider unreachable: {exc!r}") from exc
        except Exception as exc:
            # The contract allows only the two failures; an unforeseen error
            # is retried (and dead-lettered when it persists), not crashed on.
            raise TemporaryFailure(f"SMS not sent: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return _sid(response)
        reason = f"SMS provider answered {status}{_problem(response)}"
        if status == 429 or 500 <= status < 600:
            wait = retry_after(response.headers.get("Retry-After"), now=self._clock.time())
            raise TemporaryFailure(reason, retry_after=wait)
        raise PermanentFailure(reason)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _json(response: httpx.Response) -> object:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _sid(response: httpx.Response) -> str | None:
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("sid"), str):
        return body["sid"]
    return None


def _problem(response: httpx.Response) -> str:
    """Twilio's error code and message, when the answer has them."""
    body = _json(response)
    if not isinstance(body, dict):
        return ""
    code, text = body.get("code"), body.get("message")
    details = " ".join(str(part) for part in (code, text) if part is not None)
    return f": {details[:300]}" if details else ""


def _twilio(url: str, client: httpx.AsyncClient | None, clock: Clock | None) -> TwilioSmsSender:
    parts = urlsplit(url)
    shown = redact(url)
    options = query_options(parts, frozenset({"from", "base_url", "timeout"}), what=WHAT)
    if not parts.username or not parts.password:
        raise ConfigurationError(f"{WHAT}: {shown} needs ACCOUNT_SID:AUTH_TOKEN@ before the host")
    # An unescaped '+' in a query reads as a space: take " 1555…" as "+1555…".
    raw = options.get("from", "")
    number = "+" + raw[1:] if raw.startswith(" ") else raw
    if not is_e164(number):
        raise ConfigurationError(
            f"{WHAT}: from must be an E.164 number such as %2B15550001111, not {raw!r}"
        )
    base_url = options.get("base_url") or f"https://{parts.hostname or 'api.twilio.com'}"
    if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
        raise ConfigurationError(f"{WHAT}: base_url must be an http(s) URL, not {base_url!r}")
    return TwilioSmsSender(
        account_sid=unquote(parts.username),
        auth_token=unquote(parts.password),
        from_number=number,
        base_url=base_url,
        timeout=seconds(options, "timeout", DEFAULT_TIMEOUT, what=WHAT),
        client=client,
        clock=clock,
    )


def sms_sender(
    url: str, *, clock: Clock | None = None, client: httpx.AsyncClient | None = None
) -> SmsOutboxFile | TwilioSmsSender:
    """The SMS sender named by ``url`` (``file://`` or ``twilio://``). ``client``
    is used by the HTTP provider (and left open on ``close``) instead of its
    own. Raises ``ConfigurationError`` for an unknown scheme, missing
    credentials or ``from``, or a bad option."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        query_options(parts, frozenset(), what=WHAT)
        return SmsOutboxFile(file_path(parts, what=WHAT), clock=clock)
    if parts.scheme == "twilio":
        return _twilio(url, client, clock)
    raise ConfigurationError(
        f"unsupported {WHAT} scheme {parts.scheme!r}: use file:///abs/path/sms-outbox.jsonl "
        "(the SMS outbox file) or twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from=%2B1…"
    )
