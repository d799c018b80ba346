"""Reading a JSON request body: small ones at once, large ones bounded and off the event loop.

A large body costs several times its size while it is decoded (the bytes, the decoded strings,
base64-decoded media), and decoding it on the event loop stalls every other request: 50 bodies
of 10 MiB at once took 3 GB and made `/healthz` take 4.7 s (issue #10 item 10). So a body of
`LARGE_BODY_BYTES` or more (or of unknown length) waits for one of `LARGE_BODY_CONCURRENCY`
slots before it is read (meanwhile it stays in the kernel's buffers: back pressure, no memory
of ours), and is decoded in a worker thread. A client that cannot get a slot within
BODY_TIMEOUT gets a 503 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
from quart import request

from .errors import ApiError

T = TypeVar("T")

LARGE_BODY_BYTES = 1024 * 1024


class BodyReader:
    def __init__(self, concurrency: int, wait_limit: float) -> None:
        self.slots = trio.CapacityLimiter(concurrency)
        self.wait_limit = wait_limit

    async def parse(self, decode: Callable[[bytes], T]) -> T:
        """`decode(body)` for the current request; ApiError from `decode` passes through."""
        length = request.content_length
        if length is not None and length < LARGE_BODY_BYTES:
            return decode(await request.get_data())
        with trio.move_on_after(self.wait_limit) as waiting:
            await self.slots.acquire()
        if waiting.cancelled_caught:
            raise ApiError(503, "Too many large request bodies are being read at once (LARGE_BODY_CONCURRENCY); "
                           "retry shortly.", type="server_error", code="busy", headers={"Retry-After": "5"})
        try:
            body = await request.get_data()
            if len(body) < LARGE_BODY_BYTES:
                return decode(body)
            return await trio.to_thread.run_sync(decode, body)
        finally:
            self.slots.release()
