"""The Anthropic Messages door, request side: validate a `/v1/messages` body into a Conversation.

Pure: bytes in, a `MessagesParams` out, or an ApiError (400) naming the client's own parameter
(`messages[2].content[0].source.media_type`). What Anthropic accepts is accepted, including what
we cannot use: `cache_control` on any block, `metadata`, sampling knobs, `service_tier`,
`container`, `mcp_servers`, earlier `thinking` blocks and server-tool blocks in the history (none
is sent upstream). Server tools other than web search (bash, text editor, code execution,
computer use) are accepted and not offered: Genspark has nothing to run them. A block type
Anthropic does not define is a 400, as Anthropic answers it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

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
from ..core.toolprompt import (
    FunctionChoice,
    FunctionSpec,
    ToolChoice,
    render_tool_result,
)
from ..errors import ApiError, bad_request, decode_json_body
from ..upstream.catalog import (
    DEFAULT_CATALOG,
    Catalog,
    ModelKind,
    ModelRoute,
    UnknownModel,
)

MAX_TOOL_NAME = 128   # Anthropic's limit: ^[a-zA-Z0-9_-]{1,128}$

# ------------------------------------------------------------------------------ wire structs


class CacheControl(Struct):
    type: str = "ephemeral"
    ttl: str | None = None


class MessageIn(Struct):
    role: str
    # Blocks are read one by one (`_block`), so an unknown type names its place and the many
    # block types we accept and ignore need no struct of their own.
    content: str | list[dict[str, Any]]


class ThinkingConfig(Struct):
    type: str
    budget_tokens: int | None = None


class ToolChoiceIn(Struct):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(Struct):
    model: str
    messages: list[MessageIn]
    max_tokens: int | UnsetType = UNSET
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingConfig | None = None
    output_config: dict[str, Any] | None = None   # `format` (structured outputs); `effort` is not passed on
    output_format: dict[str, Any] | None = None   # the structured-outputs beta's spelling of the same
    # Accepted and not used: Genspark takes no sampling parameters, keeps no cache, runs no
    # containers and reaches no MCP servers.
    metadata: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    service_tier: str | None = None
    container: Any = None
    mcp_servers: Any = None


request_decoder = msgspec.json.Decoder(MessagesRequest)


# Blocks as they are checked, each converted from its dict (`msgspec.convert`).


class Base64Source(Struct, tag_field="type", tag="base64"):
    media_type: str
    data: str


class UrlSource(Struct, tag_field="type", tag="url"):
    url: str


class TextSource(Struct, tag_field="type", tag="text"):
    data: str
    media_type: str = "text/plain"


class ContentSource(Struct, tag_field="type", tag="content"):
    content: str | list[dict[str, Any]]


class FileSource(Struct, tag_field="type", tag="file"):
    file_id: str


ImageSource = Base64Source | UrlSource | FileSource
DocumentSource = Base64Source | UrlSource | TextSource | ContentSource | FileSource


class TextBlock(Struct):
    text: str


class ImageBlock(Struct):
    source: ImageSource


class DocumentBlock(Struct):
    source: DocumentSource
    title: str | None = None


class ToolUseBlock(Struct):
    id: str
    name: str
    input: Any = None


class ToolResultBlock(Struct):
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


# History blocks accepted and not sent upstream: earlier reasoning (Genspark cannot check a
# signature), and the calls and results of Anthropic-run server tools, which only Anthropic can
# continue. New server-tool result types follow the `*_tool_result` naming, so those pass too.
IGNORED_BLOCKS = frozenset({
    "thinking", "redacted_thinking", "server_tool_use", "mcp_tool_use", "mcp_tool_result",
    "container_upload", "tool_reference", "compaction",
})

# Server tools (`type` other than `custom`) whose work Genspark can do: web search, as search.
SEARCH_TOOL_PREFIX = "web_search_"


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class MessagesParams:
    """A validated Messages request: the conversation, and what only this door's wire needs."""

    conversation: Conversation
    thinking: bool            # the client asked for thinking blocks

    @property
    def route(self) -> ModelRoute:
        return self.conversation.route


def parse_messages_request(body: bytes, catalog: Catalog = DEFAULT_CATALOG, *, counting: bool = False) -> MessagesParams:
    """`counting`: the body of `/v1/messages/count_tokens`, which takes no `max_tokens`."""
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    return validate(decode_json_body(body, request_decoder), catalog, counting=counting)


