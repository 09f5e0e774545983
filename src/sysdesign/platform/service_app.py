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

from sysdesign.platform.http import install_problem_handlers

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
        **kwargs,
    )
    app.state.platform = platform
    app.state.system = name
    install_problem_handlers(app)

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
