"""MEDIA_URLS=proxy: links on the service to generated files, end to end against the simulator."""

from __future__ import annotations

import re

import httpx
import pytest
import trio
from conftest import FakeClock, ServiceFactory, start_service, with_env

from genspark2api.core.media_links import MediaLinks, MediaUrls, guess_type, public_base
from genspark2api.errors import ApiError
from genspark2api.pool.cookies import Lease
from genspark2api.settings import Settings, SettingsError
from genspark2api.simulator.media import colour_for, solid_png

SECRET = "sk-media"
AUTH = {"Authorization": f"Bearer {SECRET}"}
LINK = re.compile(r"(?P<base>https?://[^/]+(?:/[^/]+)*)/v1/media/(?P<token>[A-Za-z0-9_-]{32})\.(?P<ext>png|mp4)")


@pytest.fixture
def make_service(make_service: ServiceFactory) -> ServiceFactory:
    """The G1 media flow (§2.2–§2.4), whose file names these tests know; test_media_agent.py has
    the links of the §12.7 agents."""
    return with_env(make_service, GENSPARK_CHAT_PROTOCOL="copilot")


def proxied(url: str, base: str) -> str:
    """The token of a link on `base`; fails when `url` is anything else."""
    match = LINK.fullmatch(url)
    assert match and match["base"] == base, url
    return match["token"]


def last_task(sim, kind: str) -> str:
    return [t.id for t in sim.tasks.values() if t.kind == kind][-1]


async def proxy_service(make_service: ServiceFactory, **env: str):
    return await make_service(MEDIA_URLS="proxy", API_SECRET=SECRET, **env)


# ------------------------------------------------------------------------------ pure pieces


def test_table_ages_and_evicts_the_oldest() -> None:
    clock = FakeClock()
    links = MediaLinks(60, capacity=2, clock=clock)
    lease = Lease("key-1", "session_id=a", "a…", 1)
    first = links.add("https://up/1.png", "image", lease, "image/png")
    clock.advance(30)
    second = links.add("https://up/2.png", "image", None, None)
    assert links.get(first).url == "https://up/1.png" and len(second) == 32
    third = links.add("https://up/3.png", "image", lease, None)  # full: the oldest makes room
    assert links.get(first) is None and len(links) == 2
    assert links.get(second).cookie is None and links.get(third).cookie_key == "key-1"
    assert "session_id" not in repr(links.get(third))
    clock.advance(59)
    assert links.get(second) is not None and links.get(third) is not None
    clock.advance(1)  # MEDIA_LINK_TTL after they were made
    assert links.get(second) is None and len(links) == 0


def test_types_and_upstream_mode() -> None:
    assert guess_type("https://cdn/x/0.png?sig=1", "image") == "image/png"
    assert guess_type("https://cdn/x/0.webp", "image") == "image/webp"
    assert guess_type("https://cdn/x/file", "image") is None and guess_type("https://cdn/v", "video") == "video/mp4"
    assert guess_type("https://cdn/x/0.png", "video") == "video/mp4"
    assert MediaUrls().publish(["https://up/a.png"], None, "image") == ("https://up/a.png",)


