"""The chat completions door, request side: validate an OpenAI chat request into a Conversation.

Every bad input is a 400 naming the offending `param` and never reaches upstream. What is
accepted is liberal (openai-compat.md §2.6 item 23): `developer` maps to system, `tool` and legacy
`function` results become tool turns, assistant `reasoning_content` is ignored, unknown fields
pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..core.conversation import (
    Conversation,
    MediaRef,
    OutputFormat,
    Part,
    Text,
    ToolSetup,
    Turn,
    text_turn,
)
from ..core.structured import check_schema
from ..core.toolcalls import ToolCall
from ..core.toolprompt import FunctionChoice, FunctionSpec
from ..errors import ApiError, bad_request, decode_json_body
from ..upstream.catalog import (
    DEFAULT_CATALOG,
    Catalog,
    ModelKind,
    ModelRoute,
    UnknownModel,
)
from .openai_types import (
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    NamedToolChoice,
    RefusalPart,
    ResponseFormat,
    TextPart,
    chat_request_decoder,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_STOPS = 4
# OpenAI's rule for `response_format.json_schema.name`; the name is shown to the model.
SCHEMA_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class ChatParams:
    """A validated chat request: the conversation, and what only this door's wire needs."""

    conversation: Conversation
    include_usage: bool

    @property
    def route(self) -> ModelRoute:
        return self.conversation.route

    @property
    def stream(self) -> bool:
        return self.conversation.stream


def parse_chat_request(body: bytes, catalog: Catalog = DEFAULT_CATALOG) -> ChatParams:
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    return validate(decode_json_body(body, chat_request_decoder), catalog)


def model_not_found(exc: UnknownModel) -> ApiError:
    """OpenAI's 404 for an unknown model, with the likely meant id (catalog.py says why we refuse)."""
    hint = f" Did you mean '{exc.suggestion}'?" if exc.suggestion else " See GET /v1/models for the ids this service serves."
    return ApiError(404, f"The model '{exc.name}' does not exist.{hint}", param="model", code="model_not_found")


def validate(req: ChatRequest, catalog: Catalog = DEFAULT_CATALOG) -> ChatParams:
    if not req.model.strip():
        raise bad_request("'model' must be a non-empty string.", param="model", code="invalid_value")
    if req.messages is msgspec.UNSET:
        raise bad_request("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not req.messages:
        raise bad_request("'messages' must contain at least one message.", param="messages", code="invalid_value")
    for i, message in enumerate(req.messages):
        _check_message(i, message)
    if req.n is not None and req.n != 1:
        raise bad_request(
            f"n={req.n} is not supported: Genspark produces one answer per request; send n=1 or omit it.",
            param="n", code="unsupported_value",
        )
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise bad_request(f"'{param}' must be at least 1.", param=param, code="invalid_value")
    stops: tuple[str, ...] = ()
    if isinstance(req.stop, str):
        stops = (req.stop,) if req.stop else ()
    elif isinstance(req.stop, list):
        if len(req.stop) > MAX_STOPS:
            raise bad_request(f"'stop' takes at most {MAX_STOPS} strings.", param="stop", code="invalid_value")
        stops = tuple(s for s in req.stop if s)
    try:
        route = catalog.route(req.model)
    except UnknownModel as exc:
        raise model_not_found(exc) from None
    conversation = Conversation(
        route=route,
        turns=tuple(_turn(i, m) for i, m in enumerate(req.messages)),
        stream=bool(req.stream),
        stops=stops,
        max_tokens=max_tokens,
        tools=_tools(req),
        output=_output(req.response_format),
    )
    return ChatParams(conversation, bool(req.stream and req.stream_options and req.stream_options.include_usage))


def _check_message(i: int, message: Message) -> None:
    role = message.role
    if role not in ROLES:
        raise bad_request(
            f"Invalid value for 'messages[{i}].role': {role!r}; use one of {', '.join(ROLES)}.",
            param=f"messages[{i}].role", code="invalid_value",
        )
    content = message.content
    if content is None:
        if role == "user":
            raise bad_request(f"'messages[{i}].content' must not be null for a user message.",
                              param=f"messages[{i}].content", code="invalid_type")
        return
    if isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, AudioPart):
                raise bad_request(
                    f"messages[{i}].content[{j}]: audio input is not supported by Genspark chat; "
                    "send text, images or files.",
                    param=f"messages[{i}].content[{j}]", code="unsupported_content",
                )
            if role != "user" and isinstance(part, ImagePart | FilePart):
                raise bad_request(
                    f"messages[{i}].content[{j}]: images and files are only accepted in user messages.",
                    param=f"messages[{i}].content[{j}]", code="invalid_value",
                )
            if isinstance(part, FilePart) and not (part.file.file_data or part.file.file_url):
                raise bad_request(
                    f"messages[{i}].content[{j}]: a file part needs 'file_data' (a data: URI or base64); "
                    "uploaded file ids are not supported.",
                    param=f"messages[{i}].content[{j}].file", code="invalid_value",
                )


