"""Every query shape the API and the activities send (ticketing/queries.py SHAPES) is served by an
index on SecantusDB, on collections of a few thousand documents; docs/queries.md is the table these
plans make (`UPDATE_QUERY_DOCS=1 pytest tests/test_query_plans.py` rewrites it)."""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from ticketing.db import connect_db
from ticketing.queries import SHAPES, Samples, Shape, by_id

from .conftest import Servers

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "queries.md"
N = 3000  # documents per collection: a collection scan costs ~100x a point lookup at this size
USERS_WITH_ORDERS = 30


@pytest.fixture(scope="module")
async def db(servers: Servers) -> AsyncIterator[Any]:
    """A database with the indexes Beanie declares, filled with N documents per collection."""
    settings = servers.settings()
    client: AsyncMongoClient = await connect_db(settings)  # creates the declared indexes
    database = client[settings.mongo_db]
    start = datetime.now(UTC) - timedelta(days=3)
    ids = [ObjectId.from_datetime(start + timedelta(seconds=60 * i)) for i in range(N)]
    # from_datetime leaves the rest of the id zero: make each unique, still in time order.
    ids = [ObjectId(str(oid)[:16] + f"{i:08x}") for i, oid in enumerate(ids)]
    users = [ObjectId() for _ in range(N)]
    await database.users.insert_many(
        [
            {"_id": u, "email": f"user{i}@test.com", "password_hash": "x", "created_at": start}
            for i, u in enumerate(users)
        ]
    )
    await database.tickets.insert_many(
        [
            {
                "_id": oid,
                "title": f"Concert {i}",
                "price": 2050,
                "user_id": str(users[0]),
                "version": i % 2,
                "order_id": str(ids[i]) if i % 2 else None,  # every other ticket reserved
            }
            for i, oid in enumerate(ids)
        ]
    )
    await database.orders.insert_many(
        [
            {
                "_id": oid,
                "user_id": str(users[i % USERS_WITH_ORDERS]),
                "status": ["created", "complete", "cancelled"][i % 3],
                "expires_at": start,
                "version": i % 3,
                "ticket": {"id": str(oid), "title": f"Concert {i}", "price": 2050},
                "created_at": start,
            }
            for i, oid in enumerate(ids)
        ]
    )
    await database.charges.insert_many(
        [
            {"order_id": str(oid), "stripe_id": f"pi_{i}", "amount": 2050, "currency": "usd", "status": "succeeded"}
            for i, oid in enumerate(ids)
        ]
    )
    await database.payment_attempts.insert_many(
        [{"_id": f"{oid}-1", "intent_id": f"pi_{i}", "created_at": start} for i, oid in enumerate(ids)]
    )
    await database.signin_failures.insert_many(
        [{"key": f"email:user{i % 300}@test.com", "at": start + timedelta(seconds=i)} for i in range(N)]
    )
    await database.reconcile_state.insert_many(
        [{"_id": "payments", "watermark": 1}] + [{"_id": f"other-{i}", "watermark": i} for i in range(N)]
    )
    yield database
    await client.drop_database(settings.mongo_db)
    await client.close()


async def stored_samples(db: Any) -> Samples:
    ids = [d["_id"] for d in await db.tickets.find({}, {"_id": 1}).to_list()]
    ids.sort()
    mid = N // 2
    order = await db.orders.find_one({"_id": ids[mid + 1]})
    return Samples(
        ticket_id=ids[mid],
        order_id=ids[mid + 1],
        user_id=order["user_id"],
        email=f"user{mid}@test.com",
        payment_intent_id=f"pi_{mid}",
        attempt_key=f"{ids[mid]}-1",
        signin_key=f"email:user{mid % 300}@test.com",
        since=datetime.now(UTC) - timedelta(minutes=15),
        window_lower=ids[mid - 50],
        window_upper=ids[mid + 50],
    )


async def explain(db: Any, shape: Shape, flt: dict[str, Any]) -> dict[str, Any]:
    cmd: dict[str, Any] = {"find": shape.collection, "filter": flt}
    if shape.sort:
        cmd["sort"] = dict(shape.sort)
    reply = await db.command({"explain": cmd, "verbosity": "queryPlanner"})
    plan: dict[str, Any] = reply["queryPlanner"]["winningPlan"]
    return plan


