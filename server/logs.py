"""Logging from settings: readable lines in dev, one JSON object per line in production.

Our loggers live under `avatar_bff`. What we log never includes transcript text, DPP contents, tokens or
passwords; every line (ours, uvicorn's access and WebSocket lines) drops query strings (visitor values,
Engine.IO session ids, page tokens) and masks signed tokens in paths. A line written while serving an HTTP
request carries its request id, and one about a relayed conversation its conversation id
(`server/request_context.py`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from server import request_context
from server.settings import Settings

# Our signed tokens (page sessions, WHEP targets): two base64url parts joined by a dot.
_SIGNED = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")


def redact_path(path: str) -> str:
    """A request path fit for a log: no query string, signed tokens masked."""
    return _SIGNED.sub("…", path.partition("?")[0])


def _redact_value(value: object) -> object:
    if not isinstance(value, str):
        return value
    if value.startswith("/") or "://" in value:  # a path or URL: its query holds ids and visitor values
        return redact_path(value)
    return _SIGNED.sub("…", value)


class Redact(logging.Filter):
    """On the handler, so every record is covered: uvicorn logs paths with their queries as arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = _SIGNED.sub("…", record.msg)
        return True


class Context(logging.Filter):
    """Puts the ids of the request and conversation being served on the record (`context`: for text lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request, conversation = request_context.request_id.get(), request_context.conversation_id.get()
        record.request_id, record.conversation_id = request, conversation
        parts = [f"request={request}"] * bool(request) + [f"conversation={conversation}"] * bool(conversation)
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "conversation_id"):
            if value := getattr(record, key, None):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` document; `serve` hands it to uvicorn, which applies it per worker."""
    level = settings.log_level.upper()
    formatter = (
        {"()": f"{__name__}.JsonLines"}
        if settings.effective_log_format == "json"
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": f"{__name__}.Redact"}, "context": {"()": f"{__name__}.Context"}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact", "context"],
            }
        },
        "loggers": {
            "avatar_bff": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"level": level, "propagate": True},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
