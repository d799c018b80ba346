"""Configuration: read once from the environment, validated once, passed down.

The Go project silently fell back to defaults on a bad value (genspark-protocol.md §7); we stop
the start instead, naming the variable, the bad value and the accepted form.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .client_keys import ClientKey, limits_by_key, parse_client_keys, parse_key_rpm

log = logging.getLogger("genspark2api.settings")


class SettingsError(ValueError):
    """An invalid configuration value; the message is shown to the operator as is."""


# Old variables that are read no more; each gets a warning that says what replaced it.
DEPRECATED = {
    "PROXY_SECRET": "still read as API_SECRET when that is unset; rename it",
    "SESSION_IMAGE_CHAT_MAP": "ignored; images and videos use the cookie pool like chat",
    "YES_CAPTCHA_CLIENT_KEY": "ignored; use RECAPTCHA_PROXY_URL",
    "CHEAT_URL": "ignored; use RECAPTCHA_PROXY_URL",
    "REQUEST_OUT_TIME": "ignored; use UPSTREAM_IDLE_TIMEOUT",
    "STREAM_REQUEST_OUT_TIME": "ignored; use UPSTREAM_IDLE_TIMEOUT",
    "SWAGGER_ENABLE": "ignored; not used",
    "ONLY_OPENAI_API": "ignored; not used",
    "ALL_DIALOG_RECORD_ENABLE": "ignored; not used",
    "UPLOAD_PATH": "ignored; not used",
    "GIN_MODE": "ignored; use DEBUG",
    "TOOL_CALLING_ENABLED": "ignored; tools are always honoured when a request carries them",
}

CHAT_PROTOCOLS = ("ai_chat", "copilot")
REASONING_FORMATS = ("reasoning_content", "think")
MEDIA_URL_MODES = ("auto", "upstream", "proxy")
SUBSTITUTION_POLICIES = ("allow", "failover", "cool")
DATA_DIR_FALLBACKS = ("fail", "memory")
# §12.2.1: a full current Chrome UA (SB sends Chrome/146 on Windows).
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/146.0.0.0 Safari/537.36"
)
UPSTREAM_TRANSPORTS = ("httpx", "browser")
METRICS_MODES = ("off", "admin", "open")
LOG_FORMATS = ("text", "json")


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def _int(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise SettingsError(f"{name}={raw!r} is out of range; use a whole number {bound}")
        return value

    return parse


def _seconds(lo: float = 0.0, hi: float = math.inf) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < lo or value > hi:
            bound = f"seconds >= {lo:g}" if hi == math.inf else f"seconds between {lo:g} and {hi:g}"
            raise SettingsError(f"{name}={raw!r} is out of range; use {bound}")
        return value

    return parse


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _non_empty(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(c in value for c in "\r\n"):
        raise SettingsError(f"{name}={raw!r} must be a non-empty single line")
    return value


def _admin_secret(name: str, raw: str) -> str:
    """Empty (admin off) or a single line of at least 8 characters; never echoed in the error."""
    value = raw.strip()
    if value and (len(value) < 8 or any(c in value for c in "\r\n")):
        raise SettingsError(f"{name} must be a single line of at least 8 characters (or empty to turn the admin API off)")
    return value


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name}={raw!r} is not accepted; use one of: {', '.join(choices)}")
        return value

    return parse


def _url(*schemes: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise SettingsError(
                f"{name}={raw!r} is not a URL; use {' or '.join(s + '://host[:port]' for s in schemes)}"
            )
        return value.rstrip("/")

    return parse


def _route_prefix(name: str, raw: str) -> str:
    value = raw.strip().strip("/")
    if not value:
        return ""
    if any(c in value for c in "?#% ") or "//" in value:
        raise SettingsError(f"{name}={raw!r} is not a path prefix; use letters, digits, - _ . and /, e.g. hf")
    return "/" + value


def _public_base_url(name: str, raw: str) -> str:
    """The service's root as clients reach it: a URL, optionally with a path, without ?query or #."""
    value = _url("http", "https")(name, raw)
    parts = urlsplit(value)
    if parts.query or parts.fragment or raw.strip().endswith(("?", "#")):
        raise SettingsError(f"{name}={raw!r} is not a base URL; use https://host[:port][/path] without ? or #")
    return value


