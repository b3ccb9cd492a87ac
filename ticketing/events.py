"""The events on NATS JetStream: one schema per subject, used by the publisher, tests and docs.

Every message carries a `Nats-Msg-Id` that is the same for every retry of the same fact, so
JetStream's duplicate window drops a re-sent message.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class EventModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Event(EventModel):
    subject: ClassVar[str]

    @property
    def msg_id(self) -> str:
        raise NotImplementedError

    def payload(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class EntityEvent(Event):
    """A change of a versioned entity: one message per (entity, version)."""

    id: str
    version: int

    @property
    def msg_id(self) -> str:
        return f"{self.subject}:{self.id}:{self.version}"


class TicketCreated(EntityEvent):
    subject: ClassVar[str] = "ticket:created"
    title: str
    price: float  # major units, as in the REST ticket
    user_id: str


class TicketUpdated(TicketCreated):
    subject: ClassVar[str] = "ticket:updated"
    order_id: str | None


class OrderTicketRef(EventModel):
    id: str
    price: float


class OrderCreated(EntityEvent):
    subject: ClassVar[str] = "order:created"
    status: str
    user_id: str
    expires_at: datetime
    ticket: OrderTicketRef


class TicketId(EventModel):
    id: str


class OrderCancelled(EntityEvent):
    subject: ClassVar[str] = "order:cancelled"
    ticket: TicketId


class ExpirationComplete(Event):
    subject: ClassVar[str] = "expiration:complete"
    order_id: str

    @property
    def msg_id(self) -> str:
        return f"{self.subject}:{self.order_id}"


class ChargeCreated(Event):
    subject: ClassVar[str] = "charge:created"
    id: str
    order_id: str
    stripe_id: str
    amount: int  # cents
    currency: str

    @property
    def msg_id(self) -> str:
        return f"{self.subject}:{self.id}"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.subject: cls
    for cls in (TicketCreated, TicketUpdated, OrderCreated, OrderCancelled, ExpirationComplete, ChargeCreated)
}
SUBJECTS: list[str] = list(EVENT_TYPES)


class Envelope(BaseModel):
    """An event on its way to the publish activity (one concrete type for the data converter)."""

    subject: str
    data: dict[str, object]

    @classmethod
    def of(cls, event: Event) -> Envelope:
        return cls(subject=event.subject, data=event.model_dump(mode="json", by_alias=True))

    def event(self) -> Event:
        return EVENT_TYPES[self.subject].model_validate(self.data)