def model_not_found(exc: UnknownModel) -> ApiError:
    hint = f" Did you mean '{exc.suggestion}'?" if exc.suggestion else " See GET /v1/models for the ids this service serves."
    return ApiError(404, f"model: {exc.name} is not served here.{hint}", param="model", code="model_not_found")


def validate(req: MessagesRequest, catalog: Catalog = DEFAULT_CATALOG, *, counting: bool = False) -> MessagesParams:
    if not req.model.strip():
        raise bad_request("model: must be a non-empty string.", param="model", code="invalid_value")
    if req.max_tokens is UNSET:
        if not counting:
            # Anthropic requires it, and so do we: a client that relies on it gets the same answer.
            raise bad_request("max_tokens: Field required", param="max_tokens", code="missing_required_parameter")
        max_tokens = None
    else:
        max_tokens = req.max_tokens
        if max_tokens < 1:
            raise bad_request("max_tokens: must be at least 1.", param="max_tokens", code="invalid_value")
    if not req.messages:
        raise bad_request("messages: at least one message is required.", param="messages", code="invalid_value")
    try:
        route = catalog.route(req.model)
    except UnknownModel as exc:
        raise model_not_found(exc) from None
    if route.kind in (ModelKind.IMAGE, ModelKind.VIDEO):
        raise bad_request(f"model: {req.model} generates images or videos; use /v1/images/generations or "
                          "/v1/videos for it.", param="model", code="invalid_value")
    tools, search = _tools(req)
    if search:
        route = dataclasses.replace(route, search=True)
    turns: list[Turn] = []
    system = _system(req.system)
    if system:
        turns.append(text_turn("system", system))
    for i, message in enumerate(req.messages):
        turns += _message_turns(i, message)
    turns = _headed_media_results(turns)
    thinking = req.thinking is not None and req.thinking.type in ("enabled", "adaptive")
    if req.thinking is not None and req.thinking.type not in ("enabled", "adaptive", "disabled"):
        raise bad_request(f"thinking.type: {req.thinking.type!r} is not one of enabled, adaptive, disabled.",
                          param="thinking.type", code="invalid_value")
    conversation = Conversation(
        route=route,
        turns=tuple(turns),
        stream=bool(req.stream),
        stops=tuple(s for s in req.stop_sequences or () if s),
        max_tokens=max_tokens,
        tools=tools,
        output=_output_format(req),
        reasoning="separate" if thinking else "hidden",
    )
    return MessagesParams(conversation, thinking)


# Claude Code puts an attribution line in its first system block ("x-anthropic-billing-header:
# cc_version=…; cc_entrypoint=…;"): a header for Anthropic's billing smuggled into the prompt, no
# instruction to the model, so it is not sent upstream.
BILLING_HEADER = "x-anthropic-billing-header:"


def _output_format(req: MessagesRequest) -> OutputFormat | None:
    """Anthropic's structured outputs (`output_config.format` of type json_schema) as the core's
    output format; the core instructs and checks the JSON (structured outputs of chat)."""
    param, fmt = "output_config.format", (req.output_config or {}).get("format")
    if fmt is None and req.output_format is not None:
        param, fmt = "output_format", req.output_format
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise bad_request(f"{param}: use {{\"type\": \"json_schema\", \"schema\": {{...}}}}.", param=param,
                          code="invalid_value")
    check_schema(fmt["schema"], f"{param}.schema")
    return OutputFormat("json_schema", fmt["schema"], strict=True, param=param)


def _system(system: str | list[dict[str, Any]] | None, param: str = "system") -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for k, block in enumerate(system):
        if block.get("type") != "text":
            raise bad_request(f"{param}[{k}].type: system prompts take text blocks only.",
                              param=f"{param}[{k}].type", code="invalid_value")
        text = _convert(block, TextBlock, f"{param}[{k}]").text
        if not text.startswith(BILLING_HEADER):
            texts.append(text)
    return "\n\n".join(t for t in texts if t)


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def _convert(block: dict[str, Any], kind: type[Any], param: str) -> Any:
    """`block` as the struct `kind`; a 400 naming the exact place (`….source.media_type`) else."""
    try:
        return msgspec.convert(block, kind)
    except msgspec.ValidationError as exc:
        text, _, where = str(exc).partition(" - at `$")
        where = param + where.rstrip("`")
        missing = _MISSING.match(text)
        if missing:
            where = f"{where}.{missing.group('field')}"
            raise bad_request(f"{where}: Field required", param=where, code="missing_required_parameter") from None
        raise bad_request(f"{where}: {text}", param=where, code="invalid_value") from None


