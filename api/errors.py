"""The contract's error shape everywhere: {"errors": [{"message": str, "field": str | null}]}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ticketing.errors import BadRequest, NotAuthorized, NotFound, ServiceError

log = logging.getLogger(__name__)


# The routes raise the same refusals as the order service (ticketing/errors.py).
ApiError = ServiceError
__all__ = ["ApiError", "BadRequest", "NotAuthorized", "NotFound", "error_body", "install_error_handlers"]


def error_body(*errors: tuple[str, str | None]) -> dict[str, list[dict[str, str | None]]]:
    return {"errors": [{"message": message, "field": field} for message, field in errors]}


def _field(loc: tuple[int | str, ...]) -> str | None:
    # ("body", "price") -> "price"; ("body",) (malformed JSON, wrong top-level type) -> None
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else []
    return ".".join(parts) or None


def _message(err: dict) -> str:
    if err.get("type") == "json_invalid":
        return "Malformed JSON body"
    msg = str(err.get("msg", "Invalid value"))
    return msg.removeprefix("Value error, ")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route fully matches for this path (included routers are matched through)."""
    allowed: set[str] = set()
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body((exc.message, exc.field)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        seen: dict[str | None, str] = {}
        for err in exc.errors():
            # json_invalid's loc is ("body", <character offset>): not a field.
            field = None if err.get("type") == "json_invalid" else _field(tuple(err.get("loc", ())))
            seen.setdefault(field, _message(err))
        return JSONResponse(error_body(*((m, f) for f, m in seen.items())), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names only the first route matching the path; Allow must list every method.
            allowed = _allowed_methods(request)
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return JSONResponse(error_body((message, None)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(("Something went wrong", None)), status_code=500)
