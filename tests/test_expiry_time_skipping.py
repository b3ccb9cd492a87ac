"""The default 15-minute window, expired in seconds on Temporal's time-skipping test server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack import find_binary
from ticketing.payloads import OrderState
from ticketing.temporal import SEARCH_ATTRIBUTES, order_workflow_id

from .conftest import Servers, run_stack


@pytest.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=find_binary("temporal-test-server"))
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in SEARCH_ATTRIBUTES},
            )
        )
        yield env


async def test_default_window_expires_cancels_and_releases(servers: Servers, time_skipping: WorkflowEnvironment):
    settings = servers.settings(temporal_address=time_skipping.client.service_client.config.target_host)
    assert settings.order_expiration_seconds == 900
    # The environment's client skips time while it waits for a result; give it our data converter.
    config = time_skipping.client.config()
    config["data_converter"] = pydantic_data_converter
    client = Client(**config)
    async with run_stack(servers, settings, temporal_client=client) as stack:
        seller, buyer = await stack.signup(), await stack.signup()
        ticket = await stack.create_ticket(seller)
        order = await stack.create_order(buyer, ticket["id"])
        assert ticket["id"] not in [t["id"] for t in (await stack.api.get("/api/tickets")).json()]

        started = time.monotonic()
        handle = time_skipping.client.get_workflow_handle(order_workflow_id(order["id"]), result_type=OrderState)
        await time_skipping.sleep(timedelta(minutes=15, seconds=1))
        state = await handle.result()
        assert time.monotonic() - started < 60  # 15 minutes of workflow time, seconds of ours

        assert state.status == "cancelled"
        shown = (await stack.api.get(f"/api/orders/{order['id']}", headers=buyer)).json()
        assert shown["status"] == "cancelled"
        assert shown["version"] == order["version"] + 1

        lifecycle = [m for m in await stack.messages() if m.subject in ("expiration:complete", "order:cancelled")]
        assert [m.subject for m in lifecycle] == ["expiration:complete", "order:cancelled"]
        assert lifecycle[0].data == {"orderId": order["id"]}
        assert lifecycle[1].data == {"id": order["id"], "version": order["version"] + 1, "ticket": {"id": ticket["id"]}}
        assert ticket["id"] in [t["id"] for t in (await stack.api.get("/api/tickets")).json()]
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(SEARCH_ATTRIBUTES[0]) == "cancelled"
