"""`/v1/images/generations` and `/v1/images/edits`: OpenAI image requests in, Genspark jobs out.

`parse_image_request` turns a JSON body (or the fields of a multipart edit) into an
`ImageRequest`; every bad input is a 400 naming its `param` and never reaches upstream.
`images_answer` runs the generation (generation.py) and writes the OpenAI answer.

Mapping decisions (genspark-protocol.md §2.2, openai-compat.md §2.7 item 25):

* `size` "WxH" picks the nearest upstream aspect ratio (by log ratio) among `ASPECT_RATIOS`;
  an explicit `aspect_ratio` wins over `size`.
* `style`: Genspark's styles, plus OpenAI's dall-e-3 values `vivid` (-> auto) and `natural`
  (-> realistic_image), so clients written for OpenAI are not refused.
* `quality` and `image_size` pass through; `quality` "hd"/"high" also sets upstream `hd`.
* `n` (1–4) is sent as the image count and the answer holds at most `n` images.
* `response_format` `b64_json` is raw base64 without a `data:` prefix (the old project's prefix
  broke decoders); the files are fetched with the winning cookie. `url` is Genspark's URL, or with
  MEDIA_URLS=proxy a link on this service (media_links.py) that a client can always open. The
  default is `b64_json` for `gpt-image*` models, as at OpenAI, and `url` for the others.
* Tasks that failed while others succeeded are listed in a `failed` array next to `data`.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from ..core.conversation import MediaRef
from ..core.generation import (
    Generated,
    GenerationJob,
    MediaKind,
    Reference,
    download_all,
    generate,
)
from ..core.media import is_raster_image, sniff_mime
from ..core.media_links import MediaUrls
from ..core.media_prep import load_media
from ..errors import ApiError, bad_request, whole_number
from ..runtime import Runtime
from ..settings import Settings
from ..upstream.catalog import IMAGE_ALIASES, IMAGE_MODELS

ASPECT_RATIOS = ("auto", "9:16", "2:3", "3:4", "1:1", "4:3", "3:2", "16:9")
STYLES = ("auto", "realistic_image", "cartoon", "watercolor", "anime", "oil_painting", "3d", "minimalist", "pop_art")
OPENAI_STYLES = {"vivid": "auto", "natural": "realistic_image"}
RESPONSE_FORMATS = ("url", "b64_json")
B64_JSON_MODEL_PREFIX = "gpt-image"  # gpt-image-1, gpt-image-1.5, gpt-image-2 (catalog IMAGE_ALIASES)
MAX_N = 4
MAX_REFERENCES = 8
_SIZE = re.compile(r"\s*(\d{1,5})\s*[xX×*]\s*(\d{1,5})\s*")


@dataclass(frozen=True, slots=True)
class ReferenceSource:
    """A reference image as the client gave it: a URL / data URI / base64 string, or file bytes."""

    param: str
    url: str | None = None
    data: bytes | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class ImageRequest:
    model: str
    prompt: str
    n: int
    response_format: str
    options: dict[str, Any]
    references: tuple[ReferenceSource, ...] = ()


class ImageItem(Struct, omit_defaults=True):
    url: str | UnsetType = UNSET
    b64_json: str | UnsetType = UNSET
    revised_prompt: str | UnsetType = UNSET


class ImagesResponse(Struct, omit_defaults=True):
    created: int
    data: list[ImageItem]
    failed: list[str] | UnsetType = UNSET


# ------------------------------------------------------------------------------ parsing (pure)


def text_field(doc: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string field, stripped; None when absent (or a 400 when required)."""
    value = doc.get(key)
    if value is None:
        if required:
            raise bad_request(f"Missing required parameter: '{key}'.", param=key, code="missing_required_parameter")
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{key}' must be a string.", param=key, code="invalid_type")
    value = value.strip()
    if required and not value:
        raise bad_request(f"'{key}' must not be empty.", param=key, code="invalid_value")
    return value


