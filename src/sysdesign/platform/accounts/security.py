"""Passwords (argon2id), access tokens (JWT, HS256) and the ``current_user`` dependency.

Access tokens are short-lived and verified without a database read, which is
what lets every system authenticate a request on its own. They cannot be
revoked before they expire; refresh tokens can (see ``service``).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sysdesign.platform.clock import Clock
from sysdesign.platform.http import Problem

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

ISSUER = "sysdesign"
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user id and the login session (refresh-token family)."""

    user_id: int
    session_id: int


class Passwords:
    """argon2id hashing off the event loop (each hash takes tens of milliseconds)."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # Verified against when the e-mail is unknown, so both cases cost the same.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False


class TokenService:
    def __init__(self, secret: str, ttl_seconds: int, clock: Clock) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, user_id: int, session_id: int) -> str:
        now = int(self._clock.time())
        claims = {
            "iss": ISSUER,
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": secrets.token_hex(8),
            "typ": "access",
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        """Raises ``Problem(401)`` with slug ``token-expired`` or ``invalid-token``."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                # Times are checked below on the injected clock, not PyJWT's wall clock.
                options={
                    "require": ["exp", "iat", "sub", "sid"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            if claims.get("typ") != "access":
                raise jwt.InvalidTokenError("not an access token")
            if int(claims["exp"]) <= self._clock.time():
                raise jwt.ExpiredSignatureError("expired")
            return Principal(user_id=int(claims["sub"]), session_id=int(claims["sid"]))
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token-expired", "The access token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise _unauthorized("invalid-token", "The access token is not valid") from None


def _unauthorized(slug: str, detail: str) -> Problem:
    challenge = 'Bearer realm="sysdesign"'
    if slug != "missing-token":
        challenge += f', error="invalid_token", error_description="{detail}"'
    return Problem(
        401, detail, slug=slug, title="Unauthorized", headers={"WWW-Authenticate": challenge}
    )


_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    return request.app.state.platform


async def optional_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Principal | None:
    if credentials is None:
        if request.headers.get("authorization"):
            raise _unauthorized(
                "invalid-token", "The Authorization header must be 'Bearer <token>'"
            )
        return None
    return get_platform(request).tokens.verify(credentials.credentials)


async def current_user(principal: Principal | None = Depends(optional_user)) -> Principal:
    """The calling user; 401 problem+json when the token is missing, garbled or expired."""
    if principal is None:
        raise _unauthorized("missing-token", "This endpoint needs 'Authorization: Bearer <token>'")
    return principal


async def admin_user(request: Request, principal: Principal = Depends(current_user)) -> Principal:
    """The calling user when their e-mail is in ``SYSDESIGN_ADMIN_EMAILS``; 403
    otherwise. Reads the account (one query): admin calls are rare, and an
    e-mail taken off the list stops working at once."""
    # Imported here: the service module imports this one.
    from sysdesign.platform.accounts.service import normalize_email

    platform = get_platform(request)
    admins = {normalize_email(email) for email in platform.settings.admins}
    if admins:
        user = await platform.accounts.get_user(principal.user_id)
        if user.email in admins:  # stored as normalize_email spells it
            return principal
    raise Problem(403, "This needs an admin account", slug="admin-only", title="Forbidden")
