"""Who may call the shortener's API: bearer tokens, API keys, anonymous creators, admins.

- ``Owner``: the account a request acts for, from ``Authorization: Bearer``
  or ``X-API-Key`` (401 when neither is valid).
- ``Creator``: the same, or ``ANONYMOUS_OWNER`` when no credentials are sent
  and ``SYSDESIGN_SHORTENER_ANONYMOUS`` allows anonymous links.
- ``/v1/api-keys``: make, list and revoke keys, with a bearer token only.
- ``/v1/admin/links/{code}``: admins (``SYSDESIGN_ADMIN_EMAILS``) see any
  link and block or unblock it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from sysdesign.platform.accounts.security import (
    Principal,
    admin_user,
    current_user,
    optional_user,
)
from sysdesign.platform.http import Problem
from sysdesign.systems.shortener.apikeys import ApiKey, ApiKeys
from sysdesign.systems.shortener.schemas import (
    NOT_FOUND,
    UNAUTHORIZED,
    Code,
    LinkOut,
    link_out,
    problem,
)
from sysdesign.systems.shortener.service import ANONYMOUS_OWNER, LinkService

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="A key from POST /v1/api-keys"
)


def _keys(request: Request) -> ApiKeys:
    return request.app.state.api_keys


async def _from_key(request: Request, key: str) -> int:
    owner = await _keys(request).owner_of(key)
    if owner is None:
        raise Problem(401, "The API key is not valid or was revoked", slug="invalid-api-key",
                      title="Unauthorized", headers={"WWW-Authenticate": "ApiKey"})  # fmt: skip
    return owner


async def link_owner(
    request: Request,
    key: Annotated[str | None, Depends(_api_key)],
    principal: Annotated[Principal | None, Depends(optional_user)],
) -> int:
    if key is not None:
        return await _from_key(request, key)
    if principal is None:
        raise Problem(
            401,
            "This endpoint needs 'Authorization: Bearer <token>' or 'X-API-Key: <key>'",
            slug="missing-token",
            title="Unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="sysdesign"'},
        )
    return principal.user_id


async def link_creator(
    request: Request,
    key: Annotated[str | None, Depends(_api_key)],
    principal: Annotated[Principal | None, Depends(optional_user)],
) -> int:
    if key is None and principal is None and request.app.state.shortener_config.anonymous_creation:
        return ANONYMOUS_OWNER
    return await link_owner(request, key, principal)


Owner = Annotated[int, Depends(link_owner)]
Creator = Annotated[int, Depends(link_creator)]
User = Annotated[Principal, Depends(current_user)]
Admin = Annotated[Principal, Depends(admin_user)]


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["deploy script"])


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    created_at_ms: int


class NewApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself: shown this once, keep it secret")


class BlockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=200)


def _key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(id=str(key.id), name=key.name, prefix=key.prefix,
                     created_at_ms=key.created_at_ms)  # fmt: skip


ADMIN_ONLY = {403: problem("Not an admin account")}
KeyId = Annotated[str, Path(pattern=r"^[0-9]{1,19}$")]


def install(app: FastAPI, links: LinkService, keys: ApiKeys) -> None:
    app.state.api_keys = keys

    @app.post("/v1/api-keys", status_code=201, response_model=NewApiKeyOut, tags=["api keys"],
              summary="Make an API key for scripts", responses={**UNAUTHORIZED})  # fmt: skip
    async def create_key(body: CreateKeyRequest, user: User) -> NewApiKeyOut:
        key, secret = await keys.create(user.user_id, body.name)
        return NewApiKeyOut(**_key_out(key).model_dump(), key=secret)

    @app.get("/v1/api-keys", response_model=list[ApiKeyOut], tags=["api keys"],
             summary="Your API keys (not the keys themselves)",
             responses={**UNAUTHORIZED})  # fmt: skip
    async def list_keys(user: User) -> list[ApiKeyOut]:
        return [_key_out(k) for k in await keys.list(user.user_id)]

    @app.delete("/v1/api-keys/{key_id}", status_code=204, tags=["api keys"],
                summary="Revoke an API key",
                responses={**UNAUTHORIZED, 404: problem("No such key of yours")})  # fmt: skip
    async def revoke_key(key_id: KeyId, user: User) -> Response:
        await keys.revoke(user.user_id, int(key_id))
        return Response(status_code=204)

    @app.get("/v1/admin/links/{code}", response_model=LinkOut, tags=["admin"],
             summary="Any link, by code",
             responses={**UNAUTHORIZED, **ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def admin_get(code: Code, _admin: Admin, request: Request) -> LinkOut:
        return link_out(request, await links.find(code))

    @app.put("/v1/admin/links/{code}/block", response_model=LinkOut, tags=["admin"],
             summary="Block a link: its short URL answers 404 until unblocked",
             responses={**UNAUTHORIZED, **ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def block(code: Code, body: BlockRequest, _admin: Admin, request: Request) -> LinkOut:
        return link_out(request, await links.set_blocked(code, True, body.reason))

    @app.delete("/v1/admin/links/{code}/block", response_model=LinkOut, tags=["admin"],
                summary="Unblock a link",
                responses={**UNAUTHORIZED, **ADMIN_ONLY, **NOT_FOUND})  # fmt: skip
    async def unblock(code: Code, _admin: Admin, request: Request) -> LinkOut:
        return link_out(request, await links.set_blocked(code, False))
