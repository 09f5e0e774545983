"""Scenario 14, the rate limiter: the ``ratelimit`` block as a decision service.

The gateway applies the same rules to every request of every system; this
service lets other processes ask for decisions (``POST /check``, as Envoy's
ratelimit service is asked), lists the rules with their counts, and reloads
them.
"""

from sysdesign.systems.ratelimiter.api import create_app

__all__ = ["create_app"]
