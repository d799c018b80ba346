"""User-supplied images and files: decode data URIs, find the real type, name the file.

Pure functions, no I/O. genspark-protocol.md §2.1 lists what the old project got wrong and what
this module exists to get right:

* every image was re-labelled `image/jpeg`, whatever it was: `sniff_mime` reads magic bytes;
* `ext` was the text after '/' in the MIME type, so `text/plain; charset=utf-8` became the
  extension `plain; charset=utf-8`: `extension_for` only ever returns `[a-z0-9]{1,10}`;
* uploads were all called `file` (§2.5): `safe_filename` keeps the user's name when it is safe.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import unicodedata
from urllib.parse import unquote_to_bytes


class MediaError(ValueError):
    """Bad user media. The message is shown to the API client as is."""


# --- data URIs (RFC 2397) ------------------------------------------------------------------

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def decode_data_uri(uri: str) -> tuple[str | None, bytes]:
    """`data:[<mime>][;param=v]*[;base64],<data>` -> (declared mime without params, bytes).

    Lenient where real clients are sloppy: whitespace and newlines inside the base64 (PEM-style
    wrapping), the urlsafe alphabet, missing padding, percent-encoded base64 (`%2B`, `%3D`) and
    parameters such as `;charset=utf-8`. Strict about anything else: a stray character in the
    base64 is an error rather than silently dropped bytes.
    """
    if uri[:5].lower() != "data:":
        raise MediaError("unsupported data URI: it must start with 'data:'")
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise MediaError("unsupported data URI: no ',' before the data")
    params = [p.strip() for p in header.split(";")]
    mime = params[0].lower() if "/" in params[0] else None
    if mime is not None and not re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", mime):
        raise MediaError(f"unsupported data URI: bad media type {params[0][:40]!r}")
    if not any(p.lower() == "base64" for p in params[1:]):
        return mime, unquote_to_bytes(payload)
    raw = payload.encode("ascii", "replace")  # non-ASCII becomes '?', rejected below
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    raw = re.sub(rb"\s+", b"", raw).translate(bytes.maketrans(b"-_", b"+/")).rstrip(b"=")
    if _B64_JUNK.search(raw) or len(raw) % 4 == 1:
        raise MediaError("not valid base64")
    try:
        return mime, base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:  # pragma: no cover - the checks above leave nothing for it to refuse
        raise MediaError("not valid base64") from None


# --- type detection ------------------------------------------------------------------------

OCTET_STREAM = "application/octet-stream"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

# Synonyms seen in the wild, mapped to the one type this module names.
_CANONICAL = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp", "image/vnd.microsoft.icon": "image/x-icon",
    "text/rtf": "application/rtf", "text/xml": "application/xml",
    "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg", "audio/x-flac": "audio/flac", "audio/x-m4a": "audio/mp4",
    "audio/x-aiff": "audio/aiff", "application/x-gzip": "application/gzip",
    "application/x-zip-compressed": "application/zip", "application/x-rar-compressed": "application/vnd.rar",
    "text/x-markdown": "text/markdown", "text/yaml": "application/yaml",
    "application/x-yaml": "application/yaml", "text/json": "application/json",
    "application/javascript": "text/javascript", "text/x-csv": "text/csv",
    "application/csv": "text/csv",
}

# Canonical extension of each type we name.
_EXTENSIONS = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
    "image/bmp": "bmp", "image/tiff": "tiff", "image/heic": "heic", "image/heif": "heif",
    "image/avif": "avif", "image/svg+xml": "svg", "image/x-icon": "ico",
    "application/pdf": "pdf", "application/rtf": "rtf", DOCX: "docx", XLSX: "xlsx", PPTX: "pptx",
    "application/msword": "doc", "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/epub+zip": "epub", "application/zip": "zip", "application/gzip": "gz",
    "application/x-7z-compressed": "7z", "application/vnd.rar": "rar",
    "audio/mpeg": "mp3", "audio/wav": "wav", "audio/ogg": "ogg", "audio/flac": "flac",
    "audio/mp4": "m4a", "audio/aac": "aac", "audio/aiff": "aiff", "audio/webm": "weba",
    "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov",
    "video/x-matroska": "mkv", "video/ogg": "ogv", "video/x-msvideo": "avi", "video/3gpp": "3gp",
    "application/json": "json", "text/csv": "csv", "text/tab-separated-values": "tsv",
    "text/markdown": "md", "text/html": "html", "text/plain": "txt", "application/xml": "xml",
    "text/css": "css", "text/javascript": "js", "application/yaml": "yaml",
    OCTET_STREAM: "bin",
}
# Other extensions a filename may carry for those types.
_TYPE_OF_EXTENSION = {ext: mime for mime, ext in _EXTENSIONS.items()} | {
    "jpeg": "image/jpeg", "jpe": "image/jpeg", "jfif": "image/jpeg", "tif": "image/tiff",
    "htm": "text/html", "xhtml": "text/html", "markdown": "text/markdown",
    "yml": "application/yaml", "mjs": "text/javascript", "oga": "audio/ogg",
    "opus": "audio/ogg", "m4v": "video/mp4", "aif": "audio/aiff", "mpga": "audio/mpeg",
}

# Text types a filename or a declared type may pick once the bytes are known to be text.
_TEXT_TYPES = {
    "text/plain", "text/markdown", "text/csv", "text/tab-separated-values", "text/html",
    "text/css", "text/javascript", "application/xml", "application/json", "application/yaml",
}

# ISO-BMFF `ftyp` brands (ISO/IEC 14496-12 and the HEIF/AVIF specs).
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_3GP_PREFIXES = (b"3gp", b"3g2", b"3ge", b"3gg")

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # MS Office 97-2003 compound file
_OLE = "application/x-ole-storage"  # internal: resolved to a real type by sniff_mime
_OLE_TYPES = {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint"}


def essence(mime: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`; synonyms (`image/jpg`) -> the usual name."""
    kind = mime.split(";", 1)[0].strip().lower()
    return _CANONICAL.get(kind, kind)