def _message_turns(i: int, message: MessageIn) -> list[Turn]:
    """One message as turns: its text and media, its tool calls, and each tool result as its own turn."""
    role = message.role
    if role not in ("user", "assistant", "system"):
        raise bad_request(f"messages[{i}].role: {role!r} is not one of user, assistant, system.",
                          param=f"messages[{i}].role", code="invalid_value")
    if role == "system":
        # Mid-conversation system messages (beta `mid-conversation-system-2026-04-07`): Claude Code
        # 2.1 sends its agent list this way. Text only, as the top-level `system`.
        text = message.content if isinstance(message.content, str) else _system(message.content, f"messages[{i}].content")
        return [text_turn("system", text)]
    if isinstance(message.content, str):
        return [text_turn(role, message.content)]
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Turn] = []
    for j, block in enumerate(message.content):
        param = f"messages[{i}].content[{j}]"
        kind = block.get("type")
        if not isinstance(kind, str):
            raise bad_request(f"{param}.type: Field required", param=f"{param}.type", code="missing_required_parameter")
        if kind == "text":
            parts.append(Text(_convert(block, TextBlock, param).text))
        elif kind in ("image", "document"):
            if role != "user":
                raise bad_request(f"{param}: images and documents are only accepted in user messages.",
                                  param=param, code="invalid_value")
            parts += _media(block, kind, param)
        elif kind == "search_result":   # results the client searched for itself: text to read
            parts.append(Text(_search_result_text(block)))
        elif kind == "tool_use":
            if role != "assistant":
                raise bad_request(f"{param}: tool_use blocks belong in assistant messages.", param=param, code="invalid_value")
            use = _convert(block, ToolUseBlock, param)
            arguments = msgspec.json.encode(use.input if isinstance(use.input, dict) else {}).decode()
            calls.append(ToolCall(use.id, use.name, arguments))
        elif kind == "tool_result":
            if role != "user":
                raise bad_request(f"{param}: tool_result blocks belong in user messages.", param=param, code="invalid_value")
            results.append(_tool_result(_convert(block, ToolResultBlock, param), param))
        elif kind in IGNORED_BLOCKS or kind.endswith("_tool_result"):
            continue
        else:
            raise bad_request(
                f"{param}.type: {kind!r} is not a content block type this API knows "
                "(text, image, document, tool_use, tool_result, thinking, ...).",
                param=f"{param}.type", code="invalid_value",
            )
    turns = list(results)   # a user message's tool results answer the calls before it: they come first
    if parts or calls or not results:
        turns.append(Turn(role, tuple(parts), calls=tuple(calls)))
    return turns


def _media(block: dict[str, Any], kind: str, param: str) -> list[Part]:
    if kind == "image":
        source = _convert(block, ImageBlock, param).source
        title = None
    else:
        document = _convert(block, DocumentBlock, param)
        source, title = document.source, document.title
    where = f"{param}.source"
    if isinstance(source, FileSource):
        raise bad_request(f"{where}: uploaded file ids (Files API) are not supported here; send the "
                          "file as base64 or a URL.", param=where, code="invalid_value")
    if isinstance(source, Base64Source):
        url = f"data:{source.media_type};base64,{source.data}"
    elif isinstance(source, UrlSource):
        url = source.url
    elif isinstance(source, TextSource):
        # Plain-text documents are text: the model reads them as they are, no upload needed.
        return [Text(f"Document{f' {title!r}' if title else ''}:\n{source.data}")]
    else:
        content = source.content
        texts = [content] if isinstance(content, str) else [
            _convert(b, TextBlock, f"{where}.content[{k}]").text for k, b in enumerate(content) if b.get("type") == "text"]
        return [Text("\n".join(texts))]
    return [MediaRef("image" if kind == "image" else "file", url, param, title)]


