"""Shared fixtures: the simulator and the service, both live on loopback port 0, under trio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import httpx
import openai
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from genspark2api.api.app import create_app
from genspark2api.cli import bound_client_deadlines
from genspark2api.runtime import Runtime
from genspark2api.settings import Settings
from genspark2api.simulator import Simulator, serve_simulator


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Simulator:
    simulator = Simulator()
    simulator.url = await nursery.start(serve_simulator, simulator, "127.0.0.1", 0)  # type: ignore[attr-defined]
    return simulator


@dataclass
class Service:
    url: str
    runtime: Runtime
    settings: Settings

    @property
    def base(self) -> str:
        return f"{self.url}{self.settings.route_prefix}/v1"

    def openai(self, api_key: str = "test-key", **kwargs: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base, api_key=api_key, max_retries=0, timeout=30, **kwargs)

    def http(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


async def start_service(nursery: trio.Nursery, env: dict[str, str], **runtime_kwargs: object) -> Service:
    settings = Settings.from_env(env)
    runtime = Runtime(settings, **runtime_kwargs)
    app = create_app(runtime)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    bound_client_deadlines(config, settings)
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=trio.sleep_forever))
    return Service(binds[0], runtime, settings)


ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture
def make_service(nursery: trio.Nursery, sim: Simulator) -> ServiceFactory:
    """`await make_service(cookies=[...], **ENV)`: a service pointed at the simulator."""

    async def factory(cookies: tuple[str, ...] | list[str] = ("ok-1",), **env: str) -> Service:
        full = {
            "GENSPARK_BASE_URL": sim.url,  # type: ignore[attr-defined]
            "GS_COOKIE": ",".join(cookies),
            "REQUEST_RATE_LIMIT": "0",
            "STREAM_KEEPALIVE_SECONDS": "15",
        }
        full.update(env)
        return await start_service(nursery, full)

    return factory


def with_env(factory: ServiceFactory, **defaults: str) -> ServiceFactory:
    """`factory` with other default settings, for a test module's own `make_service` fixture."""

    async def wrapped(cookies: tuple[str, ...] | list[str] = ("ok-1",), **env: str) -> Service:
        return await factory(cookies, **{**defaults, **env})

    return wrapped


@pytest.fixture
async def service(make_service: ServiceFactory) -> Service:
    return await make_service()


def sse_frames(body: bytes) -> list[bytes]:
    """Split an SSE body at blank lines, keeping every byte (for byte-level assertions)."""
    assert body.endswith(b"\n\n"), body[-80:]
    return body[:-2].split(b"\n\n")


FAKE_T0 = 1_770_000_000.0


class FakeClock:
    """A wall clock a test moves by hand: `clock()` is unix seconds, `advance(s)` moves it."""

    def __init__(self, now: float = FAKE_T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def read_request_head(stream: trio.SocketStream) -> bytes | None:
    """The head of one HTTP request on a raw test server (None if the client left first)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    return buffer.split(b"\r\n\r\n", 1)[0]


def free_port() -> int:
    """A loopback port nothing listens on (free at the time of the call)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