def choice_field(doc: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = text_field(doc, key)
    if value is not None and value not in allowed:
        raise bad_request(f"Invalid '{key}' {value!r}; use one of: {', '.join(allowed)}.", param=key, code="invalid_value")
    return value


def nearest_ratio(size: str, ratios: tuple[str, ...]) -> str:
    """"WxH" -> the ratio among `ratios` ("W:H") nearest to W/H by log ratio; a 400 for anything else."""
    match = _SIZE.fullmatch(size)
    width, height = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if width <= 0 or height <= 0:
        raise bad_request(
            f"Invalid 'size' {size!r}; use WIDTHxHEIGHT such as 1024x1024 or 1536x1024.",
            param="size", code="invalid_value",
        )
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - wanted)

    return min(ratios, key=distance)


def aspect_ratio_for_size(size: str) -> str:
    """An images `size`: "auto", or "WxH" mapped to the nearest upstream aspect ratio (§2.2)."""
    return "auto" if size.strip().lower() == "auto" else nearest_ratio(size, ASPECT_RATIOS[1:])


def count_field(doc: dict[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    """A whole number in [lo, hi], or `default` when absent; multipart forms send it as text."""
    value = doc.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str) and whole_number(value) is not None:
        value = whole_number(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise bad_request(f"'{key}' must be a whole number from {lo} to {hi}.", param=key, code="invalid_value")
    return value


def reference_sources(doc: dict[str, Any], keys: tuple[str, ...] = ("image", "images")) -> list[ReferenceSource]:
    """`image` (one or a list) and `images` (a list): URLs, data URIs or bare base64.

    An item may also be `{"image_url": "..."}` or `{"image_url": {"url": "..."}}`.
    """
    found: list[ReferenceSource] = []
    for key in keys:
        value = doc.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if key == "images" and not isinstance(value, list):
            raise bad_request("'images' must be a list of image URLs or base64 strings.", param=key, code="invalid_type")
        for i, item in enumerate(items):
            param = f"{key}[{i}]" if isinstance(value, list) else key
            if isinstance(item, dict):
                item = item.get("image_url") or item.get("url")
                item = item.get("url") if isinstance(item, dict) else item
            if not isinstance(item, str) or not item.strip():
                raise bad_request(f"'{param}' must be an image URL, a data: URI or base64.", param=param, code="invalid_type")
            found.append(ReferenceSource(param, url=item.strip()))
    return found


def model_field(doc: dict[str, Any], default: str, models: tuple[str, ...], kind: str,
                aliases: dict[str, str] | None = None) -> str:
    """`model`, which must be one of the catalogue's image (or video) models or their aliases."""
    model = text_field(doc, "model") or default
    model = (aliases or {}).get(model, model)
    if model not in models:
        raise bad_request(
            f"The model '{model}' is not {kind} model of this service; see GET /v1/models "
            f"({kind} models: {', '.join(models)}).",
            param="model", code="model_not_found",
        )
    return model


def default_response_format(model: str) -> str:
    """OpenAI answers its gpt-image models in `b64_json` (they have no `url` unless asked), and
    clients written for them send no `response_format` and read `b64_json` (Open WebUI, issue
    #11); dall-e models, and a request naming no model (dall-e-2 at OpenAI), answer in `url`."""
    return "b64_json" if model.startswith(B64_JSON_MODEL_PREFIX) else "url"


def parse_image_request(doc: Any, default_model: str, files: Sequence[ReferenceSource] = ()) -> ImageRequest:
    """Validate an images request (JSON object, or the fields of a multipart form)."""
    if not isinstance(doc, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    asked_for = text_field(doc, "model") or ""
    model = model_field(doc, default_model, IMAGE_MODELS, "an image", IMAGE_ALIASES)
    prompt = text_field(doc, "prompt", required=True) or ""
    if doc.get("stream") not in (None, False, "false"):
        raise bad_request("Streaming image generation is not supported; omit 'stream'.", param="stream", code="unsupported_value")
    n = count_field(doc, "n", 1, MAX_N, 1)
    response_format = choice_field(doc, "response_format", RESPONSE_FORMATS) or default_response_format(asked_for)
    options: dict[str, Any] = {}
    size = text_field(doc, "size")
    if size:
        options["aspect_ratio"] = aspect_ratio_for_size(size)
    aspect = choice_field(doc, "aspect_ratio", ASPECT_RATIOS)
    if aspect:
        options["aspect_ratio"] = aspect
    style = choice_field(doc, "style", STYLES + tuple(OPENAI_STYLES))
    if style:
        options["style"] = OPENAI_STYLES.get(style, style)
    for key in ("image_size", "quality"):
        value = text_field(doc, key)
        if value:
            options[key] = value
    if options.get("quality") in ("hd", "high"):
        options["hd"] = True
    references = [*files, *reference_sources(doc)]
    if len(references) > MAX_REFERENCES:
        raise bad_request(f"At most {MAX_REFERENCES} reference images are accepted.", param="image", code="invalid_value")
    return ImageRequest(model, prompt, n, response_format, options, tuple(references))


# ------------------------------------------------------------------------------ references


async def load_references(sources: Sequence[ReferenceSource], settings: Settings) -> tuple[Reference, ...]:
    """Fetch (SSRF-guarded, media_prep.load_media) or decode each reference; each must be an image."""
    out: list[Reference] = []
    for source in sources:
        data, declared, filename = source.data, None, source.filename
        if data is None:
            url = source.url or ""
            if not url.startswith(("data:", "http://", "https://")):
                url = "data:;base64," + url  # bare base64, as OpenAI-style clients send it
            try:
                declared, data, filename = await load_media(MediaRef("image", url, source.param), settings)
            except ApiError as exc:
                # load_media names a chat message part; name the request's own field instead.
                reason = exc.message.partition(": ")[2] or exc.message
                raise bad_request(f"'{source.param}': {reason}", param=source.param, code=exc.code) from None
        if len(data) > settings.max_fetch_bytes:
            raise bad_request(f"'{source.param}' exceeds MAX_FETCH_BYTES ({settings.max_fetch_bytes} bytes).",
                              param=source.param, code="invalid_media")
        mime = sniff_mime(data, declared or None, filename)
        if not data or not is_raster_image(mime):
            raise bad_request(f"'{source.param}' is not a recognisable image ({mime}).", param=source.param, code="invalid_media")
        out.append(Reference(mime, data))
    return tuple(out)


# ------------------------------------------------------------------------------ answering


async def images_answer(rt: Runtime, req: ImageRequest, media: MediaUrls) -> bytes:
    """Generate and answer `{"created", "data": [{"url"|"b64_json", "revised_prompt"}]}`."""
    references = await load_references(req.references, rt.settings)
    job = GenerationJob(MediaKind.IMAGE, req.model, req.prompt, req.options, references, req.n)
    result = await generate(rt, job)
    return await generated_answer(rt, result, result.urls[: req.n], req.prompt, req.response_format,
                                  media, MediaKind.IMAGE)


async def generated_answer(rt: Runtime, result: Generated, urls: tuple[str, ...], prompt: str, response_format: str,
                           media: MediaUrls, kind: MediaKind) -> bytes:
    """`{"created", "data": [...], "failed"?}` for images and for the synchronous video endpoint."""
    if response_format == "b64_json":
        files = await download_all(rt, result, urls)
        items = [ImageItem(b64_json=base64.b64encode(data).decode("ascii"), revised_prompt=prompt) for data in files]
    else:
        published = media.publish(urls, result.lease, kind)
        items = [ImageItem(url=url, revised_prompt=prompt) for url in published]
    answer = ImagesResponse(int(time.time()), items, list(result.failed) if result.failed else UNSET)
    return msgspec.json.encode(answer)
