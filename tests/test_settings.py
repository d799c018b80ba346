"""Configuration: parsed once; a bad value stops the start naming the variable and the form."""

from __future__ import annotations

import pytest

from genspark2api.catalog import ModelKind, route_model
from genspark2api.cli import main
from genspark2api.settings import Settings, SettingsError, deprecated_in


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.request_rate_limit, s.max_request_bytes) == ("0.0.0.0", 7055, 60, 64 * 1024 * 1024)
    assert s.base_url == "https://www.genspark.ai" and s.chat_protocol == "ai_chat"
    assert s.api_secrets == () and s.auto_model_chat_map is True


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PORT", "seventy", "whole number"),
        ("PORT", "70000", "between 0 and 65535"),
        ("DEBUG", "maybe", "boolean"),
        ("GENSPARK_BASE_URL", "www.genspark.ai", "http://host"),
        ("GENSPARK_CHAT_PROTOCOL", "grpc", "ai_chat, copilot"),
        ("PROXY_URL", "ftp://proxy:21", "socks5"),
        ("REQUEST_RATE_LIMIT", "-1", "at least 0"),
        ("MODEL_CHAT_MAP", "gpt-5.4", "model=projectId"),
        ("PRE_MESSAGES_JSON", "[{\"role\": \"robot\", \"content\": \"x\"}]", "JSON array"),
        ("PRE_MESSAGES_JSON", "{not json", "not valid JSON"),
        ("HEDGE_AFTER_SECONDS", "soon", "seconds"),
        ("REASONING_FORMAT", "xml", "reasoning_content, think"),
    ],
)
def test_invalid_values_name_the_variable_and_the_form(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message and repr(value)[1:-1][:5] in message and words in message


def test_lists_and_prefix_are_normalised() -> None:
    s = Settings.from_env({"API_SECRET": " k1 ,k2,,k1", "ROUTE_PREFIX": "/hf/", "GS_COOKIE": "a, b ,a"})
    assert s.api_secrets == ("k1", "k2") and s.route_prefix == "/hf" and s.cookies == ("a", "b")


def test_deprecated_variables_warn_and_proxy_secret_still_works() -> None:
    env = {"PROXY_SECRET": "old", "SESSION_IMAGE_CHAT_MAP": "x=y"}
    assert Settings.from_env(env).api_secrets == ("old",)
    warnings = deprecated_in(env)
    assert any("PROXY_SECRET" in w for w in warnings) and any("SESSION_IMAGE_CHAT_MAP" in w for w in warnings)


def test_start_without_cookie_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], env={}) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "GS_COOKIE" in err and "--demo" in err


def test_start_with_bad_value_exits_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], env={"GS_COOKIE": "x", "PORT": "abc"}) == 2
    assert "PORT='abc'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "kind", "upstream", "search"),
    [
        ("claude-sonnet-4-6", ModelKind.TEXT, ("claude-sonnet-4-6",), False),
        ("claude-sonnet-4-6-search", ModelKind.TEXT, ("claude-sonnet-4-6",), True),
        ("deepseek-r1", ModelKind.TEXT, ("deep-seek-r1",), False),
        ("my-typo-model", ModelKind.MIXTURE, ("gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview"), False),
        ("nano-banana-pro", ModelKind.IMAGE, ("nano-banana-pro",), False),
        ("sora-2", ModelKind.VIDEO, ("sora-2",), False),
    ],
)
def test_model_routing(name: str, kind: ModelKind, upstream: tuple[str, ...], search: bool) -> None:
    route = route_model(name)
    assert (route.requested, route.kind, route.upstream, route.search) == (name, kind, upstream, search)
