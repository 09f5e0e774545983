"""The JSON bodies of ``/cache/v1``: keys, base64 values, TTLs, and what comes back."""

from __future__ import annotations

import base64
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

from sysdesign.systems.cache.domain import MAX_BATCH, MAX_KEY_CHARS, MAX_TTL_SECONDS, check_key

# What base64.b64decode(validate=True) accepts, padding included: the pattern in
# the document and the check behind it refuse the same strings.
BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _decode_base64(value: object) -> bytes:
    if not isinstance(value, str) or BASE64.fullmatch(value) is None:
        raise ValueError("must be standard base64 with padding (RFC 4648, section 4)")
    return base64.b64decode(value, validate=True)


Key = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_KEY_CHARS),
    AfterValidator(check_key),
]
Base64Value = Annotated[
    bytes,
    PlainValidator(_decode_base64),
    WithJsonSchema(
        {"type": "string", "contentEncoding": "base64", "pattern": f"^{BASE64.pattern}$"}
    ),
]
TtlSeconds = Annotated[float, Field(gt=0, le=MAX_TTL_SECONDS, description="Seconds to live")]


def _json_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


def to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


class _Strict(BaseModel):
    # Strict: JSON true is not the number 1, nor "5" the number 5.
    model_config = ConfigDict(extra="forbid", strict=True)


class IncrRequest(_Strict):
    amount: Annotated[
        int,
        # Not strict: JSON Schema counts 5.0 as an integer, and so does this.
        Field(
            strict=False, ge=-(2**63), le=2**63 - 1, description="What to add; negative subtracts"
        ),
        BeforeValidator(_json_number),
    ] = 1
    ttl: Annotated[TtlSeconds | None, Field(description="Applies only when the key is created")] = (
        None
    )


class IncrOut(BaseModel):
    key: str
    value: int


class StoredOut(BaseModel):
    key: str
    created: bool = Field(description="True if the key was absent, false if it was replaced")
    etag: str
    ttl: float | None = Field(description="Seconds to live; null: no expiry")


class MGetRequest(_Strict):
    keys: Annotated[list[Key], Field(min_length=1, max_length=MAX_BATCH)]


class MGetOut(BaseModel):
    values: dict[str, str | None] = Field(
        description="Every key asked for: its value in base64, or null when absent"
    )


class MSetRequest(_Strict):
    items: Annotated[
        dict[Key, Base64Value],
        Field(min_length=1, max_length=MAX_BATCH, description="Values in base64 by key"),
    ]
    ttl: TtlSeconds | None = None


class MSetOut(BaseModel):
    stored: int


class StatsOut(BaseModel):
    backend: str = Field(description="memory, redis or cluster (which counts each replica)")
    hits: int
    misses: int
    hit_ratio: float
    evictions: int
    expirations: int
    keys: int
    used_bytes: int
