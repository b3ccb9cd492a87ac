"""MongoDB connection: PyMongo's async client, Beanie on top."""

from __future__ import annotations

from beanie import init_beanie
from pymongo import AsyncMongoClient

from ticketing.documents import DOCUMENT_MODELS
from ticketing.settings import Settings


async def connect_db(settings: Settings, *, retry_writes: bool = True) -> AsyncMongoClient:
    """`retry_writes=False` for the worker: Temporal already retries every activity and each of its
    writes is idempotent (version-pinned updates, inserts under unique indexes), so the driver's own
    retryable writes only add a session record per write. SecantusDB keeps those records for 30
    minutes and scans (past 10,000: sorts) all of them on every write: measured as most of its CPU
    per order under sustained load (bench/README.md)."""
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        uuidRepresentation="standard",
        retryWrites=retry_writes,
    )
    await init_beanie(database=client[settings.mongo_db], document_models=DOCUMENT_MODELS)
    return client


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")
