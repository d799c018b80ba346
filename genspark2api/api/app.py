"""The HTTP face: routes, auth, per-IP limits, CORS and errors in each door's shape (thin on purpose).

Errors are OpenAI's `{"error": {...}}` everywhere except under `/v1/messages`, where Anthropic's
clients expect `{"type": "error", ...}` (`render_error` picks by path).

Every `/v1/...` route lives under `ROUTE_PREFIX` when it is set; `/` and `/healthz` answer at the
root and under the prefix (HF Spaces probe the root, users may probe the prefix).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from quart import Blueprint, Response, current_app, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..core.chat import ChatService
from ..core.media_links import MEDIA_PATH
from ..errors import ApiError, whole_number
from ..runtime import Runtime
from ..upstream import drift
from ..upstream.catalog import MODELS_CREATED, UnknownModel, owned_by
from .bodies import LARGE_BODY_BYTES, parse_body
from .chat_completions import chat_completion_response
from .chat_door import is_generation, model_not_found, parse_chat_request
from .connection import ConnectionGuard
from .generation_routes import generation_chat_completion, register_generation_routes
from .messages import (
    anthropic_error_response,
    is_anthropic_path,
    register_messages_routes,
)
from .openai_types import ModelCard, ModelList, encoder, error_json
from .ratelimit import RateLimiter

log = logging.getLogger("genspark2api.app")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Requested-With, X-Api-Key, Anthropic-Version, Anthropic-Beta, Anthropic-Dangerous-Direct-Browser-Access, OpenAI-Organization, OpenAI-Project, OpenAI-Beta, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, X-Stainless-Timeout",
    "Access-Control-Expose-Headers": "X-Request-Id, X-Genspark-Model, Retry-After",
    "Access-Control-Max-Age": "86400",
}

# Paths under /v1/ answered without an API key (still rate-limited): capability URLs, where the
# unguessable token in the path is the authorisation (media_links.py).
PUBLIC_API_PATHS = (MEDIA_PATH,)

EARLY_ANSWER_DRAIN_SECONDS = 5.0  # how long the rest of a body is read after an early answer

HTTP_ERRORS: dict[int | str, tuple[str, str, str]] = {
    400: ("invalid_request_error", "bad_request", "The request could not be read."),
    404: ("invalid_request_error", "not_found", "Unknown path: {path}. The API lives under {prefix}/v1/."),
    # 404 for a path already under /v1/: the path is wrong, not the prefix.
    "404_api": ("invalid_request_error", "not_found", (
        "Unknown API path: {path}. Under {prefix}/v1/ this service answers chat/completions, messages, "
        "messages/count_tokens, models, images/generations, images/edits, videos and videos/generations.")),
    405: ("invalid_request_error", "method_not_allowed", "Method {method} is not allowed on {path}."),
    408: ("invalid_request_error", "request_timeout", "The request body arrived too slowly."),
    413: ("invalid_request_error", "request_too_large", "The request body exceeds MAX_REQUEST_BYTES ({limit} bytes)."),
}


def json_response(payload: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(payload, status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(error: ApiError) -> Response:
    """The error in the shape of the door the request came to (needs the request context)."""
    prefix = current_app.runtime.settings.route_prefix  # type: ignore[attr-defined]
    if is_anthropic_path(request.path, prefix):
        return anthropic_error_response(error)
    return json_response(error_json(error), error.status, error.headers)


def anthropic_client() -> bool:
    """Whether the request comes from an Anthropic client (its SDKs always send the header)."""
    return "anthropic-version" in request.headers


def client_ip(trusted_hops: int) -> str:
    """The client address; X-Forwarded-For is trusted only for the configured proxy hops."""
    ip = request.remote_addr or ""
    if trusted_hops > 0:
        forwarded = [p.strip() for p in request.headers.get("X-Forwarded-For", "").split(",") if p.strip()]
        if forwarded:
            ip = forwarded[-min(trusted_hops, len(forwarded))]
    ip = ip.removeprefix("::ffff:")
    return ip


def create_app(runtime: Runtime) -> QuartTrio:
    settings = runtime.settings
    app = QuartTrio("genspark2api")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        RESPONSE_TIMEOUT=None,  # python-stack.md §2.4: the 60 s default silently cuts streams
        BODY_TIMEOUT=settings.body_timeout,  # slow uploads get a 408 instead of holding a slot
        BACKGROUND_TASK_SHUTDOWN_TIMEOUT=5,
    )
    app.runtime = runtime  # type: ignore[attr-defined]
    # connection.py: early answers drain the body, and every answer's connection really ends.
    app.asgi_app = ConnectionGuard(
        app.asgi_app, drain_seconds=EARLY_ANSWER_DRAIN_SECONDS, stopping=runtime.stopping,
        large_body_slots=runtime.large_body_slots, large_body_bytes=LARGE_BODY_BYTES)  # type: ignore[method-assign]
    chat = ChatService(runtime)
    limiter = RateLimiter(settings.request_rate_limit)
    secrets = [s.encode() for s in settings.api_secrets]
    prefix = settings.route_prefix
    blocked = set(settings.ip_black_list)
    public_paths = tuple(prefix + p for p in PUBLIC_API_PATHS)
    api = Blueprint("api", "genspark2api.api", url_prefix=prefix + "/v1")

    @app.before_serving
    async def startup() -> None:
        runtime.nursery = app.nursery
        app.nursery.start_soon(runtime.watch_cookie_file)

    @app.after_serving
    async def shutdown() -> None:
        runtime.nursery = None
        await runtime.aclose()

    # ------------------------------------------------------------------ guards

    def key_presented() -> bool:
        """Whether the request carries one of the API keys (always True with an open API)."""
        if not secrets:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        if not presented:
            # Anthropic's clients send `x-api-key` (Claude Code, the SDKs built with api_key=).
            presented = request.headers.get("x-api-key", "").strip().encode()
        # Constant time whatever matches; every secret is compared.
        ok = False
        for secret in secrets:
            ok |= hmac.compare_digest(presented, secret)
        return ok

    @app.before_request
    async def guard() -> Response | None:
        if request.method == "OPTIONS":
            return Response("", status=204)
        ip = client_ip(settings.trusted_proxy_hops)
        if ip in blocked:
            return error_response(ApiError(403, "Your address is blocked by this service.", code="ip_blocked"))
        path = request.path
        if not path.startswith(prefix + "/v1/") and path != prefix + "/v1":
            return None
        wait = limiter.hit(ip)
        if wait is not None:
            return error_response(ApiError(
                429, f"Too many requests from your address (REQUEST_RATE_LIMIT={settings.request_rate_limit}/min); "
                f"retry after {int(wait) + 1} s.", type="rate_limit_error", code="client_rate_limited",
                headers={"Retry-After": str(int(wait) + 1)},
            ))
        if secrets and not path.startswith(public_paths) and not key_presented():
            return error_response(ApiError(
                401, "Invalid or missing API key: send 'Authorization: Bearer <API_SECRET>' or "
                "'x-api-key: <API_SECRET>'.",
                code="invalid_api_key",
            ))
        return None

    @app.after_request
    async def cors(response: Response) -> Response:
        for key, value in CORS_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # ------------------------------------------------------------------ errors

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        under_api = request.path.startswith(prefix + "/v1/")
        key: int | str = "404_api" if status == 404 and under_api else status
        kind, code, template = HTTP_ERRORS.get(key, ("invalid_request_error", "http_error", error.description or "HTTP error"))
        message = template.format(path=request.path, method=request.method, prefix=prefix, limit=settings.max_request_bytes)
        return error_response(ApiError(status, message, type=kind, code=code))

    @app.errorhandler(Exception)
    async def crash(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, f"Internal error: {type(error).__name__}.", type="server_error", code="internal_error"))

    # ------------------------------------------------------------------ pages

    async def index() -> Response:
        # With API_SECRET, the page without the key shows counts only (issue #10 item 12).
        return Response(runtime_page(runtime, details=key_presented()), content_type="text/html; charset=utf-8")

    async def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    async def readyz() -> Response:
        """Ready when at least one cookie can take a request now (for orchestrators)."""
        states = [str(s.state) for s in runtime.pool.snapshot()]
        ready = "healthy" in states and not runtime.shutting_down
        body = {"status": "ready" if ready else "not_ready", "healthy": states.count("healthy"),
                "cooling": states.count("cooling"), "dead": states.count("dead")}
        return json_response(encoder.encode(body), 200 if ready else 503)

    for root in ("", prefix) if prefix else ("",):
        app.add_url_rule(root + "/", f"index{root}", index, methods=["GET"])
        app.add_url_rule(root + "/healthz", f"healthz{root}", healthz, methods=["GET"])
        app.add_url_rule(root + "/readyz", f"readyz{root}", readyz, methods=["GET"])
    if prefix:
        app.add_url_rule(prefix, "index_bare", index, methods=["GET"])

    # ------------------------------------------------------------------ API

    @api.get("/models")
    async def models() -> Response:
        if anthropic_client():
            return json_response(anthropic_model_list(runtime, request.args))
        cards = [ModelCard(m, MODELS_CREATED, owned_by(m)) for m, _ in runtime.catalog.listed()]
        return json_response(encoder.encode(ModelList(cards)))

    @api.get("/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        catalog = runtime.catalog
        known = {m for m, _ in catalog.listed()} | set(catalog.aliases())
        if model_id not in known:
            try:
                catalog.route(model_id)   # a dated Claude name, say: served, so it exists
            except UnknownModel:
                raise model_not_found(UnknownModel(model_id, catalog.suggest(model_id))) from None
        if anthropic_client():
            return json_response(encoder.encode(anthropic_model_card(model_id)))
        return json_response(encoder.encode(ModelCard(model_id, MODELS_CREATED, owned_by(model_id))))

    @api.get("/pool")
    async def pool() -> Response:
        """The cookie pool, masked: state, reason, until-when, in-flight and counts."""
        return json_response(encoder.encode({"object": "pool", "data": pool_status(runtime)}))

    @api.get("/upstream")
    async def upstream() -> Response:
        """How upstream is reached, and what it sent that no adapter knows (drift.py)."""
        return json_response(encoder.encode(upstream_status(runtime)))

    @api.post("/chat/completions")
    async def chat_completions() -> Response:
        params = await parse_body(lambda body: parse_chat_request(body, runtime.catalog))
        if is_generation(params.route):  # an image or video model named in a chat request
            return await generation_chat_completion(runtime, params)
        return await chat_completion_response(runtime, chat, params)

    register_generation_routes(api, runtime)
    register_messages_routes(api, runtime, chat)
    app.register_blueprint(api)
    return app


MODELS_CREATED_AT = "2026-01-01T00:00:00Z"   # MODELS_CREATED as RFC 3339, as Anthropic lists it


def anthropic_model_card(model_id: str) -> dict[str, object]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": MODELS_CREATED_AT}


def anthropic_model_list(runtime: Runtime, args: Mapping[str, str]) -> bytes:
    """Anthropic's model list: chat models only (the Messages API cannot make images), paged by
    `limit` (default 20, at most 1000, as Anthropic's), `after_id` and `before_id`."""
    ids = [m for m, kind in runtime.catalog.listed() if kind in ("text", "mixture")]
    limit = whole_number(args.get("limit", "20") or "20")
    if limit is None or not 1 <= limit <= 1000:
        raise ApiError(400, "limit: must be a whole number from 1 to 1000.", param="limit", code="invalid_value")
    start, end = 0, len(ids)
    after, before = args.get("after_id"), args.get("before_id")
    if after:
        start = ids.index(after) + 1 if after in ids else end
    if before:
        end = ids.index(before) if before in ids else 0
        start = max(start, end - limit)
    page = ids[start:min(end, start + limit)]
    more = (start + len(page) < end) if not before else start > 0
    return encoder.encode({
        "data": [anthropic_model_card(m) for m in page], "has_more": more,
        "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
    })


def pool_status(runtime: Runtime) -> list[dict[str, object]]:
    return [
        {
            "cookie": s.masked, "key": s.key, "state": str(s.state), "reason": s.reason, "until": s.until,
            "in_flight": s.in_flight, "successes": s.successes, "failures": s.failures,
            "consecutive_failures": s.consecutive_failures, "last_used": s.last_used,
            "last_error": s.last_error_detail, "substitutions": s.substitutions,
        }
        for s in runtime.pool.snapshot()
    ]


def upstream_status(runtime: Runtime) -> dict[str, object]:
    settings = runtime.settings
    transport = runtime.client.transport_name
    return {
        "object": "upstream",
        "transport": transport,
        "impersonate": settings.upstream_impersonate if transport == "browser" else None,
        "recording": bool(settings.upstream_record_dir),
        "drift": drift.as_rows(),
    }


def runtime_page(runtime: Runtime, *, details: bool) -> str:
    """`/`: a short page with the pool at a glance (masked cookies only); counts only without `details`."""
    settings = runtime.settings
    snapshot = runtime.pool.snapshot()
    states = [str(s.state) for s in snapshot]
    counts = (f"<p>{len(snapshot)} cookie(s): {states.count('healthy')} healthy, {states.count('cooling')} cooling, "
              f"{states.count('dead')} dead.</p>")
    rows = "".join(
        f"<tr><td><code>{s.masked}</code></td><td>{s.state}</td><td>{s.reason or ''}</td>"
        f"<td>{s.in_flight}</td><td>{s.successes}</td><td>{s.failures}</td></tr>"
        for s in snapshot
    )
    table = ("<table><tr><th>cookie</th><th>state</th><th>reason</th><th>in flight</th>"
             f"<th>ok</th><th>failed</th></tr>{rows}</table>") if details else \
        "<p>Send the API key (<code>Authorization: Bearer …</code>) to see each cookie.</p>"
    base = f"{settings.route_prefix}/v1"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>genspark2api</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}"
        "td,th{padding:.2rem .6rem;text-align:left}</style></head><body>"
        f"<h1>genspark2api {__version__}</h1>"
        f"<p>OpenAI- and Anthropic-compatible API over Genspark. Base URL: <code>{base}</code>. "
        f"Upstream: <code>{settings.base_url}</code> ({settings.chat_protocol}).</p>"
        f"<h2>Cookie pool</h2>{counts}{table}</body></html>"
    )

