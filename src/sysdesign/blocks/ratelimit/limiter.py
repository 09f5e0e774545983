"""``RateLimiter``: applies rules to a request through a store, with failure policies.

Enforced rules are decided together, all-or-nothing (one round trip on
Redis); shadow rules are decided apart, so a shadow rule that would refuse
never stops the request nor keeps enforced limits from counting it. When the
store cannot answer, each rule's ``on_store_failure`` decides: ``open``
admits, ``closed`` refuses, ``local`` asks a per-process memory store with
the same limits (each process then admits up to the limit on its own, so
the shared limit is exceeded by up to the number of processes while the
store is down). Every outcome is counted per rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry, Counter

from sysdesign.blocks.ratelimit.base import Decision, Hit, RateLimitStore, StoreUnavailable
from sysdesign.blocks.ratelimit.rules import FailurePolicy, Policy, RequestInfo, Rule
from sysdesign.blocks.ratelimit.shedding import LoadShedder, Priority

log = structlog.get_logger("sysdesign.ratelimit")

OUTCOMES = ("allowed", "limited", "shadow_limited", "store_failure")


@dataclass(frozen=True, slots=True)
class RuleDecision:
    rule: str
    key: str
    decision: Decision
    shadow: bool = False
    fallback: str | None = None  # the failure policy that decided, when the store did not


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one request: ``allowed`` unless an enforced rule refused.

    ``deciding`` is the refusing rule with the longest wait, or, when the
    request was admitted, the rule closest to refusing (fewest remaining):
    the one whose numbers go into the response headers.
    """

    allowed: bool
    decisions: tuple[RuleDecision, ...] = ()
    deciding: RuleDecision | None = None

    @property
    def retry_after(self) -> float:
        return 0.0 if self.allowed or self.deciding is None else self.deciding.decision.retry_after

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``/``-Remaining``/``-Reset`` (IETF httpapi draft) and,
        when refused, ``Retry-After`` in whole seconds, rounded up."""
        if self.deciding is None:
            return {}
        d = self.deciding.decision
        headers = {
            "RateLimit-Limit": str(d.limit),
            "RateLimit-Remaining": str(max(d.remaining, 0)),
            "RateLimit-Reset": str(math.ceil(d.reset_after) if math.isfinite(d.reset_after) else 0),
        }
        if not self.allowed and math.isfinite(d.retry_after):
            # No Retry-After when waiting cannot help (a cost above the limit's capacity).
            headers["Retry-After"] = str(max(1, math.ceil(d.retry_after)))
        return headers


@dataclass
class _Planned:
    rule: Rule
    key: str
    hits: list[Hit] = field(default_factory=list)


class RateLimiter:
    def __init__(
        self,
        store: RateLimitStore,
        rules: Sequence[Rule],
        *,
        fallback: RateLimitStore,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.fallback = fallback
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.counts: dict[tuple[str, str], int] = {}
        self.policy = Policy(rules=self.rules)
        self.shedder: LoadShedder | None = None
        self._shed_metric = Counter(
            "ratelimit_shed_requests",
            "Requests refused by load shedding, by priority",
            ["priority"],
            registry=registry,
        )
        self._metric = Counter(
            "ratelimit_decisions",
            "Rate-limit decisions by rule and outcome",
            ["rule", "outcome"],
            registry=registry,
        )

    def set_rules(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)

    def set_policy(self, policy: Policy) -> None:
        """Rules, priorities and shedding from one document; requests in flight
        stay counted across a reload."""
        self.set_rules(policy.rules)
        self.policy = policy
        if policy.max_in_flight is None:
            self.shedder = None
        elif self.shedder is None:
            self.shedder = LoadShedder(policy.max_in_flight, dict(policy.thresholds))
        else:
            self.shedder.max_in_flight = policy.max_in_flight
            self.shedder.thresholds = dict(policy.thresholds)

    def priority_of(self, request: RequestInfo) -> Priority:
        return self.policy.priority_of(request)

    def count_shed(self, priority: Priority) -> None:
        self._shed_metric.labels(priority.name.lower()).inc()

    def _count(self, rule: str, outcome: str) -> None:
        self.counts[(rule, outcome)] = self.counts.get((rule, outcome), 0) + 1
        self._metric.labels(rule, outcome).inc()

    def plan(self, request: RequestInfo, cost: int = 1) -> list[_Planned]:
        planned = []
        for rule in self.rules:
            applied = rule.applies(request)
            if applied is None:
                continue
            key, limits = applied
            plan = _Planned(rule, key)
            for index, limit in enumerate(limits):
                # One counter per limit of the rule: "10/second" and "100/minute" differ.
                plan.hits.append(Hit(rule.algorithm, f"{key}#{index}", limit, cost))
            planned.append(plan)
        return planned

    async def check(self, request: RequestInfo, cost: int = 1) -> Verdict:
        planned = self.plan(request, cost)
        if not planned:
            return Verdict(allowed=True)
        enforced = [p for p in planned if not p.rule.shadow]
        shadow = [p for p in planned if p.rule.shadow]
        results = await self._decide(enforced) if enforced else []
        if shadow:
            results += [
                RuleDecision(r.rule, r.key, r.decision, shadow=True, fallback=r.fallback)
                for r in await self._decide(shadow)
            ]
        allowed = all(r.decision.allowed for r in results if not r.shadow)
        for r in results:
            if r.shadow:
                self._count(r.rule, "allowed" if r.decision.allowed else "shadow_limited")
                if not r.decision.allowed:
                    log.info("ratelimit.shadow_limited", rule=r.rule, key=r.key)
            elif not r.decision.allowed:
                self._count(r.rule, "limited")
            elif allowed:
                # A rule that would have passed a refused request consumed nothing.
                self._count(r.rule, "allowed")
        return Verdict(allowed, tuple(results), _deciding(results, allowed))

    async def _decide(self, planned: list[_Planned]) -> list[RuleDecision]:
        hits = [hit for p in planned for hit in p.hits]
        try:
            decisions = await self.store.hit_many(hits)
        except StoreUnavailable as exc:
            return await self._without_store(planned, exc)
        return _fold(planned, decisions)

    async def _without_store(
        self, planned: list[_Planned], error: StoreUnavailable
    ) -> list[RuleDecision]:
        results: list[RuleDecision] = []
        local = [p for p in planned if p.rule.on_store_failure == FailurePolicy.LOCAL]
        for p in planned:
            policy = p.rule.on_store_failure
            self._count(p.rule.name, "store_failure")
            log.warning(
                "ratelimit.store_unavailable",
                rule=p.rule.name,
                policy=str(policy),
                error=str(error),
            )
            if policy == FailurePolicy.LOCAL:
                continue
            first = p.hits[0]
            admitted = policy == FailurePolicy.OPEN
            decision = Decision(
                allowed=admitted,
                limit=first.limit.requests,
                remaining=first.limit.requests if admitted else 0,
                reset_after=first.limit.period,
                retry_after=0.0 if admitted else 1.0,
            )
            results.append(RuleDecision(p.rule.name, p.key, decision, fallback=str(policy)))
        if local:
            decisions = await self.fallback.hit_many([h for p in local for h in p.hits])
            results += [
                RuleDecision(r.rule, r.key, r.decision, fallback="local")
                for r in _fold(local, decisions)
            ]
        return results


def _fold(planned: list[_Planned], decisions: list[Decision]) -> list[RuleDecision]:
    """One decision per rule: refused if any of its limits refused (the longest
    wait), else the limit with the fewest remaining."""
    out = []
    at = 0
    for p in planned:
        mine = decisions[at : at + len(p.hits)]
        at += len(p.hits)
        refused = [d for d in mine if not d.allowed]
        chosen = (
            max(refused, key=lambda d: d.retry_after)
            if refused
            else min(mine, key=lambda d: d.remaining)
        )
        out.append(RuleDecision(p.rule.name, p.key, chosen))
    return out


def _deciding(results: list[RuleDecision], allowed: bool) -> RuleDecision | None:
    enforced = [r for r in results if not r.shadow]
    if not enforced:
        return None
    if not allowed:
        return max(
            (r for r in enforced if not r.decision.allowed), key=lambda r: r.decision.retry_after
        )
    return min(enforced, key=lambda r: r.decision.remaining)
