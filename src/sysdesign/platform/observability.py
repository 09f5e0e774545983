"""Structured logs (structlog, JSON by default) and Prometheus metrics.

Metrics live in a registry owned by the ``Platform``, not prometheus-client's
process-global one, so two apps in one process (tests) never share counters.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    from sysdesign.platform.db import ShardRouter

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def configure_logging(level: str = "info", fmt: str = "json", *, cache: bool = True) -> None:
    """Route structlog and stdlib logging to stdout, one JSON object per line.

    Records from libraries (stdlib ``logging``) get the same shape as ours.
    ``cache=False`` lets tests reconfigure after loggers were first used.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    json_lines = fmt == "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=orjson.dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No file given: each logger writes to the sys.stdout of when it was made.
        # orjson renders bytes, written as they are with no decode and re-encode.
        logger_factory=(
            structlog.BytesLoggerFactory() if json_lines else structlog.PrintLoggerFactory()
        ),
        cache_logger_on_first_use=cache,
    )
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer() if json_lines else renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time of the record."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)


class HttpMetrics:
    """Request counts and latency histograms by system, route template, method and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered",
            ("system", "route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the last body byte",
            ("system", "route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Counter(
            "http_requests_rejected",
            "Requests refused before the application saw them",
            ("reason",),
            registry=registry,
        )


class DbMetrics:
    """SQL statements sent to each database shard (``db_statements_total{shard}``),
    so that "a cached read makes no query" is a number on ``/metrics``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.statements = Counter(
            "db_statements",
            "SQL statements sent to a database shard, BEGIN and COMMIT included",
            ("shard",),
            registry=registry,
        )

    def watch(self, router: ShardRouter) -> None:
        """Count every statement of every shard of ``router`` (label: shard index)."""
        for index, database in enumerate(router.shards):
            database.on_statement(self.statements.labels(str(index)).inc)
