"""Decoding a request body (JSON or a form): small ones at once, large ones in a worker thread.

Decoding a large body on the event loop stalls every other request, so a body of
`LARGE_BODY_BYTES` or more is decoded in a worker thread; that holds for multipart forms (image
edits and video references carry their images in them) as for JSON. How many large bodies are read and
decoded at once is bounded earlier, in the ASGI layer (connection.py, LARGE_BODY_CONCURRENCY),
because Quart reads a body into memory as it arrives, whether or not the handler waits for it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TypeVar

import trio
from quart import request
from werkzeug.datastructures import MultiDict
from werkzeug.formparser import FormDataParser

from ..errors import bad_request

T = TypeVar("T")

LARGE_BODY_BYTES = 1024 * 1024


async def parse_body(decode: Callable[[bytes], T]) -> T:
    """`decode(body)` for the current request; ApiError from `decode` passes through."""
    body = await request.get_data()
    if len(body) < LARGE_BODY_BYTES:
        return decode(body)
    return await trio.to_thread.run_sync(decode, body)


async def parse_form() -> tuple[MultiDict[str, str], MultiDict[str, Any]]:
    """The current request's form fields and files (multipart or urlencoded).

    Parsed from the body already read (bounded by MAX_REQUEST_BYTES and the ASGI layer's large-body
    slots), with werkzeug's synchronous parser: inline when small, in a worker thread when large.
    """
    body = await request.get_data()
    mimetype, options = request.mimetype, dict(request.mimetype_params)
    limits = request.max_form_memory_size, request.max_form_parts

    def decode() -> tuple[MultiDict[str, str], MultiDict[str, Any]]:
        parser = FormDataParser(max_form_memory_size=limits[0], max_form_parts=limits[1], silent=False)
        try:
            _, form, files = parser.parse(io.BytesIO(body), mimetype, len(body), options)
        except ValueError as exc:  # werkzeug's malformed-form errors (RequestEntityTooLarge too)
            raise bad_request(f"The form body could not be read: {exc}", code="invalid_form") from None
        return form, files

    if len(body) < LARGE_BODY_BYTES:
        return decode()
    return await trio.to_thread.run_sync(decode)