def _tools(req: ChatRequest) -> ToolSetup | None:
    functions: list[FunctionSpec] = []
    if req.tools:
        for k, tool in enumerate(req.tools):
            if tool.type != "function":
                raise bad_request(f"tools[{k}].type {tool.type!r} is not supported; use 'function'.",
                                  param=f"tools[{k}].type", code="invalid_value")
            functions.append(FunctionSpec(tool.function.name, tool.function.description, tool.function.parameters))
    elif req.functions:  # legacy `functions` / `function_call`
        functions = [FunctionSpec(f.name, f.description, f.parameters) for f in req.functions]
    for k, f in enumerate(functions):
        if not f.name or len(f.name) > 64 or not all(c.isalnum() or c in "_-." for c in f.name):
            raise bad_request(f"Invalid function name {f.name!r}: use letters, digits, '_', '-' and '.', at most 64.",
                              param=f"tools[{k}].function.name" if req.tools else f"functions[{k}].name",
                              code="invalid_value")
    # A legacy client sent `function_call`: its errors name that parameter.
    param = "function_call" if req.tool_choice is None and req.function_call is not None else "tool_choice"
    raw_choice: Any = req.tool_choice if req.tool_choice is not None else req.function_call
    if not functions:
        if raw_choice not in (None, "none", "auto"):
            raise bad_request(f"'{param}' needs 'tools'.", param=param, code="invalid_value")
        return None
    names = {f.name for f in functions}
    choice: Any
    if raw_choice is None:
        choice = "auto"
    elif isinstance(raw_choice, str):
        if raw_choice not in ("auto", "none", "required"):
            raise bad_request(f"Invalid '{param}' {raw_choice!r}; use auto, none, required or a named function.",
                              param=param, code="invalid_value")
        choice = raw_choice
    else:
        name = raw_choice.function.name if isinstance(raw_choice, NamedToolChoice) else raw_choice.name
        if name not in names:
            raise bad_request(f"'{param}' names {name!r}, which is not among the tools.",
                              param=param, code="invalid_value")
        choice = FunctionChoice(name)
    legacy = not req.tools and bool(req.functions)
    parallel = req.parallel_tool_calls is not False and not legacy
    return ToolSetup(tuple(functions), choice, parallel, legacy)


def _output(response_format: ResponseFormat | None) -> OutputFormat | None:
    """`response_format` as the answer's format (core/structured.py); `text` is no format at all."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return OutputFormat("json_object")
    if response_format.type != "json_schema":
        raise bad_request(f"Invalid 'response_format.type' {response_format.type!r}; use text, json_object or json_schema.",
                          param="response_format.type", code="invalid_value")
    spec = response_format.json_schema
    if spec is None:
        raise bad_request("Missing required parameter: 'response_format.json_schema'.",
                          param="response_format.json_schema", code="missing_required_parameter")
    name = spec.name
    if name is not None and not (0 < len(name) <= 64 and SCHEMA_NAME_CHARS.issuperset(name)):
        raise bad_request(f"Invalid 'response_format.json_schema.name' {name!r}: use letters, digits, '_' and '-', "
                          "at most 64.", param="response_format.json_schema.name", code="invalid_value")
    if spec.schema is msgspec.UNSET:
        # OpenAI makes the schema optional: without one, any JSON object will do.
        return OutputFormat("json_schema", None, name, bool(spec.strict), description=spec.description)
    check_schema(spec.schema, "response_format.json_schema.schema")
    return OutputFormat("json_schema", spec.schema, name, bool(spec.strict), description=spec.description)


# ------------------------------------------------------------------------------ conversion


def message_text(message: Message) -> str:
    """The text of a message (parts joined); images and files are not text."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if isinstance(p, TextPart)) + "".join(
        p.refusal for p in content if isinstance(p, RefusalPart)
    )


def _turn(i: int, message: Message) -> Turn:
    role = message.role
    if role in ("system", "developer"):
        return text_turn("system", message_text(message))
    if role == "assistant":
        return Turn("assistant", text_turn("assistant", message_text(message)).parts, calls=_calls(message))
    if role in ("tool", "function"):
        return Turn("tool", text_turn("tool", message_text(message)).parts,
                    call_id=message.tool_call_id or "", name=message.name)
    content = message.content
    if not isinstance(content, list):
        return text_turn("user", content or "")
    parts: list[Part] = []
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            parts.append(Text(part.text))
        elif isinstance(part, RefusalPart):
            parts.append(Text(part.refusal))
        elif isinstance(part, ImagePart):
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            parts.append(MediaRef("image", url, param))
        elif isinstance(part, FilePart):
            data = part.file.file_data or part.file.file_url or ""
            if data and not data.startswith(("data:", "http://", "https://")):
                data = "data:application/octet-stream;base64," + data  # bare base64, as OpenAI allows
            parts.append(MediaRef("file", data, param, part.file.filename))
    return Turn("user", tuple(parts))


def _calls(message: Message) -> tuple[ToolCall, ...]:
    calls = [ToolCall(call.id, call.function.name, _arguments(call.function.arguments))
             for call in message.tool_calls or ()]
    if message.function_call is not None:
        calls.append(ToolCall("", message.function_call.name, _arguments(message.function_call.arguments)))
    return tuple(calls)


def _arguments(arguments: str | dict[str, Any] | None) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments or "{}"
    return msgspec.json.encode(arguments).decode()


def is_generation(route: ModelRoute) -> bool:
    return route.kind in (ModelKind.IMAGE, ModelKind.VIDEO)
