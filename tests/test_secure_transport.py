"""The service against servers that require TLS and credentials, as managed ones do.

Certificates come from a throwaway CA (`trustme`). NATS runs with a TLS block (client certificates
verified) and a user/password (a token in a second, smaller check); SecantusDB with SCRAM auth and
TLS; the Temporal dev server has no TLS flags, so a TLS-terminating TCP proxy written here (mutual
TLS: it requires a client certificate signed by the CA) sits in front of it. The worker is a real
`ticketing worker` process configured only through the environment (TEMPORAL_TLS_*, NATS_*,
MONGO_URL); the API runs in-process. Each server also refuses a client that lacks the CA, the
client certificate or the credentials, so the passing run cannot be a plain-text one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import trustme
from nats.errors import Error as NatsError
from pydantic import ValidationError
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from devstack import ManagedProcess, find_binary, free_port, secantus_cmd, start_and_wait
from ticketing.bus import EventBus, nats_options
from ticketing.settings import Settings
from ticketing.temporal import connect_temporal

from .conftest import Servers, run_stack, start_worker

NATS_USER, NATS_PASSWORD, NATS_TOKEN = "ticketing", "nats-pa55word", "nats-token-0123456789"
MONGO_USER, MONGO_PASSWORD = "app", "mongo-pa55word"


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_context: ssl.SSLContext  # for the Temporal proxy: mutual TLS


def make_certs(folder: Path) -> Certs:
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("ticketing-client")
    paths = {name: folder / f"{name}.pem" for name in ("ca", "server_cert", "server_key", "client_cert", "client_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.private_key_pem.write_to_path(paths["server_key"])
    client.private_key_pem.write_to_path(paths["client_key"])
    for blob in server.cert_chain_pems:
        blob.write_to_path(paths["server_cert"], append=True)
    for blob in client.cert_chain_pems:
        blob.write_to_path(paths["client_cert"], append=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])  # gRPC
    return Certs(**paths, server_context=context)


class TlsProxy:
    """Terminates TLS on a loopback port and forwards the bytes to a plain-text upstream port."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext) -> None:
        self.upstream_port, self.context = upstream_port, context
        self.port = 0
        self.connections = 0  # TLS handshakes that succeeded
        self._server: asyncio.Server | None = None

    async def start(self) -> TlsProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def nats_tls_cmd(port: int, folder: Path, certs: Certs, auth: str) -> list[str]:
    config = folder / f"nats-{port}.conf"
    config.write_text(
        f"""
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{folder / f"nats-{port}"}" }}
tls {{
  cert_file: "{certs.server_cert}"
  key_file: "{certs.server_key}"
  ca_file: "{certs.ca}"
  verify: true
  timeout: 2
}}
authorization {{ {auth} }}
"""
    )
    return [find_binary("nats-server"), "-c", str(config)]


@dataclass
class SecureServers:
    certs: Certs
    nats_port: int
    mongo_port: int
    temporal: TlsProxy

    def settings(self, servers: Servers, **overrides: object) -> Settings:
        c = self.certs
        values: dict[str, object] = {
            "mongo_url": (
                f"mongodb://{MONGO_USER}:{MONGO_PASSWORD}@localhost:{self.mongo_port}/"
                f"?tls=true&tlsCAFile={c.ca}&authSource=admin"
            ),
            "nats_url": f"tls://localhost:{self.nats_port}",
            "nats_user": NATS_USER,
            "nats_password": NATS_PASSWORD,
            "nats_tls_ca": str(c.ca),
            "nats_tls_cert": str(c.client_cert),
            "nats_tls_key": str(c.client_key),
            "temporal_address": f"localhost:{self.temporal.port}",
            "temporal_tls": True,
            "temporal_tls_server_ca_cert_path": str(c.ca),
            "temporal_tls_client_cert_path": str(c.client_cert),
            "temporal_tls_client_key_path": str(c.client_key),
        }
        values.update(overrides)
        return servers.settings(**values)


def start_secure_mongo(folder: Path, certs: Certs) -> tuple[int, ManagedProcess]:
    """SecantusDB provisions users without auth first, then restarts with --auth and TLS."""
    port, store = free_port(), folder / "mongo-secure"
    plain = start_and_wait("mongo-setup", secantus_cmd(port, store), port, log_path=folder / "mongo-setup.log")
    try:
        client: MongoClient[dict[str, Any]]
        with MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=10000) as client:
            client.admin.command("createUser", MONGO_USER, pwd=MONGO_PASSWORD, roles=["root"])
    finally:
        plain.stop(10)
    cmd = [
        *secantus_cmd(port, store),
        "--auth",
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
    ]  # fmt: skip
    return port, start_and_wait("mongo-secure", cmd, port, log_path=folder / "mongo-secure.log")


