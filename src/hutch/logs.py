"""Logging: plain text (the default) or one JSON object per line (``HUTCH_LOG_FORMAT=json``)
carrying the request it happened in: its id (the ``X-Request-ID`` the client got), the
user it acted for and the sandbox its route names."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "configure_logging", "request_id", "sandbox_id", "user_id"]

request_id: ContextVar[str | None] = ContextVar("hutch_request_id", default=None)
user_id: ContextVar[str | None] = ContextVar("hutch_user_id", default=None)
sandbox_id: ContextVar[str | None] = ContextVar("hutch_sandbox_id", default=None)

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", request_id), ("user", user_id), ("sandbox_id", sandbox_id)):
            value = var.get()
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """The root logger writes ``fmt`` (``text`` or ``json``) to stderr at ``level``; so do
    uvicorn's loggers, which propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
