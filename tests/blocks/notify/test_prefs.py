"""Preferences and quiet hours: who gets what, and when, in the recipient's own zone,
on both sides of daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdesign.blocks.notify.base import Channel
from sysdesign.blocks.notify.prefs import (
    Decision,
    Preferences,
    QuietHours,
    decide,
    parse_quiet_hours,
)

NIGHT = parse_quiet_hours("22:00", "07:00", "UTC")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def local(zone: str, *args: int, fold: int = 0) -> float:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


def at(prefs: Preferences, now: float, channel: Channel = Channel.EMAIL) -> Decision:
    return decide(prefs, category="social", channel=channel, critical=False, now=now)


# --- parsing and validation ---------------------------------------------------------


def test_parse_quiet_hours() -> None:
    hours = parse_quiet_hours("22:30", "07:05", "Europe/Lisbon")
    assert hours == QuietHours(time(22, 30), time(7, 5), "Europe/Lisbon")
    assert hours.crosses_midnight
    assert not parse_quiet_hours("00:00", "23:59", "UTC").crosses_midnight


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("24:00", "07:00", "start"),
        ("7:00", "08:00", "start"),
        ("22:00", "07:60", "end"),
        ("22:00", " 07:00", "end"),
        ("22:00", "07:00:00", "end"),
        ("22:00", "", "end"),
        ("\uff12\uff12:\uff10\uff10", "07:00", "start"),  # full-width digits: not HH:MM
    ],
)
def test_parse_refuses_what_is_not_hh_mm(start: str, end: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"quiet hours {field} must be HH:MM"):
        parse_quiet_hours(start, end, "UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "/UTC", "utc+1"])
def test_an_unknown_zone_is_refused_clearly(zone: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        parse_quiet_hours("22:00", "07:00", zone)
    with pytest.raises(ValueError, match="time zone"):
        QuietHours(time(22), time(7), zone)


def test_an_empty_window_and_aware_times_are_refused() -> None:
    with pytest.raises(ValueError, match="both 08:00"):
        parse_quiet_hours("08:00", "08:00", "UTC")
    with pytest.raises(ValueError, match="without tzinfo"):
        QuietHours(time(22, tzinfo=UTC), time(7), "UTC")


@given(st.text(max_size=8), st.sampled_from(["07:00", "12:34"]))
def test_parsing_any_text_either_round_trips_or_says_why(text: str, other: str) -> None:
    try:
        hours = parse_quiet_hours(text, other, "UTC")
    except ValueError as exc:
        assert "quiet hours" in str(exc)
    else:
        assert f"{hours.start:%H:%M}" == text


def test_decision_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="until"):
        Decision("delay")
    with pytest.raises(ValueError, match="until"):
        Decision("send", until=1.0)
    with pytest.raises(ValueError, match="action"):
        Decision("later")  # type: ignore[arg-type]


# --- preferences ---------------------------------------------------------------------


def test_a_disabled_pair_turns_off_one_channel_for_one_category() -> None:
    prefs = Preferences(disabled=frozenset({("social", Channel.EMAIL)}))
    assert not prefs.allows("social", Channel.EMAIL)
    assert prefs.allows("social", Channel.SMS)
    assert prefs.allows("billing", Channel.EMAIL)


def test_star_turns_a_channel_off_for_every_category() -> None:
    prefs = Preferences(disabled=frozenset({("*", Channel.SMS)}))
    assert not prefs.allows("social", Channel.SMS)
    assert not prefs.allows("billing", "sms")
    assert prefs.allows("social", Channel.EMAIL)


def test_channels_given_as_strings_are_read_as_channels() -> None:
    prefs = Preferences(disabled=frozenset({("social", "email")}))  # type: ignore[arg-type]
    assert prefs.disabled == frozenset({("social", Channel.EMAIL)})
    assert not prefs.allows("social", Channel.EMAIL)
    assert not prefs.allows("social", "email")
    with pytest.raises(ValueError):
        Preferences(disabled=frozenset({("social", "pigeon")}))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="category"):
        Preferences(disabled=frozenset({("", Channel.EMAIL)}))


# --- decide --------------------------------------------------------------------------


def test_critical_bypasses_preferences_and_quiet_hours() -> None:
    prefs = Preferences(disabled=frozenset({("*", Channel.SMS)}), quiet_hours=NIGHT)
    midnight = utc(2025, 6, 1, 0, 0)
    decision = decide(prefs, category="security", channel=Channel.SMS, critical=True, now=midnight)
    assert decision.action == "send"


def test_a_disabled_channel_is_suppressed_for_preference() -> None:
    prefs = Preferences(disabled=frozenset({("social", Channel.EMAIL)}), quiet_hours=NIGHT)
    for hour in (3, 12):
        assert at(prefs, utc(2025, 6, 1, hour)) == Decision("suppress", reason="preference")


def test_inside_quiet_hours_waits_for_their_end() -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    assert at(prefs, utc(2025, 6, 1, 21, 59)).action == "send"
    evening = at(prefs, utc(2025, 6, 1, 22, 0))
    assert evening == Decision("delay", until=utc(2025, 6, 2, 7), reason="quiet_hours")
    assert at(prefs, utc(2025, 6, 2, 3, 30)).until == utc(2025, 6, 2, 7)
    assert at(prefs, utc(2025, 6, 2, 6, 59, 59)).until == utc(2025, 6, 2, 7)
    assert at(prefs, utc(2025, 6, 2, 7, 0)).action == "send"


def test_a_window_within_one_day() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("12:00", "14:00", "UTC"))
    assert at(prefs, utc(2025, 6, 1, 11, 59)).action == "send"
    assert at(prefs, utc(2025, 6, 1, 13)).until == utc(2025, 6, 1, 14)
    assert at(prefs, utc(2025, 6, 1, 14)).action == "send"
    assert at(prefs, utc(2025, 6, 1, 23)).action == "send"


def test_quiet_hours_are_read_in_the_recipients_zone() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("22:00", "07:00", "Asia/Kolkata"))
    # 17:00 UTC is 22:30 in India (UTC+05:30): quiet until 07:00 there, 01:30 UTC.
    assert at(prefs, utc(2025, 6, 1, 17)).until == utc(2025, 6, 2, 1, 30)
    assert at(prefs, utc(2025, 6, 1, 16)).action == "send"


def test_in_app_messages_are_not_delayed_but_obey_preferences() -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    assert at(prefs, utc(2025, 6, 1, 23), Channel.IN_APP) == Decision("send")
    muted = Preferences(disabled=frozenset({("social", Channel.IN_APP)}), quiet_hours=NIGHT)
    assert at(muted, utc(2025, 6, 1, 12), Channel.IN_APP).action == "suppress"


def test_no_quiet_hours_sends() -> None:
    assert at(Preferences(), utc(2025, 6, 1, 3)) == Decision("send")


# --- daylight saving -------------------------------------------------------------------
# Lisbon: 2025-03-30 01:00 WET -> 02:00 WEST; 2025-10-26 02:00 WEST -> 01:00 WET.
# New York: 2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST.


def test_lisbon_spring_forward_night_is_an_hour_shorter() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("22:00", "07:00", "Europe/Lisbon"))
    now = utc(2025, 3, 29, 23)  # 23:00 WET
    until = at(prefs, now).until
    assert until == local("Europe/Lisbon", 2025, 3, 30, 7) == utc(2025, 3, 30, 6)
    assert until - now == timedelta(hours=7).total_seconds()


def test_lisbon_fall_back_night_is_an_hour_longer() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("22:00", "07:00", "Europe/Lisbon"))
    now = utc(2025, 10, 25, 22)  # 23:00 WEST
    until = at(prefs, now).until
    assert until == utc(2025, 10, 26, 7)  # 07:00 WET
    assert until - now == timedelta(hours=9).total_seconds()


def test_new_york_spring_forward() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("21:00", "08:00", "America/New_York"))
    now = local("America/New_York", 2025, 3, 8, 23)  # EST
    assert at(prefs, now).until == utc(2025, 3, 9, 12)  # 08:00 EDT


def test_an_end_in_the_skipped_hour_is_the_moment_the_clocks_jump() -> None:
    # 02:30 never shows on 2025-03-09 in New York: quiet ends when 02:00 EST
    # becomes 03:00 EDT, at 07:00 UTC, neither an hour early nor late.
    prefs = Preferences(quiet_hours=parse_quiet_hours("22:00", "02:30", "America/New_York"))
    now = local("America/New_York", 2025, 3, 8, 23)
    assert at(prefs, now).until == utc(2025, 3, 9, 7)
    # Lisbon skips 01:00-02:00 on 2025-03-30, at 01:00 UTC.
    lisbon = Preferences(quiet_hours=parse_quiet_hours("23:00", "01:30", "Europe/Lisbon"))
    assert at(lisbon, utc(2025, 3, 29, 23, 30)).until == utc(2025, 3, 30, 1)
    assert at(lisbon, utc(2025, 3, 30, 1)).action == "send"  # 02:00 WEST


def test_a_start_in_the_skipped_hour_is_reached_by_jumping_over_it() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("02:30", "06:00", "America/New_York"))
    assert at(prefs, utc(2025, 3, 9, 6, 59)).action == "send"  # 01:59 EST
    assert at(prefs, utc(2025, 3, 9, 7)).until == utc(2025, 3, 9, 10)  # 03:00 -> 06:00 EDT


def test_an_end_in_the_repeated_hour_is_the_next_time_it_shows() -> None:
    prefs = Preferences(quiet_hours=parse_quiet_hours("22:00", "01:30", "America/New_York"))
    evening = local("America/New_York", 2025, 11, 1, 23)  # EDT
    assert at(prefs, evening).until == utc(2025, 11, 2, 5, 30)  # the first 01:30, EDT
    assert at(prefs, utc(2025, 11, 2, 5, 30)).action == "send"  # 01:30 EDT
    # The clocks go back at 06:00 UTC and read 01:00 to 01:30 again: quiet
    # again until 01:30 EST.
    second = local("America/New_York", 2025, 11, 2, 1, 15, fold=1)
    assert second == utc(2025, 11, 2, 6, 15)
    assert at(prefs, second).until == utc(2025, 11, 2, 6, 30)


# --- properties ------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Lisbon",
    "America/New_York",
    "Europe/Dublin",  # daylight saving written as a negative winter offset
    "Australia/Lord_Howe",  # a 30-minute shift
    "Antarctica/Troll",  # a 2-hour shift
    "Pacific/Chatham",
    "Asia/Kolkata",
    "America/Sao_Paulo",
]
MOMENTS = st.integers(int(utc(1980, 1, 1)), int(utc(2037, 12, 31)))
WALL = st.times().map(lambda t: t.replace(second=0, microsecond=0))
WINDOWS = (
    st.tuples(WALL, WALL, st.sampled_from(ZONES))
    .filter(lambda window: window[0] != window[1])
    .map(lambda window: QuietHours(*window))
)
CHANNELS = st.sampled_from(list(Channel))
DISABLED = st.frozensets(
    st.tuples(st.sampled_from(["*", "social", "billing"]), CHANNELS), max_size=4
)


def wall_at(moment: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(moment, zone)


@settings(max_examples=400)
@given(WINDOWS, MOMENTS, CHANNELS)
def test_a_delay_ends_after_now_within_a_day_at_the_end_of_the_window(
    hours: QuietHours, now: int, channel: Channel
) -> None:
    decision = at(Preferences(quiet_hours=hours), now, channel)
    if decision.action == "send":
        assert channel is Channel.IN_APP or not hours.contains(wall_at(now, hours.zone).time())
        return
    assert decision.action == "delay" and channel is not Channel.IN_APP
    until = decision.until
    assert until is not None
    # Less than a day on the local clock: at most 24 h, plus the largest
    # daylight-saving shift (Troll's 2 h) when the clocks went back meanwhile.
    assert now < until <= now + 26 * 3600
    assert until == int(until)
    zone = hours.zone
    # Just before ``until`` the window is still on; at ``until`` the clock
    # reads the window's end, or has just jumped over it.
    assert hours.contains(wall_at(until - 1, zone).time())
    reads_end = wall_at(until, zone).time() == hours.end
    jumped = wall_at(until, zone).utcoffset() != wall_at(until - 1, zone).utcoffset()
    assert reads_end or jumped


@given(WINDOWS, MOMENTS)
def test_in_utc_the_delay_is_the_time_left_on_the_clock(hours: QuietHours, now: int) -> None:
    hours = QuietHours(hours.start, hours.end, "UTC")
    decision = at(Preferences(quiet_hours=hours), now)
    if decision.action == "delay":
        clock = datetime.fromtimestamp(now, UTC)
        end = clock.replace(hour=hours.end.hour, minute=hours.end.minute, second=0)
        left = (end - clock).total_seconds() % 86400
        assert decision.until == now + left


@given(DISABLED, st.one_of(st.none(), WINDOWS), MOMENTS, CHANNELS, st.sampled_from(["social", "x"]))
def test_critical_always_sends_and_preferences_always_hold(
    disabled: frozenset[tuple[str, Channel]],
    hours: QuietHours | None,
    now: int,
    channel: Channel,
    category: str,
) -> None:
    prefs = Preferences(disabled=disabled, quiet_hours=hours)
    critical = decide(prefs, category=category, channel=channel, critical=True, now=now)
    assert critical.action == "send"
    normal = decide(prefs, category=category, channel=channel, critical=False, now=now)
    allowed = (category, channel) not in disabled and ("*", channel) not in disabled
    assert (normal.action == "suppress") == (not allowed)
    if channel is Channel.IN_APP:
        assert normal.action != "delay"
