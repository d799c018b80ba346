"""Errors answered to the client: a status, a message, and OpenAI's type/param/code vocabulary.

Each front door writes them in its own shape (OpenAI's `{"error": {...}}` in api/openai_types.py,
Anthropic's `{"type": "error", ...}` in its door); the status and the words are decided here.

Wording matters for gateways in front of us (openai-compat.md §2.5 item 21): one-api/new-api
disable a whole channel on 401/403 for upstream problems and on words like "quota", "credit",
"balance" or "permission denied". Upstream account trouble is therefore reported as 429/503 with
codes of our own and neutral words.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec


class ApiError(Exception):
    """An error answered to the client. `headers` carries e.g. Retry-After."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def upstream_error(status: int, message: str, code: str, retry_after: float | None = None) -> ApiError:
    """An upstream problem: 429/502/503/504 with type `upstream_error` (never 401/403)."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return ApiError(status, message, type="upstream_error", code=code, headers=headers)


def whole_number(text: str) -> int | None:
    """ASCII digits as an int, else None. `str.isdigit()` also accepts "²" and other Unicode digits
    that `int()` then refuses, which turned a client typo into a 500."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def decode_json_body(body: bytes, decoder: msgspec.json.Decoder | None = None) -> Any:
    """A request body as JSON; every malformed body is a 400 (msgspec raises more than DecodeError:
    RecursionError for deep nesting, UnicodeDecodeError for invalid UTF-8 inside a string)."""
    try:
        return decoder.decode(body) if decoder is not None else msgspec.json.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise from_validation_error(exc) from None
    except RecursionError:
        raise bad_request("The request body nests JSON too deeply.", code="invalid_json") from None
    except UnicodeDecodeError as exc:
        raise bad_request(f"The request body is not valid UTF-8 (byte {exc.start}).", code="invalid_json") from None


_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def from_validation_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> ApiError:
    """Turn a msgspec error into a 400 naming the offending `param`, e.g. `messages[0].role`."""
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return bad_request(f"The request body is not valid JSON: {text}", code="invalid_json")
    match = _AT_PATH.search(text)
    path = match.group("path").lstrip(".") if match else ""
    message = _AT_PATH.sub("", text)
    missing = _MISSING.search(text)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return bad_request(f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter")
    if not path:
        return bad_request(f"The request body must be a JSON object ({message}).", code="invalid_json")
    return bad_request(f"Invalid value for '{path}': {message}.", param=path, code="invalid_type")
