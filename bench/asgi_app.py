"""dessert-mcp's HTTP app (plain `--transport http`, settings from the environment) as a factory, so that other
ASGI servers can serve exactly what `dessert-mcp --transport http` serves: `granian --factory asgi_app:create_app`,
`hypercorn 'asgi_app:create_app()'`, `uvicorn --factory asgi_app:create_app` (from bench/)."""

from __future__ import annotations

import os

from starlette.types import ASGIApp

from dessert_mcp.config import Settings
from dessert_mcp.http.app import build_app
from dessert_mcp.http.options import HTTPOptions
from dessert_mcp.redact import configure_logging_for


def create_app() -> ASGIApp:
    settings = Settings.from_env(os.environ)
    app = build_app(settings, HTTPOptions().check(settings))
    configure_logging_for(settings)  # after build_app, as dessert-mcp does: building the server sets up logging
    return app
