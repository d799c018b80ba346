"""Decoding a JSON request body: small ones at once, large ones in a worker thread.

Decoding a large body on the event loop stalls every other request, so a body of
`LARGE_BODY_BYTES` or more is decoded in a worker thread. How many large bodies are read and
decoded at once is bounded earlier, in the ASGI layer (connection.py, LARGE_BODY_CONCURRENCY),
because Quart reads a body into memory as it arrives, whether or not the handler waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
from quart import request

T = TypeVar("T")

LARGE_BODY_BYTES = 1024 * 1024


async def parse_body(decode: Callable[[bytes], T]) -> T:
    """`decode(body)` for the current request; ApiError from `decode` passes through."""
    body = await request.get_data()
    if len(body) < LARGE_BODY_BYTES:
        return decode(body)
    return await trio.to_thread.run_sync(decode, body)
