"""Every setting of the service, read once from the environment (pydantic-settings).

Local defaults point at the embedded dev stack started by `make run`; with APP_ENV=prod the
secrets have no defaults and start-up fails with a clear message when one is missing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "ticketing"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "TICKETING"
    # Longer than any retry of a publish can take, so JetStream drops a re-sent fact.
    nats_duplicate_window_seconds: int = 7 * 24 * 3600

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "orders"

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

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        required = {"JWT_KEY": "jwt_key", "STRIPE_KEY": "stripe_key", "STRIPE_WEBHOOK_SECRET": "stripe_webhook_secret"}
        if self.app_env == "prod":
            missing = [env for env, attr in required.items() if not getattr(self, attr)]
            if missing:
                raise ValueError(f"APP_ENV=prod requires these settings: {', '.join(missing)}")
        else:
            self.jwt_key = self.jwt_key or DEV_JWT_KEY
            self.stripe_key = self.stripe_key or DEV_STRIPE_KEY
            self.stripe_webhook_secret = self.stripe_webhook_secret or DEV_WEBHOOK_SECRET
            self.stripe_publishable_key = self.stripe_publishable_key or DEV_PUBLISHABLE_KEY
        return self

    @property
    def secure_cookies(self) -> bool:
        return self.app_env == "prod"


@lru_cache
def get_settings() -> Settings:
    return Settings()
