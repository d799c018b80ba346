"""Incremental decoder of Genspark's SSE-like body (pure: bytes in, lines out).

genspark-protocol.md §1.5/§3.1: one event per `data: <json>` line followed by a blank line, no
`event:`/`id:` lines, no `[DONE]`, the stream ends when the server closes. Each `data:` line is one
whole event (JSON text has no raw newlines), so we do not join consecutive data lines as generic
SSE would. Everything that is not a `data:` line is kept as `OtherLine`: §4.3 explains that the old
project's SSE reader dropped those lines and with them every plain-text or HTML error signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

DEFAULT_MAX_LINE = 8 * 1024 * 1024  # one event; a base64 image in a result can be large


class LineTooLong(Exception):
    """An upstream line grew past the cap: an error, not a memory blow-up."""


@dataclass(frozen=True, slots=True)
class DataLine:
    payload: bytes  # after `data:` and one optional space


@dataclass(frozen=True, slots=True)
class OtherLine:
    text: bytes  # a non-data, non-empty line (HTML, plain text, comments, unknown fields)


class LineDecoder:
    """Split a byte stream at LF, CRLF or CR, whatever chunk boundaries the network chose."""

    __slots__ = ("_buf", "_max", "_pending_cr")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line
        self._pending_cr = False

    def feed(self, data: bytes) -> list[DataLine | OtherLine]:
        out: list[DataLine | OtherLine] = []
        if self._pending_cr and data[:1] == b"\n":
            data = data[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = False
        buf = self._buf
        buf += data
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt] == 0x0A:
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._emit(bytes(buf[start:end]), out)
            start = nxt
        del buf[:start]
        if len(buf) > self._max:
            raise LineTooLong(f"upstream line longer than {self._max} bytes")
        return out

    def finish(self) -> list[DataLine | OtherLine]:
        out: list[DataLine | OtherLine] = []
        if self._buf:
            self._emit(bytes(self._buf), out)
            self._buf.clear()
        return out

    @staticmethod
    def _emit(line: bytes, out: list[DataLine | OtherLine]) -> None:
        if not line.strip():
            return
        if line.startswith(b"data:"):
            payload = line[5:]
            if payload[:1] == b" ":
                payload = payload[1:]
            out.append(DataLine(payload))
        else:
            out.append(OtherLine(line))


class UpstreamEvent(msgspec.Struct):
    """One upstream event, loosely typed: every generation's fields, all optional.

    Unknown fields are ignored and unknown `type` values pass through, so an upstream that adds
    keys (as it did in May 2025, §4.1 E6) cannot break decoding.
    """

    type: str = ""
    id: str | None = None
    message_id: str | None = None
    field_name: str | None = None
    field_value: Any = None
    delta: Any = None
    role: str | None = None
    content: Any = None
    action: Any = None
    session_state: Any = None
    message: Any = None       # G2 message_result nests the message (§2.9)
    project_id: str | None = None
    status: Any = None
    error: Any = None
    # §12.4.1: every ai_chat event carries a position that continues across a project's turns.
    event_index: int | None = msgspec.field(default=None, name="_event_index")


_event_decoder = msgspec.json.Decoder(UpstreamEvent)
_any_decoder = msgspec.json.Decoder()


def decode_event(payload: bytes) -> UpstreamEvent | None:
    """The event of a data line, or None when the line is not a JSON object we can read."""
    try:
        return _event_decoder.decode(payload)
    except msgspec.DecodeError:
        return None


def decode_json(payload: bytes) -> Any:
    try:
        return _any_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
