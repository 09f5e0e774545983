from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysdesign.platform.ids import (
    BASE62_ALPHABET,
    EPOCH_MS,
    MAX_SEQUENCE,
    SnowflakeGenerator,
    base62_decode,
    base62_encode,
    parse_snowflake,
)


@given(st.integers(min_value=0, max_value=2**128))
def test_base62_round_trip(value: int) -> None:
    encoded = base62_encode(value)
    assert set(encoded) <= set(BASE62_ALPHABET)
    assert base62_decode(encoded) == value


@given(st.integers(min_value=0, max_value=62**7 - 1), st.integers(min_value=0, max_value=62**7 - 1))
def test_base62_fixed_width_preserves_order(a: int, b: int) -> None:
    ea, eb = base62_encode(a, min_length=7), base62_encode(b, min_length=7)
    assert len(ea) == len(eb) == 7
    assert (ea < eb) == (a < b)


@given(st.text(min_size=1).filter(lambda s: any(c not in BASE62_ALPHABET for c in s)))
def test_base62_rejects_foreign_characters(text: str) -> None:
    with pytest.raises(ValueError, match="invalid base62 character"):
        base62_decode(text)


def test_base62_rejects_empty_and_negative() -> None:
    with pytest.raises(ValueError):
        base62_decode("")
    with pytest.raises(ValueError):
        base62_encode(-1)


def test_snowflake_fields_round_trip() -> None:
    gen = SnowflakeGenerator(worker_id=37, now_ms=lambda: EPOCH_MS + 123_456)
    first, second = gen.next_id(), gen.next_id()
    parts = parse_snowflake(second)
    assert parts.timestamp_ms == EPOCH_MS + 123_456
    assert parts.worker_id == 37
    assert parts.sequence == 1
    assert parse_snowflake(first).sequence == 0
    assert 0 < first < second < 2**63


@given(st.lists(st.integers(min_value=-5_000, max_value=5_000), min_size=1, max_size=300))
def test_snowflakes_increase_even_when_the_clock_steps_back(steps: list[int]) -> None:
    now = [EPOCH_MS + 10_000_000]

    def clock() -> int:
        return now[0]

    gen = SnowflakeGenerator(worker_id=1, now_ms=clock)
    previous = gen.next_id()
    for step in steps:
        now[0] += step
        current = gen.next_id()
        assert current > previous
        previous = current


def test_sequence_overflow_borrows_the_next_millisecond() -> None:
    gen = SnowflakeGenerator(worker_id=0, now_ms=lambda: EPOCH_MS + 5)
    ids = [gen.next_id() for _ in range(MAX_SEQUENCE + 3)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert parse_snowflake(ids[MAX_SEQUENCE]).timestamp_ms == EPOCH_MS + 5
    assert parse_snowflake(ids[MAX_SEQUENCE + 1]).timestamp_ms == EPOCH_MS + 6


def test_worker_id_is_validated() -> None:
    with pytest.raises(ValueError, match="worker_id"):
        SnowflakeGenerator(worker_id=1024)
    with pytest.raises(ValueError, match="worker_id"):
        SnowflakeGenerator(worker_id=-1)


def test_unique_across_threads() -> None:
    gen = SnowflakeGenerator(worker_id=3)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(slot: int) -> None:
        results[slot] = [gen.next_id() for _ in range(20_000)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for chunk in results for i in chunk]
    assert len(set(everything)) == 8 * 20_000
    for chunk in results:  # each thread sees its own ids increasing
        assert chunk == sorted(chunk)


def _ids_from_process(worker_id: int) -> list[int]:
    gen = SnowflakeGenerator(worker_id=worker_id)
    return [gen.next_id() for _ in range(20_000)]


def test_unique_across_processes_with_distinct_worker_ids() -> None:
    with ProcessPoolExecutor(
        max_workers=4, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        chunks = list(pool.map(_ids_from_process, [1, 2, 3, 4]))
    everything = [i for chunk in chunks for i in chunk]
    assert len(set(everything)) == len(everything) == 80_000
    assert {parse_snowflake(c[0]).worker_id for c in chunks} == {1, 2, 3, 4}
