"""The Responses door, request side: validate a `POST /v1/responses` body into a Conversation (pure).

What is accepted follows what today's Responses clients send (the openai SDK, openai-agents,
Codex CLI), liberally: `input` as a string or items — messages (`user`, `assistant`, `system`,
`developer`) with `input_text` / `input_image` / `input_file` parts and `output_text` parts in
assistant messages, `function_call` and `function_call_output` items; earlier `reasoning` items
and item types we do not know are accepted and not sent. Function tools come in Responses' flat
shape; the `web_search` tools route to Genspark's search; any other tool type (Codex's
`namespace`, `local_shell`, `custom`, hosted `file_search`, ...) is accepted and ignored, never a
400, since a client that offers one more tool still wants its answer.

Every input item is normalised here into the shape this service answers with (ids, `type`,
parts as lists), which is also what the response store keeps: a follow-up's
`previous_response_id` replays the stored items through the same `turns()`, so a stored thread
and a client resending its whole history (Codex, `store: false`) give the same transcript, and
the thread binding (pool/bindings.py) finds the same Genspark project either way.

Every bad input is a 400 in OpenAI's shape naming the client's own parameter path
(`input[2].content[0].image_url`).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from ..core.conversation import (
    Conversation,
    MediaRef,
    OutputFormat,
    Part,
    ReasoningWish,
    Text,
    ToolSetup,
    Turn,
    text_turn,
)
from ..core.structured import check_schema
from ..core.toolcalls import ToolCall
from ..core.toolprompt import FunctionChoice, FunctionSpec, ToolChoice
from ..errors import ApiError, bad_request, decode_json_body, from_validation_error
from ..upstream.catalog import DEFAULT_CATALOG, Catalog, ModelKind, UnknownModel
from .chat_door import model_not_found

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# Hosted web search, under every name OpenAI has given it: answered by Genspark's search
# (ModelRoute.search), unless the tool says `external_web_access: false`.
WEB_SEARCH_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                              "web_search_preview_2025_03_11"})
# `reasoning.summary` values that ask for a summary: the reasoning is shown as summary items.
SUMMARY_WISHES = frozenset({"auto", "concise", "detailed"})
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def new_item_id(prefix: str) -> str:
    """An OpenAI-looking item id: `msg_`, `fc_`, `rs_` ... and 48 hex characters."""
    return f"{prefix}_{secrets.token_hex(24)}"


# ---------------------------------------------------------------- content parts (in and stored)


class InputText(Struct, tag_field="type", tag="input_text"):
    text: str


class OutputText(Struct, tag_field="type", tag="output_text"):
    """An earlier answer's text, as sent back in an assistant message (or stored from our output)."""

    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class Refusal(Struct, tag_field="type", tag="refusal"):
    refusal: str


class InputImage(Struct, tag_field="type", tag="input_image", omit_defaults=True):
    image_url: str | None = None
    file_id: str | None = None
    detail: str = "auto"


class InputFile(Struct, tag_field="type", tag="input_file", omit_defaults=True):
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None
    filename: str | None = None


class InputAudio(Struct, tag_field="type", tag="input_audio"):
    input_audio: Any = None


ContentPart = InputText | OutputText | Refusal | InputImage | InputFile | InputAudio


# ---------------------------------------------------------------- items (in and stored)


class ItemHead(Struct):
    """Enough of an item to know which it is: messages may come without `type` (EasyInputMessage)."""

    type: str | None = None
    role: str | None = None


class MessageIn(Struct):
    role: str
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class Message(Struct, tag_field="type", tag="message"):
    """A message as stored and listed by `input_items` (content always a list)."""

    id: str
    role: str
    content: list[ContentPart]
    status: str = "completed"


class FunctionCall(Struct, tag_field="type", tag="function_call"):
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str = "completed"


class FunctionCallOutput(Struct, tag_field="type", tag="function_call_output"):
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: str = "completed"


Item = Message | FunctionCall | FunctionCallOutput

_head = msgspec.json.Decoder(ItemHead)
_message_in = msgspec.json.Decoder(MessageIn)
_function_call = msgspec.json.Decoder(FunctionCall)
_function_call_output = msgspec.json.Decoder(FunctionCallOutput)
items_decoder = msgspec.json.Decoder(list[Item])
items_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------- tools and the rest of the request