def _headed_media_results(turns: list[Turn]) -> list[Turn]:
    """Tool results holding images or files, as the user turns they become upstream, with their
    "Tool result for …" heading written into the text: media turns are sent as their parts
    (media_prep.py), which would drop the heading that tells the model it is a result."""
    names: dict[str, str] = {}
    out = []
    for turn in turns:
        for call in turn.calls:
            names[call.id] = call.name
        if turn.role == "tool" and turn.media:
            heading = render_tool_result(turn.call_id or "", names.get(turn.call_id or ""),
                                         "[error]" if turn.is_error else "")
            turn = Turn("user", (Text(heading.rstrip()), *turn.parts))
        out.append(turn)
    return out


def _tool_result(result: ToolResultBlock, param: str) -> Turn:
    content = result.content
    parts: list[Part] = []
    if isinstance(content, str):
        parts.append(Text(content))
    elif content:
        for k, block in enumerate(content):
            kind, where = block.get("type"), f"{param}.content[{k}]"
            if kind == "text":
                parts.append(Text(_convert(block, TextBlock, where).text))
            elif kind in ("image", "document"):
                parts += _media(block, kind, where)
            elif kind == "search_result":
                parts.append(Text(_search_result_text(block)))
            elif kind != "tool_reference":
                raise bad_request(f"{where}.type: a tool result holds text, image, document or search_result blocks.",
                                  param=f"{where}.type", code="invalid_value")
    return Turn("tool", tuple(parts), call_id=result.tool_use_id, is_error=bool(result.is_error))


def _search_result_text(block: dict[str, Any]) -> str:
    texts = [b.get("text", "") for b in block.get("content") or () if isinstance(b, dict) and b.get("type") == "text"]
    head = " ".join(str(block.get(k)) for k in ("title", "source") if block.get(k))
    return "\n".join([head, *texts]) if head else "\n".join(texts)


def _tools(req: MessagesRequest) -> tuple[ToolSetup | None, bool]:
    """The custom tools as functions, and whether the web search server tool was offered."""
    functions: list[FunctionSpec] = []
    search = False
    for k, tool in enumerate(req.tools or ()):
        kind = tool.get("type")
        param = f"tools[{k}]"
        if kind not in (None, "custom"):
            if not isinstance(kind, str):
                raise bad_request(f"{param}.type: must be a string.", param=f"{param}.type", code="invalid_type")
            search = search or kind.startswith(SEARCH_TOOL_PREFIX)
            continue   # bash_*, text_editor_*, code_execution_*, computer_*, ...: nothing upstream runs them
        name = tool.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_TOOL_NAME or \
                not all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
            raise bad_request(f"{param}.name: {name!r} must match ^[a-zA-Z0-9_-]{{1,{MAX_TOOL_NAME}}}$.",
                              param=f"{param}.name", code="invalid_value")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise bad_request(f"{param}.input_schema: Field required (a JSON schema object).",
                              param=f"{param}.input_schema", code="missing_required_parameter")
        description = tool.get("description")
        functions.append(FunctionSpec(name, description if isinstance(description, str) else None, schema))
    names = {f.name for f in functions}
    if len(names) != len(functions):
        raise bad_request("tools: tool names must be unique.", param="tools", code="invalid_value")
    choice_in = req.tool_choice
    choice: ToolChoice = "auto"
    parallel = True
    if choice_in is not None:
        parallel = not choice_in.disable_parallel_tool_use
        if choice_in.type == "any":
            choice = "required"
        elif choice_in.type == "none":
            choice = "none"
        elif choice_in.type == "tool":
            if not choice_in.name or choice_in.name not in names:
                raise bad_request(f"tool_choice.name: {choice_in.name!r} is not among the tools.",
                                  param="tool_choice.name", code="invalid_value")
            choice = FunctionChoice(choice_in.name)
        elif choice_in.type != "auto":
            raise bad_request(f"tool_choice.type: {choice_in.type!r} is not one of auto, any, tool, none.",
                              param="tool_choice.type", code="invalid_value")
    if not functions:
        if choice not in ("auto", "none"):
            raise bad_request("tool_choice: needs custom tools in 'tools'.", param="tool_choice", code="invalid_value")
        return None, search
    return ToolSetup(tuple(functions), choice, parallel), search
