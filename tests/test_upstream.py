"""The upstream client's own rules (its I/O is covered end to end against the simulator)."""

from __future__ import annotations

import pytest

from genspark2api.settings import Settings
from genspark2api.upstream.client import GensparkClient


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://www.genspark.ai/api/files/x.png", True),
        ("HTTPS://WWW.GENSPARK.AI/x", True),
        ("https://www.genspark.ai.evil.example/x.png", False),
        ("https://www.genspark.ai@evil.example/x.png", False),
        ("http://www.genspark.ai/x", False),
        ("https://www.genspark.ai:8443/x", False),
        ("https://cdn.example/x.png", False),
    ],
)
def test_the_cookie_only_goes_to_the_upstream_origin(url: str, same: bool) -> None:
    assert GensparkClient(Settings()).same_origin(url) is same
