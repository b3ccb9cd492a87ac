"""Ticket routes: create, list, show, update; prices in cents in MongoDB; ticket events on JetStream."""

from __future__ import annotations

import pytest
from bson import ObjectId

from ticketing.documents import Ticket

from .conftest import assert_error


async def stored(ticket_id: str) -> dict:
    doc = await Ticket.get_pymongo_collection().find_one({"_id": ObjectId(ticket_id)})
    assert doc is not None
    return doc


# ── create ────────────────────────────────────────────────────────────────────────────


async def test_create_ticket(stack):
    headers = await stack.signup()
    me = (await stack.api.get("/api/users/currentuser", headers=headers)).json()["currentUser"]
    r = await stack.api.post("/api/tickets", json={"title": "  Concert  ", "price": 20.5}, headers=headers)
    assert r.status_code == 201, r.text
    ticket = r.json()
    assert set(ticket) == {"id", "title", "price", "userId", "version", "orderId"}
    assert ticket["title"] == "Concert"
    assert ticket["price"] == 20.5
    assert ticket["userId"] == me["id"]
    assert ticket["version"] == 0
    assert ticket["orderId"] is None

    r = await stack.api.get(f"/api/tickets/{ticket['id']}")
    assert r.status_code == 200
    assert r.json() == ticket

    doc = await stored(ticket["id"])
    assert doc["price"] == 2050
    assert isinstance(doc["price"], int)
    assert doc["title"] == "Concert"
    assert doc["user_id"] == me["id"]
    assert doc["version"] == 0


@pytest.mark.parametrize(("price", "cents"), [(1, 100), (0.01, 1), (19.99, 1999), (10.1, 1010), (1000000, 100000000)])
async def test_create_ticket_price_cents(stack, price, cents):
    headers = await stack.signup()
    ticket = await stack.create_ticket(headers, price=price)
    assert ticket["price"] == price
    assert (await stored(ticket["id"]))["price"] == cents


async def test_ticket_created_event(stack):
    headers = await stack.signup()
    ticket = await stack.create_ticket(headers, title="Opera", price=20.5)
    msgs = await stack.wait_for_messages("ticket:created", 1)
    assert len(msgs) == 1
    msg = msgs[0]
    assert msg.data == {
        "id": ticket["id"],
        "version": 0,
        "title": "Opera",
        "price": 20.5,
        "userId": ticket["userId"],
    }
    assert msg.msg_id == f"ticket:created:{ticket['id']}:0"


async def test_create_requires_auth(stack):
    stack.api.cookies.clear()
    r = await stack.api.post("/api/tickets", json={"title": "Concert", "price": 10})
    assert_error(r, 401, message="Not authorized")
    assert await Ticket.get_pymongo_collection().count_documents({}) == 0
    assert await stack.messages("ticket:created") == []


@pytest.mark.parametrize("title", ["", "   ", None, 5])
async def test_create_bad_title(stack, title):
    headers = await stack.signup()
    r = await stack.api.post("/api/tickets", json={"title": title, "price": 10}, headers=headers)
    errors = assert_error(r, 400, "title")
    assert [e["field"] for e in errors] == ["title"]


@pytest.mark.parametrize("price", [0, -10, -0.5, 10.123, 0.001, "10", "abc", None, True, 1000000.01])
async def test_create_bad_price(stack, price):
    headers = await stack.signup()
    r = await stack.api.post("/api/tickets", json={"title": "Concert", "price": price}, headers=headers)
    errors = assert_error(r, 400, "price")
    assert [e["field"] for e in errors] == ["price"]


@pytest.mark.parametrize("raw", ['{"title":"a","price":NaN}', '{"title":"a","price":Infinity}'])
async def test_create_non_finite_price(stack, raw):
    headers = await stack.signup()
    headers = {**headers, "content-type": "application/json"}
    r = await stack.api.post("/api/tickets", content=raw, headers=headers)
    assert_error(r, 400, "price")


async def test_create_missing_fields(stack):
    headers = await stack.signup()
    r = await stack.api.post("/api/tickets", json={"title": "Concert"}, headers=headers)
    assert [e["field"] for e in assert_error(r, 400)] == ["price"]
    r = await stack.api.post("/api/tickets", json={"price": 10}, headers=headers)
    assert [e["field"] for e in assert_error(r, 400)] == ["title"]
    r = await stack.api.post("/api/tickets", json={}, headers=headers)
    assert sorted(e["field"] for e in assert_error(r, 400)) == ["price", "title"]
    assert await Ticket.get_pymongo_collection().count_documents({}) == 0


async def test_create_unknown_field(stack):
    headers = await stack.signup()
    r = await stack.api.post(
        "/api/tickets", json={"title": "Concert", "price": 10, "userId": "someone-else"}, headers=headers
    )
    assert_error(r, 400, "userId")
    r = await stack.api.post("/api/tickets", json={"title": "Concert", "price": 10, "extra": 1}, headers=headers)
    assert_error(r, 400, "extra")
    assert await Ticket.get_pymongo_collection().count_documents({}) == 0


# ── list / show ───────────────────────────────────────────────────────────────────────


