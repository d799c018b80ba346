"""One conversation, from whichever front door, to a streamed or whole answer (door-neutral).

Where things happen:
- `ChatService.prepare` builds the upstream conversation once (media fetched and checked once).
- `ChatService.attempt` is one try on one cookie: where the turn goes (a new Genspark thread with
  the whole transcript, or the bound one with only the new turn, §12.3), uploads, reCAPTCHA token,
  the upstream stream; a continued thread the account cannot use starts over on a new one.
- `FailoverRunner` (failover.py) runs attempts in the app nursery and feeds a channel.
- The handler holds the response until the first answer-bearing event (bounded by
  `FIRST_BYTE_HOLD_SECONDS`), so an early failure is still a JSON error with a real status.
- `AnswerStream` turns channel items into composer pieces and one end; a front door encodes them.
  Closing it (the client went away) cancels the producer and with it the upstream connection.
- A structured answer (`Conversation.output`, structured.py) is checked whole and repaired once on
  the same thread (`_complete_structured`); its stream is that whole answer (`WholeAnswerStream`),
  so every front door gets it through `complete_prepared` / `stream_prepared` unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from ..errors import ApiError
from ..pool.bindings import Binding
from ..pool.cookies import Lease
from ..pool.failover import Completed, Failed, RunItem, Won
from ..requestctx import current_request
from ..requestctx import request_id as current_request_id
from ..runtime import Runtime
from ..upstream.catalog import served_matches
from ..upstream.classify import Failure, FailureKind
from ..upstream.events import (
    ModelServed,
    ModelsReported,
    ProjectStarted,
    ThreadPosition,
    UpstreamFailure,
    UsageReported,
)
from ..upstream.protocols import (
    NEW_THREAD,
    ChatJob,
    Thread,
    UpstreamMessage,
    chat_adapter,
    content_text,
)
from ..upstream.signals import normalise
from .answer import Answer, AnswerInfo, Broken, Finished, Step, Usage
from .compose import AnswerComposer, Call, ComposeOptions, Content, Piece, Reasoning
from .conversation import Conversation, text_turn
from .media_prep import PreparedMedia, materialize_messages, prepare_media
from .structured import (
    Accepted,
    check_answer,
    output_instruction,
    repair_request,
    structured_failure,
)
from .toolprompt import render_assistant_tool_calls, render_tool_instruction
from .transcript import before_latest_turn, history_entry, upstream_turns
from .usage import count_messages_async

log = logging.getLogger("genspark2api.chat")

# Failures of a continued thread that say "not this project" rather than "not this cookie" (§12.3).
THREAD_FAILURES = frozenset({"upstream_internal_error", "upstream_not_logged_in", "upstream_empty_answer"})
# A cookie served another model than asked this many times in a row is rested (MODEL_SUBSTITUTION=cool).
SUBSTITUTION_STREAK = 3
SUBSTITUTION_REST_SECONDS = 600.0


@dataclass(slots=True)
class PreparedChat:
    conversation: Conversation
    job: ChatJob                             # the whole transcript: a new thread's first turn
    followup: ChatJob | None                 # only the turns the bound project has not seen (§12.3)
    media: PreparedMedia
    history: list[tuple[str, str]]           # (role, text) of the conversation's turns, for bindings
    binding_key: str                         # the model part of the conversation key (bindings.py)
    binding: Binding | None
    pinned_project: str | None
    prompt_tokens: int
    request_id: str = field(default_factory=current_request_id)   # the HTTP request's (requestctx.py)
    created: int = field(default_factory=lambda: int(time.time()))
    project_id: str | None = None
    event_index: int | None = None           # ThreadPosition of the winning attempt
    lease: Lease | None = None
    models: tuple[str, ...] = ()
    served: str | None = None                # `_llm_model`: the model that really answered (§12.8.3)
    reported_usage: UsageReported | None = None
    blamed_texts: set[str] = field(default_factory=set)   # loose §12.5 matches already blamed once
    claimed_history: list[tuple[str, str]] = field(default_factory=list)   # the state `binding` was claimed for

    @property
    def whole(self) -> bool:
        """Whether the client sees nothing before the answer is complete: not a stream, or a
        structured answer, which is checked whole before it is sent (structured.py)."""
        return not self.conversation.stream or self.conversation.output is not None


def current_request_key_name() -> str | None:
    """The name of the client key the current request came with (named keys, client_keys.py)."""
    ctx = current_request()
    return getattr(ctx, "key_name", None) if ctx is not None else None


class ChatService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.adapter = chat_adapter(runtime.settings.chat_protocol)

    # ------------------------------------------------------------------ preparation

    async def prepare(self, conversation: Conversation) -> PreparedChat:
        return await self._prepared(conversation, await prepare_media(conversation.turns, self.settings))

    def _upstream_turns(self, conversation: Conversation) -> tuple[list[tuple[int | None, str, str]], str]:
        """The turns Genspark is sent, and our instructions in them (tools, output format)."""
        tools = conversation.tools
        instructions: list[str] = []
        if tools is not None and tools.offered:
            instructions.append(render_tool_instruction(list(tools.functions), tools.choice, parallel=tools.parallel) or "")
        if conversation.output is not None:
            instructions.append(output_instruction(conversation.output))
        turns = upstream_turns(conversation.turns, pre_messages=self.settings.pre_messages,
                               instructions=tuple(instructions))
        return turns, "\n\n".join(i for i in instructions if i)

    async def _count_prompt(self, turns: list[tuple[int | None, str, str]], media: PreparedMedia) -> int:
        return await count_messages_async(self.rt.counter, [(role, text, None) for _, role, text in turns]) + media.token_estimate

    async def count_prompt(self, conversation: Conversation) -> int:
        """The prompt tokens `prepare` would count (Anthropic's count_tokens), claiming nothing."""
        turns, _ = self._upstream_turns(conversation)
        return await self._count_prompt(turns, await prepare_media(conversation.turns, self.settings))

    async def _prepared(self, conversation: Conversation, media: PreparedMedia) -> PreparedChat:
        settings = self.settings
        turns, instruction = self._upstream_turns(conversation)
        messages = [UpstreamMessage(role, text) for _, role, text in turns]
        route = conversation.route
        job = ChatJob(route, messages)
        prompt_tokens = await self._count_prompt(turns, media)
        history = [history_entry(t) for t in conversation.turns]
        # The tool set and the output format are part of what a project was told on its first
        # turn: another set or format, another thread.
        # And so is the client key: two clients never continue each other's projects.
        key_name = current_request_key_name()
        binding_key = route.requested + ("\x00key:" + key_name if key_name else "") + ("\x00" + instruction if instruction else "")
        pins = dict(settings.model_chat_map)
        pinned = pins.get(route.requested) or pins.get(",".join(route.upstream))
        earlier = before_latest_turn(history)
        binding = None
        if settings.auto_model_chat_map and pinned is None:
            # Claimed, not just looked up: two follow-ups of the same state (a double submit, two
            # tabs, a client retrying after a timeout) must not both continue one project (§12.3).
            binding = self.rt.bindings.claim(binding_key, earlier)
        followup = None
        if binding is not None or pinned is not None:
            new = [UpstreamMessage(role, text) for i, role, text in turns if i is not None and i >= len(earlier)]
            followup = ChatJob(route, new) if new else None
        prepared = PreparedChat(conversation, job, followup, media, history, binding_key, binding, pinned, prompt_tokens)
        prepared.claimed_history = earlier
        # Conversation turn index -> upstream message index, so media goes into the right message.
        prepared.media.upstream_index = {i: k for k, (i, _, _) in enumerate(turns) if i is not None}
        return prepared

    def _followup_media(self, chat: PreparedChat) -> PreparedMedia:
        """The media of the follow-up's turns, indexed by their place in `chat.followup`."""
        first = len(before_latest_turn(chat.history))
        media = PreparedMedia(parts={i: p for i, p in chat.media.parts.items() if i >= first})
        media.upstream_index = {i: i - first for i in media.parts}
        return media

    # ------------------------------------------------------------------ one attempt

    def _thread_for(self, chat: PreparedChat, lease: Lease) -> tuple[Thread, ChatJob, PreparedMedia]:
        """Where this attempt's turn goes, and what it sends (§12.3).

        The owner cookie of a bound conversation continues its project with only the new turns;
        any other cookie (the owner is cooling, dead or full) starts a new project with the whole
        transcript, since a thread cannot be continued by another account. Copilot (G1) keeps no
        server-side history: it always gets the whole transcript, with the project id when bound.
        """
        project_id, last_index = chat.pinned_project, -1
        if project_id is None and chat.binding is not None and chat.binding.cookie_key == lease.key:
            project_id, last_index = chat.binding.project_id, chat.binding.last_event_index
        if project_id is None:
            return NEW_THREAD, chat.job, chat.media
        if not self.adapter.server_keeps_history:
            return Thread(project_id, last_index), chat.job, chat.media
        if chat.followup is None:
            # Nothing new after the last assistant turn (a "continue" request): resending the
            # transcript into the project would come back blank (§12.3), so start a new one.
            return NEW_THREAD, chat.job, chat.media
        return Thread(project_id, last_index), chat.followup, self._followup_media(chat)

    async def attempt(self, chat: PreparedChat, lease: Lease, emit: Any) -> None:
        thread, job, media = self._thread_for(chat, lease)

        async def observed(event: Any) -> None:
            if isinstance(event, ModelServed):
                self._check_served(chat, lease, event.model)
            await emit(event)

        try:
            await self._turn(chat, job, media, thread, lease, observed)
        except UpstreamFailure as exc:
            if exc.failure.evidence:
                chat.blamed_texts.add(normalise(exc.failure.evidence))
            # A project this account cannot continue: stale or deleted (HTTP 500, §12.5 E21), another
            # account's (500, 403 or an empty answer, §12.3), or a pinned id it never had. Another
            # account does not help; start over on this cookie with the whole transcript. If the
            # cookie itself is the problem, the new thread fails the same way and is blamed then.
            if not thread.continues or exc.failure.code not in THREAD_FAILURES:
                raise
            log.warning("project %s is unusable on %s (%s): starting a new thread",
                        thread.project_id, lease.masked, exc.failure.code)
            if not chat.pinned_project:
                self.rt.bindings.forget_project(thread.project_id or "")
            chat.binding = None
            await self._turn(chat, chat.job, chat.media, NEW_THREAD, lease, observed)

    async def _turn(self, chat: PreparedChat, job: ChatJob, media: PreparedMedia, thread: Thread, lease: Lease,
                    emit: Any) -> None:
        token = await self.rt.client.recaptcha_token(lease.cookie)
        messages = await materialize_messages(job.messages, media, self.rt.client, lease)
        if thread.continues and self.adapter.server_keeps_history:
            messages = [_merge_turns(messages)]   # §12.2.4: one new user message
        job = ChatJob(job.route, messages)
        body = self.adapter.body(job, thread, token)
        translator = self.adapter.translator(job, now=time.time(), accept=frozenset(chat.blamed_texts))
        async with self.rt.client.open_stream(
            self.adapter.path, cookie=lease.cookie, json=body, referer=self.adapter.referer
        ) as stream:
            # The events of each chunk as one list: no generator between the body and us.
            while not translator.done and (events := await stream.next_events()) is not None:
                for event in events:
                    if self.settings.debug:
                        log.debug("upstream event on %s: %s", lease.masked, event)
                    for out in translator.feed(event):
                        await emit(out)
                    if translator.done:
                        break  # the last event (§3.1 message_result, §12.4.1 FINISHED); don't wait for the close
            if not translator.done:
                failure = stream.failure_from_other_text()
                if failure is not None:
                    raise UpstreamFailure(failure)
            for out in translator.finish():
                await emit(out)

    async def attempt_deleting_orphans(self, chat: PreparedChat, lease: Lease, emit: Any) -> None:
        """`attempt`, and with AUTO_DEL_CHAT the deletion of the project it started when it does not
        succeed: a failed, out-raced or abandoned attempt's project is never bound or reused (§5.9)."""
        kept = {chat.pinned_project, chat.binding.project_id if chat.binding is not None else None}
        started: list[str] = []

        async def tracking(event: Any) -> None:
            if isinstance(event, ProjectStarted) and event.project_id not in kept:
                started.append(event.project_id)
            await emit(event)

        try:
            await self.attempt(chat, lease, tracking)
        except BaseException:
            if started and self.settings.auto_del_chat:
                self.delete_project(lease, started[-1])
            raise

    # ------------------------------------------------------------------ running

    def start(self, chat: PreparedChat) -> tuple[trio.MemoryReceiveChannel, trio.CancelScope]:
        """Start the attempts in the app nursery; the caller must cancel the scope when done."""
        send, recv = trio.open_memory_channel(math.inf)  # chat text is small; the producer never blocks
        scope = trio.CancelScope()
        prefer = chat.binding.cookie_key if chat.binding is not None else None

        # A stream waits for a free cookie only while its headers are still held back, so that a
        # busy pool is a plain 429 and never an error event inside a 200 stream.
        pool_wait = self.settings.pool_wait
        if chat.conversation.stream:
            pool_wait = min(pool_wait, max(0.0, self.settings.first_byte_hold - 0.5))
        # Nothing is sent before the end (non-stream, structured): a broken answer may still fail over.
        whole = chat.whole

        async def produce() -> None:
            self.rt.track(scope)
            try:
                await run()
            finally:
                self.rt.untrack(scope)

        async def run() -> None:
            with scope:
                await self.rt.runner.run(
                    lambda lease, emit: self.attempt_deleting_orphans(chat, lease, emit), send, prefer=prefer,
                    hold_until_done=whole, first_event_timeout=self.settings.first_event_timeout,
                    pool_wait=pool_wait,
                )

        if self.rt.nursery is None:
            raise ApiError(503, "The service is not serving yet.", type="server_error", code="not_ready")
        self.rt.nursery.start_soon(produce)
        return recv, scope

    def options(self, chat: PreparedChat) -> ComposeOptions:
        conversation = chat.conversation
        tools = conversation.tools
        reasoning_format, hide = self.settings.reasoning_format, self.settings.reasoning_hide
        if conversation.reasoning != "settings":
            reasoning_format, hide = "reasoning_content", conversation.reasoning == "hidden"
        structured = conversation.output is not None
        if structured and reasoning_format == "think":
            # The content of a structured answer is the JSON alone: inline <think> has no place.
            reasoning_format, hide = "reasoning_content", True
        return ComposeOptions(
            reasoning_format=reasoning_format,
            reasoning_hide=hide,
            stops=conversation.stops,
            max_tokens=conversation.max_tokens,
            tool_names=tools.names if tools is not None and tools.offered else None,
            tool_schemas={f.name: f.parameters for f in tools.functions} if tools is not None else {},
            single_call=tools is not None and not tools.parallel,
            legacy_functions=tools is not None and tools.legacy,
            # The sources stay in Finished.sources; as a markdown list they would break the JSON.
            search_sources=self.settings.search_sources and not structured,
        )

    def _check_served(self, chat: PreparedChat, lease: Lease, served: str) -> None:
        """§12.8.3: an unknown or unavailable id is silently served by another model; only
        `_llm_model` says so. Counted per cookie; MODEL_SUBSTITUTION decides what else happens."""
        requested = chat.conversation.route.upstream[0]   # MoA: `_llm_model` names the lead (§12.4.5)
        substituted = not served_matches(requested, served)
        streak = self.rt.pool.note_served(lease.key, requested, served, substituted=substituted)
        if not substituted:
            return
        log.warning("model substitution: asked %s, Genspark served %s (cookie %s)", requested, served, lease.masked)
        policy = self.settings.model_substitution
        if policy == "failover" and chat.whole:
            raise UpstreamFailure(Failure(
                FailureKind.NETWORK, "upstream_model_substituted",
                f"Genspark served {served} instead of {requested} on this cookie (genspark-protocol.md §12.8.3); "
                "MODEL_SUBSTITUTION=failover tries another cookie.",
            ))
        if policy == "cool" and streak >= SUBSTITUTION_STREAK:
            self.rt.pool.cool(lease.key, SUBSTITUTION_REST_SECONDS, "upstream_model_substituted",
                              f"served {served} instead of {requested} {streak} times in a row")

    def observe(self, chat: PreparedChat, item: RunItem) -> None:
        """Bookkeeping on items as they pass: winner, project id, served model, thread position."""
        if isinstance(item, Won):
            chat.lease = item.lease
        elif isinstance(item, ProjectStarted):
            chat.project_id = item.project_id
        elif isinstance(item, ThreadPosition):
            chat.event_index = item.event_index
        elif isinstance(item, ModelServed):
            chat.served = item.model
        elif isinstance(item, UsageReported):
            chat.reported_usage = item
        elif isinstance(item, ModelsReported):
            chat.models = item.models
            wanted = set(chat.conversation.route.upstream)
            if wanted and not wanted.issuperset(item.models):
                log.warning(
                    "model downgrade? asked %s, upstream answered with %s (cookie %s)",
                    ",".join(chat.conversation.route.upstream), ",".join(item.models),
                    chat.lease.masked if chat.lease else "?",
                )

    def finished(self, chat: PreparedChat, composer: AnswerComposer) -> None:
        """A successful answer: bind the conversation to its project, or delete the project."""
        if chat.lease is None or chat.project_id is None or chat.pinned_project is not None:
            return
        settings = self.settings
        if settings.auto_model_chat_map:
            answer = composer.content_text
            if composer.calls:
                calls = [(c.id, c.name, c.arguments) for c in composer.calls]
                answer = render_assistant_tool_calls(answer or None, calls)
            self._bind(chat, chat, answer)
        elif settings.auto_del_chat:
            self.delete_project(chat.lease, chat.project_id)

    def _bind(self, chat: PreparedChat, answered: PreparedChat, answer: str) -> None:
        """`chat`'s conversation ending with `answer` is now the head of the project `answered`
        left (the same chat, or its repair turn: then the client continues from the clean JSON)."""
        if answered.lease is None or answered.project_id is None or answered.pinned_project is not None:
            return
        if not self.settings.auto_model_chat_map:
            return
        if self.adapter.server_keeps_history and answered.event_index is None:
            return  # the turn never reached FINISHED: the project's state is unknown (§12.10)
        binding = Binding(answered.lease.key, answered.project_id, time.time(),
                          answered.event_index if answered.event_index is not None else -1)
        self.rt.bindings.remember(chat.binding_key, chat.history + [("assistant", answer)], binding)

    def delete_project(self, lease: Lease, project_id: str) -> None:
        async def delete() -> None:
            await self.rt.client.get_json("/api/project/delete", cookie=lease.cookie, params={"project_id": project_id})

        self.rt.background(f"delete project {project_id}", delete, timeout=30.0)

    def usage(self, chat: PreparedChat, composer: AnswerComposer) -> Usage:
        completion, reasoning = composer.completion_tokens()
        prompt = chat.prompt_tokens
        reported = chat.reported_usage
        if reported is not None and not composer.cut:
            # §12.4.2 `_llm_usage`: Genspark's own counts beat our estimate, unless stop or
            # max_tokens cut the answer short of what it counted.
            prompt, completion = reported.prompt_tokens, reported.completion_tokens
        return Usage(prompt, completion, reasoning)

    def info(self, chat: PreparedChat) -> AnswerInfo:
        headers = {"X-Request-Id": chat.request_id}
        if chat.served:
            headers["X-Genspark-Model"] = chat.served
        elif chat.models:
            headers["X-Genspark-Model"] = ",".join(chat.models)
        return AnswerInfo(chat.request_id, chat.created, chat.conversation.route.requested, headers)

    def ending(self, chat: PreparedChat, composer: AnswerComposer) -> Finished:
        """The end of a successful answer; binds the conversation to its project on the way."""
        self.finished(chat, composer)
        usage = self.usage(chat, composer)
        self.rt.metrics.tokens(usage.prompt_tokens, usage.completion_tokens)
        return Finished(composer.finish_reason, usage, composer.stop_sequence, tuple(composer.sources.values()))

    # ------------------------------------------------------------------ answers

    async def complete(self, conversation: Conversation) -> Answer:
        """The whole answer; an upstream failure raises ApiError."""
        return await self.complete_prepared(await self.prepare(conversation))

    async def complete_prepared(self, chat: PreparedChat) -> Answer:
        try:
            if chat.conversation.output is not None:
                return await self._complete_structured(chat)
            return await self._complete_once(chat)
        except BaseException:
            self.unclaim(chat)
            raise

    def unclaim(self, chat: PreparedChat) -> None:
        """No answer came: give the claimed binding back, so a retry continues its project."""
        if chat.binding is not None and chat.lease is None:
            self.rt.bindings.unclaim(chat.binding_key, chat.claimed_history, chat.binding)

    async def _complete_once(self, chat: PreparedChat) -> Answer:
        recv, scope = self.start(chat)
        composer = AnswerComposer(self.options(chat), self.rt.counter)
        try:
            while True:
                try:
                    item = await _next_item(recv)
                except trio.EndOfChannel:
                    raise self.rt.ended_early() from None
                self.observe(chat, item)
                if isinstance(item, Failed):
                    raise item.error
                if isinstance(item, Completed):
                    break
                if not isinstance(item, Won):
                    composer.feed(item)
        finally:
            scope.cancel()
            recv.close()
        composer.finish()
        end = self.ending(chat, composer)
        return Answer(self.info(chat), composer.content_text, composer.reasoning_text, tuple(composer.calls), end)

    async def _complete_structured(self, chat: PreparedChat) -> Answer:
        """The answer as the clean JSON text that fits `output`, asking once more when it does not.

        The repair is a follow-up on the same upstream thread (the binding `finished` just made
        sends only the new turn to the same project and cookie, §12.3): the model sees its own
        answer and a user turn naming the problem. Tool calls and answers that `stop` or
        `max_tokens` cut short are passed on unchecked, as OpenAI passes on a cut answer.
        """
        output = chat.conversation.output
        assert output is not None
        answer, answered = await self._complete_once(chat), chat
        if _unchecked(answer):
            return answer
        verdict = check_answer(answer.content, output)
        usage = answer.end.usage
        if not isinstance(verdict, Accepted):
            log.info("structured answer %s rejected (%s): asking once more on the same thread",
                     chat.request_id, verdict.problem)
            answered = await self._repair_turn(chat, answer.content, verdict.problem)
            answer = await self._complete_once(answered)
            usage = _added(usage, answer.end.usage)
            if _unchecked(answer):
                return replace(answer, end=replace(answer.end, usage=usage))
            verdict = check_answer(answer.content, output)
            if not isinstance(verdict, Accepted):
                raise structured_failure(verdict.problem, output)
        # The client continues from the clean JSON, not from what the model wrote around it.
        self._bind(chat, answered, verdict.text)
        return replace(answer, content=verdict.text, end=replace(answer.end, usage=usage))

    async def _repair_turn(self, chat: PreparedChat, content: str, problem: str) -> PreparedChat:
        """`chat`'s conversation + the rejected answer + the user turn naming the problem; the
        media already fetched is reused (the new turns carry none) and so is the request id."""
        output = chat.conversation.output
        assert output is not None
        turns = chat.conversation.turns + (text_turn("assistant", content),
                                           text_turn("user", repair_request(problem, output)))
        repair = await self._prepared(replace(chat.conversation, turns=turns), chat.media)
        repair.request_id, repair.created = chat.request_id, chat.created
        return repair

    async def stream(self, conversation: Conversation) -> AnswerStream:
        """Hold until the first answer-bearing item (bounded); an early failure raises ApiError."""
        return await self.stream_prepared(await self.prepare(conversation))

    async def stream_prepared(self, chat: PreparedChat) -> AnswerStream:
        try:
            return await self._stream_prepared(chat)
        except BaseException:
            self.unclaim(chat)
            raise

    async def _stream_prepared(self, chat: PreparedChat) -> AnswerStream:
        if chat.conversation.output is not None:
            return await self._stream_whole(chat)
        recv, scope = self.start(chat)
        held: list[RunItem] = []
        try:
            with trio.move_on_after(self.settings.first_byte_hold):
                while True:
                    item = await _next_item(recv)
                    self.observe(chat, item)
                    if isinstance(item, Failed):
                        raise item.error
                    held.append(item)
                    if not isinstance(item, Won | ProjectStarted | ModelsReported | ModelServed | UsageReported):
                        self.rt.metrics.first_content()
                        break
        except BaseException:
            scope.cancel()
            recv.close()
            raise
        return AnswerStream(self, chat, held, recv, scope)

    async def _stream_whole(self, chat: PreparedChat) -> WholeAnswerStream:
        """A structured answer as a stream: computed whole in the app nursery (it cannot be
        checked before it is whole), held like any stream's first byte; an answer or a failure
        within `FIRST_BYTE_HOLD_SECONDS` is a normal stream or a JSON error, later ones arrive
        after keep-alives."""
        if self.rt.nursery is None:
            raise ApiError(503, "The service is not serving yet.", type="server_error", code="not_ready")
        send, recv = trio.open_memory_channel(1)   # one item: the Answer or the ApiError
        scope = trio.CancelScope()

        async def produce() -> None:
            self.rt.track(scope)
            try:
                with scope:
                    result: Answer | ApiError
                    try:
                        result = await self._complete_structured(chat)
                    except ApiError as exc:
                        result = exc
                    except Exception:  # never into the app nursery (runtime.py)
                        log.exception("structured answer %s failed", chat.request_id)
                        result = ApiError(500, "The structured answer failed inside the service.",
                                          type="server_error", code="internal_error")
                    try:
                        send.send_nowait(result)
                    except trio.BrokenResourceError:
                        pass  # the client went away
            finally:
                self.rt.untrack(scope)
                send.close()

        self.rt.nursery.start_soon(produce)
        stream = WholeAnswerStream(self, chat, recv, scope)
        try:
            with trio.move_on_after(self.settings.first_byte_hold):
                await stream.wait()
        except BaseException:
            stream.close()
            raise
        return stream


class AnswerStream:
    """The answer as it arrives: `Step`s of composer pieces, the last one with the end.

    `next` waits for the next item (None when `keepalive` seconds pass in silence: the door sends
    its keep-alive); `next_nowait` takes one already queued (trio.WouldBlock when none is), so a
    door can put several into one send. `close` stops the upstream work; call it in every case.
    """

    def __init__(self, service: ChatService, chat: PreparedChat, held: list[RunItem],
                 recv: trio.MemoryReceiveChannel, scope: trio.CancelScope) -> None:
        self.service = service
        self.chat = chat
        self.info = service.info(chat)
        self.options = service.options(chat)
        self._held = held
        self._recv = recv
        self._scope = scope
        self._composer = AnswerComposer(self.options, service.rt.counter)
        self._over = False

    async def next(self, keepalive: float) -> Step | None:
        if self._held:
            return self._step(self._held.pop(0))
        try:
            try:
                return self._step(self._recv.receive_nowait())   # no timer for what is queued
            except trio.WouldBlock:
                pass
            if keepalive <= 0:
                return self._step(await self._recv.receive())
            with trio.move_on_after(keepalive):
                return self._step(await self._recv.receive())
        except trio.EndOfChannel:
            return self._broken(self.service.rt.ended_early())
        return None

    def next_nowait(self) -> Step:
        if self._held:
            return self._step(self._held.pop(0))
        try:
            return self._step(self._recv.receive_nowait())
        except trio.EndOfChannel:
            raise trio.WouldBlock from None  # the next `next` reports the early end

    def close(self) -> None:
        self._scope.cancel()
        self._recv.close()

    def _broken(self, error: ApiError) -> Step:
        self._over = True
        self.close()
        return Step([], Broken(error))

    def _step(self, item: RunItem) -> Step:
        service, chat, composer = self.service, self.chat, self._composer
        service.observe(chat, item)
        if isinstance(item, Failed):
            return self._broken(item.error)
        if isinstance(item, Completed):
            tail = composer.finish()
            self._over = True
            return Step(tail, service.ending(chat, composer))
        if isinstance(item, Won):
            return Step([])
        return Step(composer.feed(item))

    @property
    def over(self) -> bool:
        return self._over


class WholeAnswerStream(AnswerStream):
    """A whole `Answer` as an answer stream: keep-alives until it is there, then one step.

    Used for structured answers (`ChatService._stream_whole`). `wait` holds for the result: an
    error then raises, so a door still answers it as JSON with its status.
    """

    def __init__(self, service: ChatService, chat: PreparedChat, recv: trio.MemoryReceiveChannel,
                 scope: trio.CancelScope) -> None:
        super().__init__(service, chat, [], recv, scope)
        self._ready: Step | None = None

    async def wait(self) -> None:
        """Until the answer is there; a failure raises `ApiError` (the stream is closed then)."""
        await self._take()
        end = self._ready.end if self._ready is not None else None
        if isinstance(end, Broken):
            raise end.error

    async def next(self, keepalive: float) -> Step | None:
        if self._ready is None and not self._over:
            with trio.move_on_after(keepalive if keepalive > 0 else math.inf):
                await self._take()
            if self._ready is None:
                return None
        return self.next_nowait()

    def next_nowait(self) -> Step:
        if self._ready is None:
            raise trio.WouldBlock
        step, self._ready = self._ready, None
        self._over = True
        self.close()
        return step

    async def _take(self) -> None:
        try:
            result = await self._recv.receive()
        except trio.EndOfChannel:
            result = self.service.rt.ended_early()
        if isinstance(result, ApiError):
            self._ready = self._broken(result)
        else:
            self.info = result.info
            self._ready = answer_step(result)


def answer_step(answer: Answer) -> Step:
    """A whole answer as the one step of a stream: its reasoning, content, calls and end."""
    pieces: list[Piece] = []
    if answer.reasoning:
        pieces.append(Reasoning(answer.reasoning))
    if answer.content:
        pieces.append(Content(answer.content))
    pieces += [Call(i, call) for i, call in enumerate(answer.calls)]
    return Step(pieces, answer.end)


def _unchecked(answer: Answer) -> bool:
    """Tool calls, and answers cut short by `stop` or `max_tokens`, are not checked as JSON."""
    return bool(answer.calls) or answer.end.finish_reason == "length" or answer.end.stop_sequence is not None


def _added(a: Usage, b: Usage) -> Usage:
    """Both turns of a repaired answer were asked and answered: the client is told what both cost."""
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens,
                 a.reasoning_tokens + b.reasoning_tokens)


def _merge_turns(messages: list[UpstreamMessage]) -> UpstreamMessage:
    """The new turns of a follow-up as the one user message §12.2.4 sends (tool results included)."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0]
    if all(isinstance(m.content, str) for m in messages):
        return UpstreamMessage("user", "\n\n".join(content_text(m.content) for m in messages))
    parts: list[dict[str, Any]] = []
    for m in messages:
        parts += [{"type": "text", "text": m.content}] if isinstance(m.content, str) else m.content
    return UpstreamMessage("user", parts)


async def _next_item(recv: trio.MemoryReceiveChannel) -> Any:
    """The next item of an attempt channel: one already queued without a schedule point (the
    attempts queue a whole upstream read's events at once), else wait for one. EndOfChannel
    when the attempts are over and nothing is left."""
    try:
        return recv.receive_nowait()
    except trio.WouldBlock:
        return await recv.receive()