@pytest.mark.parametrize(
    ("env", "headers", "base"),
    [
        ({}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil"}, "http://svc:1"),  # no trusted proxy
        ({"TRUSTED_PROXY_HOPS": "1"}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.example, b.example"},
         "https://b.example"),
        ({"TRUSTED_PROXY_HOPS": "2", "ROUTE_PREFIX": "hf"}, {"X-Forwarded-Host": "a.example, b.example"},
         "http://a.example/hf"),
        ({"TRUSTED_PROXY_HOPS": "1"}, {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "x/y@z"}, "http://svc:1"),
        ({"PUBLIC_BASE_URL": "https://my.space.hf.space/", "ROUTE_PREFIX": "hf", "TRUSTED_PROXY_HOPS": "1"},
         {"X-Forwarded-Host": "other"}, "https://my.space.hf.space/hf"),
    ],
)
def test_public_base(env: dict, headers: dict, base: str) -> None:
    assert public_base(Settings.from_env(env), "http", "svc:1", headers) == base


def test_a_host_header_that_is_no_host_is_a_400() -> None:
    with pytest.raises(ApiError) as info:
        public_base(Settings(), "http", "evil.example/x?", {})
    assert info.value.status == 400 and info.value.code == "invalid_host"
    assert public_base(Settings(), "http", "[::1]:7055", {}) == "http://[::1]:7055"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MEDIA_URLS": "cdn"}, ("MEDIA_URLS", "'cdn'", "upstream, proxy")),
        ({"PUBLIC_BASE_URL": "my.space.hf.space"}, ("PUBLIC_BASE_URL", "https://host")),
        ({"PUBLIC_BASE_URL": "https://h/x?y=1"}, ("PUBLIC_BASE_URL", "without ? or #")),
        ({"MEDIA_LINK_TTL": "0"}, ("MEDIA_LINK_TTL", "'0'", ">= 1")),
        ({"MEDIA_LINK_TTL": "a day"}, ("MEDIA_LINK_TTL", "seconds")),
    ],
)
def test_bad_settings_are_refused(env: dict, words: tuple[str, ...]) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert all(w in str(info.value) for w in words), str(info.value)


# ------------------------------------------------------------------------------ end to end


async def test_images_are_proxied_with_the_generating_cookie(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service, REQUEST_RATE_LIMIT="5")
    result = await service.openai(SECRET).images.generate(prompt="a red apple", n=2)
    assert len(result.data) == 2 and len({item.url for item in result.data}) == 2
    async with httpx.AsyncClient(timeout=10) as anonymous:  # no Authorization header at all
        for item in result.data:
            proxied(item.url, service.url)
            assert sim.url not in item.url
            response = await anonymous.get(item.url)
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            assert int(response.headers["content-length"]) == len(response.content)
            task = sim.downloads[-1].name.removesuffix(".png")
            assert response.content == solid_png(colour_for(task))
            assert sim.downloads[-1].cookie_sent and sim.requests_to(f"/sim-files/{task}.png")[-1].session_id == "ok-1"
        # The link is exempt from API_SECRET, not from the per-IP rate limit.
        limited = [(await anonymous.get(result.data[0].url)).status_code for _ in range(3)]
    assert limited == [200, 200, 429]  # 1 generation + 2 downloads before: the 6th request is refused


async def test_link_without_its_cookie_in_the_pool_is_fetched_without_one(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service)
    result = await service.openai(SECRET).images.generate(prompt="x")
    service.runtime.pool.reload(["other-1"])  # the generating account was removed
    async with service.http() as http:
        response = await http.get(result.data[0].url)
    assert response.status_code == 200 and not sim.downloads[-1].cookie_sent


