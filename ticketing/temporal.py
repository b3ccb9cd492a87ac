"""Temporal names shared by the API, the worker and the tests."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from ticketing.settings import Settings

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
USER_ID = SearchAttributeKey.for_keyword("UserId")
TICKET_ID = SearchAttributeKey.for_keyword("TicketId")
SEARCH_ATTRIBUTES = (ORDER_STATUS, USER_ID, TICKET_ID)


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


def refund_workflow_id(payment_intent_id: str) -> str:
    return f"refund-{payment_intent_id}"


def metrics_runtime(port: int) -> Runtime:
    """A runtime that serves the SDK's metrics (temporal_*) for Prometheus on `port`."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}")))


async def connect_temporal(settings: Settings, runtime: Runtime | None = None, *, lazy: bool = False) -> Client:
    """lazy=True (the API) lets the process start and report not-ready while Temporal is still
    coming up; a worker needs a connected client. Address, namespace, API key and TLS come from
    Temporal's environment configuration (Settings.temporal_connect_config)."""
    return await Client.connect(
        **settings.temporal_connect_config(),
        data_converter=pydantic_data_converter,
        runtime=runtime,
        lazy=lazy,
    )
