"""Scenario 10, the distributed cache: the ``cache`` block as an HTTP service.

``/cache/v1`` is what other services (and people with curl) use when they
want a shared cache without a Redis client: get, set with TTL and
conditions, delete, increment, batches, and the cache's figures. It runs on
whatever ``SYSDESIGN_CACHE_URL`` names: this process's memory, a Redis
server, or a cluster of our own cache nodes.

Who may use it: every operation needs a signed-in caller (the accounts
service's bearer token), and each caller has a namespace of its own: keys are
stored as ``u<user id>:<key>``. A cache is shared infrastructure; left open,
anyone who can reach it could read another service's sessions or overwrite
its entries (cache poisoning). A service that calls this one holds an
account of its own, so its keys are private to it, and two services never
collide on a key name. The token is verified without any I/O, so the check
costs microseconds, not a round trip. What stays shared is ``/v1/stats``:
the whole cache's counters, which say nothing about any one caller's keys.
"""

from sysdesign.systems.cache.api import create_app

__all__ = ["create_app"]
