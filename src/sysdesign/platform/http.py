"""HTTP conventions shared by every system: RFC 9457 problems and cursor pagination.

A problem has a stable ``type`` (``https://sysdesign.dev/problems/<slug>``),
a ``title``, the ``status``, a ``detail`` for people and, for validation
errors, ``errors``: one entry per field with its location.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_BASE = "https://sysdesign.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

_DEFAULT_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    410: ("gone", "Gone"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Request validation failed"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


class Problem(Exception):
    """Raise anywhere in a request to answer with an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        default_slug, default_title = _DEFAULT_SLUGS.get(status, ("error", "Error"))
        self.status = status
        self.slug = slug or default_slug
        self.title = title or default_title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail or self.title)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            doc["detail"] = self.detail
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc

    def response(self, instance: str | None = None) -> Response:
        return problem_response(self.status, self.body(instance), self.headers)


class ProblemDetail(BaseModel):
    """An RFC 9457 problem document, as every error of every system is answered."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="Stable URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class FieldError(BaseModel):
    field: str = Field(description="The field at fault, dotted for nested fields")
    location: list[str] = Field(
        description="Where it was: body, query, path or header, then the field"
    )
    message: str
    type: str | None = None


class ValidationProblem(ProblemDetail):
    model_config = ConfigDict(extra="allow", title="ValidationProblem")

    errors: list[FieldError]


# Declared on every operation of every system; service_app moves them to problem+json.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ProblemDetail, "description": "Client error, as an RFC 9457 problem"},
    422: {"model": ValidationProblem, "description": "Validation failed: one entry per field"},
    "5XX": {"model": ProblemDetail, "description": "Server error, as an RFC 9457 problem"},
}


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{field, location, message, type}``: no input echoed back."""
    out = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            loc = loc[:1]  # the rest is a character position, not a field
        field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        out.append(
            {
                "field": field,
                "location": loc,
                "message": err.get("msg", ""),
                "type": err.get("type"),
            }
        )
    return out


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}"
    if exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    problem = Problem(exc.status_code, detail, headers=dict(exc.headers or {}))
    return problem.response(request.url.path)


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    if any(e["type"] == "json_invalid" for e in errors):
        problem = Problem(
            400,
            "The request body is not valid JSON",
            slug="malformed-json",
            title="Malformed JSON",
            errors=errors,
        )
    else:
        fields = ", ".join(sorted({e["field"] for e in errors})) or "request"
        problem = Problem(422, f"Invalid value for: {fields}", errors=errors)
    return problem.response(request.url.path)


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    # Logged once, with the request id, by the root app's ObservabilityMiddleware.
    return Problem(500, "The server failed to answer this request").response(request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


# --- cursor pagination ---------------------------------------------------------------

T = TypeVar("T")
V = TypeVar("V")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class CursorCodec:
    """Opaque, tamper-evident cursors: base64url(JSON) with a truncated HMAC.

    A cursor carries the sort key of the last item seen (keyset pagination:
    ``WHERE key < :last ORDER BY key DESC``), never an offset.
    """

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(("cursor:" + secret).encode()).digest()

    def encode(self, position: dict[str, Any]) -> str:
        payload = orjson.dumps(position, option=orjson.OPT_SORT_KEYS)
        tag = hmac.new(self._key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(tag + payload).rstrip(b"=").decode()

    def decode(self, cursor: str) -> dict[str, Any]:
        """Raises ``Problem(400, slug='invalid-cursor')`` for anything not made by ``encode``."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            tag, payload = raw[:12], raw[12:]
            expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:12]
            if len(tag) != 12 or not hmac.compare_digest(tag, expected):
                raise ValueError("bad tag")
            value = orjson.loads(payload)
            if not isinstance(value, dict):
                raise ValueError("not an object")
            return value
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise _invalid_cursor() from None


def _invalid_cursor() -> Problem:
    return Problem(
        400,
        "The cursor is not one this server issued",
        slug="invalid-cursor",
        title="Invalid cursor",
        field="cursor",
    )


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a list endpoint was asked for: the position after which to start, and how many.

    Fetch ``limit + 1`` rows after ``after`` in key order, then call ``page()``:
    the extra row only tells whether there is a next page.
    """

    after: dict[str, Any] | None
    limit: int
    codec: CursorCodec

    @property
    def fetch(self) -> int:
        return self.limit + 1

    def after_value(self, name: str, kind: type[V]) -> V | None:
        """The cursor's ``name`` (``None`` without a cursor or without that field).
        Raises the invalid-cursor ``Problem`` (as ``CursorCodec.decode`` does) when
        it is not a ``kind``."""
        value = self.after.get(name) if self.after else None
        if value is not None and not isinstance(value, kind):
            raise _invalid_cursor()
        return value

    def page(self, rows: Sequence[T], position: Callable[[T], dict[str, Any]]) -> Page[T]:
        items = list(rows[: self.limit])
        more = len(rows) > self.limit and bool(items)
        return Page(
            items=items, next_cursor=self.codec.encode(position(items[-1])) if more else None
        )


def page_request(
    request: Request,
    cursor: Annotated[str | None, Query(max_length=2048, description="Opaque cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page")] = 50,
) -> PageRequest:
    """FastAPI dependency for ``?cursor=&limit=`` on every list endpoint."""
    codec: CursorCodec = request.app.state.platform.cursors
    return PageRequest(after=codec.decode(cursor) if cursor else None, limit=limit, codec=codec)
