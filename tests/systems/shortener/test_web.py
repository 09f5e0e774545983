"""The web page at /shortener/: links shortened through its form, listed, changed and
deleted; their QR codes and their stats. Sessions and CSRF: ``test_web_session.py``."""

from __future__ import annotations

import asyncio
import io
import re
import xml.etree.ElementTree as ET

import httpx
import pytest
import segno

from tests.conftest import Headers
from tests.systems.shortener.browser import (
    bearer,
    csrf_of,
    register,
    shorten_form,
    text_of,
)
from tests.systems.shortener.conftest import shorten


async def test_shorten_through_the_form(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    response = await shorten_form(client, target="https://example.com/a?b=1&c=2")
    assert response.status_code == 303
    location = response.headers["location"]
    code = location.rsplit("/", 1)[1]
    assert location == f"/shortener/links/{code}"

    page = await client.get(location)
    assert page.status_code == 200
    assert f"http://testserver/s/{code}" in page.text
    assert "https://example.com/a?b=1&amp;c=2" in page.text  # escaped, as HTML must be
    assert f'src="/shortener/links/{code}/qr.svg"' in page.text

    listed = await client.get("/shortener/v1/links", headers=bearer(client))
    assert [item["code"] for item in listed.json()["items"]] == [code]
    index = await client.get("/shortener/")
    assert f'href="/shortener/links/{code}"' in index.text
    assert (await client.get(f"/s/{code}")).headers["location"] == "https://example.com/a?b=1&c=2"


async def test_shorten_with_every_option(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    response = await shorten_form(
        client, target="https://example.com/x", alias="my-page", title="My page",
        tags="docs, web,,docs", expires_at="2999-01-31", max_visits="5", redirect_status="301",
        forward_query="on",
    )  # fmt: skip
    assert response.headers["location"] == "/shortener/links/my-page"
    link = (await client.get("/shortener/v1/links/my-page", headers=bearer(client))).json()
    assert link["title"] == "My page" and link["tags"] == ["docs", "web"]
    assert link["expires_at"].startswith("2999-02-01T00:00:00")  # through the end of that day
    assert link["max_visits"] == 5 and link["redirect_status"] == 301 and link["forward_query"]
    page = await client.get("/shortener/links/my-page")
    assert "0 of 5 used" in page.text and "2999-02-01 00:00 UTC" in page.text


async def test_invalid_input_is_shown_beside_its_field(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    response = await shorten_form(client, target="ftp://example.com/file", title="Kept")
    assert response.status_code == 422
    assert 'id="link-target-error"' in response.text
    assert "a target must be an http or https URL" in response.text
    assert 'value="ftp://example.com/file"' in response.text and 'value="Kept"' in response.text

    for fields, field, message in [
        ({"target": ""}, "target", "enter the URL to shorten"),
        ({"max_visits": "many"}, "max_visits", "whole number"),
        ({"expires_at": "2001-01-01"}, "expires_at", "the expiry must be in the future"),
        ({"expires_at": "tomorrow"}, "expires_at", "YYYY-MM-DD"),
        ({"alias": "links"}, "alias", "is reserved"),
        ({"tags": "no spaces allowed"}, "tags", "a tag has"),
        ({"redirect_status": "307"}, "redirect_status", "301 or 302"),
    ]:
        body = {"target": "https://example.com/", **fields}
        response = await shorten_form(client, **body)
        assert response.status_code == 422, fields
        assert f'id="link-{field}-error"' in response.text and message in text_of(response)
        assert "<details open>" in response.text or field == "target"
    listed = await client.get("/shortener/v1/links", headers=bearer(client))
    assert listed.json()["items"] == []


async def test_a_taken_alias_is_409(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    first = await shorten_form(client, target="https://example.com/1", alias="taken-one")
    assert first.status_code == 303
    second = await shorten_form(client, target="https://example.com/2", alias="taken-one")
    assert second.status_code == 409
    assert "The alias taken-one is taken" in second.text
    assert 'value="https://example.com/2"' in second.text


async def test_another_users_link_is_not_found(client: httpx.AsyncClient, bob: Headers) -> None:
    theirs = await shorten(client, bob, target="https://example.com/bob")
    await register(client, "ann@example.com")
    code = theirs["code"]
    for path in (f"/shortener/links/{code}", f"/shortener/links/{code}/qr.svg",
                 "/shortener/links/nosuchcode", "/shortener/links/bad%20code"):  # fmt: skip
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "Link not found" in response.text
        assert "example.com/bob" not in response.text
    token = csrf_of(await client.get("/shortener/"))
    toggled = await client.post(f"/shortener/links/{code}/toggle",
                                data={"csrf": token, "enabled": "0"})  # fmt: skip
    deleted = await client.post(f"/shortener/links/{code}/delete", data={"csrf": token})
    assert toggled.status_code == deleted.status_code == 404
    still = await client.get(f"/shortener/v1/links/{code}", headers=bob)
    assert still.status_code == 200 and still.json()["enabled"]


async def test_disable_enable_and_delete(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    code = (await shorten_form(client, target="https://example.com/t")).headers["location"]
    code = code.rsplit("/", 1)[1]
    page = await client.get(f"/shortener/links/{code}")
    token = csrf_of(page)
    assert "Disable" in page.text

    off = await client.post(f"/shortener/links/{code}/toggle", data={"csrf": token, "enabled": "0"})
    assert off.status_code == 303 and off.headers["location"] == f"/shortener/links/{code}"
    page = await client.get(f"/shortener/links/{code}")
    assert "disabled" in page.text and "Enable" in page.text
    assert (await client.get(f"/s/{code}")).status_code == 404
    # Posted twice, the same form leaves the link as it says.
    await client.post(f"/shortener/links/{code}/toggle", data={"csrf": token, "enabled": "0"})
    assert "disabled" in (await client.get(f"/shortener/links/{code}")).text

    on = await client.post(f"/shortener/links/{code}/toggle", data={"csrf": token, "enabled": "1"})
    assert on.status_code == 303
    assert (await client.get(f"/s/{code}")).status_code == 302
    bad = await client.post(f"/shortener/links/{code}/toggle", data={"csrf": token})
    assert bad.status_code == 400

    gone = await client.post(f"/shortener/links/{code}/delete", data={"csrf": token})
    assert gone.status_code == 303 and gone.headers["location"] == "/shortener/"
    assert (await client.get(f"/shortener/links/{code}")).status_code == 404
    api = await client.get(f"/shortener/v1/links/{code}", headers=bearer(client))
    assert api.status_code == 404


async def test_qr_code_is_the_short_urls(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    code = (await shorten_form(client, target="https://example.com/q")).headers["location"]
    code = code.rsplit("/", 1)[1]
    response = await client.get(f"/shortener/links/{code}/qr.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    svg = ET.fromstring(response.content)
    assert svg.tag.endswith("svg")
    assert any(el.tag.endswith("path") for el in svg.iter())
    expected = io.BytesIO()
    segno.make(f"http://testserver/s/{code}", error="m").save(expected, kind="svg", scale=4)
    assert response.content == expected.getvalue()


async def test_older_links_page_by_page(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    headers = bearer(client)
    codes = [(await shorten(client, headers, target=f"https://example.com/{i}"))["code"]
             for i in range(23)]  # fmt: skip
    first = await client.get("/shortener/")
    shown = re.findall(r'href="/shortener/links/([^"/]+)"', first.text)
    assert shown == codes[::-1][:20]
    older = re.search(r'href="/shortener/\?before=(\d+)">Older', first.text)
    assert older
    second = await client.get(f"/shortener/?before={older.group(1)}")
    assert re.findall(r'href="/shortener/links/([^"/]+)"', second.text) == codes[::-1][20:]
    assert "Older" not in second.text and "Newest" in second.text
    assert (await client.get("/shortener/?before=abc")).status_code == 400


async def test_pages_are_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/shortener/openapi.json")).json()["paths"]
    assert paths and all(path.startswith("/v1/") for path in paths)


async def test_what_users_type_is_escaped(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    response = await shorten_form(
        client, target='https://example.com/"><script>alert(1)</script>', title="<b>bold</b>"
    )
    assert response.status_code == 303
    page = await client.get(response.headers["location"])
    assert "<b>bold</b>" not in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "<script>" not in page.text
    refused = await shorten_form(client, target="javascript:alert(1)//<i>x</i>")
    assert refused.status_code == 422 and "<i>x</i>" not in refused.text


@pytest.mark.parametrize("analytics", [True])
async def test_the_link_page_shows_its_visits(client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    code = (await shorten_form(client, target="https://example.com/s")).headers["location"]
    code = code.rsplit("/", 1)[1]
    page = await client.get(f"/shortener/links/{code}")
    assert '<strong id="total-visits">0</strong>' in page.text
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
    for _ in range(3):
        visit = await client.get(
            f"/s/{code}", headers={"User-Agent": firefox, "Referer": "https://news.example.org/a"}
        )
        assert visit.status_code == 302
    # The analytics consumer counts visits a moment after the redirects: poll, bounded.
    for _ in range(200):
        page = await client.get(f"/shortener/links/{code}")
        if '<strong id="total-visits">3</strong>' in page.text:
            break
        await asyncio.sleep(0.05)
    assert '<strong id="total-visits">3</strong>' in page.text
    # The list of links shows the same total, read for the whole page at once.
    assert '<td class="num">3</td>' in (await client.get("/shortener/")).text
    assert '<td>news.example.org</td><td class="num">3</td>' in page.text
    assert "<td>Firefox</td>" in page.text
    assert 'style="width: 100.0%"' in page.text  # today's bar: the busiest day
