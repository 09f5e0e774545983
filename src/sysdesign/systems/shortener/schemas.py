"""The shortener's request and response models, shared by its routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Request
from pydantic import BaseModel, ConfigDict, Field

from sysdesign.platform.http import ProblemDetail
from sysdesign.systems.shortener import domain
from sysdesign.systems.shortener.domain import Link, LinkInvalid
from sysdesign.systems.shortener.service import NewLink

MAX_VISITS = 2**53 - 1  # exact in every JSON parser, JavaScript's too
Code = Annotated[str, Path(min_length=1, max_length=domain.ALIAS_MAX, pattern=r"^[A-Za-z0-9_-]+$")]
Tag = Annotated[
    str,
    Field(min_length=1, max_length=domain.MAX_TAG_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"),
]
Tags = Annotated[list[Tag], Field(max_length=domain.MAX_TAGS)]
Target = Annotated[
    str, Field(min_length=1, max_length=domain.MAX_URL_CHARS, examples=["https://example.com/a"])
]
Title = Annotated[str, Field(max_length=domain.MAX_TITLE_CHARS)]
MaxVisits = Annotated[int, Field(ge=1, le=MAX_VISITS)]
Status = Literal[301, 302]
Password = Annotated[
    str,
    Field(
        min_length=domain.MIN_PASSWORD_CHARS,
        max_length=domain.MAX_PASSWORD_CHARS,
        description="Visitors must type it before they are redirected",
    ),
]


class CreateLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: Target
    alias: (
        Annotated[
            str,
            Field(
                min_length=domain.ALIAS_MIN,
                max_length=domain.ALIAS_MAX,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="Your own code; reserved words and 7 plain letters and digits "
                "(the shape of generated codes) are refused",
            ),
        ]
        | None
    ) = None
    title: Title | None = None
    tags: Tags = []
    expires_at: datetime | None = Field(None, description="After this, the link answers 410")
    max_visits: MaxVisits | None = Field(None, description="After this many visits, 410")
    redirect_status: Status = 302
    forward_query: bool = Field(False, description="Append the visit's query string")
    password: Password | None = None

    def new_link(self) -> NewLink:
        return NewLink(
            target=self.target,
            alias=self.alias,
            title=self.title,
            tags=tuple(self.tags),
            expires_at_ms=to_ms(self.expires_at),
            max_visits=self.max_visits,
            redirect_status=self.redirect_status,
            forward_query=self.forward_query,
            password=self.password,
        )


class UpdateLinkRequest(BaseModel):
    """Only the fields sent change; `null` clears title, expires_at and max_visits."""

    model_config = ConfigDict(extra="forbid")

    target: Target | None = None
    title: Title | None = None
    tags: Tags | None = None
    expires_at: datetime | None = None
    max_visits: MaxVisits | None = None
    redirect_status: Status | None = None
    forward_query: bool | None = None
    enabled: bool | None = Field(None, description="false: the short URL answers 404")
    password: Password | None = Field(None, description="null removes the password")


class LinkOut(BaseModel):
    id: str
    code: str
    short_url: str
    target: str
    custom: bool
    title: str | None
    tags: list[str]
    expires_at: datetime | None
    max_visits: int | None
    visits: int = Field(description="Counted for links with max_visits")
    redirect_status: int
    forward_query: bool
    enabled: bool
    password_protected: bool
    blocked: bool = Field(description="Blocked by an admin: answers 404 whatever enabled says")
    blocked_reason: str | None
    created_at: datetime
    updated_at: datetime


def as_time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
    try:
        return int(value.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise LinkInvalid("expires_at", "the expiry is out of range") from None


def short_url(request: Request, code: str) -> str:
    public = request.app.state.platform.settings.public_url
    base = public.rstrip("/") if public else f"{request.url.scheme}://{request.url.netloc}"
    return f"{base}/s/{code}"


def link_out(request: Request, link: Link) -> LinkOut:
    return LinkOut(
        id=str(link.id),
        code=link.code,
        short_url=short_url(request, link.code),
        target=link.target,
        custom=link.custom,
        title=link.title,
        tags=link.tags,
        expires_at=as_time(link.expires_at_ms),
        max_visits=link.max_visits,
        visits=link.visits,
        redirect_status=link.redirect_status,
        forward_query=link.forward_query,
        enabled=link.enabled,
        password_protected=link.password_hash is not None,
        blocked=link.blocked,
        blocked_reason=link.blocked_reason,
        created_at=as_time(link.created_at_ms),  # type: ignore[arg-type]
        updated_at=as_time(link.updated_at_ms),  # type: ignore[arg-type]
    )


def problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetail, "description": description}


NOT_FOUND = {404: problem("No link with this code is yours")}
UNAUTHORIZED = {401: problem("Missing, invalid or expired bearer token")}
