"""Liveness (/healthz: the process answers) and readiness (/readyz: MongoDB, NATS, Temporal answer)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Deps
from api.errors import error_body
from ticketing.db import ping as mongo_ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: Deps) -> JSONResponse:
    checks = {
        "mongodb": mongo_ping(services.mongo),
        "nats": services.bus.ping(),
        "temporal": services.temporal.service_client.check_health(timeout=timedelta(seconds=2)),
    }
    results = await asyncio.gather(*(asyncio.wait_for(c, 3) for c in checks.values()), return_exceptions=True)
    down = [name for name, result in zip(checks, results, strict=True) if isinstance(result, BaseException)]
    if down:
        body = error_body(*((f"{name} is not reachable", name) for name in down))
        return JSONResponse({**body, "down": down}, status_code=503)
    return JSONResponse({"status": "ready", "checks": dict.fromkeys(checks, "ok")})