async def test_list_shows_free_tickets_and_hides_reserved(stack):
    seller = await stack.signup()
    buyer = await stack.signup()
    r = await stack.api.get("/api/tickets")
    assert r.status_code == 200
    assert r.json() == []

    a = await stack.create_ticket(seller, title="A", price=10)
    b = await stack.create_ticket(seller, title="B", price=15.25)
    c = await stack.create_ticket(buyer, title="C", price=1)
    r = await stack.api.get("/api/tickets")
    assert r.status_code == 200
    assert r.json() == [c, b, a]  # newest first
    assert "link" not in r.headers  # a small list is one page

    order = await stack.create_order(buyer, b["id"])
    r = await stack.api.get("/api/tickets")
    assert [t["id"] for t in r.json()] == [c["id"], a["id"]]

    # Still visible by id, with the order that holds it.
    r = await stack.api.get(f"/api/tickets/{b['id']}")
    assert r.status_code == 200
    assert r.json()["orderId"] == order["id"]


@pytest.mark.parametrize("ticket_id", ["abc", "123", str(ObjectId()), "z" * 24, "abcdefghijkl", "0" * 25])
async def test_show_unknown_or_malformed_id(stack, ticket_id):
    r = await stack.api.get(f"/api/tickets/{ticket_id}")
    assert_error(r, 404)


# ── update ────────────────────────────────────────────────────────────────────────────


async def test_update_by_owner(stack):
    headers = await stack.signup()
    ticket = await stack.create_ticket(headers, title="Concert", price=20.5)
    body = {"title": "New title", "price": 30.25}
    r = await stack.api.put(f"/api/tickets/{ticket['id']}", json=body, headers=headers)
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated == {**ticket, "title": "New title", "price": 30.25, "version": 1}
    assert (await stack.api.get(f"/api/tickets/{ticket['id']}")).json() == updated
    doc = await stored(ticket["id"])
    assert doc["price"] == 3025
    assert doc["version"] == 1

    msgs = await stack.wait_for_messages("ticket:updated", 1)
    assert len(msgs) == 1
    assert msgs[0].data == {
        "id": ticket["id"],
        "version": 1,
        "title": "New title",
        "price": 30.25,
        "userId": ticket["userId"],
        "orderId": None,
    }
    assert msgs[0].msg_id == f"ticket:updated:{ticket['id']}:1"

    # A second edit: version 2, a second event with its own msg id.
    r = await stack.api.put(f"/api/tickets/{ticket['id']}", json={"title": "Third", "price": 5}, headers=headers)
    assert r.status_code == 200
    assert r.json()["version"] == 2
    msgs = await stack.wait_for_messages("ticket:updated", 2)
    assert [m.msg_id for m in msgs] == [f"ticket:updated:{ticket['id']}:1", f"ticket:updated:{ticket['id']}:2"]


async def test_update_by_other_user_or_anonymous(stack):
    owner = await stack.signup()
    other = await stack.signup()
    ticket = await stack.create_ticket(owner)
    r = await stack.api.put(f"/api/tickets/{ticket['id']}", json={"title": "Mine now", "price": 1}, headers=other)
    assert_error(r, 401)
    stack.api.cookies.clear()
    r = await stack.api.put(f"/api/tickets/{ticket['id']}", json={"title": "Mine now", "price": 1})
    assert_error(r, 401)
    assert (await stack.api.get(f"/api/tickets/{ticket['id']}")).json() == ticket
    assert await stack.messages("ticket:updated") == []


async def test_update_invalid_body(stack):
    headers = await stack.signup()
    ticket = await stack.create_ticket(headers)
    url = f"/api/tickets/{ticket['id']}"
    for body, field in (
        ({"title": "", "price": 10}, "title"),
        ({"title": "ok", "price": -1}, "price"),
        ({"title": "ok", "price": 1.234}, "price"),
        ({"title": "ok"}, "price"),
        ({"title": "ok", "price": 10, "version": 7}, "version"),
    ):
        r = await stack.api.put(url, json=body, headers=headers)
        assert_error(r, 400, field)
    assert (await stack.api.get(url)).json() == ticket
    assert (await stored(ticket["id"]))["version"] == 0


async def test_update_unknown_ticket(stack):
    headers = await stack.signup()
    for ticket_id in (str(ObjectId()), "abc"):
        r = await stack.api.put(f"/api/tickets/{ticket_id}", json={"title": "x", "price": 1}, headers=headers)
        assert_error(r, 404)


async def test_update_reserved_ticket(stack):
    seller = await stack.signup()
    buyer = await stack.signup()
    ticket = await stack.create_ticket(seller)
    await stack.create_order(buyer, ticket["id"])
    before = (await stack.api.get(f"/api/tickets/{ticket['id']}")).json()
    assert before["orderId"] is not None

    r = await stack.api.put(f"/api/tickets/{ticket['id']}", json={"title": "Changed", "price": 99}, headers=seller)
    assert_error(r, 400, message="Cannot edit a reserved ticket")
    after = (await stack.api.get(f"/api/tickets/{ticket['id']}")).json()
    assert after == before
    assert (await stored(ticket["id"]))["price"] == 2050
