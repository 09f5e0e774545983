"""Notification templates: Jinja text per channel and locale, checked when
uploaded and rendered for each message.

A template has, per channel, one ``ChannelTemplate`` per locale tag (``en``,
``pt-BR``): a body, a subject (required for e-mail; the title in the app)
and, for e-mail only, an HTML alternative. ``validate_templates`` refuses
anything that could only fail later, and says which part and line.

``Renderer.render`` picks the locale by falling back from the exact tag
(``pt-BR``) to its language (``pt``), then to ``en``, then to the first
locale the template defines. HTML parts are autoescaped; text parts
(subject, body, SMS, in-app) are not, since nothing interprets them as
markup. A subject is always one line: line breaks become spaces, so data
cannot add a header. All of it runs in the sandbox of ``sandbox.py``.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SecurityError

from sysdesign.blocks.notify.base import Channel, PermanentFailure, Rendered
from sysdesign.blocks.notify.email import one_line
from sysdesign.blocks.notify.sandbox import MAX_VALUE, NotificationSandbox

MAX_SOURCE_BYTES = 64 * 1024  # per part, UTF-8
DEFAULT_CACHE_SIZE = 512
# Language, optional script, optional region: en, pt-BR, zh-Hant-TW, es-419.
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?")


@dataclass(frozen=True, slots=True)
class ChannelTemplate:
    """One channel's template in one locale; each part is Jinja source."""

    body: str
    subject: str | None = None
    html: str | None = None


class TemplateInvalid(ValueError):
    """A template that cannot be accepted: ``field`` names the part (e.g.
    ``channels.email.en.subject``), ``line`` the line of a syntax error."""

    def __init__(self, field: str, message: str, line: int | None = None) -> None:
        self.field = field
        self.message = message
        self.line = line
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{field}: {message}{where}")


def _parts(template: ChannelTemplate) -> Iterable[tuple[str, str | None, bool]]:
    """(name, source, is html) for each part."""
    yield "subject", template.subject, False
    yield "body", template.body, False
    yield "html", template.html, True


def _check_source(environment: NotificationSandbox, field: str, source: object) -> None:
    if not isinstance(source, str):
        raise TemplateInvalid(field, "must be text")
    if not source.strip():
        raise TemplateInvalid(field, "is empty")
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise TemplateInvalid(field, f"is over {MAX_SOURCE_BYTES // 1024} KiB")
    try:
        environment.compile(source)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(field, exc.message or "syntax error", exc.lineno) from None
    except RecursionError:
        raise TemplateInvalid(field, "is nested too deeply") from None


def validate_templates(channels: Mapping[Channel, Mapping[str, ChannelTemplate]]) -> None:
    """Accepts ``channels`` or raises ``TemplateInvalid`` (and nothing else,
    whatever the text) for the first problem: no channel, an unknown
    channel, a channel without locales, a locale tag that is not like ``en``
    or ``pt-BR`` (or repeats another but for case), an empty part, an
    e-mail without subject, HTML outside e-mail, a part over 64 KiB, or Jinja
    that does not compile in the sandbox (with its line)."""
    if not channels:
        raise TemplateInvalid("channels", "a template needs at least one channel")
    text = NotificationSandbox(html=False)
    html = NotificationSandbox(html=True)
    for key, locales in channels.items():
        try:
            channel = Channel(key)
        except ValueError:
            known = ", ".join(c.value for c in Channel)
            raise TemplateInvalid(f"channels.{key}", f"unknown channel (use {known})") from None
        base = f"channels.{channel.value}"
        if not locales:
            raise TemplateInvalid(base, "needs at least one locale")
        seen: dict[str, str] = {}
        for locale, template in locales.items():
            field = f"{base}.{locale}"
            if not isinstance(locale, str) or not _LOCALE.fullmatch(locale):
                raise TemplateInvalid(field, "not a locale tag such as en or pt-BR")
            if locale.lower() in seen:
                raise TemplateInvalid(field, f"the same locale as {seen[locale.lower()]}")
            seen[locale.lower()] = locale
            if not isinstance(template, ChannelTemplate):
                raise TemplateInvalid(field, "must have a body, and may have subject and html")
            if channel == Channel.EMAIL and template.subject is None:
                raise TemplateInvalid(f"{field}.subject", "an e-mail needs a subject")
            if channel != Channel.EMAIL and template.html is not None:
                raise TemplateInvalid(f"{field}.html", "only e-mail has an HTML part")
            for part, source, is_html in _parts(template):
                if source is not None or part == "body":
                    _check_source(html if is_html else text, f"{field}.{part}", source)


