"""The web pages over HTTP (no browser): who sees what, the security headers, and the CSRF check
that refuses state-changing requests a browser sends from another site."""

from __future__ import annotations

import pytest

from ticketing.documents import Ticket

from .conftest import assert_error


def cookie(headers: dict[str, str]) -> dict[str, str]:
    """The same session as a browser carries it."""
    return {"Cookie": f"session={headers['Authorization'].removeprefix('Bearer ')}"}


async def test_pages_render_for_a_signed_in_buyer(stack):
    seller = await stack.signup()
    buyer = await stack.signup()
    ticket = await stack.create_ticket(seller, title="Opera <b>gala</b>", price=20.5)
    order = await stack.create_order(buyer, ticket["id"])
    pages = {
        "/": ["Opera &lt;b&gt;gala&lt;/b&gt;", "reserved", "20.50 USD"],
        f"/tickets/{ticket['id']}": ["Opera &lt;b&gt;gala&lt;/b&gt;", "reserved"],
        "/orders": [f'data-order-id="{order["id"]}"', "created"],
        f"/orders/{order['id']}": ['id="pay-form"', 'data-publishable-key="pk_test_', order["expiresAt"][:19]],
        "/sell": ['data-api="POST /api/tickets"'],
        "/signin": ['data-api="POST /api/users/signin"'],
        "/signup": ['data-api="POST /api/users/signup"'],
    }
    for path, expected in pages.items():
        r = await stack.api.get(path, headers=cookie(buyer))
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("text/html"), path
        for text in expected:
            assert text in r.text, (path, text)
        assert "<b>gala" not in r.text  # escaped
    r = await stack.api.get(f"/orders/{order['id']}", headers=cookie(buyer))
    assert f'<script src="{stack.settings.stripe_js_url}"></script>' in r.text
    assert "<script>" not in r.text  # no inline script anywhere (the CSP forbids them)


async def test_signed_out_visitors_are_sent_to_sign_in(stack):
    for path in ("/orders", "/orders/0123456789abcdef01234567", "/sell"):
        r = await stack.api.get(path)
        assert r.status_code == 303, (path, r.text)
        assert r.headers["location"] == f"/signin?next={path}"
    r = await stack.api.get("/")
    assert r.status_code == 200
    assert 'href="/signin"' in r.text


async def test_someone_elses_or_unknown_order_and_ticket_are_404_pages(stack):
    seller, buyer, other = await stack.signup(), await stack.signup(), await stack.signup()
    ticket = await stack.create_ticket(seller)
    order = await stack.create_order(buyer, ticket["id"])
    for path, who in (
        (f"/orders/{order['id']}", other),
        ("/orders/0123456789abcdef01234567", buyer),
        ("/orders/not-an-id", buyer),
        ("/tickets/0123456789abcdef01234567", buyer),
        ("/tickets/not-an-id", buyer),
    ):
        r = await stack.api.get(path, headers=cookie(who))
        assert r.status_code == 404, (path, r.text)
        assert "not found" in r.text
        assert r.headers["content-type"].startswith("text/html")
        assert ticket["title"] not in r.text or "/tickets/" in path
    # unknown routes keep the contract's JSON 404
    assert_error(await stack.api.get("/nowhere"), 404)


async def test_security_headers_on_pages(stack_factory, servers):
    stripe = f"http://{servers.stripe.url}"  # localstripe, which serves a fake Stripe.js
    stack = await stack_factory(stripe_js_url=f"{stripe}/js.stripe.com/v3/")
    r = await stack.api.get("/")
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == f"'self' {stripe}"
    assert csp["connect-src"] == f"'self' {stripe}"
    assert csp["frame-src"] == stripe
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    # the JSON API is untouched
    assert "content-security-policy" not in (await stack.api.get("/api/tickets")).headers


@pytest.mark.parametrize(
    ("settings_overrides", "script", "connect"),
    [
        ({}, "'self' https://js.stripe.com", "'self' https://js.stripe.com https://api.stripe.com"),
        (
            {"stripe_js_url": "http://127.0.0.1:8420/js.stripe.com/v3/"},
            "'self' http://127.0.0.1:8420",
            "'self' http://127.0.0.1:8420",
        ),
    ],
)
def test_csp_follows_the_configured_stripe_js(servers, settings_overrides, script, connect):
    from api.web import content_security_policy

    base = {"stripe_js_url": "https://js.stripe.com/v3/"}
    csp = content_security_policy(servers.settings(**{**base, **settings_overrides}))
    parts = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert (parts["script-src"], parts["connect-src"]) == (script, connect)


async def test_cross_site_writes_are_refused(stack):
    seller = await stack.signup()
    as_browser = cookie(seller)
    body = {"title": "forged", "price": 1}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://test"},  # Sec-Fetch-Site wins
    ):
        r = await stack.api.post("/api/tickets", json=body, headers={**as_browser, **headers})
        assert_error(r, 403, message="Cross-site request refused")
        r = await stack.api.post("/api/users/signout", headers=headers)  # no forced sign-out either
        assert_error(r, 403, message="Cross-site request refused")
    # a form can only send form data or text/plain: never parsed as JSON
    r = await stack.api.post(
        "/api/tickets", content='{"title": "forged", "price": 1}', headers={**as_browser, "Content-Type": "text/plain"}
    )
    assert_error(r, 400)
    assert await Ticket.find(Ticket.title == "forged").count() == 0

    # our own pages (same origin), and clients that are not browsers, are served
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": "http://test"}, {"Origin": "http://test"}, {}):
        r = await stack.api.post("/api/tickets", json=body, headers={**as_browser, **headers})
        assert r.status_code == 201, (headers, r.text)
    # reads are never refused; Stripe's webhook is authenticated by its signature instead
    r = await stack.api.get("/api/tickets", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200
    r = await stack.api.post("/api/payments/webhook", content=b"{}", headers={"Origin": "https://stripe.example"})
    assert_error(r, 400, message="Invalid Stripe signature")
