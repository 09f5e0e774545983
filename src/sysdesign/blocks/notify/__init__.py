"""The ``notify`` block: rendering and delivering notifications over e-mail,
webhooks and SMS (the contract is ``base.py``)."""

from __future__ import annotations

from sysdesign.blocks.notify.base import (
    Address,
    Channel,
    DeliveryError,
    Outgoing,
    PermanentFailure,
    Priority,
    Rendered,
    Sender,
    Status,
    TemporaryFailure,
)

__all__ = [
    "Address",
    "Channel",
    "DeliveryError",
    "Outgoing",
    "PermanentFailure",
    "Priority",
    "Rendered",
    "Sender",
    "Status",
    "TemporaryFailure",
]
