"""Idempotency-Key: one effect per key, the stored answer replayed, misuse refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from sysdesign.platform.http import Problem
from sysdesign.platform.service_app import create_service_app
from tests.conftest import make_settings, open_client


def idempotent_service(
    name: str,
    path: str,
    handle: Callable[[Request], Awaitable[Response]],
    scope: Callable[[Request], str] = lambda request: "any",
) -> Callable[[Platform], FastAPI]:
    """A system whose one POST endpoint runs ``handle`` behind ``Idempotency-Key``."""

    def build(platform: Platform) -> FastAPI:
        app = create_service_app(platform, name=name, title=name.title())

        @app.post(path)
        async def endpoint(request: Request) -> Response:
            return await platform.idempotency.run(
                request, f"{name}:{scope(request)}", lambda: handle(request)
            )

        return app

    return build


class Ledger:
    def __init__(self) -> None:
        self.charges: list[int] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
async def pay_client(
    tmp_path: Path, database_url: str, clock: ManualClock, ledger: Ledger
) -> AsyncIterator[httpx.AsyncClient]:
    async def charge(request: Request) -> Response:
        body = await request.json()
        if ledger.gate is not None:
            await ledger.gate.wait()
        if ledger.fail_next:
            ledger.fail_next = False
            raise RuntimeError("card network down")
        if body["amount"] <= 0:
            raise Problem(422, "amount must be positive", field="amount")
        ledger.charges.append(body["amount"])
        return JSONResponse({"charge": len(ledger.charges), "amount": body["amount"]}, 201)

    pay = idempotent_service(
        "pay", "/v1/charges", charge, scope=lambda r: r.headers.get("x-user", "anonymous")
    )
    root = create_app(
        make_settings(tmp_path, database_url=database_url, auto_migrate=True),
        clock=clock,
        extra_apps={"pay": pay},
    )
    async for client in open_client(root):
        yield client


async def test_same_key_same_body_charges_once_and_replays(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await pay_client.post("/pay/v1/charges", json={"amount": 5}, headers=headers)
    second = await pay_client.post("/pay/v1/charges", json={"amount": 5}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() == {"charge": 1, "amount": 5}
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert ledger.charges == [5]


async def test_same_key_different_body_is_422(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    headers = {"Idempotency-Key": "order-2"}
    await pay_client.post("/pay/v1/charges", json={"amount": 5}, headers=headers)
    other = await pay_client.post("/pay/v1/charges", json={"amount": 500}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert other.json()["field"] == "Idempotency-Key"
    assert ledger.charges == [5]


async def test_without_a_key_every_request_runs(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    for _ in range(3):
        await pay_client.post("/pay/v1/charges", json={"amount": 1})
    assert ledger.charges == [1, 1, 1]


async def test_keys_are_scoped(pay_client: httpx.AsyncClient, ledger: Ledger) -> None:
    for user in ("ana", "bo"):
        response = await pay_client.post(
            "/pay/v1/charges",
            json={"amount": 2},
            headers={"Idempotency-Key": "same", "x-user": user},
        )
        assert response.status_code == 201
    assert ledger.charges == [2, 2]


async def test_concurrent_retry_gets_409_while_the_first_runs(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    ledger.gate = asyncio.Event()
    headers = {"Idempotency-Key": "order-3"}
    first = asyncio.create_task(
        pay_client.post("/pay/v1/charges", json={"amount": 7}, headers=headers)
    )
    for _ in range(200):  # until the first request holds the key
        await asyncio.sleep(0.01)
        second = await pay_client.post("/pay/v1/charges", json={"amount": 7}, headers=headers)
        if second.status_code == 409:
            break
    assert second.status_code == 409
    assert second.json()["type"].endswith("/idempotency-key-in-use")
    assert second.headers["retry-after"] == "1"
    ledger.gate.set()
    assert (await first).status_code == 201
    ledger.gate = None
    replay = await pay_client.post("/pay/v1/charges", json={"amount": 7}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert ledger.charges == [7]


async def test_failure_releases_the_key_for_a_retry(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    ledger.fail_next = True
    headers = {"Idempotency-Key": "order-4"}
    failed = await pay_client.post("/pay/v1/charges", json={"amount": 9}, headers=headers)
    assert failed.status_code == 500
    retried = await pay_client.post("/pay/v1/charges", json={"amount": 9}, headers=headers)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert ledger.charges == [9]


async def test_client_errors_are_stored_and_replayed(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    headers = {"Idempotency-Key": "order-5"}
    first = await pay_client.post("/pay/v1/charges", json={"amount": -1}, headers=headers)
    second = await pay_client.post("/pay/v1/charges", json={"amount": -1}, headers=headers)
    assert first.status_code == second.status_code == 422
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"] == "application/problem+json"


async def test_keys_expire(
    pay_client: httpx.AsyncClient, ledger: Ledger, clock: ManualClock
) -> None:
    headers = {"Idempotency-Key": "order-6"}
    await pay_client.post("/pay/v1/charges", json={"amount": 3}, headers=headers)
    clock.advance(86400 + 1)
    again = await pay_client.post("/pay/v1/charges", json={"amount": 3}, headers=headers)
    assert "idempotent-replayed" not in again.headers
    assert ledger.charges == [3, 3]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünïcode"])
async def test_malformed_keys_are_400(
    pay_client: httpx.AsyncClient, ledger: Ledger, key: str
) -> None:
    response = await pay_client.post(
        "/pay/v1/charges", json={"amount": 1}, headers={"Idempotency-Key": key.encode()}
    )
    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"
    assert ledger.charges == []


async def test_same_key_different_query_is_422(
    pay_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    headers = {"Idempotency-Key": "order-7"}
    first = await pay_client.post("/pay/v1/charges?note=a", json={"amount": 4}, headers=headers)
    other = await pay_client.post("/pay/v1/charges?note=b", json={"amount": 4}, headers=headers)
    assert first.status_code == 201
    assert other.status_code == 422
    assert ledger.charges == [4]


async def test_abandoned_key_is_taken_over_by_exactly_one_contender(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> None:
    from sysdesign.platform.db import Database
    from sysdesign.platform.idempotency import IdempotencyStore, Reservation
    from sysdesign.platform.migrations import migrate

    db = Database(database_url)
    await migrate(db)
    store = IdempotencyStore(db, clock, ttl_seconds=86400, lease_seconds=60)
    try:
        first = await store.reserve("s", "k", "hash")
        assert isinstance(first, Reservation)
        clock.advance(61)  # the first holder looks dead
        outcomes = await asyncio.gather(
            *(store.reserve("s", "k", "hash") for _ in range(8)), return_exceptions=True
        )
        winners = [o for o in outcomes if isinstance(o, Reservation)]
        assert len(winners) == 1
        assert all(isinstance(o, Problem) and o.status == 409 for o in outcomes if o not in winners)

        # The first holder wakes up late: it can neither complete nor release the key.
        late = JSONResponse({"late": True}, 201)
        assert await store.complete("s", "k", first, late) is False
        await store.release("s", "k", first)
        with pytest.raises(Problem) as still_held:
            await store.reserve("s", "k", "hash")
        assert still_held.value.status == 409

        assert await store.complete("s", "k", winners[0], JSONResponse({"ok": 1}, 201)) is True
        replay = await store.reserve("s", "k", "hash")
        assert not isinstance(replay, Reservation)
        assert replay.body == b'{"ok":1}'
    finally:
        await db.dispose()


async def test_transient_client_errors_release_the_key(tmp_path: Path, clock: ManualClock) -> None:
    answers = iter([Problem(429, "busy"), None])

    async def reserve_stock(request: Request) -> Response:
        problem = next(answers)
        if problem is not None:
            raise problem
        return JSONResponse({"reserved": True}, 201)

    stock = idempotent_service("stock", "/v1/reserve", reserve_stock)
    root = create_app(make_settings(tmp_path), clock=clock, extra_apps={"stock": stock})
    async for client in open_client(root):
        headers = {"Idempotency-Key": "r-1"}
        assert (await client.post("/stock/v1/reserve", headers=headers)).status_code == 429
        retried = await client.post("/stock/v1/reserve", headers=headers)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
