"""The FastAPI application: routes under /api, health probes, metrics, the contract's errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from api import health, orders, payments, tickets, users
from api.csrf import cross_site_request
from api.deps import Services
from api.errors import error_body, install_error_handlers
from api.metrics import install_metrics
from api.web import install_web
from ticketing.bus import EventBus
from ticketing.db import connect_db
from ticketing.settings import Settings, get_settings
from ticketing.temporal import connect_temporal

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo = await connect_db(settings)
        bus = await EventBus.connect(settings)
        temporal = await connect_temporal(settings, lazy=True)
        app.state.services = Services(settings=settings, mongo=mongo, bus=bus, temporal=temporal)
        try:
            yield
        finally:
            await bus.close()
            await mongo.close()

    app = FastAPI(
        title="Ticketing",
        version="0.1.0",
        description="Ticket orders on Temporal: reserve, expire, pay exactly once, events on NATS JetStream.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # No legitimate body comes near this: refuse before reading it, in the contract's shape.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse(error_body(("Request body too large", None)), status_code=413)
        return await call_next(request)

    @app.middleware("http")
    async def refuse_cross_site_writes(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if cross_site_request(request):
            return JSONResponse(error_body(("Cross-site request refused", None)), status_code=403)
        return await call_next(request)

    app.state.settings = settings
    install_error_handlers(app)
    install_metrics(app)
    for module in (users, tickets, orders, payments):
        app.include_router(module.router)
    app.include_router(health.router)
    install_web(app)
    app.openapi = lambda: contract_openapi(app)  # type: ignore[method-assign]
    return app


ERROR_SCHEMA = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["message", "field"],
                "properties": {"message": {"type": "string"}, "field": {"type": ["string", "null"]}},
            },
        }
    },
}


def contract_openapi(app: FastAPI) -> dict[str, Any]:
    """The published spec says what the API does: validation errors are 400 in the contract's
    shape, never FastAPI's default 422."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Errors"] = ERROR_SCHEMA
        error = {
            "description": "Invalid input",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
        }
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", error)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema
