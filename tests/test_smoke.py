async def test_order_cancelled_by_buyer_is_published_once(stack):
    seller = await stack.signup()
    buyer = await stack.signup()
    ticket = await stack.create_ticket(seller, price=20.5)
    assert ticket["price"] == 20.5
    order = await stack.create_order(buyer, ticket["id"])
    assert order["status"] == "created"
    r = await stack.api.get("/api/tickets")
    assert ticket["id"] not in [t["id"] for t in r.json()]
    r = await stack.api.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert r.status_code == 204, r.text
    msgs = await stack.wait_for_messages("order:cancelled", 1)
    assert msgs[0].data["version"] == 1
    ids = [m.msg_id for m in await stack.messages()]
    assert f"order:cancelled:{order['id']}:1" in ids
    assert len(ids) == len(set(ids))  # every fact once
