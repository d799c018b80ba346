"""Images and files in chat messages: fetched and checked once, attached per attempt.

`prepare_media` runs once per request, before any cookie is chosen: it decodes `data:` URIs,
fetches http(s) URLs through the SSRF guard (netguard.py), and finds each file's real type from
its bytes. A refused, unreachable, oversized or undecodable input is a 400 naming the message and
part. `materialize_messages` runs per attempt, because uploads belong to the attempt's cookie:
images go upstream inline with their true MIME type (the old project called everything
image/jpeg), other files through the upload flow as `private_file` parts
(genspark-protocol.md §2.1, §2.5).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import ApiError
from ..pool.cookies import Lease
from ..settings import Settings
from ..upstream.classify import Failure, FailureKind
from ..upstream.events import UpstreamFailure
from ..upstream.protocols import UpstreamMessage
from .conversation import MediaRef, Text, Turn, media_error
from .media import (
    MediaError,
    decode_data_uri,
    essence,
    extension_for,
    is_audio,
    is_image,
    is_raster_image,
    safe_filename,
    sniff_mime,
)
from .netguard import FetchFailed, FetchRefused, fetch_user_url

# An image is billed like OpenAI's 1024x1024 high-detail image; documented as an estimate.
IMAGE_TOKEN_ESTIMATE = 765


@dataclass(slots=True)
class Attachment:
    ref: MediaRef
    mime: str
    data: bytes
    filename: str

    @property
    def is_image(self) -> bool:
        return is_image(self.mime)


@dataclass(slots=True)
class PreparedMedia:
    # conversation turn index -> its parts in order: text dicts and attachments
    parts: dict[int, list[dict[str, Any] | Attachment]] = field(default_factory=dict)
    token_estimate: int = 0
    upstream_index: dict[int, int] = field(default_factory=dict)   # turn index -> upstream message index

    @property
    def attachments(self) -> list[Attachment]:
        return [p for parts in self.parts.values() for p in parts if isinstance(p, Attachment)]


async def load_media(ref: MediaRef, settings: Settings, *, proxy: str | None = None) -> tuple[str, bytes, str | None]:
    """(declared mime, bytes, filename) of one image/file reference; ApiError 400 when refused."""
    if ref.url.startswith("data:"):
        try:
            declared, data = decode_data_uri(ref.url)
        except MediaError as exc:
            raise media_error(ref, f"cannot decode the data URI: {exc}") from None
        if len(data) > settings.max_fetch_bytes:
            raise media_error(ref, f"the inline data exceeds MAX_FETCH_BYTES ({settings.max_fetch_bytes} bytes)")
        return declared or "", data, ref.filename
    if ref.url.startswith(("http://", "https://")):
        try:
            fetched = await fetch_user_url(
                ref.url,
                max_bytes=settings.max_fetch_bytes,
                timeout=settings.fetch_timeout,
                allow_private=settings.fetch_allow_private,
            )
        except FetchRefused as exc:
            raise media_error(ref, f"the URL was refused: {exc}") from None
        except FetchFailed as exc:
            raise media_error(ref, f"the URL could not be fetched: {exc}") from None
        return fetched.content_type or "", fetched.data, ref.filename or fetched.filename
    raise media_error(ref, "expected a data: URI or an http(s) URL")


async def prepare_media(turns: tuple[Turn, ...], settings: Settings) -> PreparedMedia:
    """Every image and file of the conversation, fetched or decoded and checked, in parallel."""
    refs = [(i, j, part) for i, turn in enumerate(turns) for j, part in enumerate(turn.parts)
            if isinstance(part, MediaRef)]
    prepared = PreparedMedia()
    if not refs:
        return prepared
    loaded: dict[tuple[int, int], Attachment] = {}

    async def load(i: int, j: int, ref: MediaRef) -> None:
        declared, data, filename = await load_media(ref, settings)
        if not data:
            raise media_error(ref, "the image or file is empty")
        mime = sniff_mime(data, declared or None, filename)
        if is_audio(mime):
            raise media_error(ref, f"audio ({mime}) is not supported by Genspark chat")
        if ref.kind == "image" and not is_raster_image(mime):
            # An image part must be an image: HTML, scripts and SVG never go upstream as one.
            raise media_error(ref, f"an image must be an image (PNG, JPEG, GIF, WebP, ...), not {essence(mime)}; "
                                   "send documents as a file")
        loaded[(i, j)] = Attachment(ref, mime, data, safe_filename(filename, mime))

    errors: list[ApiError] = []

    async def guarded(i: int, j: int, ref: MediaRef) -> None:
        try:
            await load(i, j, ref)
        except ApiError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i, j, ref in refs:
            nursery.start_soon(guarded, i, j, ref)
    if errors:
        raise min(errors, key=lambda e: e.param or "")
    for i in sorted({i for i, _, _ in refs}):
        parts: list[dict[str, Any] | Attachment] = []
        for j, part in enumerate(turns[i].parts):
            if isinstance(part, Text):
                parts.append({"type": "text", "text": part.text})
            else:
                attachment = loaded[(i, j)]
                parts.append(attachment)
                prepared.token_estimate += IMAGE_TOKEN_ESTIMATE if attachment.is_image else len(attachment.data) // 4
        prepared.parts[i] = parts
    return prepared


async def materialize_messages(
    messages: list[UpstreamMessage], media: PreparedMedia, client: Any, lease: Lease
) -> list[UpstreamMessage]:
    """The upstream messages of one attempt, with media inlined or uploaded with its cookie."""
    if not media.parts:
        return messages
    out = list(messages)
    for turn_index, parts in media.parts.items():
        turn = media.upstream_index.get(turn_index)
        if turn is None:
            continue
        content: list[dict[str, Any]] = []
        for part in parts:
            if not isinstance(part, Attachment):
                content.append(part)
            elif part.is_image:
                uri = f"data:{part.mime};base64," + base64.b64encode(part.data).decode("ascii")
                content.append({"type": "image_url", "image_url": {"url": uri}})
            else:
                content.append(await upload_file(client, lease, part.data, part.mime, part.filename))
        out[turn] = UpstreamMessage(out[turn].role, content)
    return out


async def upload_file(client: Any, lease: Lease, data: bytes, mime: str, filename: str) -> dict[str, Any]:
    """§2.5: ask for a signed upload URL, PUT the bytes, reference them as a `private_file` part."""
    doc = await client.get_json("/api/get_upload_personal_image_url", cookie=lease.cookie)
    info = doc.get("data") if isinstance(doc, dict) else None
    upload_url = info.get("upload_image_url") if isinstance(info, dict) else None
    storage_url = info.get("private_storage_url") if isinstance(info, dict) else None
    if not isinstance(upload_url, str) or not isinstance(storage_url, str):
        raise UpstreamFailure(
            Failure(FailureKind.NETWORK, "upstream_upload_failed", "Genspark gave no upload URL for the attachment")
        )
    await client.put_blob(upload_url, data, cookie=lease.cookie)  # through the cookie's own proxy
    return {
        "type": "private_file",
        "private_file": {
            "name": filename,
            "type": mime,
            "size": len(data),
            "ext": extension_for(mime, filename),
            "private_storage_url": storage_url,
        },
    }
