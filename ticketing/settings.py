"""Every setting of the service, read once from the environment (pydantic-settings).

Local defaults point at the embedded dev stack started by `make run`; with APP_ENV=prod the
secrets have no defaults and start-up fails with a clear message when one is missing.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig

DEV_JWT_KEY = "dev-only-jwt-key-change-me-0123456789abcdef"
DEV_STRIPE_KEY = "sk_test_localstripe"
DEV_WEBHOOK_SECRET = "whsec_dev_only"
# localstripe accepts any pk_ key in its Stripe.js fake; the dev placeholder goes with it.
DEV_PUBLISHABLE_KEY = "pk_test_localstripe"
STRIPE_JS_URL = "https://js.stripe.com/v3/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_env: Literal["dev", "test", "prod"] = "dev"
    log_level: str = "INFO"
    port: int = 8000

    # With APP_ENV=prod, plain-text connections to a non-loopback Temporal or MongoDB are refused
    # unless this says they are intended (e.g. an in-cluster service on a private network).
    allow_insecure_transport: bool = False

    # Everything MongoDB needs is in the URL: mongodb+srv://, credentials, tls=true, tlsCAFile=...,
    # replicaSet=..., authSource=... (PyMongo's connection string options).
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "ticketing"
    # One server or several, comma-separated (a cluster): nats://a:4222,nats://b:4222
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "TICKETING"
    # 3 on a 3-node JetStream cluster (at most the number of servers); 1 on a single server.
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    # Longer than any retry of a publish can take, so JetStream drops a re-sent fact.
    nats_duplicate_window_seconds: int = 7 * 24 * 3600
    # Credentials (at most one kind): a .creds file (JWT + NKey seed, e.g. Synadia Cloud), an NKey
    # seed file, a token, or a user and password.
    nats_creds: str | None = None
    nats_nkey_seed: str | None = None
    nats_token: str | None = Field(default=None, repr=False)
    nats_user: str | None = None
    nats_password: str | None = Field(default=None, repr=False)
    # TLS: a CA bundle to trust (else the system's), and a client certificate + key for mutual TLS.
    # The client upgrades to TLS whenever the server requires it (nats-server's `tls {}` block).
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None

    # Temporal's own environment configuration (temporalio.envconfig): these names are the SDK's,
    # and a profile in a TOML file (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE) works too. A value set
    # here wins over the profile; see temporal_connect_config().
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "orders"
    temporal_api_key: str | None = Field(default=None, repr=False)
    temporal_tls: bool | None = None
    temporal_tls_server_ca_cert_path: str | None = None
    temporal_tls_server_name: str | None = None
    temporal_tls_client_cert_path: str | None = None
    temporal_tls_client_key_path: str | None = None
    temporal_profile: str | None = None
    temporal_config_file: str | None = None

    jwt_key: str = ""
    jwt_ttl_seconds: int = 24 * 3600
    stripe_key: str = ""
    stripe_api_base: str | None = None
    stripe_webhook_secret: str = ""
    # The buyer's page (/orders/{id}) loads Stripe.js from here with this publishable key; `make run`
    # points it at localstripe's fake (http://127.0.0.1:8420/js.stripe.com/v3/).
    stripe_publishable_key: str = ""
    stripe_js_url: str = STRIPE_JS_URL

    order_expiration_seconds: int = Field(default=900, gt=0)
    currency: str = "usd"

    worker_metrics_port: int = 9464
    worker_graceful_shutdown_seconds: int = 30
    worker_max_concurrent_activities: int = 200
    worker_max_concurrent_workflow_tasks: int = 100
    # Workflows kept in memory between tasks (sticky cache); an evicted one is replayed from its history.
    worker_max_cached_workflows: int = 1000
    worker_sandbox_passthrough: bool = True
    # Run workflows in the SDK's sandbox (re-created per run). Off in production for speed; the tests
    # turn it on so every workflow change is still checked for non-determinism there.
    worker_workflow_sandbox: bool = False
    # Run workflow activations on the event loop's thread (workers/worker.py InlineExecutor).
    worker_inline_activations: bool = True

    # Money reconciliation (workflows/reconcile.py): a Temporal Schedule runs it every interval.
    reconcile_schedule: bool = True  # create/update the schedule at worker start-up
    reconcile_schedule_id: str = "reconcile-payments"
    reconcile_interval_seconds: int = Field(default=300, gt=0)
    # Each run re-reads this much before the watermark (clock skew, Stripe's listing lag).
    reconcile_overlap_seconds: int = Field(default=600, ge=0)
    # The first run (no watermark stored yet) looks this far back.
    reconcile_lookback_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    reconcile_page_size: int = Field(default=100, gt=0, le=100)  # Stripe lists at most 100 per page

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        required = {"JWT_KEY": "jwt_key", "STRIPE_KEY": "stripe_key", "STRIPE_WEBHOOK_SECRET": "stripe_webhook_secret"}
        if self.app_env == "prod":
            missing = [env for env, attr in required.items() if not getattr(self, attr)]
            if missing:
                raise ValueError(f"APP_ENV=prod requires these settings: {', '.join(missing)}")
            if not self.allow_insecure_transport:
                self._refuse_plain_text()
        else:
            self.jwt_key = self.jwt_key or DEV_JWT_KEY
            self.stripe_key = self.stripe_key or DEV_STRIPE_KEY
            self.stripe_webhook_secret = self.stripe_webhook_secret or DEV_WEBHOOK_SECRET
            self.stripe_publishable_key = self.stripe_publishable_key or DEV_PUBLISHABLE_KEY
        return self

    def _refuse_plain_text(self) -> None:
        plain = []
        temporal = self.temporal_connect_config()
        if not temporal.get("tls") and not is_loopback(_host(temporal["target_host"])):
            plain.append(f"Temporal at {temporal['target_host']} (set TEMPORAL_TLS=true or TEMPORAL_API_KEY)")
        if not mongo_uses_tls(self.mongo_url) and not all(is_loopback(h) for h in mongo_hosts(self.mongo_url)):
            plain.append("MongoDB (use mongodb+srv:// or add tls=true to MONGO_URL)")
        if plain:
            raise ValueError(
                "APP_ENV=prod refuses plain-text connections to "
                + "; ".join(plain)
                + ". Set ALLOW_INSECURE_TRANSPORT=true if that is intended."
            )

    def temporal_connect_config(self) -> ClientConnectConfig:
        """Client.connect arguments (target_host, namespace, api_key, tls, rpc_metadata) from
        Temporal's environment configuration: the TEMPORAL_* environment and an optional TOML profile,
        with the values explicitly given to these Settings on top (tests pass them directly)."""
        env = {k: v for k, v in os.environ.items() if k.startswith("TEMPORAL_")}
        for name in TEMPORAL_ENVCONFIG_FIELDS & self.model_fields_set:
            value = getattr(self, name)
            if value is None:
                env.pop(name.upper(), None)
            else:
                env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        config_file = env.get("TEMPORAL_CONFIG_FILE")
        profile = ClientConfigProfile.load(
            profile=env.get("TEMPORAL_PROFILE"),
            config_source=Path(config_file) if config_file else None,
            override_env_vars=env,
        )
        config = profile.to_client_connect_config()
        config.setdefault("target_host", self.temporal_address)
        config.setdefault("namespace", self.temporal_namespace)
        return config

    @property
    def secure_cookies(self) -> bool:
        return self.app_env == "prod"


# The Settings fields that are also temporalio.envconfig's environment variables.
TEMPORAL_ENVCONFIG_FIELDS = {
    "temporal_address",
    "temporal_namespace",
    "temporal_api_key",
    "temporal_tls",
    "temporal_tls_server_ca_cert_path",
    "temporal_tls_server_name",
    "temporal_tls_client_cert_path",
    "temporal_tls_client_key_path",
    "temporal_profile",
    "temporal_config_file",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host(address: str) -> str:
    """Host of `host:port`, `[v6]:port` or a URL."""
    netloc = urlsplit(address if "://" in address else "//" + address).netloc.rsplit("@", 1)[-1]
    return urlsplit("//" + netloc).hostname or ""


def mongo_hosts(url: str) -> list[str]:
    netloc = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return [_host(h) for h in netloc.split(",") if h]


def mongo_uses_tls(url: str) -> bool:
    """As PyMongo decides: mongodb+srv:// turns TLS on unless the URL says tls/ssl=false."""
    query = url.split("?", 1)[1] if "?" in url else ""
    options = {k.lower(): v.lower() for k, v in parse_qsl(query)}
    flag = options.get("tls", options.get("ssl"))
    if flag is not None:
        return flag == "true"
    return url.startswith("mongodb+srv://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