def _impersonate(name: str, raw: str) -> str:
    """Checked against curl_cffi's list when the browser transport starts (from_env)."""
    value = raw.strip().lower()
    if not value or not all(c.isalnum() or c == "_" for c in value):
        raise SettingsError(f"{name}={raw!r} is not a browser name; use e.g. chrome, edge, safari or chrome146")
    return value


def _bind(name: str, raw: str) -> str:
    """`host:port` (`[::1]:9100` for IPv6) of an extra listener; empty = none."""
    value = raw.strip()
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535 or (":" in host and not host.startswith("[")):
        raise SettingsError(f"{name}={raw!r} is not a listen address; use host:port, e.g. 127.0.0.1:9100 or [::1]:9100")
    return value


def _key_rpm(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_key_rpm(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} {exc}") from None


def _model_chat_map(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(name, raw):
        model, sep, project = item.partition("=")
        model, project = model.strip(), project.strip()
        if not sep or not model or not project or any(c in project for c in "&=?# "):
            raise SettingsError(f"{name} entry {item!r} is not accepted; use model=projectId,model2=projectId2")
        pairs.append((model, project))
    return tuple(pairs)


def _model_aliases(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(name, raw):
        alias, sep, target = item.partition("=")
        alias, target = alias.strip(), target.strip()
        if not sep or not alias or not target:
            raise SettingsError(f"{name} entry {item!r} is not accepted; use name=genspark-id,name2=genspark-id2")
        pairs.append((alias, target))
    return tuple(pairs)


def _short(raw: str, limit: int = 60) -> str:
    return repr(raw if len(raw) <= limit else raw[:limit] + "…")


def _pre_messages(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    if not raw.strip():
        return ()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(
            f"{name}={_short(raw)} is not valid JSON ({exc}); use a JSON array of {{\"role\",\"content\"}} objects"
        ) from None
    ok = isinstance(value, list) and all(
        isinstance(m, dict)
        and m.get("role") in ("system", "developer", "user", "assistant")
        and isinstance(m.get("content"), str)
        for m in value
    )
    if not ok:
        raise SettingsError(
            f"{name}={_short(raw)} is not accepted; use a JSON array of "
            f"{{\"role\": system|developer|user|assistant, \"content\": string}} objects"
        )
    return tuple((m["role"], m["content"]) for m in value)


@dataclass(frozen=True, slots=True)
class Var:
    env: str
    parse: Callable[[str, str], Any]
    doc: str
    aliases: tuple[str, ...] = ()


def setting(env: str, default: Any, parse: Callable[[str, str], Any], doc: str, *aliases: str) -> Any:
    return field(default=default, metadata={"var": Var(env, parse, doc, aliases)})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service; the README's settings table mirrors this class."""

    # Serving
    host: str = setting("HOST", "0.0.0.0", _str, "Bind address (use [::] for IPv6)")
    port: int = setting("PORT", 7055, _int(0, 65535), "Listen port")
    debug: bool = setting("DEBUG", False, _bool, "Verbose logs (upstream events, never whole cookies)")
    route_prefix: str = setting("ROUTE_PREFIX", "", _route_prefix, "Serve /v1/... under /<prefix>/v1/...")
    api_secrets: tuple[str, ...] = setting("API_SECRET", (), _list, "Comma list of accepted API keys, each `name:key` or a plain key (named key1, key2, ...); empty = open API")
    api_key_rpm: tuple[tuple[str, int], ...] = setting("API_KEY_RPM", (), _key_rpm, "Requests per minute per client key name: name=60,other=10 (`*` = every other key; 0 = no limit)")
    admin_secret: str = setting("ADMIN_SECRET", "", _admin_secret, "Key of the admin API (/admin/api/...), the admin actions on the page at / and /metrics with METRICS=admin; empty = admin off. Must differ from every client key")
    metrics: str = setting("METRICS", "admin", _choice(*METRICS_MODES), "/metrics on the main port: off, admin (needs ADMIN_SECRET) or open")
    metrics_bind: str = setting("METRICS_BIND", "", _bind, "host:port of a second listener serving only /metrics, without a key (for scrapers)")
    log_format: str = setting("LOG_FORMAT", "text", _choice(*LOG_FORMATS), "text (readable lines) or json (one object per line with the request id)")
    request_rate_limit: int = setting("REQUEST_RATE_LIMIT", 60, _int(0), "Requests per client IP per minute (0 = off)")
    ip_black_list: tuple[str, ...] = setting("IP_BLACK_LIST", (), _list, "Comma list of client IPs answered 403")
    trusted_proxy_hops: int = setting("TRUSTED_PROXY_HOPS", 0, _int(0, 10), "Reverse proxies in front (X-Forwarded-For hops to trust)")
    max_request_bytes: int = setting("MAX_REQUEST_BYTES", 64 * 1024 * 1024, _int(1024), "Largest request body accepted")
    body_timeout: float = setting("BODY_TIMEOUT", 60.0, _seconds(1), "Time a client has to send a whole request body, seconds (then 408)")
    client_idle_timeout: float = setting("KEEP_ALIVE_TIMEOUT", 75.0, _seconds(1), "Idle keep-alive connections close after this (the wait for a next request's first byte), seconds")
    head_timeout: float = setting("HEAD_TIMEOUT", 10.0, _seconds(1), "Time to send a request head once its first byte arrived, seconds (then the connection closes)")
    client_send_timeout: float = setting("CLIENT_SEND_TIMEOUT", 60.0, _seconds(1), "Longest a write to a client may wait for it to read; then the connection is closed and its upstream work stops, seconds")
    listen_backlog: int = setting("LISTEN_BACKLOG", 1024, _int(16, 65535), "Connections the kernel queues before the service accepts them")
    large_body_concurrency: int = setting("LARGE_BODY_CONCURRENCY", 4, _int(1), "Request bodies of 1 MiB or more (or chunked) read and decoded at once; others wait unread")
    keepalive_seconds: float = setting("STREAM_KEEPALIVE_SECONDS", 15.0, _seconds(0), "`: keep-alive` comment interval in silent stream gaps (0 = off)")
    stream_coalesce: float = setting("STREAM_COALESCE_SECONDS", 0.02, _seconds(0, 1), "After the first content frame, frames arriving within this window share one write (0 = off)")
    # Upstream
    cookies: tuple[str, ...] = setting("GS_COOKIE", (), _list, "Comma list of Genspark cookies (session_id=... or the bare value)")
    cookie_file: str = setting("GS_COOKIE_FILE", "", _str, "File with one cookie per line (# comments); re-read on SIGHUP and on change")
    base_url: str = setting("GENSPARK_BASE_URL", "https://www.genspark.ai", _url("http", "https"), "Where every upstream call goes")
    chat_protocol: str = setting("GENSPARK_CHAT_PROTOCOL", "ai_chat", _choice(*CHAT_PROTOCOLS), "ai_chat (/api/agent/ask_proxy) or copilot (/api/copilot/ask)")
    proxy_url: str = setting("PROXY_URL", "", _url("http", "https", "socks5", "socks5h"), "Egress proxy for every upstream call (unset: the standard HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY variables, if any)")
    recaptcha_proxy_url: str = setting("RECAPTCHA_PROXY_URL", "", _url("http", "https"), "reCAPTCHA token service (GET {url}/genspark)")
    connect_timeout: float = setting("UPSTREAM_CONNECT_TIMEOUT", 15.0, _seconds(0.1), "Upstream connect timeout, seconds")
    idle_timeout: float = setting("UPSTREAM_IDLE_TIMEOUT", 120.0, _seconds(0.1), "Longest silence accepted from an upstream stream, seconds")
    user_agent: str = setting("UPSTREAM_USER_AGENT", DEFAULT_USER_AGENT, _non_empty, "User-Agent sent upstream: a complete current browser UA (without one Genspark answers 'bad request cf', §12.5 E22)")
    timezone: str = setting("UPSTREAM_TIMEZONE", "UTC", _non_empty, "X-Timezone header sent upstream, an IANA zone such as Asia/Shanghai (§12.2.1)")
    first_event_timeout: float = setting("UPSTREAM_FIRST_EVENT_TIMEOUT", 30.0, _seconds(0), "Longest wait for a chat attempt's first answer text; then the next cookie (0 = only UPSTREAM_IDLE_TIMEOUT)")
    upstream_transport: str = setting("UPSTREAM_TRANSPORT", "httpx", _choice(*UPSTREAM_TRANSPORTS), "httpx (Python TLS) or browser (curl_cffi with a browser TLS/HTTP2 fingerprint, the [browser] extra)")
    upstream_impersonate: str = setting("UPSTREAM_IMPERSONATE", "chrome", _impersonate, "Browser the browser transport imitates: chrome (newest known), edge, safari, firefox, or a version such as chrome146")
    upstream_record_dir: str = setting("UPSTREAM_RECORD_DIR", "", _str, "Save every upstream exchange (redacted) as a file in this directory; empty = off")
    # Pool
    rate_limit_lock: float = setting("RATE_LIMIT_COOKIE_LOCK_DURATION", 600.0, _seconds(0), "Cooldown of a rate-limited cookie, seconds")
    network_cooldown: float = setting("NETWORK_COOLDOWN_SECONDS", 30.0, _seconds(0), "Cooldown after a network / anti-bot failure, seconds")
    first_byte_hold: float = setting("FIRST_BYTE_HOLD_SECONDS", 20.0, _seconds(0), "How long a stream waits for the first answer before committing")
    max_attempts: int = setting("MAX_ATTEMPTS", 0, _int(0), "Cookies tried per request (0 = all)")
    cookie_max_in_flight: int = setting("COOKIE_MAX_IN_FLIGHT", 2, _int(0), "Requests in flight per cookie (0 = no cap); Genspark answers a 3rd with HTTP 429 (§12.5 E18)")
    pool_wait: float = setting("POOL_WAIT_SECONDS", 30.0, _seconds(0), "How long a request waits for a cookie below its in-flight cap before 429")
    hedge_after: float = setting("HEDGE_AFTER_SECONDS", 10.0, _seconds(0), "Start a second chat attempt on another cookie when the first is silent this long (0 = off)")
    auto_model_chat_map: bool = setting("AUTO_MODEL_CHAT_MAP_TYPE", True, _bool, "Bind follow-up turns to the upstream chat that answered before")
    model_chat_map: tuple[tuple[str, str], ...] = setting("MODEL_CHAT_MAP", (), _model_chat_map, "model=projectId,... pins a model to a fixed upstream chat")
    auto_del_chat: bool = setting("AUTO_DEL_CHAT", False, _bool, "Delete finished, unbound upstream chats in the background")
    # Models
    extra_models: tuple[str, ...] = setting("EXTRA_MODELS", (), _list, "Comma list of extra Genspark chat model ids to list and accept")
    model_aliases: tuple[tuple[str, str], ...] = setting("MODEL_ALIASES", (), _model_aliases, "name=genspark-id,... extra model names clients may send, each served by a Genspark chat id")
    unknown_model_moa: bool = setting("UNKNOWN_MODEL_MOA", False, _bool, "Run Mixture-of-Agents for unknown model names instead of answering 404")
    model_substitution: str = setting("MODEL_SUBSTITUTION", "allow", _choice(*SUBSTITUTION_POLICIES), "When Genspark serves another model than asked: allow (log and count), failover (non-stream: try another cookie) or cool (rest a cookie that keeps doing it)")
    # Rich chat
    reasoning_format: str = setting("REASONING_FORMAT", "reasoning_content", _choice(*REASONING_FORMATS), "reasoning_content (delta field) or think (inline <think> tags)")
    reasoning_hide: bool = setting("REASONING_HIDE", False, _bool, "Drop reasoning entirely")
    search_sources: bool = setting("SEARCH_SOURCES", True, _bool, "Append a markdown Sources list to -search answers")
    pre_messages: tuple[tuple[str, str], ...] = setting("PRE_MESSAGES_JSON", (), _pre_messages, "JSON array of messages inserted after the last system message")
    fetch_allow_private: bool = setting("FETCH_ALLOW_PRIVATE", False, _bool, "Allow image/file URLs on private or loopback addresses")
    max_fetch_bytes: int = setting("MAX_FETCH_BYTES", 20 * 1024 * 1024, _int(1), "Largest user URL download, bytes")
    fetch_timeout: float = setting("FETCH_TIMEOUT", 30.0, _seconds(0.1), "Time limit of one user URL download, seconds")
    # Images and videos
    image_model: str = setting("IMAGE_MODEL", "nano-banana-pro", _str, "Default model of /v1/images/generations")
    image_timeout: float = setting("IMAGE_TIMEOUT", 300.0, _seconds(0.1), "Overall deadline of an image generation, seconds")
    video_timeout: float = setting("VIDEO_TIMEOUT", 900.0, _seconds(0.1), "Overall deadline of a video generation, seconds")
    video_jobs_max: int = setting("VIDEO_JOBS_MAX", 100, _int(1), "Video jobs kept (in memory, and in DATA_DIR when set)")
    video_jobs_ttl: float = setting("VIDEO_JOBS_TTL", 3600.0, _seconds(1), "How long a finished video job is kept, seconds")
    media_urls: str = setting("MEDIA_URLS", "auto", _choice(*MEDIA_URL_MODES), "upstream (Genspark's file URLs), proxy (links on this service) or auto: proxy on ai_chat, whose files need the session cookie (§12.7.4), upstream on copilot")
    public_base_url: str = setting("PUBLIC_BASE_URL", "", _public_base_url, "Base of proxied media links as clients see it; empty = from the request")
    media_link_ttl: float = setting("MEDIA_LINK_TTL", 86400.0, _seconds(1), "How long a proxied media link stays valid, seconds")
    # State
    data_dir: str = setting("DATA_DIR", "", _str, "Directory of the state database (genspark2api.sqlite3): cookie states, bindings, video jobs, media links and stored responses survive restarts; empty = memory only")
    data_dir_fallback: str = setting("DATA_DIR_FALLBACK", "fail", _choice(*DATA_DIR_FALLBACKS), "When the database in DATA_DIR cannot be used: fail (refuse to start) or memory (start memory-only, with a loud warning)")
    # Responses API (api/responses_door.py): stored responses for GET and previous_response_id
    responses_store_max: int = setting("RESPONSES_STORE_MAX", 1000, _int(1), "Stored responses held in memory (least recently used dropped first; with DATA_DIR all are also in the database)")
    responses_store_max_bytes: int = setting("RESPONSES_STORE_MAX_BYTES", 128 * 1024 * 1024, _int(1024), "Bytes of stored responses kept in memory in all (inputs with images count in full)")
    responses_store_ttl: float = setting("RESPONSES_STORE_TTL", 86400.0, _seconds(1), "How long a stored response can be retrieved or continued, seconds")

    @classmethod
    def variables(cls) -> list[tuple[str, Var, Any]]:
        return [(f.name, f.metadata["var"], f.default) for f in fields(cls)]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse and validate; raise SettingsError naming the first bad variable."""
        values: dict[str, Any] = {}
        for name, var, _default in cls.variables():
            for key in (var.env, *var.aliases):
                if key in env:
                    values[name] = var.parse(key, env[key])
                    break
        if "PROXY_SECRET" in env and "API_SECRET" not in env:
            values["api_secrets"] = _list("PROXY_SECRET", env["PROXY_SECRET"])
        settings = cls(**values)
        try:
            limits_by_key(settings.client_keys, settings.api_key_rpm)
        except ValueError as exc:
            raise SettingsError(f"API_SECRET / API_KEY_RPM: {exc}") from None
        if settings.admin_secret and settings.admin_secret in {k.secret for k in settings.client_keys}:
            raise SettingsError("ADMIN_SECRET is also a client key of API_SECRET; it must differ from every client key")
        if settings.model_aliases:
            # The targets must be ids the catalogue serves: a typo stops the start, not a request later.
            from .upstream.catalog import Catalog

            try:
                Catalog(settings.extra_models, extra_aliases=settings.model_aliases)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
        if settings.upstream_transport == "browser":
            from .upstream.browser import (
                check_available,  # curl_cffi only when asked for
            )

            check_available(settings.upstream_impersonate)
        return settings

    @property
    def client_keys(self) -> tuple[ClientKey, ...]:
        """`API_SECRET` as named keys (client_keys.py); checked once by `from_env`."""
        return parse_client_keys(self.api_secrets)

    @property
    def key_rpm_limits(self) -> dict[str, int]:
        """Each client key name's requests per minute (0 = no limit)."""
        return limits_by_key(self.client_keys, self.api_key_rpm)

    @property
    def proxied_media(self) -> bool:
        """Whether generated files are handed out as links on this service (MEDIA_URLS)."""
        if self.media_urls == "auto":
            return self.chat_protocol == "ai_chat"
        return self.media_urls == "proxy"

    def replace(self, **changes: Any) -> Settings:
        return type(self)(**{f.name: changes.get(f.name, getattr(self, f.name)) for f in fields(self)})


def deprecated_in(env: Mapping[str, str]) -> list[str]:
    """One warning line per deprecated variable that is set."""
    return [f"{name} is deprecated: {why}" for name, why in DEPRECATED.items() if name in env]
