"""Log output: readable text lines (the default) or one JSON object per line (`LOG_FORMAT=json`).

Every record gets the id of the request it was written for (requestctx.py), so the lines of one
request can be found in a log collector; the id is also the `X-Request-Id` response header (a chat
completion's id is `chatcmpl-<request id>`). Secrets are masked where a message is written
(redact.py), so both formats show the same masked text; the JSON format adds no field taken from
a request.
"""

from __future__ import annotations

import logging
import sys
import time

import msgspec

from .requestctx import current_request

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogLine(msgspec.Struct, omit_defaults=True):
    timestamp: str          # UTC, RFC 3339 with milliseconds
    level: str
    logger: str
    message: str
    request_id: str | None = None
    exception: str | None = None


_encoder = msgspec.json.Encoder()


class RequestIdFilter(logging.Filter):
    """Puts `record.request_id` (None outside a request) on every record the handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_request()
        record.request_id = ctx.id if ctx is not None else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = LogLine(
            timestamp=f"{seconds}.{int(record.msecs):03d}Z",
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
            request_id=getattr(record, "request_id", None),
            exception=self.formatException(record.exc_info) if record.exc_info else None,
        )
        return _encoder.encode(line).decode()


def configure(log_format: str, *, debug: bool) -> None:
    """The root handler of the process: stderr, in `log_format` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