async def test_chat_routed_image_and_video_links(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service)
    client = service.openai(SECRET)
    image = await client.chat.completions.create(model="nano-banana-pro",
                                                 messages=[{"role": "user", "content": "a dog"}])
    (url,) = re.findall(r"!\[image 1\]\((.+?)\)", image.choices[0].message.content)
    proxied(url, service.url)
    stream = await client.chat.completions.create(model="kling/v3", messages=[{"role": "user", "content": "a river"}],
                                                  stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    (video_url,) = re.findall(r"\[video 1\]\((.+?)\)", text)
    proxied(video_url, service.url)
    async with service.http() as http:
        png = await http.get(url)
        mp4 = await http.get(video_url)
    assert png.content == solid_png(colour_for(last_task(sim, "image")))
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"


async def test_video_generations_url_streams_the_mp4(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service, PUBLIC_BASE_URL="https://my.space.example/")
    async with service.http() as http:
        response = await http.post("/v1/videos/generations", json={"model": "sora-2", "prompt": "a boat"}, headers=AUTH)
        assert response.status_code == 200, response.text
        url = response.json()["data"][0]["url"]
        token = proxied(url, "https://my.space.example")  # PUBLIC_BASE_URL, not the request's Host
        async with http.stream("GET", f"/v1/media/{token}.mp4") as video:
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            body = b"".join([chunk async for chunk in video.aiter_bytes()])
    assert body[4:8] == b"ftyp" and int(video.headers["content-length"]) == len(body)
    assert sim.downloads[-1].cookie_sent and sim.downloads[-1].name == last_task(sim, "video") + ".mp4"


async def test_derived_base_honours_route_prefix_and_trusted_proxy(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service, ROUTE_PREFIX="hf", TRUSTED_PROXY_HOPS="1")
    async with service.http() as http:
        plain = await http.post("/hf/v1/images/generations", json={"prompt": "x"}, headers=AUTH)
        behind = await http.post("/hf/v1/images/generations", json={"prompt": "x"},
                                 headers={**AUTH, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example"})
        proxied(plain.json()["data"][0]["url"], service.url + "/hf")
        token = proxied(behind.json()["data"][0]["url"], "https://api.example/hf")
        assert (await http.get(f"/hf/v1/media/{token}.png")).status_code == 200
        assert (await http.get(f"/v1/media/{token}.png")).status_code == 404  # outside the prefix


async def test_unknown_expired_and_sneaky_paths(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service, MEDIA_LINK_TTL="1")
    result = await service.openai(SECRET).images.generate(prompt="x")
    made = trio.current_time()
    async with service.http() as http:
        assert (await http.get(result.data[0].url)).status_code == 200
        unknown = await http.get("/v1/media/" + "A" * 32 + ".png")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "media_not_found"
        for sneaky in ("/v1/media/../pool", "/v1/media/%2e%2e/pool", "/v1/media/x/../../v1/models",
                       "/v1/media//v1/pool"):
            assert await raw_status(service.url, sneaky) in (401, 404), sneaky  # never served without the key
        await trio.sleep_until(made + 1.05)
        expired = await http.get(result.data[0].url)
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "media_not_found"


async def raw_status(url: str, path: str) -> int:
    """The status of a GET sent byte for byte (httpx would resolve `..` before sending)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await stream.receive_some(64)
    return int(head.split()[1])


async def test_upstream_error_is_a_502(make_service: ServiceFactory, sim) -> None:
    service = await proxy_service(make_service)
    token = service.runtime.media_links.add(sim.url + "/sim-files/nothing.png", "image", None, "image/png")
    video = service.runtime.media_links.add(sim.url + "/sim-files/nothing.mp4", "video", None, "video/mp4")
    async with service.http() as http:
        for name in (token + ".png", video + ".mp4"):
            response = await http.get("/v1/media/" + name)
            error = response.json()["error"]
            assert response.status_code == 502 and error["code"] == "upstream_download_failed", error
            assert "sim-files" not in error["message"]  # the upstream URL stays private


async def test_default_mode_returns_upstream_urls(make_service: ServiceFactory, sim) -> None:
    service = await make_service(API_SECRET=SECRET)
    result = await service.openai(SECRET).images.generate(prompt="x")
    assert result.data[0].url == f"{sim.url}/sim-files/{last_task(sim, 'image')}.png"
    assert len(service.runtime.media_links) == 0


# ------------------------------------------------------------------------------ client leaving


class HangingFile(httpx.AsyncByteStream):
    """An upstream file that sends one chunk and then nothing; records being closed."""

    def __init__(self) -> None:
        self.closed = trio.Event()

    async def __aiter__(self):
        yield b"\x00\x00\x00\x18ftyp"
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_client_leaving_closes_the_upstream_download(nursery, kind: str) -> None:
    upstream = HangingFile()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers={"content-type": "video/mp4"},
                                                                   stream=upstream))
    service = await start_service(nursery, {"GENSPARK_BASE_URL": "http://upstream.test", "GS_COOKIE": "ok-1",
                                            "REQUEST_RATE_LIMIT": "0", "MEDIA_URLS": "proxy"}, transport=transport)
    token = service.runtime.media_links.add("http://upstream.test/f", kind, None, None)
    async with service.http() as http:
        if kind == "video":  # streamed: the client reads a chunk and goes
            async with http.stream("GET", f"/v1/media/{token}") as response:
                assert await response.aiter_bytes().__anext__() == b"\x00\x00\x00\x18ftyp"
        else:  # fetched whole before answering: the client gives up waiting
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"/v1/media/{token}", timeout=0.3)
    with trio.fail_after(2):
        await upstream.closed.wait()
