"""``/accounts/v1``: register, login, refresh, logout, profile, password."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl

from sysdesign.platform.accounts.security import Principal, current_user
from sysdesign.platform.accounts.service import AccountService, TokenPair
from sysdesign.platform.accounts.store import UserRow
from sysdesign.platform.service_app import create_service_app

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

Password = Annotated[str, Field(min_length=8, max_length=1024)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Strict):
    email: Annotated[
        EmailStr,
        Field(
            description="A deliverable address: special-use domains (.test, .invalid) are refused"
        ),
    ]
    password: Password
    display_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class LoginRequest(_Strict):
    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class RefreshRequest(_Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class UpdateProfileRequest(_Strict):
    display_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    avatar_url: (
        Annotated[HttpUrl, Field(max_length=2048, json_schema_extra={"pattern": "^https?://"})]
        | None
    ) = None


class ChangePasswordRequest(_Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=1024)]
    new_password: Password


class UserOut(BaseModel):
    id: str
    email: str
    display_name: str | None
    avatar_url: str | None
    created_at: datetime

    @classmethod
    def of(cls, user: UserRow) -> UserOut:
        return cls(
            id=str(user.id),
            email=user.email,
            display_name=user.display_name,
            avatar_url=user.avatar_url,
            created_at=datetime.fromtimestamp(user.created_at / 1000, UTC),
        )


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenOut:
        return cls(
            access_token=pair.access_token,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
            refresh_expires_in=pair.refresh_expires_in,
        )


def _service(request: Request) -> AccountService:
    return request.app.state.platform.accounts


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Service = Annotated[AccountService, Depends(_service)]
User = Annotated[Principal, Depends(current_user)]


def create_app(platform: Platform) -> FastAPI:
    app = create_service_app(
        platform,
        name="accounts",
        title="Accounts",
        description="The shared User Service: registration, login and tokens for every system.",
    )

    @app.post("/v1/register", status_code=201, response_model=UserOut, tags=["accounts"])
    async def register(body: RegisterRequest, accounts: Service) -> UserOut:
        """Create an account. 409 if the e-mail is taken."""
        user = await accounts.register(str(body.email), body.password, body.display_name)
        return UserOut.of(user)

    @app.post("/v1/login", response_model=TokenOut, tags=["accounts"])
    async def login(body: LoginRequest, request: Request, accounts: Service) -> TokenOut:
        """Exchange e-mail and password for an access token and a refresh token."""
        return TokenOut.of(await accounts.login(body.email, body.password, _client_ip(request)))

    @app.post("/v1/refresh", response_model=TokenOut, tags=["accounts"])
    async def refresh(body: RefreshRequest, accounts: Service) -> TokenOut:
        """Rotate a refresh token: the old one stops working, a new pair is returned."""
        return TokenOut.of(await accounts.refresh(body.refresh_token))

    @app.post("/v1/logout", status_code=204, tags=["accounts"])
    async def logout(body: RefreshRequest, accounts: Service) -> Response:
        """Revoke the login this refresh token belongs to."""
        await accounts.logout(body.refresh_token)
        return Response(status_code=204)

    @app.get("/v1/me", response_model=UserOut, tags=["profile"])
    async def me(user: User, accounts: Service) -> UserOut:
        return UserOut.of(await accounts.get_user(user.user_id))

    @app.patch("/v1/me", response_model=UserOut, tags=["profile"])
    async def update_me(body: UpdateProfileRequest, user: User, accounts: Service) -> UserOut:
        changes = body.model_dump(exclude_unset=True, mode="json")
        return UserOut.of(await accounts.update_profile(user.user_id, changes))

    @app.post("/v1/me/password", status_code=204, tags=["profile"])
    async def change_password(
        body: ChangePasswordRequest, user: User, accounts: Service
    ) -> Response:
        """Change the password; every refresh token of the account is revoked."""
        await accounts.change_password(user.user_id, body.current_password, body.new_password)
        return Response(status_code=204)

    return app
