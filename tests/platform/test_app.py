"""The root app: landing page, health, readiness, metrics, docs, and the HTTP conventions
every system inherits (problem+json, request ids, logs, body limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import structlog
from fastapi import Depends, FastAPI, WebSocket
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.http import Page, PageRequest, Problem, page_request
from sysdesign.platform.observability import configure_logging
from sysdesign.platform.service_app import create_service_app
from sysdesign.systems import SYSTEMS
from tests.conftest import make_settings, open_client

PROBLEM = "application/problem+json"


class Item(BaseModel):
    name: str
    quantity: int


def probe_app(root: Starlette) -> FastAPI:
    """A small system mounted at /probe, built the way every system is built."""
    app = create_service_app(root.state.platform, name="probe", title="Probe")

    @app.get("/v1/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internal detail")

    @app.get("/v1/conflict")
    async def conflict() -> dict:
        raise Problem(409, "already there", slug="dup", title="Duplicate", field="name")

    @app.post("/v1/items", status_code=201)
    async def create(item: Item) -> Item:
        return item

    @app.get("/v1/items/{item_id}")
    async def read(item_id: int) -> dict:
        return {"id": item_id}

    @app.websocket("/v1/echo")
    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    @app.websocket("/v1/denied")
    async def denied(socket: WebSocket) -> None:
        await socket.close(code=1008)

    numbers = list(range(1, 124))

    @app.get("/v1/numbers")
    async def list_numbers(page: PageRequest = Depends(page_request)) -> Page[int]:
        start = page.after["n"] if page.after else 0
        rows = [n for n in numbers if n > start][: page.fetch]  # keyset: WHERE n > :last
        return page.page(rows, lambda n: {"n": n})

    root.router.routes.insert(0, Mount("/probe", app=app))
    return app


@pytest.fixture
async def probe_client(tmp_path: Path, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    root = create_app(make_settings(tmp_path, max_body_bytes=1024), clock=clock)
    probe_app(root)
    async for client in open_client(root):
        yield client


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("info", "json", cache=False)
    yield capsys
    structlog.reset_defaults()


async def test_landing_lists_all_fifteen_systems(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert len(SYSTEMS) == 15
    for spec in SYSTEMS:
        assert spec.seed_scenario in response.text
        assert spec.title in response.text
    assert response.text.count("not built yet") == sum(not s.built for s in SYSTEMS)
    assert 'href="/accounts/docs"' in response.text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {
            "cache": "ok",
            "locks": "ok",
            "database:db0": "ok",
            "queue": "ok",
            "ratelimit": "ok",
            "realtime": "ok",
        },
    }


async def test_readiness_reports_a_failing_backend(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    async def broken() -> None:
        raise ConnectionError("connection refused")

    app.state.platform.add_readiness_check("cache", broken)
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database:db0"] == "ok"
    assert body["checks"]["cache"] == "ConnectionError: connection refused"


async def test_unbuilt_system_answers_a_problem_naming_its_scenario(
    client: httpx.AsyncClient,
) -> None:
    unbuilt = [s for s in SYSTEMS if not s.built]
    if not unbuilt:
        pytest.skip("every system is built")
    spec = unbuilt[0]
    response = await client.get(f"/{spec.name}/v1/anything")
    assert response.status_code == 404
    body = response.json()
    assert body["type"].endswith("/system-not-built")
    assert body["system"] == spec.name
    assert spec.seed_scenario in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/no/such/thing", 404, "not-found"),
        ("DELETE", "/healthz", 405, "method-not-allowed"),
        ("GET", "/accounts/v1/nothing", 404, "not-found"),
        ("PUT", "/accounts/v1/login", 405, "method-not-allowed"),
    ],
)
async def test_unknown_routes_and_methods_are_problems(
    client: httpx.AsyncClient, method: str, path: str, status: int, slug: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"https://sysdesign.dev/problems/{slug}"
    assert body["instance"] == path


async def test_unhandled_error_is_a_500_problem_without_internals(
    probe_client: httpx.AsyncClient, json_logs: pytest.CaptureFixture[str]
) -> None:
    response = await probe_client.get("/probe/v1/boom", headers={"x-request-id": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert response.json()["type"].endswith("/internal-error")
    # The operator sees it: one log line with the request id and the exception.
    lines = [orjson.loads(line) for line in json_logs.readouterr().out.splitlines() if line]
    errors = [line for line in lines if line["event"] == "unhandled_exception"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-500"
    assert "secret internal detail" in errors[0]["exception"]


async def test_raised_problem_keeps_its_extension_fields(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.get("/probe/v1/conflict")
    assert response.status_code == 409
    assert response.json() == {
        "type": "https://sysdesign.dev/problems/dup",
        "title": "Duplicate",
        "status": 409,
        "detail": "already there",
        "instance": "/probe/v1/conflict",
        "field": "name",
    }


async def test_validation_errors_name_each_field(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.post("/probe/v1/items", json={"name": 3, "quantity": "many"})
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"name", "quantity"}
    response = await probe_client.get("/probe/v1/items/abc")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["item_id"]
    assert response.json()["errors"][0]["location"] == ["path", "item_id"]


async def test_body_over_the_limit_is_413_by_content_length(
    probe_client: httpx.AsyncClient,
) -> None:
    payload = {"name": "x" * 2000, "quantity": 1}
    response = await probe_client.post("/probe/v1/items", json=payload)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["limit"] == 1024


async def test_streamed_body_over_the_limit_is_413(probe_client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'", "quantity": 1}'

    response = await probe_client.post(
        "/probe/v1/items", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")


async def test_body_under_the_limit_passes(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.post("/probe/v1/items", json={"name": "pen", "quantity": 2})
    assert response.status_code == 201
    assert response.json() == {"name": "pen", "quantity": 2}


async def test_garbled_content_length_is_400(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.post(
        "/probe/v1/items", content=b"{}", headers={"content-length": "lots"}
    )
    assert response.status_code == 400


async def test_request_id_is_echoed_generated_or_replaced(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"
    assert len(hostile.headers["x-request-id"]) == 32


async def test_access_log_is_json_with_request_id_and_route(
    tmp_path: Path, clock: ManualClock, json_logs: pytest.CaptureFixture[str]
) -> None:
    root = create_app(make_settings(tmp_path, access_log=True), clock=clock)
    async for client in open_client(root):
        await client.get("/accounts/v1/me", headers={"x-request-id": "trace-me"})
    lines = [orjson.loads(line) for line in json_logs.readouterr().out.splitlines() if line]
    access = [line for line in lines if line.get("event") == "request"]
    assert access == [
        {
            "event": "request",
            "method": "GET",
            "path": "/accounts/v1/me",
            "route": "/accounts/v1/me",
            "status": 401,
            "duration_ms": access[0]["duration_ms"],
            "request_id": "trace-me",
            "level": "info",
            "timestamp": access[0]["timestamp"],
        }
    ]


async def test_metrics_count_requests_by_system_and_route_template(
    probe_client: httpx.AsyncClient,
) -> None:
    for item_id in (1, 2, 3):
        await probe_client.get(f"/probe/v1/items/{item_id}")
    await probe_client.get("/accounts/v1/me")
    await probe_client.get("/nowhere")
    text = (await probe_client.get("/metrics")).text
    assert (
        'http_requests_total{method="GET",route="/probe/v1/items/{item_id}",'
        'status="200",system="platform"} 3.0'
    ) in text
    assert (
        'http_requests_total{method="GET",route="/accounts/v1/me",'
        'status="401",system="accounts"} 1.0'
    ) in text
    assert 'route="<unmatched>",status="404",system="platform"} 1.0' in text
    assert "http_request_duration_seconds_bucket" in text
    assert "/nowhere" not in text  # raw paths never become labels


async def test_docs_work_offline(client: httpx.AsyncClient) -> None:
    docs = await client.get("/accounts/docs")
    assert docs.status_code == 200
    assert "/_assets/swagger-ui-bundle.js" in docs.text
    assert "/accounts/openapi.json" in docs.text
    assert "cdn" not in docs.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = await client.get(f"/_assets/{asset}")
        assert response.status_code == 200
        assert len(response.content) > 10_000
    spec = (await client.get("/accounts/openapi.json")).json()
    assert spec["info"]["title"] == "Accounts"
    assert "/v1/login" in spec["paths"]


async def test_serving_one_system_alone_keeps_its_paths(tmp_path: Path, clock: ManualClock) -> None:
    root = create_app(make_settings(tmp_path), clock=clock, only=["accounts"])
    async for client in open_client(root):
        assert (await client.get("/accounts/v1/me")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        # Other systems are simply absent, not "not built".
        assert (await client.get("/shop/v1/x")).json()["type"].endswith("/not-found")


def test_serving_an_unbuilt_system_is_refused(tmp_path: Path) -> None:
    unbuilt = [s for s in SYSTEMS if not s.built]
    if not unbuilt:
        pytest.skip("every system is built")
    with pytest.raises(ValueError, match="not built yet"):
        create_app(make_settings(tmp_path), only=[unbuilt[0].name])


async def test_cursor_pagination_walks_every_item_once(probe_client: httpx.AsyncClient) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 50}
        if cursor:
            params["cursor"] = cursor
        body = (await probe_client.get("/probe/v1/numbers", params=params)).json()
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(1, 124))
    assert pages == 3


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"limit": 0}, 422, "limit"),
        ({"limit": 201}, 422, "limit"),
        ({"limit": "ten"}, 422, "limit"),
        ({"cursor": "garbage"}, 400, "cursor"),
    ],
)
async def test_bad_pagination_parameters(
    probe_client: httpx.AsyncClient, params: dict, status: int, field: str
) -> None:
    response = await probe_client.get("/probe/v1/numbers", params=params)
    assert response.status_code == status
    body = response.json()
    fields = [e["field"] for e in body.get("errors", [])] or [body.get("field")]
    assert field in fields


async def _websocket(app: Starlette, path: str) -> list[dict]:
    sent: list[dict] = []
    inbox = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]

    async def receive() -> dict:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "websocket", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [], "scheme": "ws", "subprotocols": [],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "asgi": {"version": "3.0"},
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_websockets_are_counted_with_their_real_outcome(
    tmp_path: Path, clock: ManualClock
) -> None:
    root = create_app(make_settings(tmp_path), clock=clock)
    probe_app(root)
    async for client in open_client(root):
        accepted = await _websocket(root, "/probe/v1/echo")
        assert accepted[0]["type"] == "websocket.accept"
        assert (b"x-request-id", accepted[0]["headers"][-1][1]) in accepted[0]["headers"]
        refused = await _websocket(root, "/probe/v1/denied")
        assert refused[0]["type"] == "websocket.close"
        text = (await client.get("/metrics")).text
    assert 'method="WS",route="/probe/v1/echo",status="101"' in text
    assert 'method="WS",route="/probe/v1/denied",status="403"' in text
    assert 'route="/probe/v1/echo",method="WS"' not in text  # no latency for connections


async def test_metrics_name_the_system_behind_a_root_path(
    tmp_path: Path, clock: ManualClock
) -> None:
    root = create_app(make_settings(tmp_path), clock=clock)
    async with root.router.lifespan_context(root):
        transport = httpx.ASGITransport(app=root, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/api/accounts/v1/me")
            assert response.status_code == 401
            text = (await client.get("/api/metrics")).text
    assert 'route="/accounts/v1/me",status="401",system="accounts"' in text


async def test_placeholder_of_an_unbuilt_system_matches_only_its_own_prefix(
    client: httpx.AsyncClient,
) -> None:
    unbuilt = [s for s in SYSTEMS if not s.built]
    if not unbuilt:
        pytest.skip("every system is built")
    name = unbuilt[0].name
    for method, path in (("POST", f"/{name}/v1/things"), ("GET", f"/{name}")):
        response = await client.request(method, path)
        assert response.json()["type"].endswith("/system-not-built"), (method, path)
    assert (await client.get(f"/{name}ping")).json()["type"].endswith("/not-found")
