"""The FastAPI app of one system: problem+json errors, local docs assets, the platform.

Every system builds its app with ``create_service_app`` so all of them answer
errors the same way and document themselves at ``/<system>/docs`` with no
network access (the Swagger UI assets are served from ``/_assets``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from sysdesign.platform.http import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_RESPONSES,
    install_problem_handlers,
)

if TYPE_CHECKING:
    from sysdesign.platform.context import Platform

ASSETS_PATH = "/_assets"


def docs_assets_dir() -> Path:
    """Swagger UI's files, shipped by the fastapi-offline distribution."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def create_service_app(
    platform: Platform, *, name: str, title: str, description: str = "", **kwargs: Any
) -> FastAPI:
    app = FastAPI(
        title=title,
        description=description,
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        responses=PROBLEM_RESPONSES,
        # The root app measures every request already (Prometheus, access log).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        **kwargs,
    )
    app.state.platform = platform
    app.state.system = name
    install_problem_handlers(app)
    _document_problems_as_problem_json(app)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assets = request.scope.get("app_root_path", "") + ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )

    return app


def _document_problems_as_problem_json(app: FastAPI) -> None:
    """FastAPI documents every response model as ``application/json``; errors are
    answered as ``application/problem+json``, so say that in the document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        # FastAPI's own validation-error schemas are now unused.
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