def sniff_mime(data: bytes, declared: str | None = None, filename: str | None = None) -> str:
    """The real type of `data`, from its bytes; `declared`/`filename` only choose among text types.

    The declared type is never trusted for binary data: a client that labels a PNG as
    `image/jpeg` (or a PDF as `image/png`) gets the type the bytes say. Anything unrecognised
    is `application/octet-stream`.
    """
    hint_ext = _filename_extension(filename)
    hint_types = [t for t in (essence(declared) if declared else None,
                              _TYPE_OF_EXTENSION.get(hint_ext or "")) if t]
    found = _sniff_binary(data)
    if found == _OLE:  # the container does not say which Office program wrote it
        return next((t for t in hint_types if t in _OLE_TYPES), OCTET_STREAM)
    if found is not None:
        return found
    text = _as_text(data)
    if text is None:
        return OCTET_STREAM
    return _sniff_text(text, hint_types)


def _sniff_binary(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if _is_bmp(data):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"\x00\x00\x01\x00") and len(data) >= 22 and head[4:6] != b"\x00\x00":
        return "image/x-icon"
    if data[4:8] == b"ftyp":
        return _ftyp_type(data)
    if data[4:8] in (b"moov", b"mdat", b"wide", b"pnot"):  # QuickTime files older than `ftyp`
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: the DocType names the flavour
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in data[:128] else "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or _is_mpeg_audio_frame(head):
        return "audio/mpeg"
    if _is_adts(head):
        return "audio/aac"
    if b"%PDF-" in data[:1024]:  # readers accept junk before the header, so must we
        return "application/pdf"
    if head.startswith(b"{\\rtf"):
        return "application/rtf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_type(data)
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "application/x-7z-compressed"
    if head.startswith(b"Rar!\x1a\x07"):
        return "application/vnd.rar"
    if head.startswith(_OLE_MAGIC):
        return _OLE
    return None


