"""Browser sessions for the shortener's web page: cookies, refresh and CSRF tokens.

**The session is the accounts service's own tokens, in cookies.** The access
token (a JWT, 15 minutes) sits in one HttpOnly cookie and the refresh token in
another, so a browser is signed in exactly as an API client is, and logging
out revokes the login (the refresh token's family) as the API's logout does.
When the access token has expired, the refresh cookie buys a new pair through
``AccountService.refresh`` and both cookies are replaced on that response.

**Concurrent refreshes.** Refresh tokens rotate, and presenting one that was
already rotated revokes the whole login (reuse detection). A browser sends
several requests at once (a page and its QR image, two tabs), all with the
same expired access token and the same refresh token: refreshing each would
sign the user out. So one process refreshes a given token once; concurrent
requests wait for that refresh, and for ``REFRESH_GRACE_SECONDS`` afterwards
the same old token is answered with the same new pair. Two processes of one
deployment can still race; the loser's browser is signed out.

**CSRF.** Cookies are sent with cross-site form posts (SameSite=Lax stops
most of them, not all: a sibling subdomain is same-site), so every form
carries a token the server checks. For a signed-in user it is an HMAC, with
the platform's secret, of the login session's id (the refresh-token family,
stable across refreshes, new at each login): nothing to store, and a form
rendered before a refresh still posts after it. Before signing in (the
sign-in and register forms) it is an HMAC of a random per-browser cookie.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sysdesign.platform.http import Problem

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from sysdesign.platform.accounts.security import Principal
    from sysdesign.platform.accounts.service import TokenPair
    from sysdesign.platform.context import Platform

ACCESS_COOKIE = "sd_access"
REFRESH_COOKIE = "sd_refresh"
ANON_COOKIE = "sd_csrf"
CSRF_FIELD = "csrf"
REFRESH_GRACE_SECONDS = 30.0
_MAX_TOKEN_CHARS = 4096  # a cookie longer than any token we issue is not one


@dataclass(slots=True)
class BrowserSession:
    """What the cookies of one request said, and what the response must set."""

    principal: Principal | None = None
    renewed: TokenPair | None = None  # set both cookies to this pair
    ended: bool = False  # the cookies named a login that is over: clear them
    anon_id: str | None = None  # the pre-sign-in CSRF cookie, when there is one
    new_anon_id: str | None = None  # give the browser this pre-sign-in cookie


def _cookie(raw: str | None) -> str | None:
    return raw if raw and len(raw) <= _MAX_TOKEN_CHARS else None


class SessionManager:
    """Reads and writes the session cookies; refreshes expired access tokens."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._inflight: dict[str, asyncio.Future[TokenPair]] = {}
        self._recent: dict[str, tuple[float, TokenPair]] = {}

    # --- reading a request ------------------------------------------------------------

    async def load(self, request: Request) -> BrowserSession:
        session = BrowserSession(anon_id=_cookie(request.cookies.get(ANON_COOKIE)))
        access = _cookie(request.cookies.get(ACCESS_COOKIE))
        if access is not None:
            try:
                session.principal = self._platform.tokens.verify(access)
                return session
            except Problem:
                pass  # expired or not ours: the refresh cookie may still hold the login
        refresh = _cookie(request.cookies.get(REFRESH_COOKIE))
        if refresh is None:
            session.ended = access is not None
            return session
        try:
            pair = await self._refresh(refresh)
            session.principal = self._platform.tokens.verify(pair.access_token)
        except Problem:
            session.ended = True  # revoked, expired or reused: sign in again
            return session
        session.renewed = pair
        return session

    async def _refresh(self, refresh_token: str) -> TokenPair:
        key = hashlib.sha256(refresh_token.encode()).hexdigest()
        now = self._platform.clock.monotonic()
        recent = self._recent.get(key)
        if recent is not None and recent[0] > now:
            return recent[1]
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[TokenPair] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            pair = await self._platform.accounts.refresh(refresh_token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited one is not reported
            raise
        finally:
            del self._inflight[key]
        future.set_result(pair)
        for old in [k for k, (until, _) in self._recent.items() if until <= now]:
            del self._recent[old]
        self._recent[key] = (now + REFRESH_GRACE_SECONDS, pair)
        return pair

    # --- writing a response -------------------------------------------------------------

    @staticmethod
    def started(session: BrowserSession, pair: TokenPair) -> None:
        """Signed in: the response sets the cookies to ``pair``."""
        session.renewed, session.ended = pair, False

    async def end(self, request: Request, session: BrowserSession) -> None:
        """Log out: revoke the refresh cookie's login; the response clears the cookies."""
        refresh = _cookie(request.cookies.get(REFRESH_COOKIE))
        if refresh is not None:
            await self._platform.accounts.logout(refresh)
            # The grace entries would otherwise hand this login's tokens out a while longer.
            gone = hashlib.sha256(refresh.encode()).hexdigest()
            for key in [
                k
                for k, (_, pair) in self._recent.items()
                if k == gone or pair.refresh_token == refresh
            ]:
                del self._recent[key]
        session.principal, session.renewed, session.ended = None, None, True

    def apply(self, request: Request, response: Response, session: BrowserSession) -> None:
        """Set on ``response`` the cookies this request changed."""
        options: dict[str, Any] = {
            "path": "/",
            "secure": request.url.scheme == "https",
            "httponly": True,
            "samesite": "lax",
        }
        pair = session.renewed
        if pair is not None:
            response.set_cookie(
                ACCESS_COOKIE, pair.access_token, max_age=pair.expires_in, **options
            )
            response.set_cookie(
                REFRESH_COOKIE, pair.refresh_token, max_age=pair.refresh_expires_in, **options
            )
        elif session.ended:
            for name in (ACCESS_COOKIE, REFRESH_COOKIE):
                response.delete_cookie(name, **options)
        if session.new_anon_id is not None:
            response.set_cookie(ANON_COOKIE, session.new_anon_id, **options)

    # --- CSRF -------------------------------------------------------------------------

    def _mac(self, message: str) -> str:
        key = self._platform.secret.encode()
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    def csrf_for_user(self, session: BrowserSession) -> str:
        assert session.principal is not None
        p = session.principal
        return self._mac(f"shortener-csrf|session|{p.user_id}|{p.session_id}")

    def csrf_for_anonymous(self, session: BrowserSession) -> str:
        """The sign-in forms' token; gives the browser its random cookie when it has none."""
        if session.anon_id is None:
            session.anon_id = session.new_anon_id = secrets.token_urlsafe(24)
        return self._mac(f"shortener-csrf|anonymous|{session.anon_id}")

    def csrf_valid(
        self, session: BrowserSession, submitted: str | None, *, signed_in: bool
    ) -> bool:
        if not submitted:
            return False
        if signed_in:
            if session.principal is None:
                return False
            expected = self.csrf_for_user(session)
        else:
            if session.anon_id is None:
                return False
            expected = self._mac(f"shortener-csrf|anonymous|{session.anon_id}")
        # As bytes: comparing a str that is not ASCII would raise, not answer False.
        return hmac.compare_digest(expected.encode(), submitted.encode())
