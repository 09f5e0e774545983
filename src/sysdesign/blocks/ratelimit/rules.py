"""Rules: which requests a limit applies to, and what it counts them by.

The model is Envoy's ratelimit service. A rule *matches* requests (by system,
method, path prefix, or a header's presence) and names *descriptors*, the
request attributes whose values make up the counting key: ``ip``, ``user``,
``api_key``, ``path``, ``method``, ``system``, or ``header:<name>``. A rule
whose descriptor is absent from a request (no user on an anonymous request)
does not apply to it. A rule carries one or more limits, all of which must
pass; ``overrides`` give particular descriptor values their own limits;
``shadow`` rules count and log but never refuse.

Rules come from a YAML document, validated on load with errors that name the
rule and the field::

    rules:
      - name: register-per-ip
        match: {method: POST, path: /accounts/v1/register}
        descriptors: [ip]
        algorithm: sliding_window
        limits: [5/minute, 20/hour]
      - name: api-per-user
        descriptors: [user]
        algorithm: token_bucket
        limits: [600/minute]
        burst: 100
        on_store_failure: local        # open | closed | local
        overrides:
          - values: {user: "42"}
            limits: [6000/minute]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sysdesign.blocks.ratelimit.base import Algorithm, Limit
from sysdesign.blocks.ratelimit.shedding import DEFAULT_THRESHOLDS, Priority

UNITS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hr", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)?\s*([a-z]+?)s?\s*$")
DESCRIPTORS = ("ip", "user", "api_key", "path", "method", "system")


class RulesError(ValueError):
    """The rules document is invalid; the message names every problem."""


class FailurePolicy(StrEnum):
    OPEN = "open"  # admit while the store is down
    CLOSED = "closed"  # refuse while the store is down
    LOCAL = "local"  # decide with a per-process limiter while the store is down


def parse_limit(text: str, burst: int | None = None) -> Limit:
    """``"100/minute"``, ``"10/s"``, ``"5/15m"`` (5 per 15 minutes), ``"1000/day"``."""
    found = _LIMIT.match(text.lower()) if isinstance(text, str) else None
    if not found or found.group(3) not in UNITS:
        raise ValueError(
            f"{text!r} is not a limit: write N/unit or N/<k><unit> with unit second, minute, "
            "hour or day (s, m, h, d), e.g. 100/minute or 5/15m"
        )
    count, multiple, unit = found.groups()
    return Limit(int(count), int(multiple or 1) * UNITS[unit], burst)


def _descriptor(name: str) -> str:
    if name in DESCRIPTORS or (name.startswith("header:") and len(name) > len("header:")):
        return name
    raise ValueError(
        f"unknown descriptor {name!r}: use one of {', '.join(DESCRIPTORS)} or header:<name>"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    system: str | None = None
    method: str | None = None
    path: str | None = Field(default=None, description="a path prefix, starting with /")
    header: str | None = Field(default=None, description="applies only when this header is sent")

    @field_validator("method")
    @classmethod
    def _method(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("a path prefix starts with /")
        return value


class Override(_Strict):
    values: dict[str, str]
    limits: list[str] = Field(min_length=1)


class RuleModel(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    match: Match = Match()
    descriptors: list[str] = Field(min_length=1)
    algorithm: Algorithm = Algorithm.TOKEN_BUCKET
    limits: list[str] = Field(min_length=1)
    burst: int | None = Field(default=None, ge=1)
    shadow: bool = False
    on_store_failure: FailurePolicy = FailurePolicy.LOCAL
    overrides: list[Override] = []

    @field_validator("descriptors")
    @classmethod
    def _descriptors(cls, value: list[str]) -> list[str]:
        return [_descriptor(d) for d in value]

    @model_validator(mode="after")
    def _limits_and_overrides(self) -> RuleModel:
        for text in self.limits:
            parse_limit(text, self.burst)
        for override in self.overrides:
            unknown = set(override.values) - set(self.descriptors)
            if unknown:
                raise ValueError(
                    f"override values {sorted(unknown)} are not descriptors of this rule"
                )
            for text in override.limits:
                parse_limit(text, self.burst)
        return self


class SheddingModel(_Strict):
    max_in_flight: int = Field(ge=1, description="requests in flight in one process at most")
    thresholds: dict[Priority, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: {p.name.lower(): v for p, v in DEFAULT_THRESHOLDS.items()},
        description="share of max_in_flight above which each priority is shed",
    )

    @field_validator("thresholds", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for name, share in value.items():
                if str(name).upper() not in Priority.__members__ or str(name).lower() == "critical":
                    raise ValueError(
                        f"unknown priority {name!r}: thresholds are for high, normal and low "
                        "(critical may always use the whole capacity)"
                    )
                out[Priority[str(name).upper()]] = share
            return out
        return value


class PriorityModel(_Strict):
    match: Match
    priority: Annotated[str, Field(pattern=r"^(critical|high|normal|low)$")]


class RulesDocument(_Strict):
    rules: list[RuleModel] = []
    shedding: SheddingModel | None = None
    priorities: list[PriorityModel] = []

    @model_validator(mode="after")
    def _unique(self) -> RulesDocument:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)} repeated")
        return self


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What rules look at; the gateway builds it from the HTTP request."""

    system: str
    method: str
    path: str
    ip: str | None = None
    user: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names

    def value(self, descriptor: str) -> str | None:
        if descriptor.startswith("header:"):
            return self.headers.get(descriptor[len("header:") :].lower())
        return getattr(self, descriptor)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    descriptors: tuple[str, ...]
    algorithm: Algorithm
    limits: tuple[Limit, ...]
    shadow: bool
    on_store_failure: FailurePolicy
    overrides: tuple[tuple[Mapping[str, str], tuple[Limit, ...]], ...]

    @classmethod
    def from_model(cls, model: RuleModel) -> Rule:
        return cls(
            name=model.name,
            match=model.match,
            descriptors=tuple(model.descriptors),
            algorithm=model.algorithm,
            limits=tuple(parse_limit(t, model.burst) for t in model.limits),
            shadow=model.shadow,
            on_store_failure=model.on_store_failure,
            overrides=tuple(
                (o.values, tuple(parse_limit(t, model.burst) for t in o.limits))
                for o in model.overrides
            ),
        )

    def matches(self, request: RequestInfo) -> bool:
        return _matches(self.match, request)

    def applies(self, request: RequestInfo) -> tuple[str, tuple[Limit, ...]] | None:
        """The counting key and limits for ``request``, or ``None`` when the rule
        does not apply (no match, or a descriptor is absent)."""
        if not self.matches(request):
            return None
        values = {}
        for descriptor in self.descriptors:
            value = request.value(descriptor)
            if value is None or value == "":
                return None
            values[descriptor] = value
        limits = self.limits
        for wanted, override_limits in self.overrides:
            if all(values.get(k) == v for k, v in wanted.items()):
                limits = override_limits
                break
        key = "|".join([self.name, *(f"{d}={values[d]}" for d in self.descriptors)])
        return key, limits


