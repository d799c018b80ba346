#!/usr/bin/env python3
"""Put tiktoken's o200k_base and cl100k_base cache files into a directory, from PyPI only.

tiktoken downloads these files from openaipublic.blob.core.windows.net on first use; our build
and test machines often reach PyPI and nothing else (python-stack.md §6). The litellm wheel ships
the very same files under the names tiktoken caches them by, so we download that one wheel
(no dependencies, binary only: nothing from it is run) and copy the two files out of it.

    python scripts/fetch_tiktoken_data.py [TARGET_DIR]     # default: ./tiktoken-data

Then point genspark2api at TARGET_DIR (TIKTOKEN_CACHE_DIR, or see usage.default_data_dir()).
Files already present with the right sha256 are left alone, so running it again is cheap.
Standard library only; exits 1 with a message on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The wheel is pinned by version, platform and sha256: the data inside is the same in every
# platform's wheel, and a fixed one keeps the download byte-for-byte reproducible.
LITELLM_VERSION = "1.110.2"
LITELLM_PLATFORM = "manylinux_2_28_x86_64"
LITELLM_WHEEL_SHA256 = "9d94d1c7d524b6fd10c14f9c8c6c4f0ac31705f9964ac59dcfd8337c046d8917"
WHEEL_DIR = "litellm/litellm_core_utils/tokenizers/"

ENCODINGS = ("o200k_base", "cl100k_base")

# What tiktoken 0.14 pins in tiktoken_ext/openai_public.py; used only when tiktoken is not
# installed where this script runs. Otherwise the installed tiktoken's own pins are read.
FALLBACK_PINS = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
_PIN = re.compile(
    r'"(?P<url>https://[^"]+/(?P<name>\w+)\.tiktoken)",\s*expected_hash="(?P<sha256>[0-9a-f]{64})"'
)


class FetchError(Exception):
    """A failure explained for the person running the script."""


def pins() -> tuple[dict[str, tuple[str, str]], str]:
    """(encoding -> (url, sha256), where the pins came from)."""
    try:
        spec = importlib.util.find_spec("tiktoken_ext.openai_public")
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        return FALLBACK_PINS, "pins copied from tiktoken 0.14 (tiktoken is not installed here)"
    source = Path(spec.origin).read_text(encoding="utf-8")
    found = {m["name"]: (m["url"], m["sha256"]) for m in _PIN.finditer(source)}
    missing = [name for name in ENCODINGS if name not in found]
    if missing:
        raise FetchError(f"cannot find the pins for {missing} in {spec.origin}")
    return {name: found[name] for name in ENCODINGS}, f"pins read from {spec.origin}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_name(url: str) -> str:
    # tiktoken/load.py: the cache file is named by the sha1 of the URL it was downloaded from.
    return hashlib.sha1(url.encode()).hexdigest()


def is_valid(path: Path, sha256: str) -> bool:
    try:
        return sha256_of(path.read_bytes()) == sha256
    except OSError:
        return False


def download_wheel(into: Path) -> Path:
    requirement = into / "requirements.txt"
    requirement.write_text(f"litellm=={LITELLM_VERSION} --hash=sha256:{LITELLM_WHEEL_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--platform", LITELLM_PLATFORM, "--python-version", "3.11", "--implementation", "cp",
        "--require-hashes", "-r", str(requirement), "-d", str(into), "--quiet",
    ]  # fmt: skip
    print(f"downloading litellm {LITELLM_VERSION} ({LITELLM_PLATFORM}, ~44 MB) from PyPI ...")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"pip download failed ({result.returncode}):\n{result.stderr.strip()}")
    wheels = list(into.glob("litellm-*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one litellm wheel in {into}, found {wheels}")
    return wheels[0]


def fetch(target: Path) -> None:
    wanted, source = pins()
    print(source)
    todo = {}
    for name, (url, sha256) in wanted.items():
        path = target / cache_name(url)
        if is_valid(path, sha256):
            print(f"{name}: {path} already present and valid")
        else:
            todo[name] = (path, sha256)
    if not todo:
        return
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-tiktoken-") as tmp:
        wheel = download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for name, (path, sha256) in todo.items():
                member = WHEEL_DIR + path.name
                try:
                    data = archive.read(member)
                except KeyError:
                    raise FetchError(f"{wheel.name} has no {member}") from None
                if sha256_of(data) != sha256:
                    raise FetchError(f"{member} in {wheel.name} does not match tiktoken's sha256")
                # Write then rename, so a reader never sees half a file.
                partial = path.with_name(path.name + ".partial")
                partial.write_bytes(data)
                partial.replace(path)
                print(f"{name}: wrote {path} ({len(data):,} bytes, sha256 verified)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "target",
        nargs="?",
        default="tiktoken-data",
        type=Path,
        help="directory for the cache files (default: ./tiktoken-data)",
    )
    args = parser.parse_args(argv)
    try:
        fetch(args.target)
    except (FetchError, OSError, zipfile.BadZipFile) as exc:
        print(f"fetch_tiktoken_data: error: {exc}", file=sys.stderr)
        return 1
    print(f"done: point TIKTOKEN_CACHE_DIR at {args.target.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
