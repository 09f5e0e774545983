"""Codes, aliases and targets: the pure rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.systems.shortener.domain import (
    CODE_LENGTH,
    CODE_SPACE,
    LinkInvalid,
    Redirect,
    TargetPolicy,
    code_for_number,
    permute,
    validate_alias,
    validate_tags,
    validate_target,
)


def test_consecutive_numbers_give_distinct_seven_character_codes() -> None:
    codes = [code_for_number(n) for n in range(50_000)]
    assert len(set(codes)) == len(codes)
    assert {len(c) for c in codes} == {CODE_LENGTH}


@given(st.integers(0, CODE_SPACE - 1), st.integers(0, CODE_SPACE - 1))
def test_the_permutation_is_injective_and_stays_in_range(a: int, b: int) -> None:
    assert 0 <= permute(a) < CODE_SPACE
    assert (permute(a) == permute(b)) == (a == b)


def test_past_the_seven_character_space_codes_grow_and_stay_distinct() -> None:
    assert len(code_for_number(CODE_SPACE - 1)) == CODE_LENGTH
    assert len(code_for_number(CODE_SPACE)) == CODE_LENGTH + 1
    with pytest.raises(ValueError):
        code_for_number(-1)


@pytest.mark.parametrize("alias", ["my-link", "ab_", "Launch2026", "a" * 64, "abcdef", "abcdefgh"])
def test_good_aliases(alias: str) -> None:
    assert validate_alias(alias) == alias


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("ab", "value_error"),
        ("a" * 65, "value_error"),
        ("has space", "value_error"),
        ("slash/es", "value_error"),
        ("émoji", "value_error"),
        ("api", "reserved"),
        ("ADMIN", "reserved"),
        ("static", "reserved"),
        ("docs", "reserved"),
        ("abcdefg", "reserved"),  # the shape of a generated code
        ("Ab3dE9z", "reserved"),
    ],
)
def test_bad_aliases(alias: str, kind: str) -> None:
    with pytest.raises(LinkInvalid) as info:
        validate_alias(alias)
    assert info.value.field == "alias" and info.value.kind == kind


POLICY = TargetPolicy(frozenset({"sho.rt"}), frozenset({"evil.example"}))


@pytest.mark.parametrize(
    "url",
    ["https://example.com", "http://example.com:8080/a?b=c#d", "https://EXAMPLE.com/x"],
)
def test_good_targets(url: str) -> None:
    assert validate_target(url, POLICY) == url


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("ftp://example.com/file", "url_scheme"),
        ("javascript:alert(1)", "url_scheme"),
        ("example.com", "url_scheme"),
        ("https://", "value_error"),
        ("https://user:pw@example.com/", "value_error"),
        ("https://exa mple.com/", "value_error"),
        ("https://example.com:99999/", "value_error"),
        ("https://sho.rt/s/abc", "loop"),
        ("https://SHO.RT./x", "loop"),
        ("https://evil.example/", "blocked_domain"),
        ("https://www.evil.example/", "blocked_domain"),
        ("https://" + "a" * 2050 + ".com", "value_error"),
    ],
)
def test_bad_targets(url: str, kind: str) -> None:
    with pytest.raises(LinkInvalid) as info:
        validate_target(url, POLICY)
    assert info.value.field == "target" and info.value.kind == kind


def test_international_targets_become_ascii() -> None:
    url = validate_target("https://exämple.com/ü?q=€#é", POLICY)
    assert url == "https://xn--exmple-cua.com/%C3%BC?q=%E2%82%AC#%C3%A9"
    with pytest.raises(LinkInvalid):
        validate_target("https://" + "ü" * 70 + ".com/", POLICY)  # a label over 63


def test_the_request_host_counts_as_our_own() -> None:
    with pytest.raises(LinkInvalid):
        validate_target("http://testserver/s/x", POLICY.with_host("testserver:80"))
    assert validate_target("https://notevil.example/", POLICY)


def test_tags_are_deduplicated_and_checked() -> None:
    assert validate_tags(["a", "b", "a"]) == ["a", "b"]
    for bad in (["-x"], [""], ["x" * 41], [str(i) for i in range(21)]):
        with pytest.raises(LinkInvalid):
            validate_tags(bad)


@pytest.mark.parametrize(
    ("target", "query", "location"),
    [
        ("https://e.com/p", "", "https://e.com/p"),
        ("https://e.com/p", "a=1", "https://e.com/p?a=1"),
        ("https://e.com/p?x=2", "a=1", "https://e.com/p?x=2&a=1"),
        ("https://e.com/p?", "a=1", "https://e.com/p?a=1"),
        ("https://e.com/p#top", "a=1", "https://e.com/p?a=1#top"),
    ],
)
def test_query_forwarding(target: str, query: str, location: str) -> None:
    link = Redirect("c", target, 302, True, True, None, None)
    assert link.location(query) == location
    assert Redirect("c", target, 302, False, True, None, None).location(query) == target
