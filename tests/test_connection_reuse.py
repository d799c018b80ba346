"""Upstream connections are reused after a finished answer, and only then (upstream.DRAIN_*).

A counting TCP relay sits between the service and the upstream, so what is counted is what
the kernel saw: accepted connections, and when each one was closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from conftest import ServiceFactory, read_request_head, start_service

from genspark2api.simulator import Simulator
from genspark2api.upstream.client import DRAIN_SECONDS


@dataclass
class Relay:
    url: str
    accepted: int = 0
    closed: int = 0
    closed_event: trio.Event = field(default_factory=trio.Event)


async def start_relay(nursery: trio.Nursery, target_port: int) -> Relay:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    relay = Relay(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")

    async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def handle(client: trio.SocketStream) -> None:
        relay.accepted += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            async with trio.open_nursery() as inner:
                async def one_way(a: trio.SocketStream, b: trio.SocketStream) -> None:
                    await pipe(a, b)
                    inner.cancel_scope.cancel()  # either side closing ends the relayed connection

                inner.start_soon(one_way, client, upstream)
                inner.start_soon(one_way, upstream, client)
            await trio.aclose_forcefully(upstream)
        finally:
            await trio.aclose_forcefully(client)
            relay.closed += 1
            relay.closed_event.set()

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return relay


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_twenty_sequential_answers_share_one_upstream_connection(
    nursery: trio.Nursery, sim: Simulator, make_service: ServiceFactory
) -> None:
    relay = await start_relay(nursery, port_of(sim.url))  # type: ignore[attr-defined]
    service = await make_service(GENSPARK_BASE_URL=relay.url)
    async with service.http() as http:
        for i in range(20):
            body = {"model": "gpt-5.4", "stream": i % 2 == 0, "messages": [{"role": "user", "content": f"hi {i}"}]}
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            assert b"[DONE]" in r.content if body["stream"] else r.json()["choices"][0]["message"]["content"]
    # Before the drain every answer left its body unread and cost a connection (20 here).
    assert relay.accepted == 1
    assert relay.closed == 0


async def test_a_client_that_leaves_mid_answer_takes_the_upstream_connection_with_it(
    nursery: trio.Nursery, sim: Simulator, make_service: ServiceFactory
) -> None:
    sim.answer_delay = 0.2  # type: ignore[attr-defined]
    relay = await start_relay(nursery, port_of(sim.url))  # type: ignore[attr-defined]
    service = await make_service(GENSPARK_BASE_URL=relay.url)
    body = {"model": "gpt-5.4", "stream": True, "messages": [{"role": "user", "content": "a long answer please"}]}
    async with service.http() as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            async for chunk in r.aiter_bytes():
                if b'"content":"' in chunk and b'"content":""' not in chunk:
                    break
    # Never drained on cancellation: the half-read connection is closed, not kept.
    with trio.fail_after(5):
        await relay.closed_event.wait()
    assert relay.accepted == 1


async def test_an_upstream_that_keeps_the_body_open_costs_at_most_the_drain_bound(nursery: trio.Nursery) -> None:
    """After the last event the body never ends: the answer still ends at once (bounded drain),
    and the connection is dropped rather than kept half-read."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    events = [
        b'{"id":"p1","type":"project_start"}',
        b'{"message_id":"m","type":"message_start"}',
        b'{"message_id":"m","field_name":"content","delta":"Hello","type":"message_field_delta"}',
        b'{"type":"message_result","message":{"content":"Hello"}}',
        b'{"field_name":"status","field_value":"FINISHED","type":"project_field"}',  # §12.4.1
    ]
    body = b"".join(b"%x\r\ndata: %s\n\n\r\n" % (len(e) + 8, e) for e in events)

    async def handle(stream: trio.SocketStream) -> None:
        head = await read_request_head(stream)
        assert head is not None
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                              b"transfer-encoding: chunked\r\n\r\n" + body)
        await trio.sleep_forever()  # no end of body

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    relay = await start_relay(nursery, port)
    service = await start_service(nursery, {"GENSPARK_BASE_URL": relay.url, "GS_COOKIE": "ok-1",
                                            "REQUEST_RATE_LIMIT": "0"})
    async with service.http() as http:
        for expected in (1, 2):
            started = trio.current_time()
            r = await http.post("/v1/chat/completions", json={"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "Hello"
            assert trio.current_time() - started < DRAIN_SECONDS + 1.0
            assert relay.accepted == expected  # the unfinished connection was not reused