def _matches(m: Match, request: RequestInfo) -> bool:
    return (
        (m.system is None or m.system == request.system)
        and (m.method is None or m.method == request.method)
        and (m.path is None or request.path.startswith(m.path))
        and (m.header is None or m.header.lower() in request.headers)
    )


def _describe(error: ValidationError, rules: Sequence[Any]) -> str:
    problems = []
    for item in error.errors():
        location = list(item["loc"])
        where = ".".join(str(p) for p in location)
        if len(location) >= 2 and location[0] == "rules" and isinstance(location[1], int):
            index = location[1]
            raw = rules[index] if index < len(rules) else None
            name = raw.get("name") if isinstance(raw, dict) else None
            rest = ".".join(str(p) for p in location[2:])
            where = f"rule {name!r}" if name else f"rule #{index + 1}"
            where += f" field {rest}" if rest else ""
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole rules document: the rate-limit rules, and load shedding with the
    priorities of requests (first matching entry wins; default normal)."""

    rules: tuple[Rule, ...] = ()
    max_in_flight: int | None = None
    thresholds: Mapping[Priority, float] = field(default_factory=dict)
    priorities: tuple[tuple[Match, Priority], ...] = ()

    def priority_of(self, request: RequestInfo) -> Priority:
        for match, priority in self.priorities:
            if _matches(match, request):
                return priority
        return Priority.NORMAL


def load_rules(text: str, *, source: str = "rules") -> list[Rule]:
    """Parse and validate a YAML rules document; ``RulesError`` names each problem."""
    return list(load_policy(text, source=source).rules)


def load_policy(text: str, *, source: str = "rules") -> Policy:
    """The whole document: rules, shedding and priorities."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: the document must be a mapping with a 'rules' list")
    try:
        document = RulesDocument.model_validate(raw)
    except ValidationError as exc:
        rules = raw.get("rules") if isinstance(raw.get("rules"), list) else []
        raise RulesError(f"{source}: {_describe(exc, rules)}") from None
    shedding = document.shedding
    return Policy(
        rules=tuple(Rule.from_model(m) for m in document.rules),
        max_in_flight=shedding.max_in_flight if shedding else None,
        thresholds={**DEFAULT_THRESHOLDS, **shedding.thresholds} if shedding else {},
        priorities=tuple((p.match, Priority[p.priority.upper()]) for p in document.priorities),
    )