@pytest.fixture(scope="module")
async def secure(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureServers]:
    folder = tmp_path_factory.mktemp("secure")
    certs = make_certs(folder)
    nats_port = free_port()
    users = f'users: [{{ user: "{NATS_USER}", password: "{NATS_PASSWORD}" }}]'
    nats_proc = start_and_wait(
        "nats-secure", nats_tls_cmd(nats_port, folder, certs, users), nats_port, log_path=folder / "nats.log"
    )
    mongo_port, mongo_proc = start_secure_mongo(folder, certs)
    proxy = await TlsProxy(servers.temporal.port, certs.server_context).start()
    try:
        yield SecureServers(certs, nats_port, mongo_port, proxy)
    finally:
        await proxy.stop()
        mongo_proc.kill()  # a throwaway store: no need for SecantusDB's slow clean shutdown
        nats_proc.stop(10)


async def test_api_and_worker_over_tls_with_credentials(servers: Servers, secure: SecureServers, processes, tmp_path):
    settings = secure.settings(servers)
    handshakes = secure.temporal.connections
    async with run_stack(servers, settings, worker=False) as stack:
        worker = start_worker(settings, tmp_path / "worker.log")
        processes.append(worker)
        try:
            assert (await stack.api.get("/readyz")).status_code == 200
            seller, buyer = await stack.signup(), await stack.signup()
            ticket = await stack.create_ticket(seller, price=12.5)
            order = await stack.create_order(buyer, ticket["id"])
            r = await stack.api.post(
                "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}, headers=buyer, timeout=60
            )
            assert r.status_code == 201, r.text + worker.log_tail()
            assert (await stack.final_state(order["id"])).status == "complete"
            charges = await stack.wait_for_messages("charge:created", 1)
            assert [m.data["amount"] for m in charges] == [1250]
            mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
            try:
                stored = await mongo[settings.mongo_db].orders.find_one({"status": "complete"})
                assert stored is not None
                assert str(stored["_id"]) == order["id"]
            finally:
                await mongo.close()
        finally:
            # The proxy runs on this event loop: keep it serving while the worker shuts down.
            assert await asyncio.to_thread(worker.stop, 20) == 0, worker.log_tail()
    # The worker process (which ran the workflow) reached Temporal through the proxy as well.
    assert secure.temporal.connections > handshakes + 1


async def test_temporal_refuses_untrusted_or_anonymous_clients(servers: Servers, secure: SecureServers):
    good = secure.settings(servers)
    client = await connect_temporal(good)
    await client.count_workflows()  # the proxy path works
    untrusted_server = good.model_copy(update={"temporal_tls_server_ca_cert_path": None})  # system CAs only
    no_client_cert = good.model_copy(
        update={"temporal_tls_client_cert_path": None, "temporal_tls_client_key_path": None}
    )
    plain = good.model_copy(update={"temporal_tls": False})

    async def use(settings: Settings) -> None:
        client = await asyncio.wait_for(connect_temporal(settings), 30)
        await asyncio.wait_for(client.count_workflows(), 10)

    for bad in (untrusted_server, no_client_cert, plain):
        with pytest.raises(RuntimeError):
            await use(bad)


async def test_nats_refuses_untrusted_or_anonymous_clients(servers: Servers, secure: SecureServers):
    good = secure.settings(servers)
    nc = await nats.connect(**nats_options(good), allow_reconnect=False, connect_timeout=5)
    await nc.close()
    for update in (
        {"nats_tls_ca": None},  # the server's certificate is not trusted
        {"nats_password": "wrong"},
        {"nats_user": None, "nats_password": None},
        {"nats_tls_cert": None, "nats_tls_key": None},  # no client certificate
    ):
        with pytest.raises((NatsError, ssl.SSLError, OSError, asyncio.TimeoutError)):
            await connect_and_flush(good.model_copy(update=update))


async def test_nats_token_and_cluster_url_list(servers: Servers, secure: SecureServers, tmp_path: Path):
    """A token instead of a user, and NATS_URL listing several servers (the first one is down)."""
    port = free_port()
    auth = f'token: "{NATS_TOKEN}"'
    proc = start_and_wait(
        "nats-token", nats_tls_cmd(port, tmp_path, secure.certs, auth), port, log_path=tmp_path / "n.log"
    )
    try:
        base = secure.settings(
            servers,
            nats_url=f"tls://localhost:{free_port()}, tls://localhost:{port}",
            nats_user=None,
            nats_password=None,
            nats_token=NATS_TOKEN,
        )
        bus = await EventBus.connect(base)
        try:
            info = await bus.js.stream_info(base.nats_stream)
            assert info.config.num_replicas == 1
            await bus.ping()
        finally:
            await bus.close()
        with pytest.raises(NatsError):
            await connect_and_flush(base.model_copy(update={"nats_token": "wrong"}))
    finally:
        proc.stop(10)


