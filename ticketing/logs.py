"""Structured JSON logs (one object per line). Extra fields such as orderId and workflowId are
kept; anything that looks like a secret is never logged (we pass ids, not tokens or cards)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from ticketing.settings import Settings

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_REDACT = ("password", "token", "secret", "authorization", "card", "jwt", "key")
# Libraries whose DEBUG output carries request bodies and documents (card tokens, password
# hashes): kept at WARNING even with LOG_LEVEL=DEBUG.
QUIET_LOGGERS = ("httpx", "stripe", "pymongo")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if key in ("temporal_workflow", "temporal_activity") and isinstance(value, dict):
                # The SDK's context: surface the ids operators search by.
                workflow_id = value.get("workflow_id")
                if workflow_id:
                    entry["workflowId"] = workflow_id
                    if str(workflow_id).startswith("order-"):
                        entry.setdefault("orderId", str(workflow_id).removeprefix("order-"))
                for name in ("activity_type", "workflow_type", "attempt"):
                    if name in value:
                        entry[name] = value[name]
                continue
            entry[key] = "[redacted]" if any(word in key.lower() for word in _REDACT) else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # The Temporal SDK's own loggers carry workflow/activity context in `temporal_*` extras.
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
