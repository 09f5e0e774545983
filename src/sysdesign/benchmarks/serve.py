"""``python -m sysdesign.benchmarks.serve module:factory --port N``: the server under test.

Every target of a benchmark runs through this one entry point so that they all
get the same server: uvicorn, one worker, uvloop and httptools, no access log
and no logging configuration of uvicorn's own, as ``sysdesign up`` runs it.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any


def load_factory(spec: str) -> Callable[[], Any]:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'module:factory', got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise TypeError(f"{spec} is not callable")
    return factory


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sysdesign.benchmarks.serve")
    parser.add_argument("factory", help="module:function returning an ASGI app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn

    app = load_factory(args.factory)()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
    )


if __name__ == "__main__":
    main()
