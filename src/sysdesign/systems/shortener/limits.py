"""How many links a caller may create: per account and per client address.

Counted on the ratelimit block's store (shared by every process behind one
Redis) with the token bucket, so a quiet account can create a bulk batch at
once and a busy one is held to the rate. One decision covers every limit of
the request, all or nothing, and costs one per link: a 1,000-link bulk
request takes 1,000. While the store is down the counts fall back to a
per-process store, so creation goes on, limited per process.
"""

from __future__ import annotations

from collections.abc import Sequence

from sysdesign.blocks.ratelimit.base import (
    Algorithm,
    Hit,
    Limit,
    RateLimitStore,
    hit_many_or_fallback,
    retry_after_seconds,
)
from sysdesign.platform.http import Problem


def _hits(scope: str, value: str, limits: Sequence[Limit], cost: int) -> list[Hit]:
    return [
        Hit(Algorithm.TOKEN_BUCKET, f"shortener-create|{scope}={value}|{i}", limit, cost)
        for i, limit in enumerate(limits)
    ]


class CreationLimiter:
    def __init__(
        self,
        store: RateLimitStore,
        fallback: RateLimitStore,
        *,
        per_user: Sequence[Limit],
        per_ip: Sequence[Limit],
        per_anonymous_ip: Sequence[Limit],
    ) -> None:
        self.store = store
        self.fallback = fallback
        self.per_user = tuple(per_user)
        self.per_ip = tuple(per_ip)
        self.per_anonymous_ip = tuple(per_anonymous_ip)

    async def admit(self, owner_id: int | None, ip: str | None, cost: int) -> None:
        """Take ``cost`` creations for the account (``None``: anonymous) and the
        address; ``Problem(429, slug="creation-rate-limited")`` with
        ``Retry-After`` when any limit refuses (nothing is then taken)."""
        if cost < 1:
            return
        address = ip or "unknown"
        hits = _hits("ip", address, self.per_ip, cost)
        if owner_id is None:
            hits += _hits("anonymous-ip", address, self.per_anonymous_ip, cost)
        else:
            hits += _hits("user", str(owner_id), self.per_user, cost)
        if not hits:
            return
        for hit in hits:
            if cost > hit.limit.capacity:
                raise Problem(
                    429,
                    f"{cost} links at once is more than the limit allows "
                    f"({hit.limit.capacity}); send fewer",
                    slug="creation-rate-limited",
                    title="Too many links",
                )
        decisions = await hit_many_or_fallback(self.store, self.fallback, hits)
        refused = [d for d in decisions if not d.allowed]
        if refused:
            wait = retry_after_seconds(refused)
            raise Problem(
                429,
                f"Too many links created; try again in {wait} seconds",
                slug="creation-rate-limited",
                title="Too many links",
                headers={"Retry-After": str(wait)},
            )
