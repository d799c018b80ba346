"""media.py: data URIs, type sniffing and file names (genspark-protocol.md §2.1)."""

from __future__ import annotations

import base64
import gzip
import io
import re
import struct
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.core.media import (
    DOCX,
    PPTX,
    XLSX,
    MediaError,
    decode_data_uri,
    extension_for,
    is_audio,
    is_image,
    is_video,
    safe_filename,
    sniff_mime,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20)


def _zip(names: list[str], *, first_stored: tuple[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if first_stored:
            archive.writestr(zipfile.ZipInfo(first_stored[0]), first_stored[1], zipfile.ZIP_STORED)
        for name in names:
            archive.writestr(name, "<xml/>" * 50)
    return buffer.getvalue()


def _bmp() -> bytes:
    header = b"BM" + struct.pack("<IHHI", 70, 0, 0, 54)
    return header + struct.pack("<IiiHH", 40, 1, 1, 1, 24) + bytes(40)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + bytes(16)


MAGIC_CASES = [
    (PNG, "image/png"),
    (JPEG, "image/jpeg"),
    (b"GIF89a\x01\x00\x01\x00" + bytes(10), "image/gif"),
    (b"GIF87a" + bytes(10), "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(20), "image/webp"),
    (_bmp(), "image/bmp"),
    (b"II*\x00\x08\x00\x00\x00" + bytes(20), "image/tiff"),
    (b"MM\x00*\x00\x00\x00\x08" + bytes(20), "image/tiff"),
    (_ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
    (_ftyp(b"mif1", b"mif1", b"heic"), "image/heic"),
    (_ftyp(b"mif1", b"mif1"), "image/heif"),
    (_ftyp(b"avif", b"mif1", b"avif"), "image/avif"),
    (_ftyp(b"mif1", b"avif"), "image/avif"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
    (b'\xef\xbb\xbf  <?xml version="1.0"?>\n<!-- x -->\n<svg></svg>', "image/svg+xml"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(20), "application/pdf"),
    (b"junk before the header\n%PDF-1.4\n", "application/pdf"),
    (_zip(["[Content_Types].xml", "_rels/.rels", "word/document.xml"]), DOCX),
    (_zip(["[Content_Types].xml", "xl/workbook.xml"]), XLSX),
    (_zip(["[Content_Types].xml", "ppt/presentation.xml"]), PPTX),
    (_zip(["content.xml"], first_stored=("mimetype", b"application/vnd.oasis.opendocument.text")),
     "application/vnd.oasis.opendocument.text"),
    (_zip(["a.txt", "b/c.txt"]), "application/zip"),
    (gzip.compress(b"hello"), "application/gzip"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(20), "audio/mpeg"),
    (b"\xff\xfb\x90\x64" + bytes(20), "audio/mpeg"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20), "audio/wav"),
    (b"OggS\x00\x02" + bytes(22) + b"\x01vorbis" + bytes(10), "audio/ogg"),
    (b"fLaC\x00\x00\x00\x22" + bytes(20), "audio/flac"),
    (_ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4"),
    (_ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
    (_ftyp(b"mp42", b"mp42", b"isom"), "video/mp4"),
    (_ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(20), "video/webm"),
    (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska" + bytes(20), "video/x-matroska"),
    (b"{\\rtf1\\ansi hello}", "application/rtf"),
    (b'{"a": [1, 2, {"b": null}]}', "application/json"),
    (b"<!DOCTYPE html>\n<html><body>hi</body></html>", "text/html"),
    (b"just some words\nover two lines\n", "text/plain"),
    ("grüße, 你好\n".encode(), "text/plain"),
    (b"\x00\x01\x02\x03binary\xff\xfe\x00", "application/octet-stream"),
    (b"", "text/plain"),
]


@pytest.mark.parametrize(("data", "expected"), MAGIC_CASES)
def test_sniff_magic(data: bytes, expected: str) -> None:
    assert sniff_mime(data) == expected


def test_declared_type_never_overrides_binary_magic() -> None:
    # §2.1: the old project labelled every image image/jpeg; a PDF labelled as a PNG is a PDF.
    assert sniff_mime(PNG, "image/jpeg", "photo.jpg") == "image/png"
    assert sniff_mime(b"%PDF-1.4\n", "image/png") == "application/pdf"
    assert sniff_mime(b"\x00\x01binary", "image/png") == "application/octet-stream"


@pytest.mark.parametrize(
    ("data", "declared", "filename", "expected"),
    [
        (b"a,b,c\n1,2,3\n", None, "table.csv", "text/csv"),
        (b"a,b,c\n1,2,3\n", "text/csv; charset=utf-8", None, "text/csv"),
        (b"# Title\n\ntext\n", None, "README.md", "text/markdown"),
        (b"# Title\n\ntext\n", "text/plain", "README.markdown", "text/markdown"),  # raw GitHub says text/plain
        (b"# Title\n\ntext\n", "text/x-markdown", None, "text/markdown"),
        (b"not json at all", "application/json", None, "text/plain"),
        (b'{"ok": true}', "text/plain; charset=utf-8", None, "application/json"),
        (b"<p>hi</p>", None, "page.htm", "text/html"),
        (b"print('hi')\n", None, "main.py", "text/plain"),
        (b"hello", "text/plain; charset=utf-8", None, "text/plain"),
        (b"plain text, not svg", "image/svg+xml", None, "text/plain"),
        (PNG, None, "notes.txt", "image/png"),
    ],
)
def test_text_types_use_hints(data: bytes, declared: str | None, filename: str | None, expected: str) -> None:
    assert sniff_mime(data, declared, filename) == expected


def test_bmp_needs_more_than_two_letters() -> None:
    assert sniff_mime(b"BMW makes cars, and this is a text file about them.\n") == "text/plain"


def test_old_office_container_uses_the_hint() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(40)
    assert sniff_mime(ole, filename="old.doc") == "application/msword"
    assert sniff_mime(ole, "application/vnd.ms-excel") == "application/vnd.ms-excel"
    assert sniff_mime(ole) == "application/octet-stream"


def test_kinds() -> None:
    assert is_image("image/png") and is_image("IMAGE/JPEG; q=1") and not is_image("application/pdf")
    assert is_audio("audio/mpeg") and not is_audio("video/mp4")
    assert is_video("video/webm") and not is_video("image/gif")


# --- data URIs -----------------------------------------------------------------------------

HELLO = b"hello, world!?>"  # its base64 has both '+'/'/' style positions: aGVsbG8sIHdvcmxkIT8+


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data:image/png;base64," + base64.b64encode(PNG).decode(), ("image/png", PNG)),
        ("DATA:Image/PNG;BASE64," + base64.b64encode(PNG).decode(), ("image/png", PNG)),
        ("data:text/plain;charset=utf-8;base64,aGVsbG8=", ("text/plain", b"hello")),
        ("data:;base64,aGVsbG8=", (None, b"hello")),
        ("data:application/octet-stream;base64,aGVsbG8", ("application/octet-stream", b"hello")),
        ("data:text/plain;base64,aGVs\r\n bG8=\n", ("text/plain", b"hello")),
        ("data:text/plain;base64," + base64.urlsafe_b64encode(HELLO).decode().rstrip("="), ("text/plain", HELLO)),
        ("data:text/plain;base64," + base64.b64encode(HELLO).decode().replace("+", "%2B").replace("=", "%3D"),
         ("text/plain", HELLO)),
        ("data:text/plain,hello%20world%21", ("text/plain", b"hello world!")),
        ("data:,A%20brief%20note", (None, b"A brief note")),
        ("data:text/plain;charset=utf-8,gr%C3%BC%C3%9Fe", ("text/plain", "grüße".encode())),
        ("data:image/png;base64,", ("image/png", b"")),
    ],
)
def test_decode_data_uri(uri: str, expected: tuple[str | None, bytes]) -> None:
    assert decode_data_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64,aGVsbG8*d29ybGQ=",  # '*' is not base64
        "data:image/png;base64,aGVsb",  # 5 characters: one left over, no byte fits
        "data:image/png;base64,aGVs bG8=!!",
        "data:image/png;base64,aGVsbG8=\x00",
        "data:image/png;base64,aGVsbG8=ü",
        "data:image/png;base64,aG=VsbG8",  # padding in the middle
    ],
)
def test_junk_base64_is_refused(uri: str) -> None:
    with pytest.raises(MediaError, match="not valid base64"):
        decode_data_uri(uri)


@pytest.mark.parametrize("uri", ["http://x/y.png", "data:image/png;base64", "data:im age/png;base64,aGVsbG8="])
def test_malformed_data_uri(uri: str) -> None:
    with pytest.raises(MediaError, match="unsupported data URI"):
        decode_data_uri(uri)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.integers(0, 20))
def test_base64_round_trip_with_noise(data: bytes, urlsafe: bool, wrap: int) -> None:
    encoded = (base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)).decode().rstrip("=")
    if wrap:
        encoded = "\n".join(encoded[i:i + wrap * 4] for i in range(0, len(encoded), wrap * 4))
    assert decode_data_uri(f"data:application/octet-stream;base64,{encoded}") == ("application/octet-stream", data)


# --- extensions and file names -------------------------------------------------------------

EXT = re.compile(r"[a-z0-9]{1,10}")


@pytest.mark.parametrize(
    ("mime", "filename", "expected"),
    [
        ("text/plain; charset=utf-8", None, "txt"),  # §2.1: was "plain; charset=utf-8"
        ("application/pdf", None, "pdf"),
        ("image/png", None, "png"),
        ("image/jpeg", None, "jpg"),
        ("image/jpeg", "photo.JPEG", "jpeg"),
        ("image/jpeg", "photo.png", "jpg"),  # the name lies; the bytes win
        ("image/jpg", None, "jpg"),
        (DOCX, "report.docx", "docx"),
        (DOCX, None, "docx"),
        (XLSX, None, "xlsx"),
        (PPTX, None, "pptx"),
        ("text/plain", "main.py", "py"),
        ("text/plain", "server.log", "log"),
        ("text/markdown", "README.markdown", "markdown"),
        ("application/octet-stream", "model.parquet", "parquet"),
        ("application/octet-stream", None, "bin"),
        ("audio/x-wav", "a.wav", "wav"),
        ("image/jxl", None, "jxl"),
        ("application/x-foo", None, "foo"),
        ("application/vnd.some.long-thing+xml", None, "bin"),
        ("garbage", None, "bin"),
        ("", None, "bin"),
    ],
)
def test_extension_for(mime: str, filename: str | None, expected: str) -> None:
    assert extension_for(mime, filename) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"[a-z]{1,8}/[ -~]{0,30}", fullmatch=True), st.none() | st.text(max_size=40))
