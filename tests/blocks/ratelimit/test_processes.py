"""Four real processes hit one key on Redis at the same instant: together they
admit exactly the limit, under every algorithm that promises exactness."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest

from tests.backends import delete_prefix, redis_url

CHILD = Path(__file__).parent / "children" / "hammer.py"
PROCESSES = 4
LIMIT = 300
ATTEMPTS = 200  # per process and algorithm: 800 compete for 300


async def test_four_processes_together_admit_exactly_the_limit() -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    url = redis_url(prefix)
    now = str(1_750_000_000.5)  # fixed: the window cannot move under the processes
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            url,
            now,
            "shared",
            str(LIMIT),
            str(ATTEMPTS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stderr is not None
            line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
            if line.strip() != b"ready":
                pytest.fail(f"a child did not start: {(await child.stderr.read()).decode()}")
        outputs = await asyncio.wait_for(
            asyncio.gather(*(child.communicate(b"go\n") for child in children)), timeout=60
        )
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        await delete_prefix(prefix)
    counts = []
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()
        counts.append(json.loads(out.decode().splitlines()[-1]))
    totals = {algorithm: sum(c[algorithm] for c in counts) for algorithm in counts[0]}
    assert totals == {
        "sliding_log": LIMIT,
        "token_bucket": LIMIT,
        "fixed_window": LIMIT,
        "gcra": LIMIT,
    }
    # The processes overlapped: more than one had a share under each algorithm.
    for algorithm in totals:
        assert sum(1 for c in counts if c[algorithm]) >= 2, counts
