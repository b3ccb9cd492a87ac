"""The contract's error shape everywhere: {"errors": [{"message": str, "field": str | null}]}."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI, HTTPException

from api.app import create_app
from api.errors import BadRequest
from ticketing.settings import Settings

from .conftest import Stack, asgi_client, assert_error

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/users/nope", "/api/tickets/a/b"])
async def test_unknown_route_404(stack: Stack, path):
    r = await stack.api.get(path)
    assert assert_error(r, 404) == [{"message": "Not found", "field": None}]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/tickets", {"GET", "POST"}),
        ("POST", "/api/tickets/abc", {"GET", "PUT"}),
        ("PATCH", "/api/users/signup", {"POST"}),
        ("GET", "/api/users/signin", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_wrong_method_405(stack: Stack, method, path, allowed):
    r = await stack.api.request(method, path)
    assert assert_error(r, 405) == [{"message": "Method not allowed", "field": None}]
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize("raw", ["{bad json", "{", '{"email": "a@b.com",}', "{'email': 'a@b.com'}"])
async def test_malformed_json_400(stack: Stack, raw):
    r = await stack.api.post("/api/users/signup", content=raw, headers=JSON)
    errors = assert_error(r, 400)
    assert errors == [{"message": "Malformed JSON body", "field": None}]


async def test_malformed_json_on_authenticated_route(stack: Stack):
    headers = {**await stack.signup(), **JSON}
    r = await stack.api.post("/api/tickets", content='{"title": "x", "price": ', headers=headers)
    assert assert_error(r, 400) == [{"message": "Malformed JSON body", "field": None}]


@pytest.mark.parametrize("raw", ["[]", '[{"email": "a@b.com", "password": "password"}]', "null", '"text"', "42"])
async def test_wrong_top_level_type_400(stack: Stack, raw):
    r = await stack.api.post("/api/users/signup", content=raw, headers=JSON)
    errors = assert_error(r, 400)
    assert len(errors) == 1
    assert errors[0]["field"] is None


async def test_undecodable_and_empty_bodies_400(stack: Stack):
    for raw, headers in ((b"\xff\xfe{", JSON), (b"", JSON), (b"", {}), (b"email=a@b.com", {})):
        r = await stack.api.post("/api/users/signup", content=raw, headers=headers)
        assert_error(r, 400)


async def test_deeply_nested_json_400(stack: Stack):
    raw = "[" * 100_000 + "]" * 100_000
    r = await stack.api.post("/api/users/signup", content=raw, headers=JSON)
    assert_error(r, 400)


async def test_two_megabyte_body(stack: Stack):
    headers = {**await stack.signup(), **JSON}
    big = "a" * (2 * 1024 * 1024)
    for path, payload in (
        ("/api/users/signup", {"email": f"{big}@b.com", "password": "password"}),
        ("/api/tickets", {"title": big, "price": 1}),
        ("/api/tickets", {"title": "ok", "price": 1, "padding": big}),
    ):
        r = await stack.api.post(path, content=json.dumps(payload), headers=headers)
        assert r.status_code in (400, 413), (path, r.status_code)
        assert_error(r, r.status_code)
    r = await stack.api.post("/api/users/signup", content=big, headers=JSON)
    assert r.status_code in (400, 413)
    assert_error(r, r.status_code)
    # Still serving, and nothing was stored.
    assert (await stack.api.get("/healthz")).status_code == 200
    r = await stack.api.get("/api/tickets")
    assert r.status_code == 200
    assert r.json() == []


async def test_validation_errors_one_entry_per_field(stack: Stack):
    r = await stack.api.post("/api/users/signup", json={"email": "bad", "password": "x", "extra": 1})
    errors = assert_error(r, 400)
    assert sorted(e["field"] for e in errors) == ["email", "extra", "password"]
    assert r.status_code != 422


async def test_api_errors_in_shape(stack: Stack):
    stack.api.cookies.clear()
    assert_error(await stack.api.post("/api/tickets", json={"title": "x", "price": 1}), 401)
    assert_error(await stack.api.get("/api/tickets/abc"), 404)
    assert_error(await stack.api.post("/api/users/signin", json={"email": "x@y.com", "password": "nope"}), 400)


# ── unexpected failures ───────────────────────────────────────────────────────────────


def _app_with_routes() -> FastAPI:
    app = create_app(Settings(app_env="test"))

    async def boom() -> dict:
        raise RuntimeError("secret internal detail: mongodb://user:pw@db")

    def sync_boom() -> dict:
        raise KeyError("secret-key-detail")

    async def teapot() -> dict:
        raise HTTPException(status_code=418, detail="I'm a teapot")

    async def bad() -> dict:
        raise BadRequest("Nope", "thing")

    app.add_api_route("/boom", boom)
    app.add_api_route("/sync-boom", sync_boom, methods=["POST"])
    app.add_api_route("/teapot", teapot)
    app.add_api_route("/bad", bad)
    return app


async def test_unexpected_exception_is_generic_500(caplog):
    async with asgi_client(_app_with_routes(), raise_app_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="api.errors"):
            r = await client.get("/boom")
        errors = assert_error(r, 500)
        assert errors == [{"message": "Something went wrong", "field": None}]
        assert "secret" not in r.text
        assert "mongodb" not in r.text
        assert "RuntimeError" not in r.text
        # The details are in the logs.
        logged = [rec for rec in caplog.records if rec.name == "api.errors" and rec.exc_info]
        assert logged
        assert isinstance(logged[-1].exc_info[1], RuntimeError)
        assert "/boom" in logged[-1].getMessage()

        r = await client.post("/sync-boom")
        assert assert_error(r, 500) == [{"message": "Something went wrong", "field": None}]
        assert "secret" not in r.text

        r = await client.get("/teapot")
        assert assert_error(r, 418) == [{"message": "I'm a teapot", "field": None}]

        r = await client.get("/bad")
        assert assert_error(r, 400) == [{"message": "Nope", "field": "thing"}]

        # Still answering after the failures.
        assert (await client.get("/healthz")).status_code == 200
