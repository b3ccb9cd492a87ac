"""The FastAPI application: routes under /api, health probes, metrics, the contract's errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import health, orders, payments, tickets, users
from api.deps import Services
from api.errors import install_error_handlers
from api.metrics import install_edge
from api.web import install_web
from ticketing.bus import EventBus
from ticketing.db import connect_db
from ticketing.settings import Settings, get_settings
from ticketing.temporal import connect_temporal

log = logging.getLogger(__name__)


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

    app.state.settings = settings
    install_error_handlers(app)
    install_edge(app)
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
