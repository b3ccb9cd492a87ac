"""List pages: GET /api/tickets and GET /api/orders take `limit` and `before`, newest first, with no
gap and no duplicate across pages, whatever the spacing in time of the documents (the pages are
read in `_id` windows going back in time: ticketing/queries.py newest_first)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from ticketing.documents import Order, Ticket
from ticketing.queries import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX

from .conftest import assert_error

# Ids spread from the future (a clock ahead) to years back, across every window size and the
# open-ended last window, with bursts of several ids in the same second.
AGES = [
    timedelta(seconds=-5),
    timedelta(0),
    timedelta(0),
    timedelta(seconds=0.4),
    timedelta(seconds=3),
    timedelta(seconds=40),
    timedelta(minutes=7),
    timedelta(minutes=7),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=40),
    timedelta(days=300),
    timedelta(days=3 * 365),
    timedelta(days=12 * 365),
]


def spread_ids() -> list[ObjectId]:
    now = datetime.now(UTC)
    return [ObjectId(str(ObjectId.from_datetime(now - age))[:8] + ObjectId().binary.hex()[8:]) for age in AGES]


async def pages(stack, path: str, limit: int, headers: dict[str, str] | None = None) -> list[list[dict]]:
    """Every page, following the `Link` header of each full page."""
    out: list[list[dict]] = []
    url: str | None = f"{path}?limit={limit}"
    while url is not None:
        r = await stack.api.get(url, headers=headers)
        assert r.status_code == 200, r.text
        out.append(r.json())
        url = None
        if "link" in r.headers:
            assert len(out[-1]) == limit
            link = r.headers["link"]
            assert link.endswith('>; rel="next"')
            assert f"before={out[-1][-1]['id']}" in link
            url = link[1 : link.index(">")]
        assert len(out) <= 50, "pages never end"
    return out


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 100])
async def test_ticket_pages_newest_first_without_gaps(stack, limit):
    ids = spread_ids()
    held = ids[5::4]  # reserved: never listed
    await Ticket.get_pymongo_collection().insert_many(
        [
            {"_id": oid, "title": f"T{i}", "price": 100, "user_id": "u", "version": 0, "order_id": None}
            if oid not in held
            else {"_id": oid, "title": f"T{i}", "price": 100, "user_id": "u", "version": 1, "order_id": str(oid)}
            for i, oid in enumerate(ids)
        ]
    )
    expected = sorted((str(i) for i in ids if i not in held), reverse=True)
    got = await pages(stack, "/api/tickets", limit)
    listed = [t["id"] for page in got for t in page]
    assert listed == expected  # newest first, no gap, no duplicate
    assert all(len(page) == limit for page in got[:-1])
    assert (await stack.api.get("/api/tickets")).json() == [t for page in got for t in page]


async def test_order_pages_are_the_callers_newest_first(stack):
    me = await stack.signup()
    my_id = (await stack.api.get("/api/users/currentuser", headers=me)).json()["currentUser"]["id"]
    ids = spread_ids()
    now = datetime.now(UTC)
    docs: list[dict[str, Any]] = [
        {
            "_id": oid,
            "user_id": my_id if i % 3 else "someone-else",
            "status": "cancelled",
            "expires_at": now,
            "version": 2,
            "ticket": {"id": str(ObjectId()), "title": f"T{i}", "price": 100},
            "created_at": now,
        }
        for i, oid in enumerate(ids)
    ]
    await Order.get_pymongo_collection().insert_many(docs)
    mine = sorted((str(d["_id"]) for d in docs if d["user_id"] == my_id), reverse=True)
    for limit in (1, 4, LIST_LIMIT_DEFAULT):
        got = await pages(stack, "/api/orders", limit, headers=me)
        assert [o["id"] for page in got for o in page] == mine
    first = (await stack.api.get(f"/api/orders?limit=2&before={mine[3]}", headers=me)).json()
    assert [o["id"] for o in first] == mine[4:6]
    newest = next(d for d in docs if str(d["_id"]) == mine[0])
    listed = (await stack.api.get("/api/orders", headers=me)).json()[0]
    assert listed["ticket"] == {**newest["ticket"], "price": 1.0}  # cents in MongoDB, major units in JSON


async def test_a_real_order_pages(stack):
    seller = await stack.signup()
    buyer = await stack.signup()
    tickets = [await stack.create_ticket(seller, title=f"T{i}") for i in range(3)]
    orders = [await stack.create_order(buyer, t["id"]) for t in tickets[:2]]
    r = await stack.api.get("/api/orders?limit=1", headers=buyer)
    assert r.json() == [(await stack.api.get(f"/api/orders/{orders[1]['id']}", headers=buyer)).json()]
    r = await stack.api.get(f"/api/orders?limit=1&before={orders[1]['id']}", headers=buyer)
    assert [o["id"] for o in r.json()] == [orders[0]["id"]]
    r = await stack.api.get(f"/api/orders?before={orders[0]['id']}", headers=buyer)
    assert r.json() == []
    assert "link" not in r.headers
    r = await stack.api.get("/api/tickets?limit=1")
    assert [t["id"] for t in r.json()] == [tickets[2]["id"]]  # the others are reserved


@pytest.mark.parametrize("path", ["/api/tickets", "/api/orders"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        (f"limit={LIST_LIMIT_MAX + 1}", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("before=nope", "before"),
        ("before=" + "z" * 24, "before"),
        ("before=" + "0" * 25, "before"),
        ("before=", "before"),
    ],
)
async def test_bad_page_params(stack, path, query, field):
    headers = await stack.signup()
    r = await stack.api.get(f"{path}?{query}", headers=headers)
    errors = assert_error(r, 400, field)
    expected = {
        "limit": f"limit must be a whole number from 1 to {LIST_LIMIT_MAX}",
        "before": "before must be an id from the previous page (24 hexadecimal characters)",
    }
    assert errors == [{"message": expected[field], "field": field}]


async def test_max_limit_and_openapi(stack):
    r = await stack.api.get(f"/api/tickets?limit={LIST_LIMIT_MAX}")
    assert r.status_code == 200
    assert r.json() == []
    spec = (await stack.api.get("/openapi.json")).json()
    for path in ("/api/tickets", "/api/orders"):
        params = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert params["limit"]["schema"]["maximum"] == LIST_LIMIT_MAX
        assert params["limit"]["schema"]["default"] == LIST_LIMIT_DEFAULT
        assert params["limit"]["description"]
        assert params["before"]["description"]


async def test_first_page_sees_documents_added_anywhere_since_the_last(stack):
    """A first page starts where the previous one began (a per-process hint): documents added
    since, newer, older or in between, are all listed."""

    async def add(ages: list[timedelta]) -> None:
        now = datetime.now(UTC)
        docs = [
            {
                "_id": ObjectId(str(ObjectId.from_datetime(now - age))[:8] + ObjectId().binary.hex()[8:]),
                "title": "T",
                "price": 100,
                "user_id": "u",
                "version": 0,
                "order_id": None,
            }
            for age in ages
        ]
        await Ticket.get_pymongo_collection().insert_many(docs)

    await add([timedelta(hours=3), timedelta(days=2)])
    first = (await stack.api.get("/api/tickets")).json()
    assert len(first) == 2
    await add([timedelta(seconds=-2), timedelta(0), timedelta(hours=1), timedelta(hours=4), timedelta(days=900)])
    for limit in (100, 2):
        listed = [t["id"] for page in await pages(stack, "/api/tickets", limit) for t in page]
        stored = await Ticket.get_pymongo_collection().find({}, {"_id": 1}).to_list()
        assert listed == sorted((str(d["_id"]) for d in stored), reverse=True)


@pytest.mark.parametrize("limit", [7, 100])
async def test_pages_through_a_burst(stack, limit):
    """Ids one process made in a burst (same second, counting up), around spread ones."""
    burst = [ObjectId() for _ in range(250)]
    ids = burst + spread_ids()
    await Ticket.get_pymongo_collection().insert_many(
        [{"_id": oid, "title": "T", "price": 100, "user_id": "u", "version": 0, "order_id": None} for oid in ids]
    )
    for _ in range(2):  # the second time, the first page starts where the first one began
        listed = [t["id"] for page in await pages(stack, "/api/tickets", limit) for t in page]
        assert listed == sorted((str(i) for i in ids), reverse=True)
