"""Account use cases. Errors are ``Problem``s; nothing here knows about HTTP routes.

Refresh tokens are opaque random strings stored only as SHA-256 hashes. Each
refresh rotates the token; tokens of one login form a *family*. Presenting a
token that was already rotated means it leaked: the whole family is revoked
(reuse detection), which logs out both the thief and the user.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from sysdesign.platform.accounts import store
from sysdesign.platform.accounts.security import Passwords, TokenService
from sysdesign.platform.accounts.throttle import LoginThrottle
from sysdesign.platform.clock import Clock
from sysdesign.platform.db import Database
from sysdesign.platform.http import Problem
from sysdesign.platform.ids import SnowflakeGenerator

INVALID_LOGIN = "The e-mail or password is not correct"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_email(email: str) -> str:
    """One spelling per address: NFC (as registration's validator leaves it), lower case."""
    return unicodedata.normalize("NFC", email.strip()).lower()


class AccountService:
    def __init__(
        self,
        db: Database,
        ids: SnowflakeGenerator,
        clock: Clock,
        passwords: Passwords,
        tokens: TokenService,
        refresh_ttl_seconds: int,
        throttle: LoginThrottle,
    ) -> None:
        self.db = db
        self.ids = ids
        self.clock = clock
        self.passwords = passwords
        self.tokens = tokens
        self.refresh_ttl_ms = refresh_ttl_seconds * 1000
        self.throttle = throttle

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    async def register(
        self, email: str, password: str, display_name: str | None = None
    ) -> store.UserRow:
        email = normalize_email(email)
        password_hash = await self.passwords.hash(password)
        now = self._now_ms()
        user = store.UserRow(
            id=self.ids.next_id(),
            email=email,
            password_hash=password_hash,
            display_name=display_name,
            avatar_url=None,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.db.begin() as conn:
                await store.insert_user(conn, user)
        except IntegrityError:
            raise Problem(
                409,
                "An account with this e-mail already exists",
                slug="email-taken",
                title="E-mail already registered",
                field="email",
            ) from None
        return user

    async def login(self, email: str, password: str, ip: str) -> TokenPair:
        email = normalize_email(email)
        # Counted as a failure until proven otherwise, in the same decision that
        # checks the limit, so concurrent guesses cannot all slip past it.
        await self.throttle.attempt(email, ip)
        async with self.db.read() as conn:
            user = await store.user_by_email(conn, email)
        # Verify against a dummy hash for unknown e-mails: same answer, same cost.
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if not ok or user is None:
            raise Problem(
                401, INVALID_LOGIN, slug="invalid-credentials", title="Invalid credentials"
            )
        await self.throttle.succeeded(email, ip)
        async with self.db.begin() as conn:
            return await self._issue(conn, user.id, family_id=self.ids.next_id())

    async def _issue(self, conn: AsyncConnection, user_id: int, family_id: int) -> TokenPair:
        refresh = secrets.token_urlsafe(32)
        now = self._now_ms()
        await store.insert_refresh_token(
            conn,
            token_id=self.ids.next_id(),
            token_hash=_hash_token(refresh),
            user_id=user_id,
            family_id=family_id,
            created_at=now,
            expires_at=now + self.refresh_ttl_ms,
        )
        return TokenPair(
            access_token=self.tokens.issue(user_id, family_id),
            expires_in=self.tokens.ttl_seconds,
            refresh_token=refresh,
            refresh_expires_in=self.refresh_ttl_ms // 1000,
        )

    async def refresh(self, refresh_token: str) -> TokenPair:
        invalid = Problem(
            401,
            "The refresh token is not valid",
            slug="invalid-refresh-token",
            title="Invalid refresh token",
            field="refresh_token",
        )
        now = self._now_ms()
        token_hash = _hash_token(refresh_token)
        async with self.db.begin() as conn:
            row = await store.refresh_token_by_hash(conn, token_hash)
            if row is not None:
                # Serialise with logout and password change on this account, then look
                # again: a revocation that committed while we waited must be seen.
                await store.lock_user(conn, row.user_id)
                row = await store.refresh_token_by_hash(conn, token_hash)
            if row is None or row.revoked_at is not None:
                raise invalid
            if row.expires_at <= now:
                raise Problem(
                    401,
                    "The refresh token has expired",
                    slug="refresh-token-expired",
                    title="Refresh token expired",
                    field="refresh_token",
                )
            if not await store.mark_refresh_token_used(conn, row.id, now):
                # Already rotated: a replayed (stolen) token. Revoke the whole login.
                await store.revoke_family(conn, row.family_id, now)
                reused = True
            else:
                reused = False
                pair = await self._issue(conn, row.user_id, row.family_id)
        if reused:
            raise Problem(
                401,
                "The refresh token was already used; this login is revoked",
                slug="refresh-token-reused",
                title="Refresh token reused",
                field="refresh_token",
            )
        return pair

    async def logout(self, refresh_token: str) -> None:
        """Revoke the login the token belongs to; unknown tokens are a quiet no-op."""
        async with self.db.begin() as conn:
            row = await store.refresh_token_by_hash(conn, _hash_token(refresh_token))
            if row is not None:
                await store.lock_user(conn, row.user_id)  # no rotation may slip past
                await store.revoke_family(conn, row.family_id, self._now_ms())

    async def get_user(self, user_id: int) -> store.UserRow:
        async with self.db.read() as conn:
            user = await store.user_by_id(conn, user_id)
        if user is None:
            raise Problem(
                404,
                "This account no longer exists",
                slug="account-not-found",
                title="Account not found",
            )
        return user

    async def update_profile(self, user_id: int, changes: dict[str, object]) -> store.UserRow:
        if changes:
            async with self.db.begin() as conn:
                await store.update_user(conn, user_id, **changes, updated_at=self._now_ms())
        return await self.get_user(user_id)

    async def change_password(self, user_id: int, current: str, new: str) -> None:
        """Verify the current password, set the new one, and revoke every refresh token of
        the account, this login's included. Access tokens live until they expire."""
        user = await self.get_user(user_id)
        if not await self.passwords.verify(user.password_hash, current):
            raise Problem(
                403,
                "The current password is not correct",
                slug="wrong-password",
                title="Wrong password",
                field="current_password",
            )
        new_hash = await self.passwords.hash(new)
        now = self._now_ms()
        async with self.db.begin() as conn:
            await store.lock_user(conn, user_id)
            await store.update_user(conn, user_id, password_hash=new_hash, updated_at=now)
            await store.revoke_user_tokens(conn, user_id, now)
