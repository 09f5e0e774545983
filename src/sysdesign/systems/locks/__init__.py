"""Scenario 15, the distributed lock service: the ``lock`` block over HTTP.

Leases with fencing tokens, fair queues, read/write locks and semaphores
for other processes and services (``client.py`` is their Python client).
"""

from sysdesign.systems.locks.api import create_app

__all__ = ["create_app"]
