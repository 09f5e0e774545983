"""What analytics keeps of a visit, without I/O: user agents, referrer hosts,
countries from a GeoIP file the test writes, visit events, and the consumer's settings."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.platform.errors import ConfigurationError
from sysdesign.systems.shortener.analytics import (
    DIRECT,
    UNKNOWN,
    Agent,
    GeoIP,
    MalformedVisit,
    VisitEvent,
    classify_user_agent,
    parse_visit_event,
    referrer_host,
    summarise,
)
from sysdesign.systems.shortener.workers import (
    ANALYTICS_ENV,
    GEOIP_ENV,
    analytics_enabled,
    check_configuration,
    open_geoip,
)
from tests.systems.shortener.analytics_helpers import (
    CHROME_WINDOWS,
    CUBOT_PHONE,
    CURL,
    GOOGLEBOT,
    SAFARI_IPHONE,
)
from tests.systems.shortener.analytics_mmdb import write_mmdb

GEO_RECORDS = {
    "81.2.69.0/24": {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}},
    "2001:218::/32": {"country": {"iso_code": "JP"}},
    # Only the country the network is registered in, as for some anycast networks.
    "89.160.20.112/28": {"registered_country": {"iso_code": "SE"}},
}


# --- user agents ------------------------------------------------------------------------


def test_a_desktop_browser_is_a_human() -> None:
    assert classify_user_agent(CHROME_WINDOWS) == Agent("Chrome", "Windows", "Other", bot=False)


def test_a_phone_browser_names_its_device() -> None:
    assert classify_user_agent(SAFARI_IPHONE) == Agent("Mobile Safari", "iOS", "iPhone", bot=False)
    assert classify_user_agent(CUBOT_PHONE).bot is False


@pytest.mark.parametrize(
    ("user_agent", "browser"),
    [
        (CURL, "curl"),  # ua-parser knows it, but not as a spider: a marker does
        (GOOGLEBOT, "Googlebot"),  # ua-parser's device "Spider"
        ("python-requests/2.31.0", "Python Requests"),
        ("Go-http-client/1.1", "Go-http-client"),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Slackbot-LinkExpanding"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/120.0.0.0 Safari/537.36",
            "HeadlessChrome",
        ),
        ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", "UptimeRobot"),
    ],
)
def test_crawlers_scripts_and_monitors_are_bots(user_agent: str, browser: str) -> None:
    agent = classify_user_agent(user_agent)
    assert agent.bot is True
    assert agent.browser == browser


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_no_user_agent_is_a_bot(user_agent: str | None) -> None:
    assert classify_user_agent(user_agent) == Agent("Other", "Other", "Other", bot=True)


def test_classifications_are_cached_and_huge_user_agents_cut() -> None:
    assert classify_user_agent(CHROME_WINDOWS) is classify_user_agent(CHROME_WINDOWS)
    huge = CHROME_WINDOWS + " x" * 500_000
    assert classify_user_agent(huge).browser == "Chrome"


@given(st.text(max_size=300))
def test_any_user_agent_is_classified(user_agent: str) -> None:
    agent = classify_user_agent(user_agent)
    assert agent.browser and agent.os and agent.device
    assert all(len(v) <= 255 for v in (agent.browser, agent.os, agent.device))


# --- referrers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "host"),
    [
        (None, DIRECT),
        ("", DIRECT),
        ("https://news.example/story?id=1&token=secret", "news.example"),
        ("https://News.Example.:8443/a", "news.example"),
        ("http://user:pw@host.example/", "host.example"),
        ("https://bücher.example/", "xn--bcher-kva.example"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("not a url", DIRECT),
        ("/relative/path", DIRECT),
        ("https://", DIRECT),
        ("http://[garbled/", DIRECT),
        ("https://exa mple.com/", DIRECT),
        ("https://" + "a" * 300 + ".example/", DIRECT),
    ],
)
def test_the_referrer_is_reduced_to_its_host(referrer: str | None, host: str) -> None:
    assert referrer_host(referrer) == host


@given(st.text(max_size=200))
def test_any_referrer_gives_a_host_or_direct(referrer: str) -> None:
    host = referrer_host(referrer)
    assert host == DIRECT or (host.isascii() and host == host.lower() and 0 < len(host) <= 255)


# --- countries ----------------------------------------------------------------------------


@pytest.fixture(params=[6, 4], ids=["ipv6-tree", "ipv4-tree"])
def geoip(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GeoIP]:
    records = GEO_RECORDS
    if request.param == 4:
        records = {k: v for k, v in GEO_RECORDS.items() if ":" not in k}
    path = write_mmdb(tmp_path / "geo.mmdb", records, ip_version=request.param)
    geo = GeoIP.open(path)
    yield geo
    geo.close()


def test_without_a_database_every_country_is_unknown() -> None:
    geo = GeoIP(None)
    assert not geo.configured
    assert geo.country("81.2.69.142") == UNKNOWN


def test_countries_are_looked_up_in_the_database(geoip: GeoIP) -> None:
    assert geoip.configured
    assert geoip.country("81.2.69.142") == "GB"
    assert geoip.country("::ffff:81.2.69.142") == "GB"  # IPv4-mapped, as dual-stack servers see it
    assert geoip.country("89.160.20.115") == "SE"


def test_ipv6_addresses_are_looked_up_in_an_ipv6_database(tmp_path: Path) -> None:
    geo = GeoIP.open(write_mmdb(tmp_path / "v6.mmdb", GEO_RECORDS))
    try:
        assert geo.country("2001:218::1") == "JP"
    finally:
        geo.close()


@pytest.mark.parametrize(
    "ip",
    [
        None,
        "",
        "garbled",
        "999.1.1.1",
        "10.0.0.1",  # private
        "127.0.0.1",  # loopback
        "203.0.113.7",  # documentation
        "fe80::1",  # link-local
        "8.8.8.8",  # public, not in the database
        "2001:4860::8888",  # IPv6 not in the database, or an IPv4-only database
    ],
)
def test_unknown_when_the_address_gives_no_country(geoip: GeoIP, ip: str | None) -> None:
    assert geoip.country(ip) == UNKNOWN


def test_a_missing_or_broken_database_is_a_configuration_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"this is not a MaxMind DB")
    empty = tmp_path / "empty.mmdb"
    empty.write_bytes(b"")
    for path in (tmp_path / "missing.mmdb", garbage, empty, tmp_path):
        with pytest.raises(ConfigurationError) as info:
            GeoIP.open(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- visit events -----------------------------------------------------------------------

VALID = {
    "link_id": "7251234567890123",
    "code": "abc1234",
    "at_ms": 1_750_000_000_000,
    "referrer": "https://news.example/",
    "user_agent": CHROME_WINDOWS,
    "ip": "81.2.69.142",
}


def test_a_visit_event_is_read() -> None:
    event = parse_visit_event(orjson.dumps(VALID))
    assert event == VisitEvent(
        7251234567890123, "abc1234", 1_750_000_000_000, "https://news.example/",
        CHROME_WINDOWS, "81.2.69.142",
    )  # fmt: skip
    minimal = {"link_id": 5, "code": "x", "at_ms": 0}
    assert parse_visit_event(orjson.dumps(minimal)) == VisitEvent(5, "x", 0, None, None, None)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'"a string"',
        orjson.dumps({**VALID, "link_id": None}),
        orjson.dumps({**VALID, "link_id": "12a"}),
        orjson.dumps({**VALID, "link_id": "0"}),
        orjson.dumps({**VALID, "link_id": str(2**64)}),
        orjson.dumps({**VALID, "link_id": True}),
        orjson.dumps({k: v for k, v in VALID.items() if k != "code"}),
        orjson.dumps({**VALID, "code": ""}),
        orjson.dumps({**VALID, "code": "x" * 65}),
        orjson.dumps({k: v for k, v in VALID.items() if k != "at_ms"}),
        orjson.dumps({**VALID, "at_ms": "yesterday"}),
        orjson.dumps({**VALID, "at_ms": -1}),
        orjson.dumps({**VALID, "at_ms": 10**16}),
        orjson.dumps({**VALID, "at_ms": 1.5}),
        orjson.dumps({**VALID, "referrer": 3}),
        orjson.dumps({**VALID, "ip": ["1.2.3.4"]}),
    ],
)
def test_a_malformed_visit_event_is_refused(payload: bytes) -> None:
    with pytest.raises(MalformedVisit):
        parse_visit_event(payload)


@given(st.binary(max_size=300) | st.dictionaries(st.sampled_from(list(VALID)), st.none() |
       st.integers() | st.text(max_size=20)).map(lambda d: json.dumps(d).encode()))  # fmt: skip
def test_any_payload_is_read_or_refused_as_malformed(payload: bytes) -> None:
    with contextlib.suppress(MalformedVisit):
        parse_visit_event(payload)


def test_a_visit_is_summarised_without_its_address() -> None:
    event = parse_visit_event(orjson.dumps(VALID))
    visit = summarise(event, GeoIP(None))
    assert visit.day == date(2025, 6, 15)  # 1_750_000_000 s is 2025-06-15T15:06:40Z
    assert (visit.bot, visit.referrer, visit.browser, visit.os, visit.country) == (
        False, "news.example", "Chrome", "Windows", UNKNOWN,
    )  # fmt: skip
    assert "81.2.69.142" not in repr(visit) and "Mozilla" not in repr(visit)
    assert visit.dimensions() == [
        ("browser", "Chrome"), ("country", UNKNOWN), ("os", "Windows"),
        ("referrer", "news.example"),
    ]  # fmt: skip


def test_a_visit_is_counted_on_its_utc_day() -> None:
    last_ms_of_day = 1_750_031_999_999  # 2025-06-15T23:59:59.999Z
    for at_ms, day in (
        (last_ms_of_day, date(2025, 6, 15)),
        (last_ms_of_day + 1, date(2025, 6, 16)),
    ):
        event = VisitEvent(1, "c", at_ms, None, CHROME_WINDOWS, None)
        assert summarise(event, GeoIP(None)).day == day


def test_a_bots_visit_adds_to_no_dimension(geoip: GeoIP) -> None:
    event = VisitEvent(1, "c", 0, "https://news.example/", GOOGLEBOT, "81.2.69.142")
    visit = summarise(event, geoip)
    assert visit.bot and visit.dimensions() == [] and visit.country == UNKNOWN


# --- the consumer's settings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("", True), ("1", True), ("true", True), ("0", False), ("off", False)],
)
def test_the_consumer_is_on_unless_turned_off(value: str | None, enabled: bool) -> None:
    environ = {} if value is None else {ANALYTICS_ENV: value}
    assert analytics_enabled(environ) is enabled


def test_a_garbled_switch_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=ANALYTICS_ENV):
        analytics_enabled({ANALYTICS_ENV: "maybe"})


def test_the_geoip_setting_names_itself_when_wrong(tmp_path: Path) -> None:
    assert not open_geoip({}).configured
    missing = str(tmp_path / "nope.mmdb")
    with pytest.raises(ConfigurationError) as info:
        check_configuration({GEOIP_ENV: missing})
    message = str(info.value)
    assert GEOIP_ENV in message and missing in message and "\n" not in message
    # A process without the consumer does not read the file.
    check_configuration({GEOIP_ENV: missing, ANALYTICS_ENV: "0"})
    good = write_mmdb(tmp_path / "geo.mmdb", GEO_RECORDS)
    geo = open_geoip({GEOIP_ENV: str(good)})
    try:
        assert geo.country("81.2.69.142") == "GB"
    finally:
        geo.close()
