"""Generated files handed to clients: capability links (MEDIA_URLS=proxy) and streaming from upstream.

Why (openai-compat.md §2.7 item 25, §3 item 11): a URL we give a client must be reachable by it.
Genspark's file URLs may need the generating account's cookie (mc5024 sends it since 2026,
genspark-protocol.md §2.3), may expire, and may be blocked where the client runs. With
`MEDIA_URLS=proxy` every generated file gets a link on this service instead:

    <base><ROUTE_PREFIX>/v1/media/<token>.<ext>

* `token` is `secrets.token_urlsafe(24)` (192 random bits) and *is* the authorisation: a browser
  rendering a markdown image cannot send an Authorization header, so `MEDIA_PATH` is exempt from
  API_SECRET (app.py's guard) but not from the per-IP rate limit. The extension is for clients
  that pick a viewer by name; any suffix after the first `.` is ignored.
* `base` is PUBLIC_BASE_URL, or the request's scheme and Host (X-Forwarded-Proto / -Host only
  behind TRUSTED_PROXY_HOPS trusted proxies, picked like X-Forwarded-For in app.client_ip).
* The table: at most `MAX_LINKS` links, each valid MEDIA_LINK_TTL seconds, the oldest evicted
  first; with DATA_DIR it is saved (`attach_links`) and links outlive a restart. Tokens are kept
  only as their sha256 (`token_digest`), in memory and on disk: the table can answer whether a
  presented token is valid, but holds nothing a reader of the database could present. A link remembers the cookie that generated the file; it is sent on
  the download only while that cookie is still in the pool (an operator who removes an account
  stops its use everywhere).
* Serving: images are fetched whole with GensparkClient.download (capped at MAX_FETCH_BYTES, so a
  too large file is a clean 502); videos are streamed chunk by chunk (`open_file`), as
  `/v1/videos/{id}/content` does. The client leaving cancels the upstream download in both cases:
  quart-trio cancels the handler, and Quart calls `FileBody.aclose()` on every streamed body.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from ..errors import ApiError, bad_request, upstream_error
from ..pool.cookies import CookiePool, Lease
from ..pool.store import StateStore
from ..settings import Settings
from ..upstream.client import GensparkClient
from ..upstream.events import UpstreamFailure
from .media import OCTET_STREAM, extension_for

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("genspark2api.media_links")

MEDIA_PATH = "/v1/media/"       # under ROUTE_PREFIX; the route is `<name>` below it
MAX_LINKS = 10_000
_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


# ------------------------------------------------------------------------------ the table (pure)


@dataclass(frozen=True, slots=True)
class MediaLink:
    url: str                            # Genspark's URL of the file
    kind: str                           # "image" or "video" (generation.MediaKind)
    cookie_key: str | None              # pool key of the cookie that generated the file
    cookie: str | None = field(repr=False)
    content_type: str | None            # guessed from the URL; upstream's own header wins
    expires: float                      # on the table's clock


class MediaLinks:
    """Token -> `MediaLink`, bounded and aged. Pure bookkeeping: the clock is passed in.

    Every link lives the same `ttl` on a monotonic clock, so insertion order is expiry order:
    purging and evicting both take from the front.
    """

    def __init__(self, ttl: float, *, capacity: int = MAX_LINKS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self._links: dict[str, MediaLink] = {}   # token digest -> link, in expiry order
        # Observers of changes, called with the token digest (attach_links saves them).
        self.listeners: list[Callable[[str], None]] = []

    def __len__(self) -> int:
        return len(self._links)

    def add(self, url: str, kind: str, lease: Lease | None, content_type: str | None) -> str:
        """A new token for `url`; the oldest link makes room when the table is full."""
        self._purge()
        while len(self._links) >= self.capacity:
            self._drop(next(iter(self._links)))
        token = secrets.token_urlsafe(24)
        digest = token_digest(token)
        self._links[digest] = MediaLink(url, kind, lease.key if lease else None, lease.cookie if lease else None,
                                        content_type, self.clock() + self.ttl)
        self._changed(digest)
        return token

    def get(self, token: str) -> MediaLink | None:
        self._purge()
        return self._links.get(token_digest(token))

    def _purge(self) -> None:
        now = self.clock()
        while self._links:
            digest, link = next(iter(self._links.items()))
            if link.expires > now:
                return
            self._drop(digest)

    def _drop(self, digest: str) -> None:
        del self._links[digest]
        self._changed(digest)

    def _changed(self, digest: str) -> None:
        for listener in self.listeners:
            listener(digest)

    def saved(self, digest: str) -> MediaLink | None:
        return self._links.get(digest)

    def restore(self, digest: str, link: MediaLink) -> None:
        """Take back a saved link at start (in expiry order; `link.expires` on this table's clock)."""
        if link.expires > self.clock() and len(self._links) < self.capacity:
            self._links[digest] = link


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def attach_links(store: StateStore, links: MediaLinks, pool: CookiePool,
                 wall: Callable[[], float] = time.time) -> int:
    """Restore the saved links and save every change from now on; returns how many came back.

    The table's clock is monotonic (immune to wall-clock steps), a stored expiry is unix seconds:
    converted both ways through "now". A link's cookie is not stored: it is the pool's current
    entry for the link's `cookie_key`, the one `cookie_for` would accept anyway.
    """
    offset = links.clock() - wall()   # table clock = wall clock + offset
    rows = sorted(store.rows("media_links"), key=lambda r: r["expires"])
    restored = 0
    for row in rows:
        lease = pool.detached_lease(row["cookie_key"])
        link = MediaLink(row["url"], row["kind"], row["cookie_key"], lease.cookie if lease else None,
                         row["content_type"], row["expires"] + offset)
        links.restore(row["token_hash"], link)
        if links.saved(row["token_hash"]) is None:
            store.delete("media_links", row["token_hash"])
        else:
            restored += 1

    def save(digest: str) -> None:
        link = links.saved(digest)
        if link is None:
            store.delete("media_links", digest)
            return
        store.replace("media_links", {"token_hash": digest, "url": link.url, "kind": link.kind,
                                      "cookie_key": link.cookie_key, "content_type": link.content_type,
                                      "expires": link.expires - (links.clock() - wall())})

    links.listeners.append(save)
    return restored


def guess_type(url: str, kind: str) -> str | None:
    """The file's type from its URL's extension, when it is of the expected kind."""
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    if guessed and guessed.startswith(kind + "/"):
        return guessed
    return "video/mp4" if kind == "video" else None  # §2.4: every recorded video URL is an .mp4


def link_name(token: str, content_type: str | None) -> str:
    return f"{token}.{extension_for(content_type)}" if content_type else token


def token_of(name: str) -> str:
    """`<token>` of a link's last path segment (tokens are base64url: no `.`)."""
    return name.partition(".")[0]


# ------------------------------------------------------------------------------ naming (pure)


def _forwarded(headers: Mapping[str, str], name: str, hops: int) -> str | None:
    """The value the outermost trusted proxy set (each proxy appends: take the hops-th from the right)."""
    values = [v.strip() for v in (headers.get(name) or "").split(",") if v.strip()]
    return values[-min(hops, len(values))] if values else None


def public_base(settings: Settings, scheme: str, host: str, headers: Mapping[str, str]) -> str:
    """`<scheme>://<host><ROUTE_PREFIX>` as the client sees this service."""
    if settings.public_base_url:
        return settings.public_base_url + settings.route_prefix
    if settings.trusted_proxy_hops > 0:
        proto = _forwarded(headers, "X-Forwarded-Proto", settings.trusted_proxy_hops)
        forwarded_host = _forwarded(headers, "X-Forwarded-Host", settings.trusted_proxy_hops)
        if proto and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        if forwarded_host and _HOST.fullmatch(forwarded_host):
            host = forwarded_host
    if not _HOST.fullmatch(host):
        raise bad_request(f"The Host header {host[:80]!r} is not a host name; links to generated files need one "
                          "(or set PUBLIC_BASE_URL).", code="invalid_host")
    return f"{scheme}://{host}{settings.route_prefix}"


@dataclass(frozen=True, slots=True)
class MediaUrls:
    """The URLs one request's client gets for generated files.

    `links` None (MEDIA_URLS=upstream): Genspark's URLs as they are. Otherwise a link per file,
    under `base` (`public_base`, computed while the request is at hand: a streamed chat answer
    renders its links after the handler returned).
    """

    links: MediaLinks | None = None
    base: str = ""

    def publish(self, urls: Sequence[str], lease: Lease | None, kind: str) -> tuple[str, ...]:
        if self.links is None:
            return tuple(urls)
        published = []
        for url in urls:
            content_type = guess_type(url, kind)
            token = self.links.add(url, kind, lease, content_type)
            published.append(f"{self.base}{MEDIA_PATH}{link_name(token, content_type)}")
        return tuple(published)


# ------------------------------------------------------------------------------ serving


class FileBody:
    """A generated file streamed to the client; `aclose()` (called by Quart in every case) closes
    the upstream response, even when the client left before the first chunk."""

    def __init__(self, stack: AsyncExitStack, response: httpx.Response) -> None:
        self._stack = stack
        self._chunks = response.aiter_bytes()

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.HTTPError:
            log.warning("file download broke off upstream")
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._stack.aclose()


async def open_file(client: GensparkClient, url: str, cookie: str | None, *, what: str,
                    default_type: str) -> tuple[FileBody, dict[str, str]]:
    """Open a generated file upstream (with its cookie and the proxy) for streaming to a client.

    A failure before the first byte is a 502 naming `what` ("video file"), never the upstream URL.
    """
    stack = AsyncExitStack()
    try:
        response = await stack.enter_async_context(client.open_download(url, cookie=cookie))
        if response.status_code >= 300:
            raise upstream_error(502, f"Genspark answered HTTP {response.status_code} for the {what}.",
                                 "upstream_download_failed")
    except UpstreamFailure as exc:
        await stack.aclose()
        raise upstream_error(502, f"The {what} could not be fetched: {exc.failure.detail}", exc.failure.code) from None
    except BaseException:
        await stack.aclose()
        raise
    headers = {"Content-Type": response.headers.get("content-type", default_type)}
    if "content-length" in response.headers and "content-encoding" not in response.headers:
        headers["Content-Length"] = response.headers["content-length"]
    return FileBody(stack, response), headers


def cookie_for(link: MediaLink, pool: CookiePool) -> str | None:
    """The generating cookie while it is still in the pool (dead or cooling is fine for a
    download); none once it was removed."""
    if link.cookie_key is None or all(s.key != link.cookie_key for s in pool.snapshot()):
        return None
    return link.cookie


def find_link(links: MediaLinks, name: str) -> MediaLink:
    link = links.get(token_of(name))
    if link is None:
        raise ApiError(404, "Unknown or expired media link (links live MEDIA_LINK_TTL seconds, across restarts "
                       "only with DATA_DIR); generate the file again.", code="media_not_found")
    return link


async def open_link(rt: Runtime, link: MediaLink) -> tuple[bytes | FileBody, dict[str, str]]:
    """The file behind a link, as a response body and its headers."""
    cookie = cookie_for(link, rt.pool)
    # The file never changes: browsers re-rendering a chat may keep it while the link lives.
    max_age = max(0, int(link.expires - rt.media_links.clock()))
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": f"private, max-age={max_age}"}
    if link.kind == "video":
        body, file_headers = await open_file(rt.client, link.url, cookie, what="video file",
                                             default_type=link.content_type or "video/mp4")
        return body, {**file_headers, **headers}
    try:
        data, content_type = await rt.client.download(link.url, cookie=cookie, max_bytes=rt.settings.max_fetch_bytes)
    except UpstreamFailure as exc:
        # The failure's detail names the upstream URL, which the link exists to keep private.
        log.warning("media link download failed: %s", exc.failure.detail)
        raise upstream_error(502, f"The generated {link.kind} could not be fetched from Genspark ({exc.failure.code}).",
                             exc.failure.code) from None
    return data, {"Content-Type": content_type or link.content_type or OCTET_STREAM, **headers}
