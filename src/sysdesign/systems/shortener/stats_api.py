"""``GET /v1/links/{code}/stats``: a link's visits, for its owner.

The numbers are the analytics consumer's counters (``stats.py``): they
follow the redirects by a moment, since each visit is counted from its
event on the queue. Another owner's link answers 404, as an unknown code
does.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from sysdesign.platform.http import ProblemDetail
from sysdesign.systems.shortener import workers
from sysdesign.systems.shortener.access import Owner
from sysdesign.systems.shortener.schemas import Code
from sysdesign.systems.shortener.stats import MAX_DAYS, TOP_N, LinkStats, link_stats

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sysdesign.platform.context import Platform
    from sysdesign.systems.shortener.service import LinkService

Days = Annotated[
    int, Query(ge=1, le=MAX_DAYS, description="How many days `daily` covers, up to today")
]
RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ProblemDetail, "description": "Missing or invalid credentials"},
    404: {"model": ProblemDetail, "description": "No link with this code is yours"},
}


class CountOut(BaseModel):
    value: str
    visits: int


class DayOut(BaseModel):
    day: date = Field(description="A day in UTC")
    visits: int = Field(description="All visits that day, bots included")
    bots: int


class LinkStatsOut(BaseModel):
    total: int = Field(description="Every visit since the link was made, bots included")
    bots: int = Field(description="Visits by crawlers, scripts and link previews")
    daily: list[DayOut] = Field(description="One entry per day of the window, oldest first")
    referrers: list[CountOut] = Field(
        description=f"Human visits by referring host ('direct': none), top {TOP_N}"
    )
    browsers: list[CountOut] = Field(description=f"Human visits by browser, top {TOP_N}")
    os: list[CountOut] = Field(description=f"Human visits by operating system, top {TOP_N}")
    countries: list[CountOut] = Field(
        description=f"Human visits by ISO country code ('unknown': not known), top {TOP_N}"
    )


def _counts(pairs: list[tuple[str, int]]) -> list[CountOut]:
    return [CountOut(value=value, visits=visits) for value, visits in pairs]


def stats_out(stats: LinkStats) -> LinkStatsOut:
    return LinkStatsOut(
        total=stats.total,
        bots=stats.bots,
        daily=[
            DayOut(day=date.fromisoformat(d.day), visits=d.visits, bots=d.bots) for d in stats.daily
        ],
        referrers=_counts(stats.referrers),
        browsers=_counts(stats.browsers),
        os=_counts(stats.os),
        countries=_counts(stats.countries),
    )


def install(app: FastAPI, platform: Platform, links: LinkService) -> None:
    # Here, while the app is built, rather than when the consumer starts in the
    # lifespan: a bad setting then stops `sysdesign serve` with one line.
    workers.check_configuration()

    @app.get("/v1/links/{code}/stats", response_model=LinkStatsOut, tags=["stats"],
             summary="Visits of one of your links",
             responses=RESPONSES)  # fmt: skip
    async def get_stats(code: Code, owner: Owner, days: Days = 30) -> LinkStatsOut:
        link = await links.get(owner, code)
        return stats_out(await link_stats(platform, link.id, link.code, days=days))
