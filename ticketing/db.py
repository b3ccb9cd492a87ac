"""MongoDB connection: PyMongo's async client, Beanie on top."""

from __future__ import annotations

from beanie import init_beanie
from pymongo import AsyncMongoClient

from ticketing.documents import DOCUMENT_MODELS
from ticketing.settings import Settings


async def connect_db(settings: Settings) -> AsyncMongoClient:
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000, uuidRepresentation="standard"
    )
    await init_beanie(database=client[settings.mongo_db], document_models=DOCUMENT_MODELS)
    return client


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")
