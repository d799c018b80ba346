"""The HTTP face: routes, auth, per-IP limits, CORS and errors in each door's shape (thin on purpose).

Errors are OpenAI's `{"error": {...}}` everywhere except under `/v1/messages`, where Anthropic's
clients expect `{"type": "error", ...}` (`render_error` picks by path).

Every `/v1/...` route lives under `ROUTE_PREFIX` when it is set, and so does the admin API
(`/admin/api/...`, admin_api.py); `/` (the page, admin_page.py), `/healthz` and `/metrics` answer
at the root and under the prefix (HF Spaces probe the root, users may probe the prefix).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from quart import Blueprint, Response, current_app, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..client_keys import ClientKey
from ..core.chat import ChatService
from ..core.media_links import MEDIA_PATH
from ..errors import ApiError, whole_number
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..requestctx import current_request
from ..runtime import Runtime
from ..upstream import drift
from ..upstream.catalog import MODELS_CREATED, UnknownModel, owned_by
from .admin_api import AdminActions, admin_api
from .admin_page import register_admin_page
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
from .observe import RequestObserver
from .openai_types import ModelCard, ModelList, encoder, error_json
from .ratelimit import RateLimiter, RecentRequests
from .responses import register_responses_routes

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
        "Unknown API path: {path}. Under {prefix}/v1/ this service answers chat/completions, responses, "
        "messages, messages/count_tokens, models, images/generations, images/edits, videos and "
        "videos/generations.")),
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
    app.asgi_app = RequestObserver(app.asgi_app, runtime.metrics)  # type: ignore[method-assign]  # observe.py
    chat = ChatService(runtime)
    limiter = RateLimiter(settings.request_rate_limit)
    recent = RecentRequests()  # the page's requests per minute
    client_keys = settings.client_keys
    secrets = [(k, k.secret.encode()) for k in client_keys]
    # API_KEY_RPM: one bucket set per key name, each with that key's own rate.
    key_limiters = {name: RateLimiter(rpm) for name, rpm in settings.key_rpm_limits.items() if rpm > 0}
    admin_secret = settings.admin_secret.encode()
    prefix = settings.route_prefix
    blocked = set(settings.ip_black_list)
    public_paths = tuple(prefix + p for p in PUBLIC_API_PATHS)
    admin_views = (prefix + "/v1/pool", prefix + "/v1/upstream")
    # The admin API and the page's forms: rate-limited like the API (a guessed admin key costs a
    # request from the same budget), authenticated by their own modules, never by API_SECRET.
    admin_paths = tuple(dict.fromkeys((prefix + "/admin/", "/admin/")))
    api = Blueprint("api", "genspark2api.api", url_prefix=prefix + "/v1")

    @app.before_serving
    async def startup() -> None:
        runtime.nursery = app.nursery
        app.nursery.start_soon(runtime.watch_cookie_file)
        app.nursery.start_soon(runtime.loop_lag.watch)
        app.nursery.start_soon(runtime.counter.load)   # the tokenizer, after the service is up (usage.py)

    @app.after_serving
    async def shutdown() -> None:
        runtime.nursery = None
        await runtime.aclose()

    # ------------------------------------------------------------------ guards

    def bearer() -> bytes:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip().encode() if scheme.lower() == "bearer" else b""

    def presented_key() -> ClientKey | None:
        """The client key the request carries (Bearer, or `x-api-key` as Anthropic's clients send
        it: Claude Code, the SDKs built with api_key=), or None."""
        presented = bearer() or request.headers.get("x-api-key", "").strip().encode()
        # Constant time whatever matches; every secret is compared.
        found = None
        for key, secret in secrets:
            if hmac.compare_digest(presented, secret):
                found = key
        return found

    def key_presented() -> bool:
        """Whether the request carries one of the API keys (always True with an open API)."""
        return not secrets or presented_key() is not None

    def admin_presented() -> bool:
        return bool(admin_secret) and hmac.compare_digest(bearer(), admin_secret)

    @app.before_request
    async def guard() -> Response | None:
        ctx = current_request()
        if ctx is not None and request.url_rule is not None:
            rule = request.url_rule.rule
            ctx.route = rule.removeprefix(prefix) or "/"  # a label without ROUTE_PREFIX
        if request.method == "OPTIONS":
            return Response("", status=204)
        ip = client_ip(settings.trusted_proxy_hops)
        if ip in blocked:
            return error_response(ApiError(403, "Your address is blocked by this service.", code="ip_blocked"))
        path = request.path
        admin = path.startswith(admin_paths)
        if not admin and not path.startswith(prefix + "/v1/") and path != prefix + "/v1":
            return None
        if not admin:
            recent.hit()
        wait = limiter.hit(ip)
        if wait is not None:
            return error_response(ApiError(
                429, f"Too many requests from your address (REQUEST_RATE_LIMIT={settings.request_rate_limit}/min); "
                f"retry after {int(wait) + 1} s.", type="rate_limit_error", code="client_rate_limited",
                headers={"Retry-After": str(int(wait) + 1)},
            ))
        if admin_secret and path in admin_views:
            # The pool's per-cookie rows and the upstream drift samples are the operator's (issue
            # #12): with an admin key set, client keys get the counts on the page, not these.
            if admin_presented():
                return None
            client = secrets and presented_key() is not None
            return error_response(ApiError(
                403 if client else 401, f"{path} needs the admin key while ADMIN_SECRET is set: send "
                "'Authorization: Bearer <ADMIN_SECRET>'.", type="permission_error" if client else "invalid_request_error",
                code="admin_key_required" if client else "invalid_admin_key"))
        if secrets and not admin and not path.startswith(public_paths):
            key = presented_key()
            if key is None:
                return error_response(ApiError(
                    401, "Invalid or missing API key: send 'Authorization: Bearer <API_SECRET>' or "
                    "'x-api-key: <API_SECRET>'.",
                    code="invalid_api_key",
                ))
            if ctx is not None:
                ctx.key_name = key.name
            key_limiter = key_limiters.get(key.name)
            wait = key_limiter.hit(key.name) if key_limiter is not None else None
            if wait is not None:
                runtime.key_usage.refused(key.name)
                rpm = settings.key_rpm_limits[key.name]
                return error_response(ApiError(
                    429, f"Too many requests with the API key {key.name!r} (API_KEY_RPM: {rpm}/min); "
                    f"retry after {int(wait) + 1} s.", type="rate_limit_error", code="api_key_rate_limited",
                    headers={"Retry-After": str(int(wait) + 1)},
                ))
        return None

    @app.after_request
    async def cors(response: Response) -> Response:
        if request.path.startswith(admin_paths):
            return response  # the admin surface is for this origin (and curl) only
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

    async def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    async def readyz() -> Response:
        """Ready when at least one cookie can take a request now (for orchestrators)."""
        states = [str(s.state) for s in runtime.pool.snapshot()]
        ready = "healthy" in states and not runtime.shutting_down
        body = {"status": "ready" if ready else "not_ready", "healthy": states.count("healthy"),
                "cooling": states.count("cooling"), "dead": states.count("dead")}
        return json_response(encoder.encode(body), 200 if ready else 503)

    async def metrics() -> Response:
        """Prometheus text format; METRICS says who may read it (METRICS_BIND serves it openly)."""
        if settings.metrics == "off":
            raise ApiError(404, "/metrics is off (METRICS=off); set METRICS=admin or open, or METRICS_BIND.",
                           code="not_found")
        if settings.metrics == "admin" and not admin_presented():
            if not admin_secret:
                raise ApiError(403, "/metrics needs the admin key, and ADMIN_SECRET is not set; set it, or "
                               "METRICS=open, or METRICS_BIND for a scraper's listener.", code="admin_key_not_set")
            if secrets and presented_key() is not None:
                raise ApiError(403, "A client key cannot read /metrics; send 'Authorization: Bearer "
                               "<ADMIN_SECRET>'.", type="permission_error", code="admin_key_required")
            raise ApiError(401, "Invalid or missing admin key: send 'Authorization: Bearer <ADMIN_SECRET>'.",
                           code="invalid_admin_key")
        return Response(runtime.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    for root in ("", prefix) if prefix else ("",):
        app.add_url_rule(root + "/healthz", f"healthz{root}", healthz, methods=["GET"])
        app.add_url_rule(root + "/readyz", f"readyz{root}", readyz, methods=["GET"])
        app.add_url_rule(root + "/metrics", f"metrics{root}", metrics, methods=["GET"])
    actions = AdminActions(runtime)
    # `/`: with API_SECRET and no ADMIN_SECRET, the page without the key shows counts only (issue #10
    # item 12); with ADMIN_SECRET, only an admin sees each cookie (issue #12).
    register_admin_page(app, runtime, actions, recent, key_presented)
    app.register_blueprint(admin_api(runtime, actions))

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
        ctx = current_request()
        if ctx is not None:
            ctx.model = params.route.requested  # a metrics label: Metrics bounds it to the catalogue
        if is_generation(params.route):  # an image or video model named in a chat request
            return await generation_chat_completion(runtime, params)
        return await chat_completion_response(runtime, chat, params)

    register_generation_routes(api, runtime)
    register_responses_routes(api, runtime, chat)
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