def test_extension_for_never_yields_junk(mime: str, filename: str | None) -> None:
    assert EXT.fullmatch(extension_for(mime, filename))


@pytest.mark.parametrize(
    ("filename", "mime", "expected"),
    [
        (None, "application/pdf", "file.pdf"),
        ("", "text/plain; charset=utf-8", "file.txt"),
        ("report.pdf", "application/pdf", "report.pdf"),
        ("report", "application/pdf", "report.pdf"),
        ("../../etc/passwd", "text/plain", "passwd.txt"),
        ("C:\\Users\\me\\Desktop\\x.docx", DOCX, "x.docx"),
        ("photo.png", "image/jpeg", "photo.jpg"),
        ("Übersicht 2024 – 报告.pdf", "application/pdf", "Übersicht 2024 – 报告.pdf"),
        ("evil\u202egpj.exe", "image/png", "evilgpj.png"),
        ("a\x00b\nc.txt", "text/plain", "abc.txt"),
        ("...", "image/png", "file.png"),
        (".bashrc", "text/plain", "bashrc.txt"),
        ('what?<is>"this"*.txt', "text/plain", "what__is__this__.txt"),
        ("v1.2 notes", "text/plain", "v1.2 notes.txt"),
    ],
)
def test_safe_filename(filename: str | None, mime: str, expected: str) -> None:
    assert safe_filename(filename, mime) == expected


@settings(max_examples=300, deadline=None)
@given(st.none() | st.text(max_size=400), st.sampled_from(["image/png", "text/plain; charset=utf-8", DOCX, "x/y z"]))
def test_safe_filename_properties(filename: str | None, mime: str) -> None:
    name = safe_filename(filename, mime)
    assert 3 <= len(name) <= 120
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert not any(ord(ch) < 32 for ch in name)
    assert EXT.fullmatch(name.rsplit(".", 1)[1])
