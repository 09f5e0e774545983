"""The in-app inbox: list, unread count, read, read all, archive, and the live
Server-Sent Events stream."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from tests.conftest import Headers
from tests.systems.notifications.conftest import (
    API,
    eventually,
    inbox_template,
    put_template,
    settled,
    trigger,
    user_id,
)


async def _fill(client: httpx.AsyncClient, admin: Headers, who: Headers, n: int) -> None:
    await put_template(client, admin, "hello", inbox_template())
    uid = await user_id(client, who)
    for i in range(n):
        event = await trigger(client, admin, "hello", {"user_ids": [uid]}, data={"name": f"N{i}"})
        await settled(client, admin, event["id"], 1, "delivered")


async def test_inbox_lists_counts_reads_and_archives(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, ben: Headers
) -> None:
    await _fill(client, admin, ana, 3)
    first = await client.get(f"{API}/inbox", params={"limit": 2}, headers=ana)
    page = first.json()
    assert [i["body"] for i in page["items"]] == ["N2 waved", "N1 waved"]
    rest = await client.get(f"{API}/inbox", params={"cursor": page["next_cursor"]}, headers=ana)
    assert [i["body"] for i in rest.json()["items"]] == ["N0 waved"]
    assert (await client.get(f"{API}/inbox/unread-count", headers=ana)).json() == {"count": 3}

    newest = page["items"][0]["id"]
    read = await client.post(f"{API}/inbox/{newest}/read", headers=ana)
    assert read.status_code == 200 and read.json()["read_at_ms"] is not None
    assert (await client.get(f"{API}/inbox/unread-count", headers=ana)).json() == {"count": 2}
    unread = await client.get(f"{API}/inbox", params={"unread": "true"}, headers=ana)
    assert len(unread.json()["items"]) == 2
    # Another user's item is not found, as an unknown one is.
    assert (await client.post(f"{API}/inbox/{newest}/read", headers=ben)).status_code == 404

    archived = await client.post(f"{API}/inbox/{page['items'][1]['id']}/archive", headers=ana)
    assert archived.json()["archived_at_ms"] is not None
    assert (await client.get(f"{API}/inbox/unread-count", headers=ana)).json() == {"count": 1}
    listed = await client.get(f"{API}/inbox", params={"archived": "true"}, headers=ana)
    assert [i["id"] for i in listed.json()["items"]] == [page["items"][1]["id"]]

    assert (await client.post(f"{API}/inbox/read-all", headers=ana)).json() == {"changed": 1}
    assert (await client.get(f"{API}/inbox/unread-count", headers=ana)).json() == {"count": 0}


class SseClient:
    """Drives the ASGI app directly: httpx's ASGI transport waits for a whole
    body, which a stream never finishes."""

    def __init__(self, app: Starlette, path: str, headers: Headers) -> None:
        self.app, self.path, self.headers = app, path, headers
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.status: int | None = None
        self.content_type = ""
        self._gone = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SseClient:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()],
        }  # fmt: skip
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.content_type = dict(message["headers"]).get(b"content-type", b"").decode()
            elif message["type"] == "http.response.body" and message.get("body"):
                await self.chunks.put(message["body"])

        self._task = asyncio.create_task(self.app(scope, receive, send))
        return self

    async def event(self) -> tuple[str, Any]:
        """The next event (comments skipped), waiting at most 10 seconds."""
        while True:
            chunk = (await asyncio.wait_for(self.chunks.get(), 10)).decode()
            if chunk.startswith(":"):
                continue
            lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
            return lines["event"], orjson.loads(lines["data"])

    async def __aexit__(self, *exc: object) -> None:
        self._gone.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)


async def test_the_stream_sends_the_count_then_each_new_item(
    app: Starlette, client: httpx.AsyncClient, admin: Headers, ana: Headers
) -> None:
    await _fill(client, admin, ana, 1)
    async with SseClient(app, f"{API}/inbox/stream", ana) as stream:
        assert await stream.event() == ("unread-count", {"count": 1})
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        uid = await user_id(client, ana)
        await trigger(client, admin, "hello", {"user_ids": [uid]}, data={"name": "Live"})
        kind, item = await stream.event()
        assert kind == "item" and item["body"] == "Live waved"
        assert await stream.event() == ("unread-count", {"count": 2})
        await client.post(f"{API}/inbox/read-all", headers=ana)
        assert await stream.event() == ("unread-count", {"count": 0})


async def test_the_stream_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/inbox/stream")
    assert response.status_code == 401


async def test_items_go_only_to_their_user(
    client: httpx.AsyncClient, admin: Headers, ana: Headers, ben: Headers
) -> None:
    await _fill(client, admin, ana, 2)

    async def ben_empty() -> bool:
        return (await client.get(f"{API}/inbox", headers=ben)).json()["items"] == []

    assert await eventually(ben_empty)
