"""Short URLs as QR codes, for the API and the web page alike."""

from __future__ import annotations

import io
from collections.abc import Mapping

import segno
from starlette.responses import Response


def qr_response(
    url: str,
    kind: str,
    scale: int,
    border: int = 4,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``url`` as a QR code in ``kind`` (``svg`` or ``png``), error correction M
    (readable with 15% damaged), cacheable privately for five minutes;
    ``headers`` are added to the response's."""
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind=kind, scale=scale, border=border)
    media = "image/svg+xml" if kind == "svg" else "image/png"
    return Response(
        buffer.getvalue(),
        media_type=media,
        headers={"Cache-Control": "private, max-age=300", **(headers or {})},
    )
