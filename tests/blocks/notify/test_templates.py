"""Templates: validation on upload, locale fallback, the sandbox, escaping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdesign.blocks.notify import (
    Channel,
    ChannelTemplate,
    PermanentFailure,
    Renderer,
    TemplateInvalid,
    choose_locale,
    validate_templates,
)

EMAIL_EN = ChannelTemplate(
    subject="Order {{ order }} shipped", body="Hi {{ name }}", html="<p>Hi {{ name }}</p>"
)


def invalid(channels: Any) -> TemplateInvalid:
    with pytest.raises(TemplateInvalid) as error:
        validate_templates(channels)
    return error.value


def test_a_good_template_passes() -> None:
    validate_templates(
        {
            Channel.EMAIL: {"en": EMAIL_EN, "pt-BR": EMAIL_EN, "zh-Hant-TW": EMAIL_EN},
            Channel.SMS: {"es-419": ChannelTemplate(body="Code {{ code }}")},
            Channel.IN_APP: {"en": ChannelTemplate(body="b", subject="title")},
            Channel.WEBHOOK: {"en": ChannelTemplate(body="{{ data | tojson }}")},
        }
    )


def test_a_syntax_error_names_the_part_and_line() -> None:
    body = "Hello\n{% if x %}\n{{ name }\n{% endif %}"
    error = invalid({Channel.EMAIL: {"en": ChannelTemplate(subject="s", body=body)}})
    assert error.field == "channels.email.en.body"
    assert error.line == 3
    assert "line 3" in str(error) and error.message


def test_an_unknown_filter_is_caught_on_upload() -> None:
    error = invalid({Channel.SMS: {"en": ChannelTemplate(body="\n{{ x | no_such_filter }}")}})
    assert (error.field, error.line) == ("channels.sms.en.body", 2)


def test_a_syntax_error_in_a_subject() -> None:
    error = invalid({Channel.EMAIL: {"pt-BR": ChannelTemplate(subject="{{", body="b")}})
    assert error.field == "channels.email.pt-BR.subject"
    assert error.line == 1


@pytest.mark.parametrize(
    ("channels", "field", "problem"),
    [
        (
            {Channel.EMAIL: {"en": ChannelTemplate(body="b")}},
            "channels.email.en.subject",
            "subject",
        ),
        (
            {Channel.EMAIL: {"en": ChannelTemplate(body="b", subject="  ")}},
            "channels.email.en.subject",
            "empty",
        ),
        ({Channel.SMS: {"en": ChannelTemplate(body="")}}, "channels.sms.en.body", "empty"),
        ({Channel.SMS: {"en": ChannelTemplate(body=" \n")}}, "channels.sms.en.body", "empty"),
        ({Channel.SMS: {"english": ChannelTemplate(body="b")}}, "channels.sms.english", "locale"),
        ({Channel.SMS: {"pt_BR": ChannelTemplate(body="b")}}, "channels.sms.pt_BR", "locale"),
        ({Channel.SMS: {"": ChannelTemplate(body="b")}}, "channels.sms.", "locale"),
        ({Channel.SMS: {}}, "channels.sms", "at least one locale"),
        ({}, "channels", "at least one channel"),
        ({"fax": {"en": ChannelTemplate(body="b")}}, "channels.fax", "unknown channel"),
        (
            {Channel.SMS: {"en": ChannelTemplate(body="b", html="<p>b</p>")}},
            "channels.sms.en.html",
            "only e-mail",
        ),
        (
            {Channel.SMS: {"pt-BR": ChannelTemplate(body="a"), "pt-br": ChannelTemplate(body="b")}},
            "channels.sms.pt-br",
            "same locale",
        ),
        (
            {Channel.EMAIL: {"en": ChannelTemplate(body="x" * (64 * 1024 + 1), subject="s")}},
            "channels.email.en.body",
            "64 KiB",
        ),
        ({Channel.SMS: {"en": "just text"}}, "channels.sms.en", "body"),
    ],
)
def test_validation_names_the_field(channels: Any, field: str, problem: str) -> None:
    error = invalid(channels)
    assert error.field == field
    assert problem in error.message
    assert error.line is None


def test_64_kib_exactly_is_allowed() -> None:
    validate_templates({Channel.SMS: {"en": ChannelTemplate(body="x" * (64 * 1024))}})


def test_constant_bombs_do_not_run_while_validating() -> None:
    # Jinja folds constants while compiling; these must not be computed then.
    for body in ("{{ 'x' * 10**12 }}", "{{ 9**999999999 }}", "{{ 'x'|center(10**12) }}"):
        validate_templates({Channel.SMS: {"en": ChannelTemplate(body=body)}})
    validate_templates(
        {Channel.SMS: {"en": ChannelTemplate(body="{{ 'x'|center(999999999999) }}")}}
    )


parts = st.one_of(st.none(), st.text(max_size=200))
templates = st.builds(ChannelTemplate, body=st.text(max_size=200), subject=parts, html=parts)
channel_keys = st.one_of(st.sampled_from(list(Channel)), st.text(max_size=10))
locales = st.one_of(st.sampled_from(["en", "pt-BR", "pt", "EN"]), st.text(max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(channel_keys, st.dictionaries(locales, templates, max_size=3), max_size=4))
def test_validation_raises_nothing_but_template_invalid(channels: Any) -> None:
    try:
        validate_templates(channels)
    except TemplateInvalid as error:
        assert error.field.startswith("channels")


jinja_bits = st.sampled_from(
    [
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        " if ",
        "endif",
        " for x in y ",
        "endfor",
        "|",
        "(",
        ")",
        "'",
        '"',
        "\n",
        "x",
        "**",
        "*",
        "9",
        "raw",
        "endraw",
        "set",
        "=",
        "-",
        "+",
        "~",
        "[",
        "]",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(jinja_bits, st.text(max_size=3)), max_size=30).map("".join))
def test_jinja_like_text_raises_nothing_but_template_invalid(body: str) -> None:
    try:
        validate_templates({Channel.SMS: {"en": ChannelTemplate(body=body)}})
    except TemplateInvalid as error:
        assert error.field == "channels.sms.en.body"


# Locale fallback


@pytest.mark.parametrize(
    ("available", "requested", "chosen"),
    [
        (["en", "pt", "pt-BR"], "pt-BR", "pt-BR"),
        (["en", "pt", "pt-BR"], "pt-br", "pt-BR"),
        (["en", "pt", "pt-BR"], "pt_BR", "pt-BR"),
        (["en", "pt", "pt-BR"], "pt-PT", "pt"),
        (["en", "pt-BR"], "pt-PT", "en"),
        (["fr", "en", "de"], "ja", "en"),
        (["fr", "de"], "ja", "fr"),
        (["fr", "de"], None, "fr"),
        (["de", "en"], None, "en"),
        (["de", "en"], "", "en"),
        ([], "en", None),
    ],
)
def test_locale_fallback(available: list[str], requested: str | None, chosen: str | None) -> None:
    assert choose_locale(available, requested) == chosen


def test_render_uses_the_fallback_chain() -> None:
    renderer = Renderer()
    localized = {
        "de": ChannelTemplate(body="Hallo {{ name }}"),
        "pt": ChannelTemplate(body="Olá {{ name }}"),
        "pt-BR": ChannelTemplate(body="Oi {{ name }}"),
    }
    data = {"name": "Ana"}
    assert renderer.render(localized, "pt-BR", data, channel=Channel.SMS).body == "Oi Ana"
    assert renderer.render(localized, "pt-PT", data, channel=Channel.SMS).body == "Olá Ana"
    assert renderer.render(localized, "fr", data, channel=Channel.SMS).body == "Hallo Ana"
    localized["en"] = ChannelTemplate(body="Hello {{ name }}")
    assert renderer.render(localized, "fr", data, channel=Channel.SMS).body == "Hello Ana"


# Rendering


def render(body: str, data: dict[str, Any] | None = None, channel: Channel = Channel.SMS) -> str:
    return (
        Renderer()
        .render({"en": ChannelTemplate(body=body)}, "en", data or {}, channel=channel)
        .body
    )


def test_email_parts_html_escaped_text_not() -> None:
    rendered = Renderer().render(
        {"en": EMAIL_EN}, "en", {"name": "<Ana & Bo>", "order": "A<1>"}, channel=Channel.EMAIL
    )
    assert rendered.subject == "Order A<1> shipped"
    assert rendered.body == "Hi <Ana & Bo>"
    assert rendered.html == "<p>Hi &lt;Ana &amp; Bo&gt;</p>"


def test_html_is_only_rendered_for_email() -> None:
    rendered = Renderer().render(
        {"en": EMAIL_EN}, "en", {"name": "A", "order": "1"}, channel=Channel.IN_APP
    )
    assert rendered.html is None and rendered.subject == "Order 1 shipped"


def test_a_subject_is_one_line() -> None:
    template = {"en": ChannelTemplate(subject="{{ s }}\n\nmore", body="b")}
    rendered = Renderer().render(template, "en", {"s": "a\r\nBcc: x@y.z"}, channel=Channel.EMAIL)
    assert rendered.subject == "a Bcc: x@y.z more"


def test_an_undefined_variable_is_permanent_and_named() -> None:
    with pytest.raises(
        PermanentFailure, match=r"channels\.sms\.en\.body: undefined variable.*'code'"
    ):
        render("Your code is {{ code }}")
    with pytest.raises(PermanentFailure, match="undefined"):
        render("{{ user.missing }}", {"user": {"name": "x"}})
    with pytest.raises(PermanentFailure, match="undefined"):
        render("{% for x in items %}{% endfor %}")


def test_an_email_without_subject_cannot_render() -> None:
    with pytest.raises(PermanentFailure, match="subject"):
        Renderer().render({"en": ChannelTemplate(body="b")}, "en", {}, channel=Channel.EMAIL)


def test_no_locale_cannot_render() -> None:
    with pytest.raises(PermanentFailure, match="no sms template"):
        Renderer().render({}, "en", {}, channel=Channel.SMS)


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ render.__globals__ }}",
        "{{ items.append(4) }}",
        "{{ d.update({'a': 1}) }}",
        "{{ d.pop('k') }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ 'x' * 10**9 }}",
        "{{ 2 ** (10**9) }}",
        "{{ 'x'|center(10**9) }}",
        "{{ 'ab'|replace('', 'x' * 999999) }}",
        "{{ '%999999999d'|format(1) }}",
        "{{ '%*d' % (999999999, 1) }}",
        "{{ [1]|batch(10**9, 0)|list }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
        "{{ lipsum(100000) }}",
    ],
)
def test_the_sandbox_refuses(body: str) -> None:
    data = {"x": 1, "items": [1, 2, 3], "d": {"k": "v"}}
    with pytest.raises(PermanentFailure):
        render(body, data)


def test_ordinary_template_features_work() -> None:
    body = (
        "{% for item in items %}{{ loop.index }}. {{ item.name|title }} "
        "{{ '%.2f'|format(item.price) }}\n{% endfor %}"
        "{{ items|length }} items, {{ 'x' * 3 }}, {{ 2 ** 8 }}, {{ 'a' ~ 'b' }}"
    )
    items = [{"name": "red shoes", "price": 19.5}, {"name": "hat", "price": 5}]
    assert render(body, {"items": items}) == (
        "1. Red Shoes 19.50\n2. Hat 5.00\n2 items, xxx, 256, ab"
    )


def test_the_cache_is_bounded_and_follows_changes() -> None:
    renderer = Renderer(cache_size=2)
    for n in range(5):
        source = {"en": ChannelTemplate(body=f"v{n} {{{{ x }}}}")}
        assert renderer.render(source, None, {"x": n}, channel=Channel.SMS).body == f"v{n} {n}"
    assert renderer.cached <= 2