def _is_bmp(data: bytes) -> bool:
    # "BM" alone matches plenty of text ("BMW ..."): also require zero reserved bytes and a
    # known DIB header size.
    if len(data) < 26 or not data.startswith(b"BM") or data[6:10] != b"\x00\x00\x00\x00":
        return False
    return struct.unpack_from("<I", data, 14)[0] in (12, 16, 40, 52, 56, 64, 108, 124)


def _is_mpeg_audio_frame(head: bytes) -> bool:
    # 11 sync bits, layer III (bits 01), bitrate index neither 0000 (free) nor 1111 (bad).
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    return (head[1] >> 1) & 0b11 == 0b01 and head[2] >> 4 not in (0, 15) and (head[1] >> 3) & 0b11 != 0b01


def _is_adts(head: bytes) -> bool:
    # AAC ADTS: 12 sync bits, layer 00, sampling index < 13.
    return len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0xF < 13


def _ftyp_type(data: bytes) -> str:
    size = struct.unpack_from(">I", data, 0)[0] if len(data) >= 8 else 0
    major = data[8:12]
    compatible = {data[i:i + 4] for i in range(16, min(max(size, 16), len(data), 256), 4)}
    brands = {major} | compatible
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and brands & _AVIF_BRANDS):
        return "image/avif"
    if major in _HEIC_BRANDS or (major in _HEIF_BRANDS and brands & _HEIC_BRANDS):
        return "image/heic"
    if major in _HEIF_BRANDS:
        return "image/heif"
    if major in _M4A_BRANDS:
        return "audio/mp4"
    if major == b"qt  ":
        return "video/quicktime"
    if major.startswith(_3GP_PREFIXES):
        return "video/3gpp"
    return "video/mp4"  # isom, iso2..6, mp41, mp42, avc1, dash, M4V, ...


def _zip_type(data: bytes) -> str:
    names = _zip_names(data)
    # OpenDocument and EPUB store their type, uncompressed, as the first entry (ODF 1.2 §3.3).
    if names[:1] == ["mimetype"] and data[26:28] == b"\x08\x00":
        stored = data[38:38 + 80].split(b"PK", 1)[0].decode("ascii", "replace").strip()
        if stored in _EXTENSIONS:
            return stored
    if any(n.startswith("word/") for n in names):
        return DOCX
    if any(n.startswith("xl/") for n in names):
        return XLSX
    if any(n.startswith("ppt/") for n in names):
        return PPTX
    return "application/zip"


def _zip_names(data: bytes, limit: int = 2000) -> list[str]:
    """Entry names: from the central directory when it is intact, else from local headers.

    The central directory sits at the end and is authoritative, but a truncated upload lacks it;
    local headers come first in the file, but an entry written with a data descriptor (flag bit
    3) has no size up front, so the walk stops there.
    """
    names: list[str] = []
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if eocd >= 0 and len(data) >= eocd + 22:
        count, _size, offset = struct.unpack_from("<HII", data, eocd + 10)
        pos = offset
        for _ in range(min(count, limit)):
            if data[pos:pos + 4] != b"PK\x01\x02" or len(data) < pos + 46:
                break
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
            names.append(data[pos + 46:pos + 46 + name_len].decode("utf-8", "replace"))
            pos += 46 + name_len + extra_len + comment_len
        if names:
            return names
    pos = 0
    while data[pos:pos + 4] == b"PK\x03\x04" and len(data) >= pos + 30 and len(names) < limit:
        flags, _method, _t, _d, _crc, csize, _usize, name_len, extra_len = struct.unpack_from(
            "<HHHHIIIHH", data, pos + 6)
        names.append(data[pos + 30:pos + 30 + name_len].decode("utf-8", "replace"))
        if flags & 0x08:
            break
        pos += 30 + name_len + extra_len + csize
    return names


