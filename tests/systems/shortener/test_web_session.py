"""The web page's browser session: sign-in and register forms, HttpOnly cookies, the
access token refreshed from the refresh cookie, and CSRF tokens on every form."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette

from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.systems.shortener.websession import ACCESS_COOKIE, ANON_COOKIE, REFRESH_COOKIE
from tests.systems.shortener.browser import (
    PASSWORD,
    bearer,
    browser,
    csrf_of,
    register,
    set_cookies,
    text_of,
)


async def test_signed_out_the_page_offers_sign_in_and_register(client: httpx.AsyncClient) -> None:
    page = await client.get("/shortener/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'action="/shortener/login"' in page.text
    assert 'action="/shortener/register"' in page.text
    assert '<label for="login-email">' in page.text
    assert 'href="#register"' in page.text
    assert "<script" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert ANON_COOKIE in set_cookies(page)
    # Without a slash, the mount's address leads there.
    bare = await client.get("/shortener")
    assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/shortener/")


async def test_register_signs_in_with_http_only_cookies(client: httpx.AsyncClient) -> None:
    landing = await client.get("/shortener/")
    form = {"email": "ann@example.com", "password": PASSWORD, "csrf": csrf_of(landing)}
    response = await client.post("/shortener/register", data=form)
    assert response.status_code == 303
    cookies = set_cookies(response)
    for name in (ACCESS_COOKIE, REFRESH_COOKIE):
        assert "HttpOnly" in cookies[name] and "Path=/" in cookies[name]
        assert "SameSite=lax" in cookies[name] and "Secure" not in cookies[name]
    page = await client.get("/shortener/")
    assert 'action="/shortener/links"' in page.text
    assert "ann@example.com" in page.text
    assert "No links yet" in page.text


async def test_login_and_logout(client: httpx.AsyncClient, app: Starlette) -> None:
    await register(client, "ann@example.com")
    async with browser(app) as other:
        landing = await other.get("/shortener/")
        form = {"email": "ANN@example.com", "password": PASSWORD, "csrf": csrf_of(landing)}
        response = await other.post("/shortener/login", data=form)
        assert response.status_code == 303
        page = await other.get("/shortener/")
        assert 'action="/shortener/links"' in page.text
        refresh = other.cookies[REFRESH_COOKIE]

        out = await other.post("/shortener/logout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303
        assert "Max-Age=0" in set_cookies(out)[ACCESS_COOKIE]
        assert 'action="/shortener/login"' in (await other.get("/shortener/")).text
        # The login is revoked, not only forgotten by the browser.
        again = await other.post("/accounts/v1/refresh", json={"refresh_token": refresh})
        assert again.status_code == 401
    # The other browser's login is its own.
    assert 'action="/shortener/links"' in (await client.get("/shortener/")).text


async def test_wrong_password_shows_a_message(client: httpx.AsyncClient, app: Starlette) -> None:
    await register(client, "ann@example.com")
    async with browser(app) as other:
        landing = await other.get("/shortener/")
        form = {"email": "ann@example.com", "password": "wrong guess", "csrf": csrf_of(landing)}
        response = await other.post("/shortener/login", data=form)
        assert response.status_code == 401
        assert "The e-mail or password is not correct" in text_of(response)
        assert 'value="ann@example.com"' in response.text
        assert ACCESS_COOKIE not in set_cookies(response)
        empty = await other.post("/shortener/login", data={"email": "", "csrf": csrf_of(landing)})
        assert empty.status_code == 400 and "Enter your e-mail and password" in empty.text


async def test_register_errors(client: httpx.AsyncClient, app: Starlette) -> None:
    await register(client, "ann@example.com")
    async with browser(app) as other:
        token = csrf_of(await other.get("/shortener/"))
        short = {"email": "bo@example.com", "password": "short", "csrf": token}
        response = await other.post("/shortener/register", data=short)
        assert response.status_code == 422
        assert "A password has 8 to 1024 characters" in response.text
        assert 'value="bo@example.com"' in response.text
        taken = {"email": "ann@example.com", "password": PASSWORD, "csrf": token}
        response = await other.post("/shortener/register", data=taken)
        assert response.status_code == 409
        assert "An account with this e-mail already exists" in response.text
        bad = {"email": "not an address", "password": PASSWORD, "csrf": token}
        response = await other.post("/shortener/register", data=bad)
        assert response.status_code == 422 and 'id="register-email-error"' in response.text


async def test_csrf_refused(client: httpx.AsyncClient, app: Starlette) -> None:
    await register(client, "ann@example.com")
    target = {"target": "https://example.com/"}
    for token in (None, "", "0" * 64, "é" * 64):
        form = target if token is None else {**target, "csrf": token}
        response = await client.post("/shortener/links", data=form)
        assert response.status_code == 403, token
        assert "Form expired" in response.text
    # A token from another session does not do either.
    async with browser(app) as other:
        await register(other, "bob@example.com")
        theirs = csrf_of(await other.get("/shortener/"))
    response = await client.post("/shortener/links", data={**target, "csrf": theirs})
    assert response.status_code == 403
    # A form from another site, even with the right token.
    mine = csrf_of(await client.get("/shortener/"))
    response = await client.post("/shortener/links", data={**target, "csrf": mine},
                                 headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
    assert response.status_code == 403
    # Not a form body at all.
    response = await client.post("/shortener/links", json={**target, "csrf": mine})
    assert response.status_code == 415
    listed = await client.get("/shortener/v1/links", headers=bearer(client))
    assert listed.json()["items"] == []
    # Logging out is a change too.
    assert (await client.post("/shortener/logout", data={"csrf": "x"})).status_code == 403


async def test_csrf_on_the_sign_in_forms(app: Starlette, client: httpx.AsyncClient) -> None:
    await register(client, "ann@example.com")
    async with browser(app) as other:
        form = {"email": "ann@example.com", "password": PASSWORD}
        # No page seen, so no pre-sign-in cookie: refused.
        assert (await other.post("/shortener/login", data=form)).status_code == 403
        token = csrf_of(await other.get("/shortener/"))
        assert (await other.post("/shortener/login", data=form)).status_code == 403
        wrong = {**form, "csrf": token[:-1] + ("0" if token[-1] != "0" else "1")}
        assert (await other.post("/shortener/login", data=wrong)).status_code == 403
        right = await other.post("/shortener/login", data={**form, "csrf": token})
        assert right.status_code == 303


async def test_signed_out_pages_lead_to_sign_in(client: httpx.AsyncClient) -> None:
    for path in ("/shortener/links/abc", "/shortener/links/abc/qr.svg"):
        response = await client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/shortener/"
    response = await client.post("/shortener/links", data={"target": "https://example.com/"})
    assert response.status_code == 303 and response.headers["location"] == "/shortener/"


async def test_expired_access_token_is_refreshed(
    client: httpx.AsyncClient, clock: ManualClock, platform: Platform
) -> None:
    await register(client, "ann@example.com")
    old_access, old_refresh = client.cookies[ACCESS_COOKIE], client.cookies[REFRESH_COOKIE]
    form_token = csrf_of(await client.get("/shortener/"))
    clock.advance(platform.settings.access_token_ttl_seconds + 1)

    page = await client.get("/shortener/")
    assert page.status_code == 200 and 'action="/shortener/links"' in page.text
    cookies = set_cookies(page)
    assert ACCESS_COOKIE in cookies and REFRESH_COOKIE in cookies
    assert client.cookies[ACCESS_COOKIE] != old_access
    assert client.cookies[REFRESH_COOKIE] != old_refresh
    # The same login: a form rendered before the refresh still posts after it.
    response = await client.post(
        "/shortener/links", data={"csrf": form_token, "target": "https://example.com/r"}
    )
    assert response.status_code == 303


async def test_concurrent_requests_refresh_once(
    client: httpx.AsyncClient, clock: ManualClock, platform: Platform
) -> None:
    await register(client, "ann@example.com")
    clock.advance(platform.settings.access_token_ttl_seconds + 1)
    # A page and its image, two tabs: all with the same expired token. Rotating the
    # refresh token for each would look like reuse and end the login.
    pages = await asyncio.gather(*(client.get("/shortener/") for _ in range(4)))
    assert all('action="/shortener/links"' in page.text for page in pages)
    clock.advance(60)
    assert 'action="/shortener/links"' in (await client.get("/shortener/")).text


async def test_a_revoked_login_signs_the_browser_out(
    client: httpx.AsyncClient, clock: ManualClock, platform: Platform
) -> None:
    await register(client, "ann@example.com")
    refresh = client.cookies[REFRESH_COOKIE]
    out = await client.post("/accounts/v1/logout", json={"refresh_token": refresh})
    assert out.status_code == 204
    clock.advance(platform.settings.access_token_ttl_seconds + 1)
    page = await client.get("/shortener/")
    assert 'action="/shortener/login"' in page.text
    assert "Max-Age=0" in set_cookies(page)[REFRESH_COOKIE]


async def test_secure_cookies_over_https(app: Starlette, client: httpx.AsyncClient) -> None:
    async with browser(app, base_url="https://testserver") as secure:
        landing = await secure.get("/shortener/")
        assert "Secure" in set_cookies(landing)[ANON_COOKIE]
        form = {"email": "ann@example.com", "password": PASSWORD, "csrf": csrf_of(landing)}
        response = await secure.post("/shortener/register", data=form)
        assert response.status_code == 303
        assert all("Secure" in set_cookies(response)[n] for n in (ACCESS_COOKIE, REFRESH_COOKIE))


async def test_multipart_forms_are_forms_but_files_are_refused(client: httpx.AsyncClient) -> None:
    token = csrf_of(await register(client, "ann@example.com"))
    fields = {"csrf": (None, token), "target": (None, "https://example.com/m")}
    response = await client.post("/shortener/links", files=fields)
    assert response.status_code == 303
    upload = {"target": ("target.txt", b"https://example.com/f", "text/plain")}
    response = await client.post("/shortener/links", data={"csrf": token}, files=upload)
    assert response.status_code == 400 and "Bad form" in response.text
