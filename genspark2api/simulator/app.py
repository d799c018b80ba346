"""The HTTP shell: Quart routes that decode requests, ask backend.py, and play scripts.

Routes (genspark-protocol.md §9):

* ``POST /api/copilot/ask``: G1 chat, image and video (§2.1, §2.2, §2.4)
* ``POST /api/agent/ask_proxy``: ``ai_chat``, ``image_generation_agent``,
  ``video_generation_agent`` (§12.2, §12.7); gates in this order: ``User-Agent`` (400 ``bad
  request cf``, §12.5 E22), ``Origin`` + ``Referer`` (403, E19c, option ``require_origin``), the
  session cookie and its edge scenarios, then agent.py (422, 429, 500, the answer)
* ``POST /api/ig_tasks_status``, ``POST /api/vg_tasks_status``: task polling streams (§2.3, §2.4,
  §12.7.3)
* ``GET /api/spark/image_generation_task_status``: legacy per-task poll (§2.3);
  ``GET /api/spark/image_generation_task_detail``: the §12.7.3 alternative
* ``GET /api/get_upload_personal_image_url`` and ``PUT /sim-blob/<key>``: uploads (§2.5);
  ``GET /api/files/get_upload_url`` (§12.7.5) hands out the same kind of blob slot
* ``GET /api/files/s/<id>``: ask_proxy's generated and uploaded files, 403 without the session
  cookie (§12.7.4)
* ``GET /api/user``, ``/api/is_login``, ``/api/credit_audit/billing_cycle``,
  ``/api/project/my``: account probes (§12.9.4)
* ``GET /api/project/delete``: project deletion (§2.6)
* ``GET /genspark``: the external reCAPTCHA token service (§2.8)
* ``GET /sim-files/<name>``: the generated PNG/MP4 files that polling points at

Rules that keep streams honest (python-stack.md §2): everything is read from ``request`` before
a body generator is built; ``Response.timeout`` is None so Quart never cuts a long stream; the
generator records a ``ClosedStream`` in ``finally``, whether it ended or the client left.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from .agent import Streamed
from .media import colour_for, fake_mp4, solid_png
from .playback import play
from .scenarios import (
    BAD_REQUEST_CF,
    ORIGIN_MISSING,
    CannedResponse,
    Endpoint,
    Scenario,
    canned_response,
    scenario_for,
)
from .state import ClosedStream, FileDownload, MediaKind, RecordedRequest, TaskOutcome
from .streams import Step
from .wire import AgentAsk, BadBody, CopilotAsk, TaskStatusQuery, decode

if TYPE_CHECKING:
    from .server import Simulator

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
MAX_BODY_BYTES = 64 * 1024 * 1024  # uploads of attachments; Quart's default is 16 MiB


def session_id_from_cookies(cookie_headers: Iterable[str]) -> str | None:
    """The ``session_id`` value of the Cookie header(s) (§1.3), stripped; None when absent or empty."""
    for header in cookie_headers:
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == "session_id" and value.strip():
                return value.strip()
    return None


def _session_id() -> str | None:
    return session_id_from_cookies(request.headers.getlist("Cookie"))


def _base_url() -> str:
    """The simulator's own address as the client sees it, for URLs that must point back here."""
    return f"{request.scheme}://{request.host}"


def _canned(canned: CannedResponse) -> Response:
    return Response(canned.body, status=canned.status, content_type=canned.content_type, headers=canned.headers)


def _json(payload: Any, status: int = 200) -> Response:
    # The backend's plain JSON is compact, like the not-login body (§4.1 E4); only SSE is spaced.
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json")


def _text(status: int, text: str) -> Response:
    return Response(text, status=status, content_type="text/plain; charset=utf-8")


