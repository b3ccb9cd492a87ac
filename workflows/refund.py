"""Refunds a payment whose confirmation reached us after its order's workflow had closed
(id `refund-<paymentIntentId>`, so a webhook delivered twice starts it once)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ticketing.payloads import RefundInput
    from workflows.order import STRIPE


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.run
    async def run(self, req: RefundInput) -> str:
        return await workflow.execute_activity_method(PaymentActivities.refund_payment, req, **STRIPE)
