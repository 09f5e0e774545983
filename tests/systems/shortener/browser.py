"""A browser on the test app for the web page's tests: forms, CSRF tokens, cookies."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from sysdesign.systems.shortener.websession import ACCESS_COOKIE
from tests.conftest import Headers

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def text_of(page: httpx.Response) -> str:
    return html.unescape(page.text)


@asynccontextmanager
async def browser(
    app: Starlette, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """Another browser on the running app: its own cookie jar."""
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 5151))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


async def register(client: httpx.AsyncClient, email: str) -> httpx.Response:
    """Register and sign in through the page's form; the page that follows."""
    landing = await client.get("/shortener/")
    form = {"email": email, "password": PASSWORD, "csrf": csrf_of(landing)}
    response = await client.post("/shortener/register", data=form)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/shortener/"
    return await client.get("/shortener/")


async def shorten_form(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    page = await client.get("/shortener/")
    return await client.post("/shortener/links", data={"csrf": csrf_of(page), **fields})


def bearer(client: httpx.AsyncClient) -> Headers:
    """The browser's own access token, as an API client would send it."""
    return {"Authorization": f"Bearer {client.cookies[ACCESS_COOKIE]}"}


def set_cookies(response: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}
