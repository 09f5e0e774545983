"""Rules documents: parsing, validation errors that name the rule and field, matching."""

from __future__ import annotations

import pytest

from sysdesign.blocks.ratelimit.base import Algorithm, Limit
from sysdesign.blocks.ratelimit.rules import (
    FailurePolicy,
    RequestInfo,
    RulesError,
    load_rules,
    parse_limit,
)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("100/minute", Limit(100, 60)),
        ("10/s", Limit(10, 1)),
        ("10/second", Limit(10, 1)),
        ("2/seconds", Limit(2, 1)),
        ("5/15m", Limit(5, 900)),
        ("5/min", Limit(5, 60)),
        ("1000/day", Limit(1000, 86400)),
        ("3 / 2h", Limit(3, 7200)),
    ],
)
def test_limits_are_written_as_count_per_unit(text: str, limit: Limit) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["", "100", "100/fortnight", "-1/s", "0/s", "x/minute", "1/0s"])
def test_malformed_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_limit(text)


RULES = """
rules:
  - name: register-per-ip
    match: {method: post, path: /accounts/v1/register}
    descriptors: [ip]
    algorithm: sliding_window
    limits: [5/minute, 20/hour]
  - name: per-user
    descriptors: [user]
    limits: [600/minute]
    burst: 100
    on_store_failure: open
    overrides:
      - values: {user: "42"}
        limits: [6000/minute]
  - name: by-tenant
    match: {system: shop, header: x-tenant}
    descriptors: [header:x-tenant, method]
    algorithm: gcra
    limits: [10/s]
    shadow: true
"""


def test_a_rules_document_loads_with_its_defaults() -> None:
    register, per_user, tenant = load_rules(RULES)
    assert register.algorithm is Algorithm.SLIDING_WINDOW
    assert register.limits == (Limit(5, 60), Limit(20, 3600))
    assert register.match.method == "POST"
    assert register.on_store_failure is FailurePolicy.LOCAL
    assert per_user.algorithm is Algorithm.TOKEN_BUCKET
    assert per_user.limits == (Limit(600, 60, 100),)
    assert per_user.on_store_failure is FailurePolicy.OPEN
    assert tenant.shadow


def test_rules_apply_to_matching_requests_that_carry_every_descriptor() -> None:
    register, per_user, tenant = load_rules(RULES)
    post = RequestInfo(system="accounts", method="POST", path="/accounts/v1/register", ip="1.2.3.4")
    assert register.applies(post) == ("register-per-ip|ip=1.2.3.4", register.limits)
    get = RequestInfo(system="accounts", method="GET", path="/accounts/v1/register", ip="1.2.3.4")
    assert register.applies(get) is None
    assert per_user.applies(post) is None  # anonymous: no user descriptor
    signed_in = RequestInfo(system="shop", method="GET", path="/shop/v1/x", user="7")
    assert per_user.applies(signed_in) == ("per-user|user=7", (Limit(600, 60, 100),))
    vip = RequestInfo(system="shop", method="GET", path="/shop/v1/x", user="42")
    assert per_user.applies(vip) == ("per-user|user=42", (Limit(6000, 60, 100),))
    tenant_request = RequestInfo(
        system="shop", method="GET", path="/shop/v1/x", headers={"x-tenant": "acme"}
    )
    assert tenant.applies(tenant_request) == (
        "by-tenant|header:x-tenant=acme|method=GET",
        tenant.limits,
    )
    assert tenant.applies(RequestInfo(system="shop", method="GET", path="/shop/v1/x")) is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("rules: [{name: a, descriptors: [ip], limits: [5/fortnight]}]", "rule 'a'"),
        ("rules: [{name: a, descriptors: [colour], limits: [5/s]}]", "unknown descriptor 'colour'"),
        ("rules: [{name: a, descriptors: [ip], limits: []}]", "rule 'a' field limits"),
        (
            "rules: [{name: a, descriptors: [ip], limits: [1/s], algorithm: magic}]",
            "field algorithm",
        ),
        ("rules: [{name: a, descriptors: [ip], limits: [1/s], extra: 1}]", "field extra"),
        ("rules: [{descriptors: [ip], limits: [1/s]}]", "rule #1 field name"),
        (
            "rules: [{name: a, descriptors: [ip], limits: [1/s]}, "
            "{name: a, descriptors: [ip], limits: [1/s]}]",
            "unique: a repeated",
        ),
        (
            "rules: [{name: a, descriptors: [ip], limits: [1/s], "
            "overrides: [{values: {user: '1'}, limits: [2/s]}]}]",
            "not descriptors of this rule",
        ),
        (
            "rules: [{name: a, descriptors: [ip], limits: [1/s], match: {path: nope}}]",
            "starts with /",
        ),
        ("- just a list", "must be a mapping"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_invalid_documents_say_which_rule_and_field(document: str, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(document, source="rules.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("rules.yaml: ")


def test_an_empty_document_has_no_rules() -> None:
    assert load_rules("") == []
    assert load_rules("rules: []") == []
