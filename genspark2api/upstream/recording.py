"""`UPSTREAM_RECORD_DIR`: every upstream exchange saved as one file, secrets removed.

This is how someone with a real account hands us a fixture when Genspark changes (§12.1: the
whole `ai_chat` stream changed between April and September 2026 while every test stayed green).
`scripts/replay.py FILE` feeds a saved answer through the adapters again.

A wrapping `httpx.AsyncBaseTransport`, so it records whatever transport is underneath (httpx or
the browser one) and sees the bytes exactly as they came off the wire, before any decoding above.

File format (`*.exchange`), version `genspark2api-exchange/1`:

    line 1   one JSON object, the envelope: format, started (unix s), elapsed (s), method, url,
             path, request_headers [[name, value], …], request_json (or request_text /
             request_bytes when the body is not JSON), status, response_headers, body_bytes,
             body_truncated, error (a transport exception's class and text, or null)
    line 2…  the response body, raw, as received (an SSE stream reads as it came)

Redacted before writing (`redact.py`): cookies and `Set-Cookie`, `g_recaptcha_token` and any other
`*token` key, API keys, `Authorization`, `session_id` / `chat_session_id` values, and `session_id=`,
`token=`, `Bearer …` inside strings and URLs. Files are written off the event loop (a worker
thread) when the response is closed; a write error is logged and never fails the request.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from ..redact import redact_headers, redact_json, redact_text

log = logging.getLogger("genspark2api.recording")

FORMAT = "genspark2api-exchange/1"
BODY_CAP = 32 * 1024 * 1024      # per response; beyond it the file says body_truncated
REQUEST_TEXT_CAP = 64 * 1024      # a non-JSON request body (a blob upload) is summarised, not copied
WRITE_DEADLINE = 10.0
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(slots=True)
class Exchange:
    """One request and what came back, already redacted except the body (redacted on write)."""

    started: float
    method: str
    url: str
    path: str
    request_headers: list[tuple[str, str]]
    request: dict[str, Any]
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    error: str | None = None
    elapsed: float = 0.0
    began: float = 0.0            # trio clock, for `elapsed`

    def envelope(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "started": round(self.started, 3), "elapsed": round(self.elapsed, 3),
            "method": self.method, "url": self.url, "path": self.path,
            "request_headers": [list(h) for h in self.request_headers], **self.request,
            "status": self.status, "response_headers": [list(h) for h in self.response_headers],
            "body_bytes": len(self.body), "body_truncated": self.truncated, "error": self.error,
        }

    def encode(self) -> bytes:
        """The file's bytes: the envelope line, then the body (with secrets in it blanked)."""
        body = bytes(self.body)
        text = body.decode("utf-8", "surrogateescape")
        cleaned = redact_text(text)
        if cleaned != text:
            body = cleaned.encode("utf-8", "surrogateescape")
        return msgspec.json.encode(self.envelope()) + b"\n" + body


def request_summary(request: httpx.Request) -> dict[str, Any]:
    """The request body as the file keeps it: JSON redacted, other text capped, binary by size."""
    content = request.content
    if not content:
        return {"request_json": None}
    try:
        return {"request_json": redact_json(msgspec.json.decode(content))}
    except msgspec.DecodeError:
        pass
    try:
        return {"request_text": redact_text(content[:REQUEST_TEXT_CAP].decode("utf-8"))}
    except UnicodeDecodeError:
        return {"request_bytes": len(content)}


def read_exchange(data: bytes) -> tuple[dict[str, Any], bytes]:
    """A saved file back as (envelope, raw body); ValueError when it is not one."""
    head, sep, body = data.partition(b"\n")
    try:
        envelope = msgspec.json.decode(head)
    except msgspec.DecodeError:
        envelope = None
    if not sep or not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file (the first line must be its JSON envelope)")
    return envelope, body


class _RecordedBody(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: Exchange, recorder: RecordingTransport) -> None:
        self._inner = inner
        self._exchange = exchange
        self._recorder = recorder
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex = self._exchange
        try:
            async for chunk in self._inner:
                room = BODY_CAP - len(ex.body)
                if room > 0:
                    ex.body += chunk[:room]
                if len(chunk) > room:
                    ex.truncated = True
                yield chunk
        except httpx.HTTPError as exc:
            ex.error = f"{type(exc).__name__}: {exc}"
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._inner.aclose()
        finally:
            await self._recorder.save(self._exchange)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes every request to `inner` and saves the exchange to `directory` when it closes."""

    def __init__(self, inner: httpx.AsyncBaseTransport, directory: str | os.PathLike[str],
                 clock: Any = time.time) -> None:
        self.inner = inner
        self.directory = Path(directory)
        self.clock = clock
        self._seq = itertools.count(1)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        exchange = Exchange(
            started=self.clock(),
            method=request.method,
            url=redact_text(str(request.url)),
            path=request.url.path,
            request_headers=redact_headers(list(request.headers.items())),
            request=request_summary(request),
            began=trio.current_time(),
        )
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            await self.save(exchange)
            raise
        exchange.status = response.status_code
        exchange.response_headers = redact_headers(list(response.headers.items()))
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RecordedBody(response.stream, exchange, self)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def file_name(self, exchange: Exchange, seq: int) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(exchange.started))
        millis = int((exchange.started % 1) * 1000)
        slug = _SLUG.sub("_", exchange.path.strip("/"))[:60] or "root"
        return f"{stamp}.{millis:03d}Z-{os.getpid()}-{seq:05d}-{exchange.method}-{slug}.exchange"

    async def save(self, exchange: Exchange) -> None:
        """Write the file on a worker thread, even while the request is being cancelled (shielded,
        with a deadline); any error is logged, never raised."""
        exchange.elapsed = trio.current_time() - exchange.began
        path = self.directory / self.file_name(exchange, next(self._seq))
        try:
            data = exchange.encode()
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + WRITE_DEADLINE
                await trio.to_thread.run_sync(_write, path, data, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - recording must never fail the request
            log.warning("UPSTREAM_RECORD_DIR: could not save %s: %s: %s", path.name, type(exc).__name__, exc)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)  # a reader never sees half a file