async def test_mongo_refuses_untrusted_or_anonymous_clients(servers: Servers, secure: SecureServers):
    url = secure.settings(servers).mongo_url
    anonymous = f"mongodb://localhost:{secure.mongo_port}/?tls=true&tlsCAFile={secure.certs.ca}"
    wrong_password = url.replace(MONGO_PASSWORD, "wrong")
    untrusted = url.replace(f"&tlsCAFile={secure.certs.ca}", "")
    plain = url.replace("tls=true", "tls=false").replace(f"&tlsCAFile={secure.certs.ca}", "")
    for bad, error in (
        (anonymous, OperationFailure),
        (wrong_password, OperationFailure),
        (untrusted, ServerSelectionTimeoutError),
        (plain, ServerSelectionTimeoutError),
    ):
        client: AsyncMongoClient = AsyncMongoClient(bad, serverSelectionTimeoutMS=1000)
        try:
            with pytest.raises(error):
                await client["x"].things.find_one({})
        finally:
            await client.close()


# ── settings: Temporal's environment configuration and the prod transport check ──────────
# Settings' keyword arguments (values of several types, as the settings fields have).
PROD_SECRETS: dict[str, Any] = {"jwt_key": "k" * 40, "stripe_key": "sk_live_x", "stripe_webhook_secret": "whsec_x"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("TEMPORAL_", "MONGO_", "NATS_", "ALLOW_INSECURE")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_temporal_profile_file_and_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\napi_key = "key-from-file"\n'
    )
    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(config))
    clean_env.setenv("TEMPORAL_PROFILE", "cloud")
    connect = Settings().temporal_connect_config()
    assert connect["target_host"] == "ns.acct.tmprl.cloud:7233"
    assert connect["namespace"] == "ns.acct"
    assert connect["api_key"] == "key-from-file"
    assert connect["tls"] is True
    # The contract's names still win over the profile, from the environment or given directly.
    clean_env.setenv("TEMPORAL_NAMESPACE", "other")
    assert Settings().temporal_connect_config()["namespace"] == "other"
    assert Settings(temporal_address="h:1").temporal_connect_config()["target_host"] == "h:1"
    # Without a profile: the contract's defaults, plain text.
    clean_env.delenv("TEMPORAL_CONFIG_FILE")
    clean_env.delenv("TEMPORAL_PROFILE")
    clean_env.delenv("TEMPORAL_NAMESPACE")
    assert Settings().temporal_connect_config() == {"target_host": "127.0.0.1:7233", "namespace": "default"}


def test_prod_refuses_plain_text_to_remote_temporal_or_mongo(clean_env: pytest.MonkeyPatch):
    remote_temporal: dict[str, Any] = {"temporal_address": "temporal.internal:7233"}
    remote_mongo: dict[str, Any] = {
        "mongo_url": "mongodb://app:pw@db-0.internal:27017,db-1.internal:27017/?replicaSet=rs0"
    }
    refused: list[tuple[dict[str, Any], list[str]]] = [
        (remote_temporal, ["Temporal at temporal.internal:7233"]),
        ({**remote_temporal, "temporal_tls": False}, ["Temporal"]),
        (remote_mongo, ["MongoDB"]),
        ({"mongo_url": "mongodb+srv://app:pw@cluster0.abcde.mongodb.net/?tls=false"}, ["MongoDB"]),
        ({**remote_temporal, **remote_mongo}, ["Temporal", "MongoDB"]),
    ]
    for bad, names in refused:
        with pytest.raises(ValidationError) as failure:
            Settings(app_env="prod", **PROD_SECRETS, **bad)
        message = str(failure.value)
        assert all(name in message for name in names), message
        assert "ALLOW_INSECURE_TRANSPORT=true" in message, message
    accepted: list[dict[str, Any]] = [
        {},  # loopback: a sidecar or a port-forward
        {**remote_temporal, "temporal_tls": True, "mongo_url": "mongodb+srv://app:pw@cluster0.abcde.mongodb.net/"},
        {**remote_temporal, "temporal_api_key": "k", "mongo_url": remote_mongo["mongo_url"] + "&tls=true"},
        {**remote_temporal, **remote_mongo, "allow_insecure_transport": True},
        {"mongo_url": "mongodb://localhost:27017,127.0.0.1:27018/?replicaSet=rs0"},
    ]
    for good in accepted:
        Settings(app_env="prod", **PROD_SECRETS, **good)
    # Outside prod nothing is enforced.
    Settings(app_env="dev", **remote_temporal, **remote_mongo)
    # The environment variable works as well.
    clean_env.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    clean_env.setenv("ALLOW_INSECURE_TRANSPORT", "true")
    Settings(app_env="prod", **PROD_SECRETS)


async def connect_and_flush(settings: Settings) -> None:
    nc = await nats.connect(**nats_options(settings), allow_reconnect=False)
    try:
        await nc.flush(timeout=3)
    finally:
        await nc.close()