def stages(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    node: dict[str, Any] | None = plan
    while node is not None:
        out.append(node)
        node = node.get("inputStage")
    return out


def describe(plan: dict[str, Any]) -> str:
    """`SORT ← FETCH ← IXSCAN order_id_1__id_-1`: the winning plan, outermost stage first."""
    parts = []
    for st in stages(plan):
        parts.append(f"{st['stage']} {st['indexName']}" if st["stage"] == "IXSCAN" else st["stage"])
    return " ← ".join(parts)


async def median_ms(db: Any, collection: str, flt: dict[str, Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await db[collection].find_one(flt)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def plan_rows(db: Any) -> tuple[list[str], list[str]]:
    """The table rows of docs/queries.md and the shapes that scan."""
    s = await stored_samples(db)
    rows, scans = [], []
    scan_ms: dict[str, float] = {}
    for shape in SHAPES:
        flt = shape.filter(s)
        if shape.id_lookup:
            # SecantusDB's explain plans `_id` + other fields as COLLSCAN, while its executor looks
            # the `_id` up and checks the rest on that one document: explain the `_id` clause, and
            # time the whole filter against a real collection scan to prove the executor's choice.
            plan = await explain(db, shape, by_id(flt["_id"]))
            if shape.collection not in scan_ms:
                scan_ms[shape.collection] = await median_ms(db, shape.collection, {"no_such_field": 1}, runs=3)
            took = await median_ms(db, shape.collection, flt)
            if took * 10 > scan_ms[shape.collection]:
                scans.append(f"{shape.name}: {took:.1f} ms, a collection scan takes {scan_ms[shape.collection]:.1f} ms")
            plan_text = f"{describe(plan)} (explain of the `_id` clause; see below)"
        else:
            plan = await explain(db, shape, flt)
            plan_text = describe(plan)
        scan_stages = [st for st in stages(plan) if st["stage"] == "COLLSCAN"]
        expected_index = shape.index.split()[0]
        used = [st.get("indexName") for st in stages(plan) if st["stage"] == "IXSCAN"]
        if scan_stages or used != [expected_index]:
            scans.append(f"{shape.name}: {plan_text}, expected IXSCAN on {expected_index}")
        rows.append(
            f"| {shape.name} | `{shape.collection}` {shape.operation} | `{_show(flt)}`"
            f"{' sort `' + str(dict(shape.sort)).replace(chr(39), '') + '`' if shape.sort else ''} | {shape.where} | "
            f"{shape.index} | {plan_text} |"
        )
    return rows, scans


def _show(value: Any) -> str:
    """A filter with sample values replaced by their kind, for the doc."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, ObjectId):
        return "<id>"
    if value is None:
        return "null"
    if isinstance(value, datetime):
        return "<date>"
    if isinstance(value, str):
        return f'"{value}"' if value in ("complete", "cancelled") else "<str>"
    if isinstance(value, int):
        return "<n>"
    return repr(value)


HEADER = """# MongoDB queries and their plans

Every query and update the API and the activities send, the index that serves it, and the plan
SecantusDB's `explain()` gives it on collections of {n:,} documents each. Generated by
`UPDATE_QUERY_DOCS=1 pytest tests/test_query_plans.py` from `SHAPES` in
[ticketing/queries.py](../ticketing/queries.py), whose filter builders the code sends; the same test
fails when a shape plans as a collection scan or when this file is out of date.

| shape | collection, operation | filter | where | index | winning plan (explain) |
|---|---|---|---|---|---|
"""

FOOTER = """
Notes (SecantusDB 0.7.0b3, measured):

- **Updates** are planned like a `find` with the same filter: SecantusDB selects the documents an
  update changes with the same index lookup as a query (its `explain` of an `update` command
  ignores the filter, so the test explains the filter).
- **`_id` plus other fields** (an update pinned to the version it read): SecantusDB's `explain`
  reports COLLSCAN, but its executor looks the `_id` up and checks the other fields on that one
  document. The table shows the plan of the `_id` clause; the test also times the whole filter
  and fails unless it is 10 times faster than a collection scan of the same collection (about
  1 ms against 100+ ms).
- **No findAndModify.** SecantusDB runs `findAndModify` (`find_one_and_update`) as a collection
  scan when it matches a document, whatever its filter, and `explain` does not show it. Changes
  are a read plus an `update_one` pinned to the version read; the test fails if the code calls
  `find_one_and_*`.
- **A limit does not bound the work.** SecantusDB fetches and sorts every document the filter
  matches, then applies the limit (about 65 µs per document: 100,000 free tickets took 6.5 s for
  a page of 100). List pages therefore bound the filter itself: `newest_first` reads adjacent
  `_id` windows (an ObjectId starts with its creation second) going back in time, 1 s first, then
  sized from the documents found (x16 while empty), then one open-ended window. A next page
  starts at its `before`, a first page where the list's previous first page began, with a first
  window of the ids just below (a burst of one process) and then one sized from the spacing of
  the list's last full page (both remembered per process).
  The `SORT` above the `IXSCAN` sorts one window, not the collection. What a page costs is the
  documents in the windows it reads: about a page when documents arrive steadily; more when a
  window crosses a quiet gap of length D into a dense stretch (it reads up to 15 D of that
  stretch), and at least the documents created in one second (ObjectId resolution).
- Inserts (Beanie `.insert()`) read nothing; each index above costs every insert, and every
  update of an indexed field (`tickets.order_id` on reserve and release).
"""


def render(rows: list[str]) -> str:
    return HEADER.format(n=N) + "\n".join(rows) + "\n" + FOOTER


async def test_every_shape_uses_an_index(db):
    rows, scans = await plan_rows(db)
    assert not scans, "\n".join(scans)
    text = render(rows)
    if os.environ.get("UPDATE_QUERY_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, (
        "docs/queries.md is out of date: UPDATE_QUERY_DOCS=1 pytest tests/test_query_plans.py"
    )


async def test_an_unindexed_shape_fails_the_check(db):
    """The check can fail: a filter no declared index serves plans as a scan."""
    shape = Shape("by title", "tickets", "find", "-", "none", lambda s: {"title": "Concert 1"})
    plan = await explain(db, shape, shape.filter(await stored_samples(db)))
    assert [st["stage"] for st in stages(plan)] == ["COLLSCAN"]
    scan = await median_ms(db, "tickets", {"no_such_field": 1}, runs=3)
    s = await stored_samples(db)
    point = await median_ms(db, "tickets", {"_id": s.ticket_id, "version": 0, "order_id": None})
    assert point * 10 < scan, (point, scan)


def test_no_find_and_modify_in_the_code():
    calls = re.compile(r"\.find_one_and_(update|replace|delete)\(|[\"']findAndModify[\"']")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("api", "activities", "ticketing", "workers", "workflows")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if calls.search(line)
    ]
    assert not found, f"findAndModify is a collection scan on SecantusDB: {found}"
