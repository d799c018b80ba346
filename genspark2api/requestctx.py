"""What the service knows about the HTTP request being answered, for logs and metrics.

One `RequestContext` per request, set by the outermost ASGI layer (api/observe.py) before the app
runs. The app's tasks (quart's handler task, the failover attempts started from it) inherit a copy
of the context variable that holds the *same* object, so what the handler learns (route, model,
client key) is seen by the layer that counts the request when the answer has been sent, and every
log line of the request, in any of its tasks, carries its id.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

import trio

UNMATCHED_ROUTE = "unmatched"   # no route of the app matched (404), or answered before routing


@dataclass(slots=True)
class RequestContext:
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=trio.current_time)
    route: str = UNMATCHED_ROUTE    # the route rule without ROUTE_PREFIX, e.g. /v1/chat/completions
    model: str = ""                 # the requested model, bounded to the catalogue (metrics labels)
    key_name: str | None = None     # the client key the request was authenticated with

    def elapsed(self) -> float:
        return trio.current_time() - self.started


current: ContextVar[RequestContext | None] = ContextVar("genspark2api_request", default=None)


def current_request() -> RequestContext | None:
    return current.get()


def request_id() -> str:
    """The id of the request being answered; a fresh one outside a request (a background task)."""
    ctx = current.get()
    return ctx.id if ctx is not None else uuid.uuid4().hex