class FunctionTool(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    type: str = "function"


class ToolHead(Struct):
    type: str = ""
    external_web_access: bool | None = None   # web_search: false is Codex's cached-only mode


_tool_head = msgspec.json.Decoder(ToolHead)
_function_tool = msgspec.json.Decoder(FunctionTool)


class ToolChoiceObject(Struct, omit_defaults=True):
    type: str
    name: str | None = None
    mode: str | None = None


class TextFormat(Struct, omit_defaults=True):
    type: str
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class TextConfig(Struct, omit_defaults=True):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(Struct, omit_defaults=True):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None   # the older name of `summary`


class ResponsesRequest(Struct):
    model: str | UnsetType = UNSET
    input: str | list[Raw] | UnsetType = UNSET
    instructions: str | None = None
    tools: list[Raw] | None = None
    tool_choice: str | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    conversation: Any = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    truncation: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None


_request = msgspec.json.Decoder(ResponsesRequest)


@dataclass(frozen=True, slots=True)
class ResponsesParams:
    """A validated Responses request: the conversation, and what the response object echoes."""

    conversation: Conversation
    request: ResponsesRequest
    input_items: tuple[Item, ...]     # this request's input, normalised with ids (input_items)
    context: tuple[Item, ...]         # the stored thread before it (previous_response_id), else ()
    tools: tuple[Raw, ...]            # the tools as sent, echoed on the response object

    @property
    def store(self) -> bool:
        return self.request.store is not False


def parse_request(body: bytes) -> ResponsesRequest:
    """The request body, decoded; `validate` takes it on once the stored thread (if any) is found."""
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    return decode_json_body(body, _request)


def previous_not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Previous response with id '{response_id}' not found.",
                    param="previous_response_id", code="previous_response_not_found")


def validate(
    req: ResponsesRequest,
    catalog: Catalog = DEFAULT_CATALOG,
    *,
    context: Sequence[Item] = (),
    new_id: Callable[[str], str] = new_item_id,
) -> ResponsesParams:
    """The conversation of `req`; `context` is the stored thread its `previous_response_id` names."""
    if req.model is UNSET or not isinstance(req.model, str) or not req.model.strip():
        raise bad_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if req.background:
        raise bad_request("background=true is not supported: Genspark answers while the request is open; "
                          "omit it or send false.", param="background", code="unsupported_value")
    if req.conversation is not None:
        raise bad_request("'conversation' is not supported here; continue a thread with previous_response_id "
                          "or send the whole history in 'input'.", param="conversation", code="unsupported_parameter")
    if req.max_output_tokens is not None and req.max_output_tokens < 1:
        raise bad_request("'max_output_tokens' must be at least 1.", param="max_output_tokens", code="invalid_value")
    try:
        route = catalog.route(req.model)
    except UnknownModel as exc:
        raise model_not_found(exc) from None
    if route.kind in (ModelKind.IMAGE, ModelKind.VIDEO):
        raise bad_request(
            f"'{req.model}' is an {route.kind.value} model; the Responses API answers with text. Use "
            "POST /v1/images/generations or /v1/videos (or chat completions) for it.",
            param="model", code="unsupported_model")
    items = _input_items(req, new_id)
    if not items and not context:
        raise bad_request("'input' must contain at least one message.", param="input", code="invalid_value")
    tools, search = _tools(req)
    if search:
        route = dataclasses.replace(route, search=True)
    instructions = [text_turn("system", req.instructions)] if req.instructions else []
    turns = instructions + turns_of([*context, *items], first_input=len(context))
    if not any(t.role in ("user", "tool") for t in turns):
        raise bad_request("'input' must contain a user message or a function_call_output.",
                          param="input", code="invalid_value")
    conversation = Conversation(
        route=route,
        turns=tuple(turns),
        stream=bool(req.stream),
        max_tokens=req.max_output_tokens,
        tools=tools,
        output=_output_format(req.text),
        reasoning=_reasoning_wish(req.reasoning),
    )
    return ResponsesParams(conversation, req, tuple(items), tuple(context), tuple(req.tools or ()))


# ---------------------------------------------------------------- input items


