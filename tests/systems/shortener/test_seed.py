"""``sysdesign seed shortener``: counter codes, on the shard each code names, redirecting."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from sysdesign.platform.accounts.seed import DEMO_PASSWORD, demo_email
from sysdesign.platform.context import Platform
from sysdesign.systems import get_system
from sysdesign.systems.shortener import seed as seed_module
from sysdesign.systems.shortener.seed import BATCH, seed, seed_target
from sysdesign.systems.shortener.store import links_table

SIZE = 2 * BATCH + 500  # two full batches and a partial one


async def codes_by_shard(platform: Platform) -> list[list[tuple[str, str, int]]]:
    t = links_table
    out = []
    for db in platform.db.shards:
        async with db.read() as conn:
            rows = await conn.execute(select(t.c.code, t.c.target, t.c.owner_id))
            out.append([tuple(row) for row in rows])
    return out


async def test_seeding_makes_distinct_codes_each_on_its_shard(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    reported: list[int] = []
    assert await seed(platform, SIZE, reported.append) == SIZE
    assert sum(reported) == SIZE and max(reported) == BATCH

    shards = await codes_by_shard(platform)
    codes = [code for rows in shards for code, _, _ in rows]
    assert len(codes) == SIZE and len(set(codes)) == SIZE
    assert all(rows for rows in shards)  # both shards got some
    for index, rows in enumerate(shards):
        assert all(platform.db.index_for(code) == index for code, _, _ in rows)
    assert len({owner for rows in shards for _, _, owner in rows}) == 1

    for code, target, _ in [rows[0] for rows in shards] + [shards[0][-1], shards[1][-1]]:
        response = await client.get(f"/s/{code}")
        assert response.status_code == 302
        assert response.headers["location"] == target
        assert target.startswith(seed_target(0)[:-1])


async def test_a_second_run_adds_as_many_for_the_same_signed_in_owner(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    await seed(platform, 300, lambda _n: None)
    await seed(platform, 300, lambda _n: None)
    shards = await codes_by_shard(platform)
    codes = [code for rows in shards for code, _, _ in rows]
    assert len(codes) == 600 and len(set(codes)) == 600

    login = {"email": demo_email(1), "password": DEMO_PASSWORD}
    token = (await client.post("/accounts/v1/login", json=login)).json()["access_token"]
    page = await client.get(
        "/shortener/v1/links?limit=5", headers={"Authorization": f"Bearer {token}"}
    )
    assert page.status_code == 200 and len(page.json()["items"]) == 5


def test_the_registry_finds_the_seed_function() -> None:
    # Imported above, seed.py is the package's attribute ``seed``: still the function.
    assert get_system("shortener").seeder() is seed_module.seed
