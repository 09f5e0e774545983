"""Pure parts of ``sysdesign bench shortener``: the Zipf access pattern, the wrk
scripts, the nginx anchor's configuration and reading ``/metrics``.

Nothing here starts a process or opens a socket, so each part is tested on
its own (``tests/systems/shortener/test_bench_parts.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ZIPF_EXPONENT = 1.1
SAMPLES = 100_000
SEED = 20_240_601
REDIRECT_PREFIX = "/s/"
LINKS_PATH = "/shortener/v1/links"
ANCHOR_LOCATION = "https://example.com/x"
STATEMENTS_METRIC = "db_statements_total"
REQUESTS_METRIC = "http_requests_total"


# --- the access pattern -----------------------------------------------------------------


def zipf_ranks(
    n: int, samples: int, exponent: float = ZIPF_EXPONENT, seed: int = SEED
) -> list[int]:
    """``samples`` ranks in ``[0, n)``, rank ``r`` drawn with probability
    proportional to ``1 / (r + 1) ** exponent``; the same for the same seed."""
    if n < 1 or samples < 1:
        raise ValueError("n and samples must be at least 1")
    weights = list(accumulate((r + 1) ** -exponent for r in range(n)))
    return random.Random(seed).choices(range(n), cum_weights=weights, k=samples)


def zipf_codes(codes: Sequence[str], samples: int, seed: int = SEED) -> list[str]:
    """``samples`` codes drawn by Zipf rank. Ranks go to codes in a shuffled
    order, so the popular links are not the first ones seeded (one shard, one
    counter block) but spread as popular links are."""
    order = list(codes)
    random.Random(seed).shuffle(order)
    return [order[r] for r in zipf_ranks(len(order), samples, seed=seed)]


def hot_set(sequence: Iterable[str]) -> list[str]:
    """The distinct codes of ``sequence`` in the order first asked for."""
    return list(dict.fromkeys(sequence))


def top_share(sequence: Sequence[str], top: int) -> float:
    """The share of requests that go to the ``top`` most requested codes."""
    counts: dict[str, int] = {}
    for code in sequence:
        counts[code] = counts.get(code, 0) + 1
    return sum(sorted(counts.values(), reverse=True)[:top]) / len(sequence)


# --- wrk scripts ----------------------------------------------------------------------------


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def redirect_script(codes_file: Path) -> str:
    """A wrk script asking for ``/s/<code>`` for each line of ``codes_file`` in
    turn, from the start again at the end. The requests are formatted once in
    ``init`` (after wrk has set the Host header), so the load generator spends
    its time sending them rather than building them."""
    return f"""-- sysdesign bench shortener: GET /s/<code>, codes in Zipf order, one per line
local codes_file = {lua_string(str(codes_file))}
local requests = {{}}
local count = 0
local index = 0

function init(args)
  for code in io.lines(codes_file) do
    count = count + 1
    requests[count] = wrk.format("GET", {lua_string(REDIRECT_PREFIX)} .. code)
  end
  if count == 0 then
    error("no codes in " .. codes_file)
  end
end

function request()
  index = index + 1
  if index > count then
    index = 1
  end
  return requests[index]
end
"""


def create_script(token: str, seed: int = SEED) -> str:
    """A wrk script creating a link per request: ``POST /shortener/v1/links`` as
    the signed-in owner, each to a target no other request used."""
    return f"""-- sysdesign bench shortener: POST {LINKS_PATH}, one new target per request
local headers = {{
  ["Content-Type"] = "application/json",
  ["Authorization"] = {lua_string("Bearer " + token)},
}}
local sent = 0

function init(args)
  math.randomseed({seed})
end

function request()
  sent = sent + 1
  local body = '{{"target":"https://example.com/new/' .. math.random(1, 1000000000)
    .. '/' .. sent .. '"}}'
  return wrk.format("POST", {lua_string(LINKS_PATH)}, headers, body)
end
"""


# --- the nginx anchor -----------------------------------------------------------------------


def nginx_config(directory: Path, port: int, user: str | None = None) -> str:
    """One nginx worker answering every ``/s/`` path with a fixed 301, every
    file it writes inside ``directory``, nothing logged per request.

    ``user`` (``"name group"``) keeps the worker the same user as the server
    under test when nginx starts as root; nginx ignores it otherwise.
    ``keepalive_requests`` is raised from nginx's 1,000 so that the anchor,
    like uvicorn, keeps each of wrk's connections for the whole run.
    """
    d = directory
    user_line = f"user {user};\n" if user else ""
    return f"""# sysdesign bench shortener: the anchor, a fixed redirect
daemon off;
master_process on;
worker_processes 1;
{user_line}pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    server {{
        listen 127.0.0.1:{port};
        location {REDIRECT_PREFIX} {{
            return 301 {ANCHOR_LOCATION};
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


# --- /metrics -----------------------------------------------------------------------------


def statements(metrics_text: str) -> float:
    """SQL statements sent so far, summed over the shards."""
    return _sum_samples(metrics_text, STATEMENTS_METRIC, lambda _labels: True)


def answered(metrics_text: str, route: str, status: str = "", *, exact: bool = False) -> float:
    """Requests answered so far on routes starting with ``route`` (equal to it
    when ``exact``), with a status starting with ``status``."""

    def wanted(labels: dict[str, str]) -> bool:
        label = labels.get("route", "")
        on_route = label == route if exact else label.startswith(route)
        return on_route and labels.get("status", "").startswith(status)

    return _sum_samples(metrics_text, REQUESTS_METRIC, wanted)


def _sum_samples(text: str, name: str, wanted: Callable[[dict[str, str]], bool]) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and wanted(sample.labels):
                total += sample.value
    return total
