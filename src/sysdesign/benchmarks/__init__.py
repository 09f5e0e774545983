"""Shared benchmark machinery: load from wrk, servers in subprocesses, result files.

Every ``sysdesign bench <system>`` builds on these modules so that all results
are measured and recorded the same way:

- ``wrk``: run wrk and parse its report (requests/s, latency percentiles, errors).
- ``server``: a uvicorn server in its own process on a free loopback port.
- ``cpus``: which CPU the server gets and which one the load generator gets.
- ``machine``: the machine and the versions a result was measured with.
- ``results``: medians and the JSON file under ``bench/results/``.
"""

from __future__ import annotations


class BenchmarkError(Exception):
    """A benchmark could not run or produced no valid numbers; the message says why."""
