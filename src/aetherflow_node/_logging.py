"""Structured logs for the node: ``--log-format text|json|kv`` and ``--log-level``.

Code logs with the standard library and puts structured fields in ``extra``::

    logger.info("peer connected", extra={"peer": node_id, "path": "lan", "rtt_ms": 1.8})

Each format prints one line per record:

- ``text``: ``2026-12-01T16:00:00.123Z INFO aetherflow.node: peer connected peer=… path=lan``
- ``json``: ``{"ts": "...", "level": "info", "logger": "aetherflow.node", "msg": "peer connected",
  "peer": "…", "path": "lan", "rtt_ms": 1.8}`` (one JSON object per line, for log shippers)
- ``kv``: ``ts=… level=info logger=aetherflow.node msg="peer connected" peer=… path=lan``
  (logfmt: values with spaces, quotes or ``=`` are quoted)

A traceback, when there is one, goes into the ``exc`` field (escaped, still one line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from aetherflow_sdk._errors import LocalProtocolError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "configure_logging", "record_fields"]

LOG_FORMATS = ("text", "json", "kv")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was given through ``extra``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, _plain(value))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _logfmt_value(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _logfmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class KeyValueFormatter(logging.Formatter):
    """logfmt: ``key=value`` pairs, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            fields.setdefault(key, value)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return _logfmt(fields)


class TextFormatter(logging.Formatter):
    """For people: time, level, logger, message, then the fields as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extra = record_fields(record)
        if extra:
            line += " " + _logfmt(extra)
        if record.exc_info:
            line += " " + _logfmt({"exc": self.formatException(record.exc_info)})
        return line


_FORMATTERS: dict[str, type[logging.Formatter]] = {
    "text": TextFormatter,
    "json": JsonFormatter,
    "kv": KeyValueFormatter,
}


def configure_logging(
    log_format: str = "text",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    logger_name: str = "aetherflow",
) -> logging.Handler:
    """Send ``logger_name``'s records (and its children's) to ``stream`` in ``log_format``.

    Returns the handler, so that a caller (a test, an app embedding several nodes) can
    remove it again. Raises LocalProtocolError for an unknown format or level.
    """
    if log_format not in _FORMATTERS:
        raise LocalProtocolError(f"unknown log format {log_format!r}; choose one of {', '.join(LOG_FORMATS)}")
    if level.lower() not in LOG_LEVELS:
        raise LocalProtocolError(f"unknown log level {level!r}; choose one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_FORMATTERS[log_format]())
    target = logging.getLogger(logger_name)
    target.addHandler(handler)
    target.setLevel(level.upper())
    return handler
