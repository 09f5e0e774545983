"""Load shedding: under overload the lowest priority goes first, and capacity stays
reserved for critical traffic."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from sysdesign.blocks.ratelimit.shedding import LoadShedder, Priority
from sysdesign.platform.app import create_app
from sysdesign.platform.clock import ManualClock
from sysdesign.platform.context import Platform
from tests.blocks.queue.test_contract import until
from tests.conftest import make_settings, open_client


def test_each_priority_is_shed_above_its_share_and_critical_gets_the_rest() -> None:
    shedder = LoadShedder(10)  # default shares: low 0.5, normal 0.7, high 0.8
    admitted = {p: 0 for p in Priority}
    for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL):
        while shedder.try_enter(priority):
            admitted[priority] += 1
    assert admitted == {Priority.LOW: 5, Priority.NORMAL: 2, Priority.HIGH: 1, Priority.CRITICAL: 2}
    assert shedder.in_flight == 10
    assert shedder.shed == {p: 1 for p in Priority}
    shedder.leave()
    assert not shedder.try_enter(Priority.LOW)
    assert shedder.try_enter(Priority.CRITICAL)


RULES = """
shedding:
  max_in_flight: 4
  thresholds: {low: 0.5, normal: 0.75, high: 0.75}
priorities:
  - {match: {path: /slow/v1/otp}, priority: critical}
  - {match: {path: /slow/v1/report}, priority: low}
"""


async def test_a_full_server_sheds_normal_requests_with_503_but_serves_critical_ones(
    tmp_path: Path, clock: ManualClock
) -> None:
    gate = asyncio.Event()
    entered = 0

    def slow(platform: Platform) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/{what}")
        async def wait(what: str) -> dict[str, str]:
            nonlocal entered
            entered += 1
            await gate.wait()
            return {"done": what}

        return app

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = make_settings(tmp_path, ratelimit_rules=rules)
    root = create_app(settings, clock=clock, extra_apps={"slow": slow})
    async for client in open_client(root):
        held = [asyncio.create_task(client.get(f"/slow/v1/job{i}")) for i in range(3)]
        await until(lambda: entered == 3)

        shed = await client.get("/slow/v1/job3")
        assert shed.status_code == 503
        assert shed.headers["content-type"] == "application/problem+json"
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["type"].endswith("/overloaded")
        assert shed.json()["priority"] == "normal"
        assert (await client.get("/slow/v1/report")).status_code == 503  # low goes first
        assert (await client.get("/healthz")).status_code == 200  # never shed

        critical = asyncio.create_task(client.get("/slow/v1/otp"))
        await until(lambda: entered == 4)  # admitted into the reserved capacity
        gate.set()
        assert (await critical).json() == {"done": "otp"}
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert (await client.get("/slow/v1/again")).status_code == 200

        metrics = (await client.get("/metrics")).text
        assert 'ratelimit_shed_requests_total{priority="normal"} 1.0' in metrics
        assert 'ratelimit_shed_requests_total{priority="low"} 1.0' in metrics
