"""The root ASGI app: the landing page, health, metrics, and every system mounted.

``create_app()`` mounts accounts and each built system at ``/<name>``;
``create_app(only=["shortener"])`` is what ``sysdesign serve shortener`` runs.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import orjson
from fastapi import FastAPI
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from sysdesign.platform.clock import Clock
from sysdesign.platform.context import Platform
from sysdesign.platform.http import Problem
from sysdesign.platform.middleware import BodyLimitMiddleware, ObservabilityMiddleware
from sysdesign.platform.service_app import ASSETS_PATH, docs_assets_dir
from sysdesign.settings import Settings
from sysdesign.systems import PLATFORM_SERVICES, SYSTEMS, SystemSpec, get_system

_templates = Environment(
    loader=PackageLoader("sysdesign.platform", "templates"),
    autoescape=select_autoescape(["html"]),
)


class SystemRouter(Router):
    """Sends ``/<name>/...`` straight to the app mounted at ``/<name>``.

    Starlette's router tries every route in turn; with fifteen systems, the
    accounts service and their not-built placeholders, that scan would cost more
    than the rest of the routing. One dict lookup on the first path segment
    finds the mount; anything else falls back to the ordinary scan.
    """

    def __init__(self, routes: list[Route | Mount], **kwargs: object) -> None:
        super().__init__(routes=routes, **kwargs)  # type: ignore[arg-type]
        self._mounts = {
            route.path[1:]: route
            for route in routes
            if isinstance(route, Mount) and route.path.count("/") == 1
        }

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            path = scope["path"]
            mount = self._mounts.get(path[1:].partition("/")[0]) if path[:1] == "/" else None
            if mount is not None and not scope.get("root_path"):
                match, child_scope = mount.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = mount
                    scope.update(child_scope)
                    await mount.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _not_built(spec: SystemSpec) -> list[Route]:
    async def answer(request: Request) -> Response:
        return Problem(
            404,
            f"The {spec.title.lower()} system (scenario {spec.scenario}: {spec.seed_scenario}) "
            "is not built yet",
            slug="system-not-built",
            title="System not built yet",
            system=spec.name,
        ).response(request.url.path)

    # "/shop" and "/shop/...", not "/shopping".
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        Route(spec.path, answer, methods=methods),
        Route(spec.path + "/{rest:path}", answer, methods=methods),
    ]


def _select(only: Iterable[str] | None) -> tuple[list[str], list[SystemSpec]]:
    if only is None:
        return list(PLATFORM_SERVICES), [s for s in SYSTEMS if s.built]
    names = list(only)
    services = [n for n in names if n in PLATFORM_SERVICES]
    systems = [get_system(n) for n in names if n not in PLATFORM_SERVICES]
    for spec in systems:
        if not spec.built:
            raise ValueError(f"system {spec.name!r} is not built yet")
    return services, systems


def _rate_limiting(platform: Platform) -> list[Middleware]:
    """The gateway's rate limits, between observability (429s are logged and
    counted) and the body limit (a refused request's body is never read)."""
    if not platform.settings.ratelimit_enabled:
        return []
    from sysdesign.blocks.ratelimit.gateway import RateLimitMiddleware

    def user_of_token(token: str) -> str | None:
        try:
            return str(platform.tokens.verify(token).user_id)
        except Problem:
            return None  # the system answers 401 itself; count the caller by address

    return [
        Middleware(
            RateLimitMiddleware, limiter=lambda: platform.rate_limiter, user_of_token=user_of_token
        )
    ]


def create_app(
    settings: Settings | None = None,
    *,
    platform: Platform | None = None,
    clock: Clock | None = None,
    only: Iterable[str] | None = None,
    extra_apps: Mapping[str, Callable[[Platform], FastAPI]] | None = None,
) -> Starlette:
    """The root app. ``extra_apps`` mounts more apps built like systems (tests, benchmarks)."""
    platform = platform or Platform(settings, clock=clock)
    services, systems = _select(only)
    mounted: dict[str, FastAPI] = {}
    for name in services:
        mounted[name] = importlib.import_module(PLATFORM_SERVICES[name]).create_app(platform)
    for spec in systems:
        mounted[spec.name] = spec.create_app(platform)
    for name, build in (extra_apps or {}).items():
        mounted[name] = build(platform)

    async def landing(request: Request) -> HTMLResponse:
        html = _templates.get_template("landing.html").render(
            systems=SYSTEMS,
            services=services,
            mounted=mounted,
            root=request.scope.get("root_path", ""),
            database=", ".join(db.safe_url for db in platform.db.shards),
            worker_id=platform.settings.worker_id,
        )
        return HTMLResponse(html)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await platform.readiness()
        ready = all(v == "ok" for v in checks.values())
        return _json(
            {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(platform.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[Route | Mount] = [
        Route("/", landing, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount(ASSETS_PATH, app=StaticFiles(directory=docs_assets_dir()), name="assets"),
    ]
    # A system may add routes at the root (the shortener's /s/{code}: short URLs must
    # be short) with ``root_routes(platform, app)`` beside its ``create_app``.
    for spec in systems:
        contribute = getattr(spec.load(), "root_routes", None)
        if contribute is not None:
            routes += contribute(platform, mounted[spec.name])
    routes += [Mount(f"/{name}", app=app, name=name) for name, app in mounted.items()]
    if only is None:
        for spec in SYSTEMS:
            if spec.name not in mounted:
                routes += _not_built(spec)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        try:
            # Mounted apps get no lifespan events of their own: run theirs inside ours.
            async with AsyncExitStack() as stack:
                for app in mounted.values():
                    await stack.enter_async_context(app.router.lifespan_context(app))
                # What start-up built lives as long as the process: move it out of the
                # collector's sight, so full collections stay short under load (p99).
                gc.collect()
                gc.freeze()
                try:
                    yield
                finally:
                    gc.unfreeze()
        finally:
            await platform.close()

    async def http_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return Problem(404, f"No resource at {request.url.path}").response(request.url.path)
        if exc.status_code == 405:
            return Problem(
                405,
                f"{request.method} is not allowed on {request.url.path}",
                headers=dict(exc.headers or {}),
            ).response(request.url.path)
        return Problem(exc.status_code, str(exc.detail)).response(request.url.path)

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                ObservabilityMiddleware,
                metrics=platform.http_metrics,
                systems=[*mounted, *(s.name for s in SYSTEMS)],
                access_log=platform.settings.access_log,
            ),
            *_rate_limiting(platform),
            Middleware(
                BodyLimitMiddleware,
                max_bytes=platform.settings.max_body_bytes,
                metrics=platform.http_metrics,
            ),
        ],
        exception_handlers={HTTPException: http_problem},
        lifespan=lifespan,
    )
    # Same routes and lifespan, with the prefix lookup in front (built before any request).
    app.router = SystemRouter(routes, lifespan=lifespan)
    app.state.platform = platform
    app.state.mounted = mounted
    return app
