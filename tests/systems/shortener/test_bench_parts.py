"""The pure parts of ``sysdesign bench shortener``: Zipf draws, wrk scripts, the
nginx configuration and reading counters from ``/metrics``. Nothing is run."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter

from sysdesign.benchmarks.server import RunningServer
from sysdesign.systems.shortener import bench_parts as parts
from sysdesign.systems.shortener.bench_rounds import wrk_script_command


def test_zipf_ranks_are_in_range_repeatable_and_skewed() -> None:
    n, samples = 10_000, 50_000
    ranks = parts.zipf_ranks(n, samples)
    assert len(ranks) == samples and all(0 <= r < n for r in ranks)
    assert ranks == parts.zipf_ranks(n, samples)
    assert ranks != parts.zipf_ranks(n, samples, seed=1)
    counts = Counter(ranks)
    # P(rank 0) = 1 / H(n, 1.1), about 0.17 here; uniform would be 0.0001.
    harmonic = sum((r + 1) ** -parts.ZIPF_EXPONENT for r in range(n))
    assert counts[0] / samples == pytest.approx(1 / harmonic, rel=0.05)
    assert counts[0] > counts[1] > counts[9] > counts.get(999, 0)
    assert sum(counts[r] for r in range(100)) / samples > 0.5  # 1 % of ranks, most draws


def test_zipf_ranks_refuse_an_empty_range() -> None:
    with pytest.raises(ValueError):
        parts.zipf_ranks(0, 10)


def test_zipf_codes_draw_only_given_codes_with_the_popular_ones_spread() -> None:
    codes = [f"c{i:04d}" for i in range(2_000)]
    sequence = parts.zipf_codes(codes, 20_000)
    assert set(sequence) <= set(codes)
    favourite, _ = Counter(sequence).most_common(1)[0]
    assert favourite != codes[0]  # ranks go to codes in a shuffled order
    hot = parts.hot_set(sequence)
    assert len(hot) == len(set(sequence)) and hot[0] == sequence[0]
    assert 0.5 < parts.top_share(sequence, 100) <= 1.0
    assert parts.top_share(["a", "a", "b", "c"], 1) == 0.5


def test_lua_strings_are_escaped() -> None:
    assert parts.lua_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def _balanced_lua(script: str) -> None:
    openers = len(re.findall(r"\b(function|if|for)\b", script))
    assert openers == len(re.findall(r"\bend\b", script))


def test_the_redirect_script_reads_codes_and_cycles_over_them(tmp_path: Path) -> None:
    codes_file = tmp_path / 'co"des.txt'
    script = parts.redirect_script(codes_file)
    assert f"local codes_file = {parts.lua_string(str(codes_file))}" in script
    assert 'wrk.format("GET", "/s/" .. code)' in script
    assert "function init(args)" in script and "function request()" in script
    _balanced_lua(script)


def test_the_create_script_posts_json_with_the_bearer_token() -> None:
    script = parts.create_script("tok.en")
    assert '["Authorization"] = "Bearer tok.en"' in script
    assert '["Content-Type"] = "application/json"' in script
    assert 'wrk.format("POST", "/shortener/v1/links", headers, body)' in script
    assert '\'{"target":"https://example.com/new/\'' in script
    _balanced_lua(script)


def test_the_nginx_config_keeps_everything_in_its_directory(tmp_path: Path) -> None:
    config = parts.nginx_config(tmp_path, 18080)
    assert config.count("{") == config.count("}")
    assert "daemon off;" in config and "worker_processes 1;" in config
    assert "access_log off;" in config and "user " not in config
    assert f"pid {tmp_path}/nginx.pid;" in config
    assert f"error_log {tmp_path}/nginx-error.log" in config
    assert "listen 127.0.0.1:18080;" in config
    assert "location /s/ {\n            return 301 https://example.com/x;" in config
    paths = re.findall(r"_temp_path (\S+);", config)
    assert len(paths) == 5 and all(p.startswith(str(tmp_path)) for p in paths)
    for line in config.splitlines():
        line = line.split("#", 1)[0].strip()
        assert not line or line.endswith((";", "{", "}")), line
    assert "user www root;" in parts.nginx_config(tmp_path, 18080, "www root")


def test_counters_are_read_from_metrics_text() -> None:
    registry = CollectorRegistry()
    statements = PromCounter("db_statements", "", ("shard",), registry=registry)
    requests = PromCounter(
        "http_requests", "", ("system", "route", "method", "status"), registry=registry
    )
    statements.labels("0").inc(3)
    statements.labels("1").inc(4)
    requests.labels("-", "/s/{code}", "GET", "302").inc(10)
    requests.labels("-", "/s/{code}", "GET", "404").inc(2)
    requests.labels("shortener", "/shortener/v1/links", "POST", "201").inc(5)
    requests.labels("shortener", "/shortener/v1/links/{code}", "GET", "200").inc(7)
    text = generate_latest(registry).decode()
    assert parts.statements(text) == 7
    assert parts.answered(text, "/s/", "3") == 10
    assert parts.answered(text, "/s/") == 12
    assert parts.answered(text, parts.LINKS_PATH, "201", exact=True) == 5
    assert parts.answered(text, parts.LINKS_PATH) == 12


def test_the_wrk_command_loads_the_script_before_the_url(tmp_path: Path) -> None:
    server = RunningServer(None, "127.0.0.1", 9, tmp_path / "log")  # type: ignore[arg-type]
    command = wrk_script_command("wrk", server, tmp_path / "r.lua", 5, 16)
    assert command[-3:] == ["-s", str(tmp_path / "r.lua"), "http://127.0.0.1:9/"]
    assert "-c16" in command and "-d5s" in command and "--latency" in command
    assert command[command.index("--timeout") + 1] == "10s"
