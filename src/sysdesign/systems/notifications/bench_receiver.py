"""The benchmark's webhook receiver, run in its own process so that checking
signatures does not take CPU from the system measured on the same event loop.

``python -m sysdesign.systems.notifications.bench_receiver PORT SECRET``
serves ``POST /hook`` (verifies the signature, records the arrival time by
message id and template; 401 when the signature is wrong) and ``GET /count``
(how many valid ones arrived) and ``GET /arrivals`` (every arrival, the
invalid and duplicate counts, as JSON).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sysdesign.blocks.notify.webhook import verify_signature


class Arrivals:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.valid: dict[str, tuple[str, float]] = {}  # message id -> (template, arrival)
        self.invalid = 0
        self.duplicates = 0

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        arrived = time.time()
        ok = verify_signature(
            self.secret,
            timestamp=request.headers.get("sysdesign-timestamp", ""),
            signature=request.headers.get("sysdesign-signature", ""),
            body=body,
            now=arrived,
        )
        if not ok:
            self.invalid += 1
            return Response(status_code=401)
        message = orjson.loads(body)
        if message["id"] in self.valid:
            self.duplicates += 1
        else:
            self.valid[message["id"]] = (message["template"], arrived)
        return Response(status_code=204)

    async def count(self, request: Request) -> Response:
        return PlainTextResponse(str(len(self.valid)))

    async def dump(self, request: Request) -> Response:
        body: dict[str, Any] = {
            "arrivals": self.valid, "invalid": self.invalid, "duplicates": self.duplicates,
        }  # fmt: skip
        return Response(orjson.dumps(body), media_type="application/json")


def main(argv: list[str]) -> None:
    port, secret = int(argv[0]), argv[1]
    arrivals = Arrivals(secret)
    app = Starlette(
        routes=[
            Route("/hook", arrivals.hook, methods=["POST"]),
            Route("/count", arrivals.count, methods=["GET"]),
            Route("/arrivals", arrivals.dump, methods=["GET"]),
        ]
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", lifespan="off", access_log=False
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(sys.argv[1:])
