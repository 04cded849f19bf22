"""Logging setup: JSON lines (or console), PII-safe by construction.

Log calls pass ids through `extra`; phone numbers and addresses are only ever logged at
DEBUG, and secrets never.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from sender.core.events import RetryAborted, TerminalFailure

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as compact JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(log_format: str, level: str) -> None:
    """Send every log line to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter about reconnects is useful; per-frame debug is not.
    for noisy in ("aiormq", "aio_pika", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))


def log_event(event: object) -> None:
    """Event listener: the loop's notable moments as log lines (ids only, no addresses)."""
    if isinstance(event, RetryAborted):
        why = "shutting down" if event.cause == "shutdown" else f"campaign {event.cause}"
        logging.getLogger("sender.core.contact_sender").info(
            "aborted: %s during retry",
            why,
            extra={"campaign_id": event.campaign_id, "contact_id": event.contact_id},
        )
    elif isinstance(event, TerminalFailure):
        logging.getLogger("sender.core.contact_sender").debug(
            "terminal failure", extra={"kind": event.kind}
        )
