"""What a request handler needs from the process: settings, MongoDB, NATS and Temporal clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pymongo import AsyncMongoClient
from temporalio.client import Client

from ticketing.bus import EventBus
from ticketing.settings import Settings


@dataclass
class Services:
    settings: Settings
    mongo: AsyncMongoClient
    bus: EventBus
    temporal: Client


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Deps = Annotated[Services, Depends(get_services)]