def choose_locale(available: Iterable[str], requested: str | None) -> str | None:
    """The locale of ``available`` to render for ``requested``: the same tag
    (any case, ``_`` read as ``-``), its language, ``en``, else the first;
    ``None`` when nothing is available."""
    by_key: dict[str, str] = {}
    for tag in available:
        by_key.setdefault(tag.lower(), tag)
    if not by_key:
        return None
    if requested:
        wanted = requested.strip().replace("_", "-").lower()
        for key in (wanted, wanted.split("-")[0], "en"):
            if key in by_key:
                return by_key[key]
    elif "en" in by_key:
        return by_key["en"]
    return next(iter(by_key.values()))


class Renderer:
    """Renders templates; keeps up to ``cache_size`` compiled parts, least
    recently used first out, keyed by their source (a changed template is a
    new key, so nothing needs invalidating). Safe to share between threads."""

    def __init__(self, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.cache_size = cache_size
        self._environments = {
            False: NotificationSandbox(html=False),
            True: NotificationSandbox(html=True),
        }
        self._compiled: OrderedDict[tuple[bool, str], Template] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def cached(self) -> int:
        """How many compiled parts the cache holds."""
        return len(self._compiled)

    def render(
        self,
        templates: Mapping[str, ChannelTemplate],
        locale: str | None,
        data: Mapping[str, Any],
        *,
        channel: Channel,
    ) -> Rendered:
        """``channel``'s message in the locale chosen for ``locale``, with
        ``data`` as the variables. Raises ``PermanentFailure`` (naming the
        part) for no locale at all, an e-mail template without subject, a
        syntax error, an undefined variable, anything the sandbox refuses,
        any other error while rendering, or a part over ``MAX_VALUE``
        characters."""
        channel = Channel(channel)
        chosen = choose_locale(templates, locale)
        if chosen is None:
            raise PermanentFailure(f"no {channel.value} template in any locale")
        template = templates[chosen]
        field = f"channels.{channel.value}.{chosen}"
        subject = None
        if template.subject is not None:
            subject = one_line(self._render(template.subject, data, f"{field}.subject", False))
        elif channel == Channel.EMAIL:
            raise PermanentFailure(f"{field}.subject: an e-mail needs a subject")
        body = self._render(template.body, data, f"{field}.body", False)
        html = None
        if template.html is not None and channel == Channel.EMAIL:
            html = self._render(template.html, data, f"{field}.html", True)
        return Rendered(body=body, subject=subject, html=html)

    def _compile(self, source: str, is_html: bool, field: str) -> Template:
        key = (is_html, source)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
        try:
            compiled = self._environments[is_html].from_string(source)
        except TemplateSyntaxError as exc:
            raise PermanentFailure(f"{field}: {exc.message} (line {exc.lineno})") from None
        except RecursionError:
            raise PermanentFailure(f"{field}: nested too deeply") from None
        with self._lock:
            self._compiled[key] = compiled
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
        return compiled

    def _render(self, source: str, data: Mapping[str, Any], field: str, is_html: bool) -> str:
        compiled = self._compile(source, is_html, field)
        pieces: list[str] = []
        size = 0
        try:
            # Streamed, so a runaway loop stops at the limit instead of
            # building all of its output first.
            for piece in compiled.generate(dict(data)):
                size += len(piece)
                if size > MAX_VALUE:
                    raise PermanentFailure(f"{field}: renders to over {MAX_VALUE} characters")
                pieces.append(piece)
        except PermanentFailure:
            raise
        except UndefinedError as exc:
            raise PermanentFailure(f"{field}: undefined variable: {exc.message}") from None
        except SecurityError as exc:
            raise PermanentFailure(f"{field}: not allowed in a template: {exc}") from None
        except Exception as exc:
            raise PermanentFailure(f"{field}: cannot render: {type(exc).__name__}: {exc}") from exc
        return "".join(pieces)