def _as_text(data: bytes) -> str | None:
    """The text in `data` if it looks like text: UTF-8 (or UTF-16 with a BOM), few controls."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
    sample = text[:8192]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\x1b")
    if "\x00" in sample or controls > len(sample) // 100:
        return None
    return text


_HTML_START = re.compile(r"<(!doctype\s+html|html|head|body|meta|title|div|p|table|!--)[\s>/]", re.IGNORECASE)


def _sniff_text(text: str, hint_types: list[str]) -> str:
    start = text.lstrip()[:2048]
    lowered = start.lower()
    if lowered.startswith("<svg") or (lowered.startswith(("<?xml", "<!doctype svg", "<!--"))
                                      and "<svg" in lowered):
        return "image/svg+xml"
    # A specific hint wins; a bare text/plain does not, because servers (raw GitHub files, for
    # one) label every text file text/plain.
    for hint in hint_types:
        structured = hint.startswith("application/") and hint.endswith(("+json", "+xml"))
        if (hint in _TEXT_TYPES and hint != "text/plain") or structured:
            if hint == "application/json" or hint.endswith("+json"):
                return hint if _is_json(text) else "text/plain"
            return hint
    if lowered.startswith("<?xml"):
        return "application/xml"
    if _HTML_START.match(start):
        return "text/html"
    if start[:1] in "{[" and _is_json(text):
        return "application/json"
    return "text/plain"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def is_image(mime: str) -> bool:
    """Any `image/*`, SVG included; callers that need a raster image check for svg themselves."""
    return essence(mime).startswith("image/")


def is_raster_image(mime: str) -> bool:
    """An image a model can look at: `image/*` but not SVG, which is a document that can carry
    scripts (issue #10 item 13)."""
    return is_image(mime) and essence(mime) != "image/svg+xml"


def is_audio(mime: str) -> bool:
    return essence(mime).startswith("audio/")


def is_video(mime: str) -> bool:
    return essence(mime).startswith("video/")


# --- names ---------------------------------------------------------------------------------

_EXT_SHAPE = re.compile(r"[a-z0-9]{1,10}")


def _filename_extension(filename: str | None) -> str | None:
    if not filename or "." not in filename:
        return None
    ext = filename.rsplit(".", 1)[1].strip().lower()
    return ext if _EXT_SHAPE.fullmatch(ext) else None


def extension_for(mime: str, filename: str | None = None) -> str:
    """File extension for `mime`: always `[a-z0-9]{1,10}`, never a MIME parameter or a slash.

    The filename's own extension wins when it names the same type (`photo.jpeg` stays `jpeg`),
    when the type is plain text (`main.py`, `server.log`) or when the type is unknown
    (`application/octet-stream`). A filename that contradicts the bytes (`photo.png` holding a
    JPEG) gets the extension of the real type.
    """
    kind = essence(mime)
    own = _filename_extension(filename)
    if own is not None:
        own_type = _TYPE_OF_EXTENSION.get(own)
        if own_type == kind or (own_type is None and kind in ("text/plain", OCTET_STREAM)):
            return own
    if kind in _EXTENSIONS:
        return _EXTENSIONS[kind]
    # Unknown type: `image/jxl` -> `jxl`, `application/x-foo` -> `foo`; anything odd -> `bin`.
    subtype = kind.partition("/")[2].removeprefix("x-").removeprefix("vnd.")
    return subtype if _EXT_SHAPE.fullmatch(subtype) else "bin"


_MAX_NAME = 120
# Windows-reserved punctuation as well: the name ends up on other people's disks.
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')


def safe_filename(filename: str | None, mime: str) -> str:
    """A file name to show upstream: the user's base name, cleaned, with the right extension.

    Drops any directory part (both separators), control and format characters (an RTL override
    can disguise `gpj.exe`), leading dots and Windows-reserved punctuation; keeps other Unicode.
    The extension is replaced when it contradicts `mime`; at most ~120 characters; `file.<ext>`
    when nothing is left.
    """
    name = unicodedata.normalize("NFC", filename or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    name = _UNSAFE_CHARS.sub("_", name).strip().lstrip(".").strip()
    ext = extension_for(mime, name)
    stem = name
    if "." in name and _filename_extension(name) is not None:
        stem = name.rsplit(".", 1)[0].rstrip(". ")
    stem = stem[: _MAX_NAME - len(ext) - 1].rstrip(". ") or "file"
    return f"{stem}.{ext}"
