"""Failed-login throttling on the ratelimit block.

Failures are counted per e-mail and per client address in sliding logs
(exact over the window) on the ratelimit store, so every process behind one
Redis shares the counts. An attempt is counted *before* the password check
it guards, in one all-or-nothing decision for both keys, and given back when
it succeeds: guesses sent all at once are counted as they arrive, not after
their slow checks. While the store is down the counts fall back to a
per-process store.
"""

from __future__ import annotations

from sysdesign.blocks.ratelimit.base import (
    Algorithm,
    Hit,
    Limit,
    RateLimitStore,
    StoreUnavailable,
    hit_many_or_fallback,
    retry_after_seconds,
)
from sysdesign.platform.http import Problem


class LoginThrottle:
    def __init__(
        self,
        store: RateLimitStore,
        fallback: RateLimitStore,
        *,
        per_email: Limit,
        per_ip: Limit,
    ) -> None:
        self.store = store
        self.fallback = fallback
        self.per_email = per_email
        self.per_ip = per_ip

    @staticmethod
    def _email_key(email: str) -> str:
        return f"login-failures|email={email}"

    @staticmethod
    def _ip_key(ip: str) -> str:
        return f"login-failures|ip={ip}"

    async def attempt(self, email: str, ip: str) -> None:
        """Count one attempt; ``Problem(429, slug="login-throttled")`` when either
        key has used up its failures (the attempt is then not counted)."""
        hits = [
            Hit(Algorithm.SLIDING_LOG, self._email_key(email), self.per_email),
            Hit(Algorithm.SLIDING_LOG, self._ip_key(ip), self.per_ip),
        ]
        decisions = await hit_many_or_fallback(self.store, self.fallback, hits)
        refused = [d for d in decisions if not d.allowed]
        if refused:
            wait = retry_after_seconds(refused)
            raise Problem(
                429,
                f"Too many failed logins; try again in {wait} seconds",
                slug="login-throttled",
                title="Too many failed logins",
                headers={"Retry-After": str(wait)},
            )

    async def succeeded(self, email: str, ip: str) -> None:
        """The attempt was right: forget the e-mail's failures, give the address's back."""
        for store in (self.store, self.fallback):
            try:
                await store.reset(self._email_key(email))
                await store.refund(self._ip_key(ip))
            except StoreUnavailable:
                continue
