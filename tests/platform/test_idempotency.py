"""Idempotency-Key: one effect per key, the stored answer replayed, misuse refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import Mount

from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.http import Problem
from sysdesign.platform.service_app import create_service_app
from tests.conftest import make_settings, open_client


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
    root = create_app(
        make_settings(tmp_path, database_url=database_url, auto_migrate=True), clock=clock
    )
    platform = root.state.platform
    app = create_service_app(platform, name="pay", title="Pay")

    @app.post("/v1/charges")
    async def charge(request: Request) -> Response:
        async def handler() -> Response:
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

        user = request.headers.get("x-user", "anonymous")
        return await platform.idempotency.run(request, f"pay:{user}", handler)

    root.router.routes.insert(0, Mount("/pay", app=app))
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
    root = create_app(make_settings(tmp_path), clock=clock)
    platform = root.state.platform
    app = create_service_app(platform, name="stock", title="Stock")
    answers = iter([Problem(429, "busy"), None])

    @app.post("/v1/reserve")
    async def reserve_stock(request: Request) -> Response:
        async def handler() -> Response:
            problem = next(answers)
            if problem is not None:
                raise problem
            return JSONResponse({"reserved": True}, 201)

        return await platform.idempotency.run(request, "stock", handler)

    root.router.routes.insert(0, Mount("/stock", app=app))
    async for client in open_client(root):
        headers = {"Idempotency-Key": "r-1"}
        assert (await client.post("/stock/v1/reserve", headers=headers)).status_code == 429
        retried = await client.post("/stock/v1/reserve", headers=headers)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
