"""``/ratelimiter/v1``: decisions for any descriptors, the rules and their counts, reload."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from sysdesign.blocks.ratelimit.limiter import RateLimiter, RuleDecision
from sysdesign.blocks.ratelimit.rules import DESCRIPTORS, RequestInfo, Rule, RulesError
from sysdesign.platform.http import Problem
from sysdesign.platform.service_app import create_service_app

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

OUTCOMES = ("allowed", "limited", "shadow_limited", "store_failure")
DESCRIPTOR_NAME = r"^(ip|user|api_key|path|method|system|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckRequest(_Strict):
    descriptors: Annotated[
        dict[
            Annotated[str, StringConstraints(pattern=DESCRIPTOR_NAME)],
            Annotated[str, Field(max_length=512)],
        ],
        Field(
            max_length=32,
            # Names outside the pattern are refused: say so in the document too.
            json_schema_extra={"additionalProperties": False},
            description="Values by descriptor: ip, user, api_key, path, method, system, "
            "or header:<name>",
            examples=[{"ip": "203.0.113.7", "user": "42"}],
        ),
    ]
    hits: Annotated[int, Field(ge=1, le=1_000_000, description="How much to consume")] = 1

    @field_validator("descriptors")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in DESCRIPTORS and not (name.startswith("header:") and len(name) > 7):
                raise ValueError(
                    f"unknown descriptor {name!r}: use {', '.join(DESCRIPTORS)} or header:<name>"
                )
        return value

    def request_info(self) -> RequestInfo:
        d = self.descriptors
        headers = {k[len("header:") :].lower(): v for k, v in d.items() if k.startswith("header:")}
        return RequestInfo(
            system=d.get("system", ""),
            method=d.get("method", "").upper(),
            path=d.get("path", ""),
            ip=d.get("ip"),
            user=d.get("user"),
            api_key=d.get("api_key"),
            headers=headers,
        )


NEVER = "null when waiting cannot help: the cost is above the limit's capacity"


def _seconds(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


class RuleDecisionOut(BaseModel):
    rule: str
    key: str
    allowed: bool
    limit: int
    remaining: int
    reset_after: float | None
    retry_after: Annotated[float | None, Field(description=NEVER)]
    shadow: bool
    fallback: str | None = Field(description="open, closed or local when the store was down")

    @classmethod
    def of(cls, r: RuleDecision) -> RuleDecisionOut:
        d = r.decision
        return cls(
            rule=r.rule,
            key=r.key,
            allowed=d.allowed,
            limit=d.limit,
            remaining=max(d.remaining, 0),
            reset_after=_seconds(d.reset_after),
            retry_after=_seconds(d.retry_after),
            shadow=r.shadow,
            fallback=r.fallback,
        )


class CheckResponse(BaseModel):
    allowed: bool
    rule: str | None = Field(description="The deciding rule: the refusing one, or the closest")
    limit: int | None
    remaining: int | None
    reset_after: float | None
    retry_after: Annotated[float | None, Field(description=NEVER)]
    decisions: list[RuleDecisionOut]


class LimitOut(BaseModel):
    requests: int
    period_seconds: float
    burst: int | None


class RuleOut(BaseModel):
    name: str
    match: dict[str, str]
    descriptors: list[str]
    algorithm: str
    limits: list[LimitOut]
    shadow: bool
    on_store_failure: str
    overrides: list[dict[str, Any]]
    counts: dict[str, int]

    @classmethod
    def of(cls, rule: Rule, limiter: RateLimiter) -> RuleOut:
        def limits(items: Any) -> list[LimitOut]:
            return [
                LimitOut(requests=x.requests, period_seconds=x.period, burst=x.burst) for x in items
            ]

        return cls(
            name=rule.name,
            match=rule.match.model_dump(exclude_none=True),
            descriptors=list(rule.descriptors),
            algorithm=str(rule.algorithm),
            limits=limits(rule.limits),
            shadow=rule.shadow,
            on_store_failure=str(rule.on_store_failure),
            overrides=[
                {"values": dict(values), "limits": [x.model_dump() for x in limits(items)]}
                for values, items in rule.overrides
            ],
            counts={o: limiter.counts.get((rule.name, o), 0) for o in OUTCOMES},
        )


class RulesOut(BaseModel):
    source: str
    last_reload_error: str | None
    rules: list[RuleOut]


def create_app(platform: Platform) -> FastAPI:
    app = create_service_app(
        platform,
        name="ratelimiter",
        title="Rate limiter",
        description="Decisions for any descriptors under the gateway's rules; the rules, "
        "their counts, and reloading them.",
    )

    @app.post("/v1/check", response_model=CheckResponse)
    async def check(body: CheckRequest) -> CheckResponse:
        """Consume ``hits`` under every rule the descriptors match; 200 either way."""
        verdict = await platform.rate_limiter.check(body.request_info(), body.hits)
        deciding = verdict.deciding
        d = deciding.decision if deciding else None
        return CheckResponse(
            allowed=verdict.allowed,
            rule=deciding.rule if deciding else None,
            limit=d.limit if d else None,
            remaining=max(d.remaining, 0) if d else None,
            reset_after=_seconds(d.reset_after) if d else None,
            retry_after=_seconds(verdict.retry_after),
            decisions=[RuleDecisionOut.of(r) for r in verdict.decisions],
        )

    @app.get("/v1/rules", response_model=RulesOut)
    async def rules() -> RulesOut:
        limiter = platform.rate_limiter
        source = platform.ratelimit_rules
        return RulesOut(
            source=source.name,
            last_reload_error=source.last_error,
            rules=[RuleOut.of(r, limiter) for r in limiter.rules],
        )

    @app.post("/v1/rules/reload", response_model=RulesOut)
    async def reload() -> RulesOut:
        """Read the rules file again now; an invalid file is refused (422) and the
        rules in force stay."""
        try:
            platform.ratelimit_rules.reload_into(platform.rate_limiter)
        except RulesError as exc:
            raise Problem(422, str(exc), slug="rules-invalid", title="Invalid rules") from None
        return await rules()

    return app
