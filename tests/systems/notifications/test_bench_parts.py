"""The benchmark's pure helpers: seeded rows, spacing, percentiles, rates."""

from __future__ import annotations

import pytest

from sysdesign.blocks.notify.base import Channel, Priority
from sysdesign.systems.notifications import bench_parts as parts


def test_subscriber_rows_cover_the_ids_with_the_receiver() -> None:
    rows = parts.subscriber_rows(11, 3, "http://127.0.0.1:9/hook", "whsec_x", 1000)
    assert [r["user_id"] for r in rows] == [11, 12, 13]
    assert {r["webhook_url"] for r in rows} == {"http://127.0.0.1:9/hook"}
    assert {r["webhook_secret"] for r in rows} == {"whsec_x"}


def test_batches_cover_everything_once() -> None:
    assert list(parts.batches(2500, 1000)) == [(0, 1000), (1000, 1000), (2000, 500)]
    assert list(parts.batches(0, 10)) == []
    with pytest.raises(ValueError):
        list(parts.batches(5, 0))


def test_spread_gives_distinct_ids_in_range() -> None:
    ids = parts.spread(50, 2000)
    assert len(set(ids)) == 50
    assert min(ids) == 1
    assert max(ids) <= 2000
    assert parts.spread(10, 3) == [1, 2, 3]
    assert parts.spread(0, 100) == []


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert parts.percentile(values, 50) == 50.0
    assert parts.percentile(values, 99) == 99.0
    assert parts.percentile(values, 100) == 100.0
    assert parts.percentile([3.0], 99) == 3.0
    assert parts.percentile([], 50) is None
    with pytest.raises(ValueError):
        parts.percentile(values, 101)


def test_latency_summary_in_milliseconds() -> None:
    summary = parts.latency_summary([0.001, 0.002, 0.004])
    assert summary == {"count": 3, "p50_ms": 2.0, "p99_ms": 4.0, "max_ms": 4.0}
    assert parts.latency_summary([])["p99_ms"] is None


def test_rate_and_ratio() -> None:
    assert parts.rate(100, 4.0) == 25.0
    assert parts.rate(100, 0.0) is None
    assert parts.rate(100, None) is None
    assert parts.ratio(25.0, 100.0) == 0.25
    assert parts.ratio(48.5, 93288.9) == 0.00052
    assert parts.ratio(None, 100.0) is None
    assert parts.ratio(25.0, 0.0) is None


def test_templates_bulk_and_critical() -> None:
    bulk, otp = parts.templates()
    assert bulk.priority is Priority.BULK and not bulk.critical
    assert set(bulk.channels) == {Channel.IN_APP, Channel.WEBHOOK}
    assert otp.priority is Priority.CRITICAL and otp.critical
    assert set(otp.channels) == {Channel.IN_APP}