def create_app(sim: Simulator) -> QuartTrio:
    app = QuartTrio("genspark2api.simulator")
    app.config["RESPONSE_TIMEOUT"] = None  # the 60 s default silently cuts streams
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def stream(script: Iterable[Step], session_id: str | None, on_close: Callable[[], None] | None = None) -> Response:
        path = request.path

        async def body() -> AsyncIterator[bytes]:
            completed = False
            try:
                async for chunk in play(script, sim.timing):
                    if b'"type": "message_result"' in chunk:
                        sim.record_result(chunk)
                    yield chunk
                completed = True
            finally:
                if on_close is not None:
                    on_close()
                sim.stream_closures.append(ClosedStream(path, session_id, completed, trio.current_time()))

        response = Response(body(), status=200, content_type=SSE_CONTENT_TYPE, headers={"Cache-Control": "no-cache"})
        response.timeout = None
        return response

    async def slow_first_byte(session_id: str | None) -> None:
        """``slow-first-byte``: nothing at all (not even headers) for ``answer_delay_slow`` seconds."""
        if scenario_for(session_id) is not Scenario.SLOW_FIRST_BYTE:
            return
        try:
            await trio.sleep(sim.answer_delay_slow)
        except trio.Cancelled:
            sim.stream_closures.append(ClosedStream(request.path, session_id, False, trio.current_time()))
            raise

    @app.before_request
    async def record() -> None:
        body = await request.get_data()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        recorded = RecordedRequest(
            request.method,
            request.path,
            request.args.to_dict(),
            headers,
            body,
            parsed,
            _session_id(),
            trio.current_time(),
        )
        sim.requests.append(recorded)

    @app.get("/")
    async def index() -> Response:
        scenarios = ", ".join(s.value for s in Scenario if s is not Scenario.NORMAL)
        return _text(200, f"genspark2api simulator: a fake Genspark backend.\nCookie prefixes: {scenarios}\n")

    @app.post("/api/copilot/ask")
    async def copilot_ask() -> Response:
        """G1: scenario gate, decode, then stream what the backend scripted (§2)."""
        session_id = _session_id()
        await slow_first_byte(session_id)
        if canned := canned_response(session_id, Endpoint.COPILOT) or sim.backend.flaky_refusal(session_id):
            return _canned(canned)
        try:
            script = sim.backend.copilot_ask(decode(await request.get_data(), CopilotAsk), session_id)
        except BadBody as error:
            return _text(400, str(error))
        return stream(script, session_id)

    @app.post("/api/agent/ask_proxy")
    async def agent_ask() -> Response:
        if "user-agent" not in request.headers:
            return _canned(BAD_REQUEST_CF)  # §12.5 E22: an application check, not the session
        if sim.options.require_origin and not ("origin" in request.headers and "referer" in request.headers):
            return _canned(ORIGIN_MISSING)  # §12.5 E19c [I]
        session_id = _session_id()
        await slow_first_byte(session_id)
        if canned := canned_response(session_id, Endpoint.AGENT) or sim.backend.flaky_refusal(session_id):
            return _canned(canned)
        assert session_id is not None  # canned_response answers a missing cookie
        try:
            ask = decode(await request.get_data(), AgentAsk)
            outcome = sim.backend.agent.ask(
                ask, session_id, base_url=_base_url(), timing=sim.timing, now=trio.current_time()
            )
        except BadBody as error:
            return _text(400, str(error))
        if not isinstance(outcome, Streamed):
            return _canned(outcome)
        release = (lambda: sim.ledger.release(session_id)) if outcome.holds_slot else None
        return stream(outcome.script, session_id, release)

    async def task_status(kind: MediaKind) -> Response:
        session_id = _session_id()
        if canned := canned_response(session_id, Endpoint.ACCOUNT):
            return _canned(canned)
        try:
            query = decode(await request.get_data(), TaskStatusQuery)
        except BadBody as error:
            return _text(400, str(error))
        return stream(sim.backend.task_status(query, kind, _base_url()), session_id)

    @app.post("/api/ig_tasks_status")
    async def image_task_status() -> Response:
        return await task_status("image")

    @app.post("/api/vg_tasks_status")
    async def video_task_status() -> Response:
        return await task_status("video")

    @app.get("/api/spark/image_generation_task_status")
    async def legacy_task_status() -> Response:
        if canned := canned_response(_session_id(), Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.legacy_task_status(request.args.get("task_id", ""), _base_url()))

    @app.get("/api/spark/image_generation_task_detail")
    async def task_detail() -> Response:
        if canned := canned_response(_session_id(), Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.task_detail(request.args.get("task_id", "")))

    @app.get("/api/files/get_upload_url")
    async def agent_upload_url() -> Response:
        if canned := canned_response(_session_id(), Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.upload_url(_base_url()))

    @app.get("/api/files/s/<file_id>")
    async def agent_file(file_id: str) -> Response:
        # §12.7.4: "downloads need the session" (TT fetches in-page with credentials).
        session_id = _session_id()
        stored = None if session_id is None else sim.backend.stored_file(file_id)
        sim.downloads.append(FileDownload(file_id, session_id is not None, stored is not None))
        if session_id is None:
            return _text(403, "Forbidden")
        if stored is None:
            return _text(404, "not found")
        content_type, data = stored
        return Response(data, content_type=content_type, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/user")
    async def user() -> Response:
        return _json(sim.backend.user(_session_id()))  # §12.5 E24: HTTP 200 either way

    @app.get("/api/is_login")
    async def is_login() -> Response:
        return _json(sim.backend.is_login(_session_id()))

    @app.get("/api/credit_audit/billing_cycle")
    async def billing_cycle() -> Response:
        session_id = _session_id()
        if canned := canned_response(session_id, Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.billing_cycle(session_id or ""))

    @app.get("/api/project/my")
    async def my_projects() -> Response:
        session_id = _session_id()
        if canned := canned_response(session_id, Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.my_projects(session_id or ""))

    @app.get("/api/get_upload_personal_image_url")
    async def upload_slot() -> Response:
        if canned := canned_response(_session_id(), Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.upload_slot(_base_url()))

    @app.put("/sim-blob/<key>")
    async def put_blob(key: str) -> Response:
        # §2.5: Azure wants x-ms-blob-type on a Put Blob; the cookie is neither sent nor needed.
        if request.headers.get("x-ms-blob-type") != "BlockBlob":
            return _text(400, "MissingRequiredHeader: x-ms-blob-type must be BlockBlob")
        if not sim.backend.store_upload(key, await request.get_data()):
            return _text(404, "BlobNotFound: no upload slot with this key")
        return Response(b"", status=201)

    @app.get("/api/project/delete")
    async def delete_project() -> Response:
        if canned := canned_response(_session_id(), Endpoint.ACCOUNT):
            return _canned(canned)
        return _json(sim.backend.delete_project(request.args.get("project_id", "")))

    @app.get("/genspark")
    async def recaptcha_token() -> Response:
        # genspark-playwright-proxy (Hono, §2.8): failures are HTTP 200 with code 500.
        if scenario_for(_session_id()) is Scenario.CAPTCHA_FAIL:
            return _json({"code": 500, "message": "Failed to retrieve token"})
        token = sim.issue_token(trio.current_time())
        return _json({"code": 200, "message": "Token retrieved successfully", "token": token})

    @app.get("/sim-files/<name>")
    async def generated_file(name: str) -> Response:
        task_id, _, extension = name.rpartition(".")
        task = sim.tasks.get(task_id)
        kind = {"png": "image", "mp4": "video"}.get(extension)
        found = task is not None and task.kind == kind and task.outcome is TaskOutcome.SUCCESS
        sim.downloads.append(FileDownload(name, "cookie" in request.headers, found))
        if not found:
            return _text(404, "not found")
        if kind == "image":
            return Response(solid_png(colour_for(task_id)), content_type="image/png")
        return Response(fake_mp4(task_id), content_type="video/mp4")

    return app
