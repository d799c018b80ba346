"""Configuration: parsed once; a bad value stops the start naming the variable and the form."""

from __future__ import annotations

import pytest

from genspark2api.cli import main
from genspark2api.settings import Settings, SettingsError, deprecated_in
from genspark2api.upstream.catalog import Catalog, ModelKind, UnknownModel, route_model


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
        # §12.8.6: both DeepSeek spellings are real web ids; rewriting is per id, not by prefix.
        ("deepseek-v4-pro", ModelKind.TEXT, ("deepseek-v4-pro",), False),
        ("deep-seek-v4.1-flash", ModelKind.TEXT, ("deep-seek-v4.1-flash",), False),
        ("deep-seek-v4-pro", ModelKind.TEXT, ("deepseek-v4-pro",), False),
        ("claude-haiku-4-5", ModelKind.TEXT, ("claude-4-5-haiku",), False),
        ("deep-seek-r1", ModelKind.TEXT, ("deepseek-v4-pro",), False),   # retired (§12.8.5): an alias
        # §12.8.2 presets, lead first (§12.2.5), and an explicit ensemble of known ids.
        ("moa-classic", ModelKind.MIXTURE, ("gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview"), False),
        ("moa-live-search", ModelKind.MIXTURE, ("gpt-5.6-luna", "gpt-6.1-sol", "gemini-3.7-flash"), True),
        ("gpt-6-sol,claude-opus-4-8", ModelKind.MIXTURE, ("gpt-6-sol", "claude-opus-4-8"), False),
        ("nano-banana-pro", ModelKind.IMAGE, ("nano-banana-pro",), False),
        ("dall-e-3", ModelKind.IMAGE, ("gpt-image-2",), False),
        ("sora-2", ModelKind.VIDEO, ("sora-2",), False),
    ],
)
def test_model_routing(name: str, kind: ModelKind, upstream: tuple[str, ...], search: bool) -> None:
    route = route_model(name)
    assert (route.requested, route.kind, route.upstream, route.search) == (name, kind, upstream, search)


def test_unknown_names_are_refused_with_a_suggestion_unless_moa_is_asked_for() -> None:
    """§12.8.6: upstream would silently serve an unknown id with another model."""
    with pytest.raises(UnknownModel) as typo:
        route_model("claude-sonet-4-6")
    assert typo.value.suggestion == "claude-sonnet-4-6"
    with pytest.raises(UnknownModel) as unknown:
        route_model("my-own-model")
    assert unknown.value.suggestion is None
    with pytest.raises(UnknownModel):
        route_model("gpt-6-sol,not-a-model")   # an ensemble needs known members
    moa = Catalog(unknown_model_moa=True)
    assert moa.route("my-own-model").kind is ModelKind.MIXTURE
    with pytest.raises(UnknownModel):
        moa.route("claude-sonet-4-6")          # a typo is still a typo
    extra = Catalog(extra_text=("brand-new-model",))
    assert extra.route("brand-new-model").upstream == ("brand-new-model",)
    assert ("brand-new-model", "text") in extra.listed()
