"""Digests: the words for who did it, the variables a digest renders with, and
the key that groups events together."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.blocks.notify.base import Channel
from sysdesign.blocks.notify.digest import describe_actors, group_key, summarize, window_end


@pytest.mark.parametrize(
    ("actors", "total", "text"),
    [
        (["Ana"], 1, "Ana"),
        (["Ana", "Ben"], 2, "Ana and Ben"),
        (["Ana"], 2, "Ana and 1 other"),
        (["Ana", "Ben"], 13, "Ana and 12 others"),
        (["Ana", "Ben", "Cy"], 3, "Ana and 2 others"),
        (["  Ana \n", "\tBen"], 2, "Ana and Ben"),
        (["", "  ", "Ana"], 1, "Ana"),
        ([], 3, "3 people"),
        ([], 1, "1 person"),
        ([], 0, "0 people"),
        (["Ana", "Ben"], 1, "Ana and Ben"),  # total is at least the names given
    ],
)
def test_describe_actors(actors: list[str], total: int, text: str) -> None:
    assert describe_actors(actors, total) == text


def test_describe_actors_refuses_a_negative_total() -> None:
    with pytest.raises(ValueError, match="total"):
        describe_actors(["Ana"], -1)


@given(st.lists(st.text(max_size=6), max_size=5), st.integers(0, 10_000))
def test_describe_actors_names_the_first_and_counts_the_rest(actors: list[str], total: int) -> None:
    text = describe_actors(actors, total)
    names = [a.strip() for a in actors if a.strip()]
    if names:
        assert text.startswith(names[0])
        everyone = max(total, len(names))
        if everyone > 2:
            assert text.endswith(f" and {everyone - 1} others")
    else:
        assert text.endswith(("people", "person"))
        assert text.startswith(str(total))


def test_summarize_one_event() -> None:
    event = {"actor": "Ana", "post": 7}
    assert summarize([event]) == {
        "count": 1,
        "first": event,
        "last": event,
        "events": [event],
        "actors": ["Ana"],
        "others": 0,
        "actors_text": "Ana",
    }


def test_summarize_many_events_by_few_people() -> None:
    events = [{"actor": name, "n": i} for i, name in enumerate(["Ana", "Ben", " Ana ", "Cy"])]
    summary = summarize(events)
    assert summary["count"] == 4
    assert summary["others"] == 3
    assert summary["first"] is events[0]
    assert summary["last"] is events[-1]
    assert summary["actors"] == ["Ana", "Ben", "Cy"]
    assert summary["actors_text"] == "Ana and 2 others"


def test_summarize_bounds_what_it_lists_but_counts_everything() -> None:
    events = [{"by": f"user{i}"} for i in range(120)]
    summary = summarize(events, actor_field="by")
    assert summary["count"] == 120
    assert len(summary["events"]) == 50
    assert summary["events"][0] is events[0]
    assert summary["actors"] == [f"user{i}" for i in range(50)]
    assert summary["actors_text"] == "user0 and 119 others"
    assert summary["last"] is events[-1]


def test_summarize_events_without_actors() -> None:
    summary = summarize([{"post": 1}, {"post": 2, "actor": None}, {"actor": "  "}])
    assert summary["actors"] == []
    assert summary["actors_text"] == "3 people"
    two = summarize([{"post": 1}, {"actor": "Ana"}, {"post": 3}])
    assert two["actors"] == ["Ana"]
    assert two["actors_text"] == "Ana"


def test_summarize_needs_events_and_copies_them() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        summarize([])
    events = [{"actor": "Ana"}]
    summary = summarize(events)
    events.append({"actor": "Ben"})
    assert summary["events"] == [{"actor": "Ana"}]


def test_window_end() -> None:
    assert window_end(1000.0, 900) == 1900.0
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="window_seconds"):
            window_end(1000.0, bad)


def test_group_key() -> None:
    assert group_key(42, "likes", Channel.EMAIL, "post:7") == "42:likes:email:post%3A7"
    assert group_key(42, "likes", Channel.EMAIL, None) == "42:likes:email:"
    assert group_key(42, "likes", Channel.EMAIL, "") == group_key(42, "likes", Channel.EMAIL, None)
    assert group_key(42, "likes", "email", None) == group_key(42, "likes", Channel.EMAIL, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="template"):
        group_key(42, "", Channel.EMAIL, None)


PARTS = st.tuples(
    st.integers(0, 2**63 - 1),
    st.text(min_size=1, max_size=8, alphabet=":%ab"),
    st.sampled_from(list(Channel)),
    st.one_of(st.none(), st.text(min_size=1, max_size=8, alphabet=":%ab")),
)


@given(PARTS, PARTS)
def test_distinct_groups_have_distinct_keys(
    a: tuple[int, str, Channel, str | None], b: tuple[int, str, Channel, str | None]
) -> None:
    assert (group_key(*a) == group_key(*b)) == (a == b)
