"""msgspec Structs for the OpenAI wire: what clients send and what we answer.

Request structs never forbid unknown fields: clients send many we ignore (`temperature`, `user`,
`metadata`, `seed`, ...; openai-compat.md §2.6 item 23). Response structs follow §2.2 to the key:
`object` is a struct tag so it is always emitted first, and `finish_reason` has no default so it is
always present (as null until the end) while truly optional fields drop out.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from ..errors import ApiError

# ---------------------------------------------------------------- request: chat completions


class ImageUrl(Struct):
    url: str
    detail: str | None = None


class TextPart(Struct, tag_field="type", tag="text"):
    text: str


class ImagePart(Struct, tag_field="type", tag="image_url"):
    image_url: str | ImageUrl


class FileData(Struct):
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None
    file_url: str | None = None


class FilePart(Struct, tag_field="type", tag="file"):
    file: FileData


class InputAudio(Struct):
    data: str = ""
    format: str = ""


class AudioPart(Struct, tag_field="type", tag="input_audio"):
    input_audio: InputAudio | None = None


class RefusalPart(Struct, tag_field="type", tag="refusal"):
    refusal: str = ""


ContentPart = TextPart | ImagePart | FilePart | AudioPart | RefusalPart


class FunctionCallIn(Struct):
    name: str
    # Some clients send the arguments as an object instead of a JSON string.
    arguments: str | dict[str, Any] | None = None


class ToolCallIn(Struct):
    function: FunctionCallIn
    id: str = ""
    type: str = "function"


class Message(Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCallIn | None = None   # legacy assistant turn
    reasoning_content: Any = None                  # sent back by DeepSeek-style clients; ignored


class FunctionDef(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(Struct):
    function: FunctionDef
    type: str = "function"


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    function: NamedFunction
    type: str = "function"


class StreamOptions(Struct):
    include_usage: bool | None = None


class JsonSchemaSpec(Struct):
    """`response_format.json_schema` (structured outputs, issue #11)."""

    name: str | None = None
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Struct):
    """`response_format`: `text`, `json_object` or `json_schema` (chat_door.py checks which)."""

    type: str
    json_schema: JsonSchemaSpec | None = None


class ChatRequest(Struct):
    model: str
    messages: list[Message] | UnsetType = UNSET
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None          # legacy
    function_call: str | NamedFunction | None = None     # legacy
    response_format: ResponseFormat | None = None


# ---------------------------------------------------------------- response: chat completions


class FunctionCallOut(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionCallOut | None = None


class Delta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: FunctionCallOut | None = None   # legacy `functions` requests


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None


class CompletionTokensDetails(Struct):
    reasoning_tokens: int = 0


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletionChunk(Struct, omit_defaults=True, tag_field="object", tag="chat.completion.chunk"):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ToolCallOut(Struct):
    id: str
    function: FunctionCallOut
    type: str = "function"


class AssistantMessage(Struct, omit_defaults=True):
    # No defaults on role/content: omit_defaults would drop them (python-stack.md §5).
    role: str
    content: str | None
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCallOut] | UnsetType = UNSET
    function_call: FunctionCallOut | UnsetType = UNSET   # legacy `functions` requests


class Choice(Struct):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(Struct, tag_field="object", tag="chat.completion"):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


# ---------------------------------------------------------------- models, errors


class ModelCard(Struct, tag_field="object", tag="model"):
    id: str
    created: int
    owned_by: str


class ModelList(Struct, tag_field="object", tag="list"):
    data: list[ModelCard]


class ErrorDetail(Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(Struct):
    error: ErrorDetail


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

encoder = msgspec.json.Encoder()
chat_request_decoder = msgspec.json.Decoder(ChatRequest)


def error_json(error: ApiError) -> bytes:
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""
    return encoder.encode(ErrorBody(ErrorDetail(error.message, error.type, error.param, error.code)))
