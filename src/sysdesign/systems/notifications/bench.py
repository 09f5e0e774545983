"""``sysdesign bench notifications``: one trigger to a topic of N subscribers.

Everything runs on the embedded defaults in a temporary data directory
(SQLite database, SQLite queue, in-memory realtime) with the notification
workers on, in this process; the webhook receiver runs in a second process
(``bench_receiver``) so that verifying signatures does not share the event
loop with the system being measured. Subscribers and their topic
subscriptions are bulk-inserted through the store (a benchmark of fan-out,
not of N sign-ups); each has a webhook to the receiver. Then:

- one trigger of the bulk template (in-app + webhook) to the topic, through
  ``NotificationsClient``; measured with the real clock from just before
  the call: time until the fan-out is done (every message row written),
  deliveries/s per channel (inbox items stored; webhooks answered 2xx,
  counted by the receiver), p50/p99 trigger-to-inbox latency (the inbox
  item's ``created_at`` minus the trigger time) and trigger-to-webhook;
- while that runs, K one-time codes (critical template, in-app) to single
  users, spaced ``otp_interval`` seconds apart: their trigger-to-inbox
  p50/p99, which is what "bulk never delays critical" promises.

A channel's deliveries/s is its deliveries divided by the seconds from the
trigger to its last delivery, fan-out included. Progress is read every
``POLL_SECONDS`` (a count over the inbox, the event's ``fanout_done``, the
receiver's count): a small load on the process measured, and the
resolution of the fan-out time.

Anchor: the same SQLite database inserting the same number of inbox rows,
1,000 per transaction, after the run: what storage alone can do. The
ratio is in-app deliveries/s ÷ raw rows/s. The anchor is storage rather
than the receiver's request rate because every in-app delivery ends in
that insert, while a webhook's cost is mostly the HTTP client and server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, insert, select

from sysdesign.benchmarks.machine import machine_info, package_versions
from sysdesign.benchmarks.results import utc_now, write_result
from sysdesign.benchmarks.server import free_port
from sysdesign.systems.notifications import bench_parts as parts
from sysdesign.systems.notifications.service import new_webhook_secret
from sysdesign.systems.notifications.tables import (
    events_table,
    inbox_items_table,
    messages_table,
    subscribers_table,
    topic_subscriptions_table,
)

ROW_BATCH = 1000
POLL_SECONDS = 0.1


class Receiver:
    """The receiver process: started, polled for its count, stopped for its arrivals."""

    def __init__(self, secret: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sysdesign.systems.notifications.bench_receiver",
             str(self.port), secret],
        )  # fmt: skip

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        for _ in range(300):  # bounded: thirty seconds
            try:
                await client.get(f"http://127.0.0.1:{self.port}/count")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        raise RuntimeError("the webhook receiver did not start")

    async def count(self, client: httpx.AsyncClient) -> int:
        return int((await client.get(f"http://127.0.0.1:{self.port}/count")).text)

    async def arrivals(self, client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.get(f"http://127.0.0.1:{self.port}/arrivals", timeout=120)
        return orjson.loads(response.content)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=60)


async def _seed(platform: Any, count: int, url: str, secret: str) -> tuple[float, int]:
    """Templates, subscribers, the topic and its subscriptions; seconds taken, topic id."""
    from sysdesign.systems.notifications import store
    from sysdesign.systems.notifications.service import NotificationService

    started = time.perf_counter()
    service = NotificationService(platform)
    for template in parts.templates():
        await service.put_template(template)
    now_ms = int(time.time() * 1000)
    topic, _ = await service.put_topic(parts.TOPIC, "Everyone (benchmark)")
    db = platform.db.primary
    for start, size in parts.batches(count, ROW_BATCH * 10):
        rows = parts.subscriber_rows(1 + start, size, url, secret, now_ms)
        subs = [{"topic_id": topic.id, "user_id": r["user_id"], "created_at": now_ms}
                for r in rows]  # fmt: skip
        async with db.begin() as conn:
            await conn.execute(insert(subscribers_table), rows)
            await conn.execute(insert(topic_subscriptions_table), subs)
    async with db.read() as conn:
        assert await store.subscriber_count(conn, topic.id) == count
    return time.perf_counter() - started, topic.id


async def _scalar(platform: Any, query: Any) -> Any:
    async with platform.db.primary.read() as conn:
        return (await conn.execute(query)).scalar_one()


async def _send_codes(
    client: Any, user_ids: list[int], interval: float, sent: dict[int, float]
) -> None:
    for n, user_id in enumerate(user_ids):
        at = time.time()
        done = await client.trigger(
            parts.OTP_TEMPLATE, user_ids=[user_id], data={"code": f"{n:06d}"}
        )
        sent[done.event_id] = at
        await asyncio.sleep(interval)


async def _measure(
    platform: Any, receiver: Receiver, count: int, codes: int, otp_interval: float,
    timeout: float, console: Console,
) -> dict[str, Any]:  # fmt: skip
    from sysdesign.systems.notifications.client import NotificationsClient

    client = NotificationsClient(platform, "bench")
    m, inbox, e = messages_table, inbox_items_table, events_table
    async with httpx.AsyncClient() as http:
        await receiver.wait_ready(http)
        otp_sent: dict[int, float] = {}
        trigger_at = time.time()
        event = await client.trigger(
            parts.BULK_TEMPLATE, topic=parts.TOPIC, data={"headline": "Hello"}
        )
        codes_task = asyncio.create_task(
            _send_codes(client, parts.spread(codes, count), otp_interval, otp_sent)
        )
        fanout_seconds: float | None = None
        inbox_count = webhook_count = 0
        deadline = time.monotonic() + timeout
        last_print = 0.0
        while time.monotonic() < deadline:
            if fanout_seconds is None and await _scalar(
                platform, select(e.c.fanout_done).where(e.c.id == event.event_id)
            ):
                fanout_seconds = time.time() - trigger_at
            inbox_count = await _scalar(
                platform,
                select(func.count()).select_from(inbox).join(m, m.c.id == inbox.c.message_id)
                .where(m.c.event_id == event.event_id),
            )  # fmt: skip
            webhook_count = await receiver.count(http)
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                console.print(f"  {time.time() - trigger_at:6.1f} s: fan-out "
                              f"{'done' if fanout_seconds else 'running'}, inbox {inbox_count}, "
                              f"webhooks {webhook_count} of {count}")  # fmt: skip
            if inbox_count >= count and webhook_count >= count and codes_task.done():
                break
            await asyncio.sleep(POLL_SECONDS)
        finished = codes_task.done()
        codes_task.cancel()
        # The codes' own inbox items may come a moment after the bulk finished.
        for _ in range(100):
            query = select(func.count()).select_from(inbox).join(m, m.c.id == inbox.c.message_id)
            got = await _scalar(platform, query.where(m.c.event_id.in_(list(otp_sent))))
            if got >= len(otp_sent):
                break
            await asyncio.sleep(POLL_SECONDS)
    async with platform.db.primary.read() as conn:
        bulk_rows = (await conn.execute(
            select(inbox.c.created_at).join(m, m.c.id == inbox.c.message_id)
            .where(m.c.event_id == event.event_id))).scalars().all()  # fmt: skip
        otp_rows = (await conn.execute(
            select(m.c.event_id, m.c.created_at, m.c.claimed_at, inbox.c.created_at)
            .join(m, m.c.id == inbox.c.message_id)
            .where(m.c.event_id.in_(list(otp_sent))))).all()  # fmt: skip
        statuses = (await conn.execute(
            select(m.c.channel, m.c.status, func.count()).where(m.c.event_id == event.event_id)
            .group_by(m.c.channel, m.c.status))).all()  # fmt: skip
    return {
        "trigger_at": trigger_at,
        "fanout_seconds": fanout_seconds,
        "bulk_inbox_ms": list(bulk_rows),
        "otp": [(otp_sent[eid], *times) for eid, *times in otp_rows],
        "otp_sent": len(otp_sent),
        "codes_finished": finished,
        "statuses": {f"{c}:{s}": int(n) for c, s, n in statuses},
    }


async def _anchor(platform: Any, count: int) -> dict[str, Any]:
    """Raw inserts of ``count`` inbox rows, ``ROW_BATCH`` per transaction, same database."""
    db = platform.db.primary
    base = 10**15  # ids far above the snowflakes and the seeded users
    started = time.perf_counter()
    for start, size in parts.batches(count, ROW_BATCH):
        now_ms = int(time.time() * 1000)
        rows = [{"id": base + i, "user_id": 1 + i, "message_id": base + i, "title": "News",
                 "body": "Hello", "data": '{"headline":"Hello"}', "read_at": None,
                 "archived_at": None, "created_at": now_ms}
                for i in range(start, start + size)]  # fmt: skip
        async with db.begin() as conn:
            await conn.execute(insert(inbox_items_table), rows)
    seconds = time.perf_counter() - started
    return {"rows": count, "seconds": round(seconds, 3), "rows_per_s": parts.rate(count, seconds)}


async def _run(options: dict[str, Any], tmp: Path, console: Console) -> dict[str, Any]:
    from sysdesign.platform.app import create_app
    from sysdesign.settings import Settings

    count = options["subscribers"]
    secret = new_webhook_secret()
    receiver = Receiver(secret)
    try:
        settings = Settings(data_dir=tmp / "data", access_log=False, ratelimit_enabled=False)
        app = create_app(settings, only=["accounts", "notifications"])
        platform = app.state.platform
        async with app.router.lifespan_context(app):
            seed_seconds, _ = await _seed(platform, count, receiver.url, secret)
            console.print(f"seeded {count} subscribers in {seed_seconds:.1f} s")
            run = await _measure(platform, receiver, count, options["codes"],
                                 options["otp_interval"], options["timeout"], console)  # fmt: skip
            async with httpx.AsyncClient() as http:
                received = await receiver.arrivals(http)
            anchor = await _anchor(platform, count)
    finally:
        receiver.stop()
    return _summarize(options, seed_seconds, run, received, anchor)


def _summarize(
    options: dict[str, Any], seed_seconds: float, run: dict[str, Any],
    received: dict[str, Any], anchor: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    t0 = run["trigger_at"]
    inbox_lat = [ms / 1000 - t0 for ms in run["bulk_inbox_ms"]]
    hooks = [at - t0 for template, at in received["arrivals"].values()
             if template == parts.BULK_TEMPLATE]  # fmt: skip
    otp_lat = [created / 1000 - sent for sent, _, _, created in run["otp"]]
    # Where a code's time goes: fan-out (message row written), waiting for a
    # delivery worker (claimed), and the delivery itself (inbox item stored).
    otp_stages = {
        "trigger_to_fanned_out": [w / 1000 - sent for sent, w, _, _ in run["otp"]],
        "fanned_out_to_claimed": [(c - w) / 1000 for _, w, c, _ in run["otp"]],
        "claimed_to_inbox": [(i - c) / 1000 for _, _, c, i in run["otp"]],
    }
    in_app_s = max(inbox_lat) if inbox_lat else None
    webhook_s = max(hooks) if hooks else None
    both = [s for s in (in_app_s, webhook_s) if s is not None]
    in_app_rate = parts.rate(len(inbox_lat), in_app_s)
    return {
        "seed_seconds": round(seed_seconds, 2),
        "fanout_seconds": None
        if run["fanout_seconds"] is None
        else round(run["fanout_seconds"], 2),
        "all_delivered_seconds": round(max(both), 2) if both else None,
        "in_app": {
            "delivered": len(inbox_lat),
            "per_s": in_app_rate,
            "trigger_to_inbox": parts.latency_summary(inbox_lat),
        },
        "webhook": {
            "delivered_2xx": len(hooks),
            "per_s": parts.rate(len(hooks), webhook_s),
            "trigger_to_arrival": parts.latency_summary(hooks),
            "invalid_signatures": received["invalid"],
            "duplicates": received["duplicates"],
        },
        "deliveries_per_s": parts.rate(len(inbox_lat) + len(hooks), max(both) if both else None),
        "one_time_codes": {
            "sent": run["otp_sent"],
            "delivered": len(otp_lat),
            "all_sent_during_run": run["codes_finished"],
            "trigger_to_inbox": parts.latency_summary(otp_lat),
            **{stage: parts.latency_summary(v) for stage, v in otp_stages.items()},
        },
        "message_statuses": run["statuses"],
        "anchor": {
            "name": "sqlite raw inbox inserts, 1,000 rows per transaction",
            **anchor,
            "in_app_ratio": parts.ratio(in_app_rate, anchor["rows_per_s"]),
        },
    }


def _table(results: dict[str, Any], count: int) -> Table:
    table = Table(title=f"notifications: one trigger to {count:,} subscribers")
    table.add_column("measure")
    table.add_column("value", justify="right")
    ia, wh, otp = results["in_app"], results["webhook"], results["one_time_codes"]
    an = results["anchor"]
    for name, value in (
        ("fan-out done (s)", results["fanout_seconds"]),
        ("all delivered (s)", results["all_delivered_seconds"]),
        ("deliveries/s (both channels)", results["deliveries_per_s"]),
        ("in-app delivered, /s", f"{ia['delivered']:,}, {ia['per_s']}"),
        ("trigger-to-inbox p50 / p99 (ms)",
         f"{ia['trigger_to_inbox']['p50_ms']} / {ia['trigger_to_inbox']['p99_ms']}"),
        ("webhook 2xx, /s", f"{wh['delivered_2xx']:,}, {wh['per_s']}"),
        ("trigger-to-webhook p50 / p99 (ms)",
         f"{wh['trigger_to_arrival']['p50_ms']} / {wh['trigger_to_arrival']['p99_ms']}"),
        ("one-time codes delivered", f"{otp['delivered']} of {otp['sent']}"),
        ("one-time code p50 / p99 (ms)",
         f"{otp['trigger_to_inbox']['p50_ms']} / {otp['trigger_to_inbox']['p99_ms']}"),
        *((f"  code: {stage.replace('_', ' ')} p50 / p99 (ms)",
           f"{otp[stage]['p50_ms']} / {otp[stage]['p99_ms']}")
          for stage in ("trigger_to_fanned_out", "fanned_out_to_claimed", "claimed_to_inbox")),
        ("anchor: raw SQLite inbox rows/s", an["rows_per_s"]),
        ("in-app ÷ anchor", an["in_app_ratio"]),
    ):  # fmt: skip
        table.add_row(name, str(value))
    return table


def run_notifications_bench(
    *, subscribers: int, codes: int, otp_interval: float, timeout: float, out_dir: str,
    console: Console, tmp_root: str | None = None,
) -> Path:  # fmt: skip
    """Run once and write the result; ``tmp_root`` is where the temporary data directory
    goes (the system's temporary directory when ``None``; a tmpfs shows the cost of fsync)."""
    options = {"subscribers": subscribers, "codes": codes, "otp_interval": otp_interval,
               "timeout": timeout, "tmp_root": tmp_root}  # fmt: skip
    moment = utc_now()
    env = {"SYSDESIGN_NOTIFY_WORKERS": "1", "SYSDESIGN_NOTIFY_SCHEDULER_SECONDS": "0.5",
           "SYSDESIGN_NOTIFY_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1"}  # the receiver  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory(prefix="sysdesign-bench-notify-", dir=tmp_root) as tmp:
            results = asyncio.run(_run(options, Path(tmp), console))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    document = {
        "benchmark": "notifications",
        "started_at": moment.isoformat(),
        "machine": machine_info(),
        "versions": package_versions(
            ["sysdesign", "sqlalchemy", "aiosqlite", "httpx", "uvicorn", "starlette"]
        ),
        "setup": "one process (system + workers, embedded SQLite db and queue, memory "
        "realtime) and a webhook receiver process on 127.0.0.1",
        "parameters": options,
        "results": results,
    }
    path = write_result(out_dir, "notifications", moment, document)
    console.print(_table(results, subscribers))
    console.print(f"written {path}")
    return path


__all__ = ["run_notifications_bench"]