def _decode(raw: Raw | bytes, decoder: msgspec.json.Decoder, where: str) -> Any:
    """`decoder` on one part of the body; its errors name the client's whole path (`input[2].x`)."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        text = text.replace(" - at `$", f" - at `$.{where}", 1) if " - at `$" in text else f"{text} - at `$.{where}`"
        raise from_validation_error(msgspec.ValidationError(text)) from None


def _input_items(req: ResponsesRequest, new_id: Callable[[str], str]) -> list[Item]:
    if req.input is UNSET:
        if req.previous_response_id:
            return []
        raise bad_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if isinstance(req.input, str):
        if not req.input:
            raise bad_request("'input' must not be empty.", param="input", code="invalid_value")
        return [Message(new_id("msg"), "user", [InputText(req.input)])]
    items: list[Item] = []
    for i, raw in enumerate(req.input):
        item = normalise_item(raw, f"input[{i}]", new_id)
        if item is not None:
            items.append(item)
    return items


def normalise_item(raw: Raw, where: str, new_id: Callable[[str], str] = new_item_id) -> Item | None:
    """One input item in the stored shape, or None for an item that is accepted and not sent."""
    head = _decode(raw, _head, where)
    kind = head.type if head.type is not None else ("message" if head.role is not None else None)
    if kind == "message":
        message = _decode(raw, _message_in, where)
        return _message(message, where, new_id)
    if kind == "function_call":
        call = _decode(raw, _function_call, where)
        if not call.call_id:
            raise bad_request(f"'{where}.call_id' must not be empty.", param=f"{where}.call_id", code="invalid_value")
        return FunctionCall(call.call_id, call.name, call.arguments or "{}", call.id or new_id("fc"))
    if kind == "function_call_output":
        result = _decode(raw, _function_call_output, where)
        _check_parts(result.output, f"{where}.output", "tool")
        return FunctionCallOutput(result.call_id, result.output, result.id or new_id("fco"))
    if kind is None:
        raise bad_request(f"'{where}' needs a 'type' (or a 'role' for a message).", param=where, code="invalid_value")
    # `reasoning` items of earlier answers (our summaries, or another model's encrypted content),
    # `item_reference`, and the calls of tools we ignore: accepted, not sent.
    return None


def _message(message: MessageIn, where: str, new_id: Callable[[str], str]) -> Message:
    if message.role not in MESSAGE_ROLES:
        raise bad_request(f"Invalid value for '{where}.role': {message.role!r}; use one of {', '.join(MESSAGE_ROLES)}.",
                          param=f"{where}.role", code="invalid_value")
    content = message.content
    if isinstance(content, str):
        parts: list[ContentPart] = [OutputText(content) if message.role == "assistant" else InputText(content)]
    else:
        parts = list(content)
    _check_parts(parts, f"{where}.content", message.role)
    return Message(message.id or new_id("msg"), message.role, parts)


def _check_parts(parts: str | list[ContentPart], where: str, role: str) -> None:
    if isinstance(parts, str):
        return
    for j, part in enumerate(parts):
        param = f"{where}[{j}]"
        if isinstance(part, InputAudio):
            raise bad_request(f"{param}: audio input is not supported by Genspark; send text, images or files.",
                              param=param, code="unsupported_content")
        if isinstance(part, InputImage | InputFile) and role not in ("user", "tool"):
            raise bad_request(f"{param}: images and files are only accepted in user messages and tool outputs.",
                              param=param, code="invalid_value")
        if isinstance(part, InputImage) and not part.image_url:
            raise bad_request(
                f"{param}: uploaded file ids are not supported; send 'image_url' (an http(s) URL or a data: URI)."
                if part.file_id else f"{param}: an input_image needs 'image_url'.",
                param=f"{param}.{'file_id' if part.file_id else 'image_url'}", code="invalid_value")
        if isinstance(part, InputFile) and not (part.file_data or part.file_url):
            raise bad_request(
                f"{param}: an input_file needs 'file_data' (a data: URI or base64) or 'file_url'; "
                "uploaded file ids are not supported.",
                param=f"{param}.{'file_id' if part.file_id else 'file_data'}", code="invalid_value")


def _part_text(part: ContentPart) -> str | None:
    if isinstance(part, InputText | OutputText):
        return part.text
    if isinstance(part, Refusal):
        return part.refusal
    return None


def _texts(parts: str | list[ContentPart]) -> tuple[Part, ...]:
    if isinstance(parts, str):
        return (Text(parts),) if parts else ()
    text = "\n".join(t for t in map(_part_text, parts) if t is not None)
    return (Text(text),) if text else ()


def _user_parts(parts: list[ContentPart], param: str) -> tuple[Part, ...]:
    out: list[Part] = []
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        if isinstance(part, InputImage):
            out.append(MediaRef("image", part.image_url or "", where))
        elif isinstance(part, InputFile):
            data = part.file_data or part.file_url or ""
            if data and not data.startswith(("data:", "http://", "https://")):
                data = "data:application/octet-stream;base64," + data  # bare base64, as OpenAI allows
            out.append(MediaRef("file", data, where, part.filename))
        else:
            text = _part_text(part)
            if text:
                out.append(Text(text))
    return tuple(out)


def turns_of(items: Sequence[Item], *, first_input: int = 0) -> list[Turn]:
    """The conversation turns of normalised items (`items[first_input:]` are this request's
    `input`, the ones before it the stored thread, for the `param` of media errors).

    Assistant items in a row (messages and function calls) are one assistant turn: its text the
    messages' texts joined as they came, then its calls. That is how the answer that produced
    them reads (a message, a call, more text: one answer, the composer's whole text and its
    calls), and the thread binding keys on exactly that transcript.
    """
    turns: list[Turn] = []
    for k, item in enumerate(items):
        if isinstance(item, FunctionCall | Message) and (isinstance(item, FunctionCall) or item.role == "assistant"):
            previous = turns[-1] if turns and turns[-1].role == "assistant" else None
            text = previous.text if previous is not None else ""
            calls = previous.calls if previous is not None else ()
            if isinstance(item, FunctionCall):
                calls = (*calls, ToolCall(item.call_id, item.name, item.arguments))
            else:
                text += Turn("assistant", _texts(item.content)).text
            turn = Turn("assistant", (Text(text),) if text else (), calls=calls)
            if previous is not None:
                turns[-1] = turn
            else:
                turns.append(turn)
        elif isinstance(item, FunctionCallOutput):
            turns.append(Turn("tool", _texts(item.output), call_id=item.call_id))
            media = _user_parts(item.output, _where(k, first_input, "output")) if isinstance(item.output, list) else ()
            media = tuple(p for p in media if isinstance(p, MediaRef))
            if media:
                # Genspark takes images and files in user turns only: a tool's (Codex's view_image,
                # a computer-use screenshot) follow its result as a user turn of their own.
                turns.append(Turn("user", (Text(f"The tool call {item.call_id} returned:"), *media)))
        elif item.role in ("system", "developer"):
            turns.append(Turn("system", _texts(item.content)))
        else:
            turns.append(Turn("user", _user_parts(item.content, _where(k, first_input, "content"))))
    return turns


def _where(k: int, first_input: int, field: str) -> str:
    return f"input[{k - first_input}].{field}" if k >= first_input else "previous_response_id"


# ---------------------------------------------------------------- tools, format, reasoning


def _tools(req: ResponsesRequest) -> tuple[ToolSetup | None, bool]:
    """The function tools and the tool choice; and whether a web search tool was offered."""
    functions: list[FunctionSpec] = []
    search = False
    for k, raw in enumerate(req.tools or ()):
        head = _decode(raw, _tool_head, f"tools[{k}]")
        kind = head.type
        if kind in WEB_SEARCH_TOOLS:
            # Codex offers `web_search` on every turn, with external_web_access false unless the
            # user enabled live search: only a search the client allows goes to Genspark's.
            search = search or head.external_web_access is not False
        elif kind == "function":
            tool = _decode(raw, _function_tool, f"tools[{k}]")
            if not _NAME.match(tool.name):
                raise bad_request(f"Invalid function name {tool.name!r}: use letters, digits, '_', '-' and '.', "
                                  "at most 64.", param=f"tools[{k}].name", code="invalid_value")
            functions.append(FunctionSpec(tool.name, tool.description, tool.parameters))
        # Any other type (namespace, local_shell, custom, file_search, computer_use, mcp, ...):
        # a tool Genspark cannot run and we cannot emulate; the answer comes without it.
    names = {f.name for f in functions}
    choice: ToolChoice = "auto"
    raw_choice = req.tool_choice
    if isinstance(raw_choice, str):
        if raw_choice not in ("auto", "none", "required"):
            raise bad_request(f"Invalid 'tool_choice' {raw_choice!r}; use auto, none, required or "
                              "{\"type\": \"function\", \"name\": ...}.", param="tool_choice", code="invalid_value")
        choice = raw_choice  # type: ignore[assignment]
    elif isinstance(raw_choice, ToolChoiceObject):
        if raw_choice.type == "function":
            if not raw_choice.name or raw_choice.name not in names:
                raise bad_request(f"'tool_choice' names {raw_choice.name!r}, which is not among the function tools.",
                                  param="tool_choice.name", code="invalid_value")
            choice = FunctionChoice(raw_choice.name)
        elif raw_choice.type == "allowed_tools" and raw_choice.mode == "required":
            choice = "required"
        # A hosted tool named as the choice (`{"type": "web_search"}`), or `allowed_tools` in auto
        # mode: the model may use what it was given.
    if not functions:
        return None, search
    return ToolSetup(tuple(functions), choice, req.parallel_tool_calls is not False), search


def _output_format(text: TextConfig | None) -> OutputFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return OutputFormat("json_object", param="text.format")
    if fmt.type == "json_schema":
        if not fmt.name:
            raise bad_request("Missing required parameter: 'text.format.name'.", param="text.format.name",
                              code="missing_required_parameter")
        if fmt.schema is None:
            raise bad_request("Missing required parameter: 'text.format.schema'.", param="text.format.schema",
                              code="missing_required_parameter")
        check_schema(fmt.schema, "text.format.schema")
        return OutputFormat("json_schema", fmt.schema, fmt.name, bool(fmt.strict), param="text.format")
    raise bad_request(f"Invalid value for 'text.format.type': {fmt.type!r}; use text, json_object or json_schema.",
                      param="text.format.type", code="invalid_value")


def _reasoning_wish(reasoning: ReasoningConfig | None) -> ReasoningWish:
    if reasoning is None:
        return "hidden"
    summary = reasoning.summary or reasoning.generate_summary
    return "separate" if summary in SUMMARY_WISHES else "hidden"

