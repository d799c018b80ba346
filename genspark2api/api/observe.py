"""The outermost ASGI layer: one `RequestContext` per request, counted when its answer has ended.

Outermost, so that it sees every answer: the ones connection.py gives before Quart (WebSocket
refusals), Quart's own, and a stream's true end (after_request runs when a stream *starts*, so
only here is its whole duration known). It also puts `X-Request-Id` on answers that have none
(a chat answer sets its own, `chatcmpl-<request id>`).

Also `metrics_only_app`: the tiny app of `METRICS_BIND`, a second listener for scrapers that
answers `/metrics` without a key and 404 to anything else.
"""

from __future__ import annotations

from .. import requestctx
from ..metrics import CONTENT_TYPE, Metrics
from ..requestctx import RequestContext
from .connection import ASGIApp, Message, Receive, Scope, Send

CLIENT_LEFT = 499   # no answer was started: the client went away first (nginx's convention)
REQUEST_ID_HEADER = b"x-request-id"


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext()
        token = requestctx.current.set(ctx)
        status = CLIENT_LEFT

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == REQUEST_ID_HEADER for name, _ in headers):
                    headers.append((REQUEST_ID_HEADER, ctx.id.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            requestctx.current.reset(token)
            self.metrics.request(ctx.route, status, ctx.model, ctx.elapsed(), key=ctx.key_name)


def metrics_only_app(metrics: Metrics) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            status, content_type, body = 200, CONTENT_TYPE, metrics.render()
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"Only /metrics is served here.\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    return app
