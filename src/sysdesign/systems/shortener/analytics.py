"""What a visit is worth keeping: browser, OS, device, bot or not, referrer host, country.

Pure apart from opening the GeoIP file: the consumer (``workers.py``) turns
each visit event of ``shortener.visits`` into a ``CountedVisit`` with
``summarise`` and the store (``stats.py``) adds it to the link's counters.

Privacy: the visitor's IP address is used for one country lookup and is not
stored (``CountedVisit`` has no field for it); neither are the raw user
agent and the referrer's path and query (which may carry tokens or search
terms): only the families and the referrer's host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import ua_parser

from sysdesign.platform.errors import ConfigurationError

if TYPE_CHECKING:
    import maxminddb

UNKNOWN = "unknown"
DIRECT = "direct"
OTHER = "Other"  # ua-parser's name for a family it does not recognise
MAX_VALUE_CHARS = 255  # what a stats row holds of one dimension's value
# A user agent is attacker-chosen: parsing a megabyte of it through a few
# hundred regular expressions would stall the consumer. Real ones are short.
UA_MAX_CHARS = 1024
UA_CACHE_SIZE = 4096
_MAX_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last day ``date`` holds
_MAX_LINK_ID = 2**63 - 1
_EPOCH = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000

# ua-parser calls a user agent's device "Spider" when one of its patterns
# knows it as a crawler (Googlebot, bingbot, Slackbot, most "...bot/1.0"),
# but it has no opinion on HTTP libraries and command-line clients (curl,
# python-requests, Go-http-client), headless browsers, uptime monitors and
# link-preview fetchers that do not call themselves bots. Those follow short
# links all day (unfurling a link pasted in a chat, checking it is up) and
# would swamp a link's human numbers, so these markers (lower case, matched
# anywhere in the user agent) count them as bots too.
_BOT_MARKERS = (
    "bot/", "crawler", "spider", "preview", "monitor", "uptime", "site24x7", "pingdom",
    "headlesschrome", "phantomjs", "lighthouse", "facebookexternalhit", "iframely",
    "embedly", "curl/", "wget/", "python-requests", "python-urllib", "python-httpx",
    "aiohttp", "httpx/", "go-http-client", "node-fetch", "axios/", "okhttp", "java/",
    "libwww-perl", "scrapy",
)  # fmt: skip
_HOST = re.compile(r"[a-z0-9_.:-]+")


class MalformedVisit(ValueError):
    """A message on ``shortener.visits`` that is not a visit event this consumer reads."""


@dataclass(frozen=True, slots=True)
class Agent:
    """What a user agent says about the visitor; ``bot`` for crawlers, scripts and
    previews (see ``_BOT_MARKERS``) and for a request with no user agent at all."""

    browser: str
    os: str
    device: str
    bot: bool


def classify_user_agent(user_agent: str | None) -> Agent:
    """The families of ``user_agent`` as ua-parser names them (``"Other"`` when it
    does not know one), and whether it is a bot. Results are cached (LRU): the
    same few hundred user agents make most visits, and parsing one runs through
    hundreds of regular expressions."""
    ua = (user_agent or "").strip()[:UA_MAX_CHARS]
    if not ua:
        # Every browser sends a user agent; a request without one is a script.
        return Agent(OTHER, OTHER, OTHER, bot=True)
    return _classify(ua)


@lru_cache(maxsize=UA_CACHE_SIZE)
def _classify(ua: str) -> Agent:
    result = ua_parser.parse(ua).with_defaults()
    browser, os_family = result.user_agent.family, result.os.family
    device = result.device.family
    lowered = ua.lower()
    bot = device == "Spider" or any(marker in lowered for marker in _BOT_MARKERS)
    return Agent(_clip(browser), _clip(os_family), _clip(device), bot)


def _clip(value: str) -> str:
    return value[:MAX_VALUE_CHARS] or OTHER


def referrer_host(referrer: str | None) -> str:
    """The referrer's host in lower case without port or trailing dot (IDNA hosts
    in their ASCII form), or ``"direct"`` when there is none or it is not an
    absolute URL with a host. Path and query are dropped."""
    if not referrer:
        return DIRECT
    try:
        host = urlsplit(referrer.strip()).hostname
    except ValueError:
        return DIRECT
    if not host:
        return DIRECT
    host = host.rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return DIRECT
    if len(host) > MAX_VALUE_CHARS or not _HOST.fullmatch(host):
        return DIRECT
    return host


class GeoIP:
    """Country lookups in a MaxMind DB file (GeoIP2/GeoLite2 Country or City,
    or any database whose records carry ``country.iso_code``).

    ``GeoIP(None)`` has no database and answers ``"unknown"`` for everything.
    The file is read through a memory map (maxminddb's C extension when it is
    installed): a lookup makes no system call of its own.
    """

    def __init__(self, reader: maxminddb.Reader | None = None) -> None:
        self._reader = reader

    @classmethod
    def open(cls, path: str | Path) -> GeoIP:
        """Open the database at ``path``; ``ConfigurationError`` (one line,
        naming the file) when it is missing or not a MaxMind DB file."""
        import maxminddb

        try:
            reader = maxminddb.open_database(str(path))
        except FileNotFoundError:
            raise ConfigurationError(f"GeoIP database {path} does not exist") from None
        except (OSError, ValueError, RuntimeError) as exc:
            # maxminddb raises InvalidDatabaseError (a RuntimeError) for a file
            # that is not a MaxMind DB; mmap raises ValueError for an empty one.
            raise ConfigurationError(
                f"GeoIP database {path} is not a readable MaxMind DB file: {exc}"
            ) from None
        return cls(reader)

    @property
    def configured(self) -> bool:
        return self._reader is not None

    def country(self, ip: str | None) -> str:
        """The ISO 3166 code of ``ip``'s country, or ``"unknown"`` when there is no
        database, no address, an address that is not a public one (private,
        loopback, documentation ranges...) or one the database does not hold."""
        if self._reader is None or not ip:
            return UNKNOWN
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return UNKNOWN
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            return UNKNOWN
        try:
            record = self._reader.get(address)
        except (ValueError, RuntimeError):
            # An IPv6 address in an IPv4-only database, or a corrupt record.
            return UNKNOWN
        return _iso_code(record)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _iso_code(record: Any) -> str:
    if not isinstance(record, dict):
        return UNKNOWN
    # Some networks (anycast, satellite) have only the country they are
    # registered in; that is the best answer the database has for them.
    for name in ("country", "registered_country"):
        place = record.get(name)
        code = place.get("iso_code") if isinstance(place, dict) else None
        if isinstance(code, str) and 0 < len(code) <= 8:
            return code
    return UNKNOWN


@dataclass(frozen=True, slots=True)
class VisitEvent:
    """A message of ``shortener.visits`` as the redirect publishes it."""

    link_id: int
    code: str
    at_ms: int
    referrer: str | None
    user_agent: str | None
    ip: str | None


def parse_visit_event(payload: bytes) -> VisitEvent:
    """Read a visit event; ``MalformedVisit`` saying what is wrong otherwise.

    ``link_id`` (a decimal string or an integer), ``code`` and ``at_ms`` are
    required; ``referrer``, ``user_agent`` and ``ip`` may be null or absent.
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedVisit("the payload is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedVisit("the payload is not a JSON object")
    link_id = data.get("link_id")
    if isinstance(link_id, str) and link_id.isascii() and link_id.isdigit():
        link_id = int(link_id)
    if isinstance(link_id, bool) or not isinstance(link_id, int):
        raise MalformedVisit("link_id is missing or not a number")
    if not 0 < link_id <= _MAX_LINK_ID:
        raise MalformedVisit("link_id is out of range")
    code = data.get("code")
    if not isinstance(code, str) or not 0 < len(code) <= 64:
        raise MalformedVisit("code is missing or not a short string")
    at_ms = data.get("at_ms")
    if isinstance(at_ms, bool) or not isinstance(at_ms, int) or not 0 <= at_ms <= _MAX_AT_MS:
        raise MalformedVisit("at_ms is missing or not a time in epoch milliseconds")
    optional = {}
    for name in ("referrer", "user_agent", "ip"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise MalformedVisit(f"{name} is neither a string nor null")
        optional[name] = value
    return VisitEvent(link_id, code, at_ms, **optional)


@dataclass(frozen=True, slots=True)
class CountedVisit:
    """What the counters keep of one visit: no address, no raw user agent."""

    link_id: int
    code: str
    day: date  # UTC
    bot: bool
    referrer: str
    browser: str
    os: str
    country: str

    def dimensions(self) -> list[tuple[str, str]]:
        """``(dimension, value)`` pairs counted for a human visit; none for a bot's."""
        if self.bot:
            return []
        return [
            ("browser", self.browser),
            ("country", self.country),
            ("os", self.os),
            ("referrer", self.referrer),
        ]


def summarise(event: VisitEvent, geoip: GeoIP) -> CountedVisit:
    """The counted form of ``event``. A bot's country is not looked up: bots are
    counted apart and only in total."""
    agent = classify_user_agent(event.user_agent)
    day = _EPOCH + timedelta(days=event.at_ms // _MS_PER_DAY)  # exact: no float seconds
    return CountedVisit(
        link_id=event.link_id,
        code=event.code,
        day=day,
        bot=agent.bot,
        referrer=referrer_host(event.referrer),
        browser=agent.browser,
        os=agent.os,
        country=UNKNOWN if agent.bot else geoip.country(event.ip),
    )
